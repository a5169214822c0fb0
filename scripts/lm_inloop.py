#!/usr/bin/env python
"""Per-step overhead of the prior and the drafters inside real decoding (the model's forward passes
in between leave the caches cold), this tree's lm_integration against an older revision's, in one
process over the same index, interleaved per prompt. Reports the median per step, the mean, and the
mean thread-CPU time (immune to preemption by other processes).

    python scripts/lm_inloop.py --trace /tmp/trace-soc.json --baseline-rev 74f2030 --prompts 4

Prior: model.generate with the processor, 32 new tokens per prompt (the first call, which matches
the whole prompt, is left out). Drafters: speculative_generate, 48 new tokens per prompt.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", required=True, help="written by scripts/lm_trace.py (prompts and index)")
    ap.add_argument("--baseline-rev", required=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prior-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--lambdas", type=float, nargs=2, default=(0.83, 0.26))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch
    from transformers import LogitsProcessorList

    import engine
    import lm_integration
    from lm_integration import smollm2
    from lm_overhead import load_baseline

    torch.set_num_threads(args.threads)
    tr = json.loads(Path(args.trace).read_text())
    index = engine.NgramIndex.open(tr["index"])
    index.warmup()
    model, _ = smollm2.load()
    pkgs = {"new": lm_integration, args.baseline_rev: load_baseline(args.baseline_rev)}
    mods = {tag: (importlib.import_module(p.__name__ + ".prior"), importlib.import_module(p.__name__ + ".speculative"))
            for tag, p in pkgs.items()}
    prior = {tag: [] for tag in pkgs}
    prior_cpu = {tag: [] for tag in pkgs}
    drafter = {(tag, kind): [] for tag in pkgs for kind in ("∞-gram", "hybrid")}
    drafter_cpu = {k: [] for k in drafter}
    for p in tr["prompts"][: args.prompts]:
        ids = torch.tensor([p])
        for tag, (prior_mod, _) in mods.items():
            proc = prior_mod.InfgramLogitsProcessor(index, lambda_sparse=args.lambdas[0], lambda_dense=args.lambdas[1])
            steps = []

            def timed(input_ids, scores, proc=proc, steps=steps):
                c0, t0 = time.thread_time(), time.perf_counter()
                out = proc(input_ids, scores)
                steps.append((time.perf_counter() - t0, time.thread_time() - c0))
                return out

            model.generate(ids, max_new_tokens=args.prior_tokens, do_sample=False,
                           logits_processor=LogitsProcessorList([timed]))
            prior[tag] += [s[0] for s in steps[1:]]
            prior_cpu[tag] += [s[1] for s in steps[1:]]
        for kind in ("∞-gram", "hybrid"):
            for tag, pkg in pkgs.items():
                d = pkg.InfgramDrafter(index) if kind == "∞-gram" else pkg.HybridDrafter(index)
                steps = []
                orig = d.propose

                def timed_propose(context, k, key=0, orig=orig, steps=steps):
                    c0, t0 = time.thread_time(), time.perf_counter()
                    out = orig(context, k, key)
                    steps.append((time.perf_counter() - t0, time.thread_time() - c0))
                    return out

                d.propose = timed_propose
                mods[tag][1].speculative_generate(model, d, ids, args.new_tokens, num_draft=8)
                drafter[(tag, kind)] += [s[0] for s in steps]
                drafter_cpu[(tag, kind)] += [s[1] for s in steps]

    def row(name, v, c):
        return (f"| {name} | {1000 * statistics.median(v):.3f} | {1000 * statistics.mean(v):.3f} | "
                f"{1000 * statistics.mean(c):.3f} | {len(v)} |")

    import os

    print(f"in-loop per-step overhead, {args.prompts} prompts, methods interleaved per prompt; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| what | median ms | mean ms | CPU ms (mean) | steps |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for tag in pkgs:
        print(row(f"{tag}: prior", prior[tag], prior_cpu[tag]))
    for (tag, kind), v in drafter.items():
        print(row(f"{tag}: {kind} drafter", v, drafter_cpu[(tag, kind)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
