"""lm_integration imports neither numba nor grpc (of engine, only its errors, file format and result
types), and its torch-free parts import without torch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ALL_MODULES = [
    "lm_integration", "lm_integration.source", "lm_integration.tokenizer_compat", "lm_integration.infgram",
    "lm_integration.drafter", "lm_integration.fgram", "lm_integration.prior", "lm_integration.speculative",
    "lm_integration.eval_lm", "lm_integration.scone", "lm_integration.smollm2", "lm_integration.context",
    "lm_integration.tree_drafter", "lm_integration.vllm_proposer", "lm_integration.vllm_logits",
    "lm_integration.dynamic_eval", "lm_integration.cpu_layout", "lm_integration.step_cost",
]
TORCH_FREE = ["lm_integration", "lm_integration.tokenizer_compat", "lm_integration.infgram",
              "lm_integration.drafter", "lm_integration.fgram", "lm_integration.eval_lm", "lm_integration.smollm2",
              "lm_integration.context", "lm_integration.tree_drafter", "lm_integration.vllm_proposer"]


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_no_numba_no_grpc():
    code = (
        "import importlib, sys\n"
        f"for m in {ALL_MODULES!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'grpc', 'llvmlite'))\n"
        "eng = sorted(m for m in sys.modules if m.startswith('engine') and m not in ('engine', 'engine.errors', 'engine.format', 'engine.results'))\n"
        "print(bad, eng)\n"
    )
    assert _run(code) == "[] []"


def test_torch_free_parts_import_without_torch():
    # make torch and transformers unimportable, then import the parts that do not need them
    code = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {TORCH_FREE!r}: importlib.import_module(m)\n"
        "from lm_integration import InfgramDrafter, PromptLookupDrafter, TreeDrafter, ContextNgramModel, "
        "check_tokenizer_compat, CausalFgramMatcher\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    assert _run(code) == "[]"
