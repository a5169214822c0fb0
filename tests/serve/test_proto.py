"""The gRPC contract: buf STANDARD lint, and the checked-in generated code matches the .proto."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _buf() -> str | None:
    local = Path(sys.executable).parent / "buf"
    return str(local) if local.exists() else shutil.which("buf")


def test_buf_lint_standard_is_clean():
    buf = _buf()
    if buf is None:
        pytest.skip("buf is not installed (pip install buf-bin, part of the dev extra)")
    r = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"buf lint found problems:\n{r.stdout}{r.stderr}"
    assert "STANDARD" in (ROOT / "buf.yaml").read_text()


def test_generated_code_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a dev dependency")
    from engine._proto import generate

    generate.generate(tmp_path)
    stale = generate.compare(tmp_path)
    assert not stale, f"checked-in code differs from the .proto: {stale}; run python -m engine._proto.generate"
    produced = sorted(p.name for p in (tmp_path / "ngram" / "v1").glob("*_pb2*"))
    assert produced == ["ngram_pb2.py", "ngram_pb2.pyi", "ngram_pb2_grpc.py"]


def test_generated_code_imports_from_the_engine_package():
    from engine._proto.ngram.v1 import ngram_pb2, ngram_pb2_grpc

    service = ngram_pb2.DESCRIPTOR.services_by_name["NgramService"]
    assert service.full_name == "ngram.v1.NgramService"
    assert ngram_pb2_grpc.NgramServiceStub is not None
    text = (ROOT / "engine/_proto/ngram/v1/ngram_pb2_grpc.py").read_text()
    assert "from engine._proto.ngram.v1 import ngram_pb2" in text


def test_every_rpc_has_its_own_request_and_response():
    from engine._proto.ngram.v1 import ngram_pb2

    service = ngram_pb2.DESCRIPTOR.services_by_name["NgramService"]
    seen = set()
    for m in service.methods:
        assert m.input_type.name == f"{m.name}Request"
        assert m.output_type.name == f"{m.name}Response"
        assert m.input_type.name not in seen and m.output_type.name not in seen
        seen |= {m.input_type.name, m.output_type.name}
    names = {m.name for m in service.methods}
    for required in ("GetIndexInfo", "Tokenize", "Detokenize", "Count", "CountBatch", "Prob", "ProbBatch",
                     "NextTokenDistribution", "NextTokenDistributionBatch", "InfgramProb", "InfgramProbBatch",
                     "InfgramNextTokenDistribution", "InfgramNextTokenDistributionBatch", "Find",
                     "SearchDocuments", "GetDocument"):
        assert required in names
    assert service.methods_by_name["SearchDocuments"].server_streaming


def test_servicer_implements_every_rpc(tiny_index):
    """Every RPC of the proto has a handler of its own on a servicer (not the generated base
    class's UNIMPLEMENTED one), and every RPC but GetIndexInfo is in the RPC table."""
    from engine._proto.ngram.v1 import ngram_pb2, ngram_pb2_grpc
    from engine.serve.rpcs import queries_of
    from engine.serve.servicer import NgramServicer

    servicer = NgramServicer(tiny_index[0])
    for m in ngram_pb2.DESCRIPTOR.services_by_name["NgramService"].methods:
        assert callable(getattr(NgramServicer, "_" + m.name, None)), f"NgramServicer has no _{m.name}"
        handler = getattr(servicer, m.name)
        assert handler is not getattr(ngram_pb2_grpc.NgramServiceServicer, m.name, None)
        assert m.name in vars(servicer), f"{m.name} is not registered on the servicer"
        if m.name != "GetIndexInfo":
            assert queries_of(m.name), f"{m.name} is missing from engine.serve.rpcs.QUERIES"
