#!/usr/bin/env python
"""Record SmolLM2's greedy continuations of bench_lm's prompts once, so that the drafter's and the
prior's per-step overhead can be replayed without the model (scripts/lm_overhead.py).

    python scripts/lm_trace.py --corpus kernel:sound/soc --prompt-offset 256 --prompts 8 --new-tokens 48 \
        --out /tmp/trace-soc.json

Writes {"index": DIR, "prompts": [[ids]], "greedy": [[ids]], "prior": [[ids]]}: the greedy
continuation and (with --prior-lambdas) the continuation under the ∞-gram interpolation prior.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="kernel:sound/soc")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-offset", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--prior-lambdas", type=float, nargs=2, default=(0.83, 0.26),
                    help="λ_sparse λ_dense of the prior run (bench_lm's tuned values on kernel:sound/soc)")
    ap.add_argument("--prior-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from transformers import LogitsProcessorList

    from bench.bench_lm import ensure_index, load_corpus
    from engine.fetch import cache_dir
    from lm_integration import smollm2
    from lm_integration.prior import InfgramLogitsProcessor

    torch.set_num_threads(args.threads)
    train, held, _, index_name = load_corpus(args.corpus)
    index = ensure_index(train, smollm2.model_dir() / "tokenizer.json", cache_dir() / "bench_lm", index_name)
    model, tok = smollm2.load()
    held_ids = [tok.encode(t, add_special_tokens=False) for _, t in held]
    need = args.prompt_offset + args.prompt_tokens
    prompts = [ids[args.prompt_offset:need] for ids in held_ids if len(ids) >= need][: args.prompts]
    greedy, prior = [], []
    t0 = time.perf_counter()
    for p in prompts:
        ids = torch.tensor([p])
        out = model.generate(ids, max_new_tokens=args.new_tokens, do_sample=False)
        greedy.append(out[0, len(p):].tolist())
        proc = InfgramLogitsProcessor(index, lambda_sparse=args.prior_lambdas[0], lambda_dense=args.prior_lambdas[1])
        out = model.generate(ids, max_new_tokens=args.prior_tokens, do_sample=False,
                             logits_processor=LogitsProcessorList([proc]))
        prior.append(out[0, len(p):].tolist())
    print(f"[lm_trace] {len(prompts)} prompts in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    Path(args.out).write_text(json.dumps({
        "index": str(cache_dir() / "bench_lm" / index_name), "args": vars(args),
        "prompts": prompts, "greedy": greedy, "prior": prior}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
