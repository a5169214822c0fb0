#!/usr/bin/env python
"""Per-step overhead of the prior and the drafters inside real decoding (the model's forward passes
in between leave the caches cold), this tree's lm_integration against an older revision's, in one
process over the same index, interleaved per prompt. Reports the median per step, the mean, and the
mean thread-CPU time (immune to preemption by other processes).

    python scripts/lm_inloop.py --trace /tmp/trace-soc.json --baseline-rev 74f2030 --prompts 4

Prior: model.generate with the processor, 32 new tokens per prompt (the first call, which matches
the whole prompt, is left out). Drafters: speculative_generate, 48 new tokens per prompt.

On a GPU (``--device cuda``) the prior's clock starts after a synchronisation (else it would count
the rest of the forward pass, which the processor's read-back of the tokens waits for), and
generate() is also timed end to end with each prior and without one, interleaved per prompt: the
difference per step is the prior's whole cost, with nothing left outside the clock. A machine
without the git history takes ``--baseline-rev DIR`` (a package written by ``scripts/lm_overhead.py
--baseline-rev REV --export-baseline DIR``).
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
    ap.add_argument("--index", help="the index directory (default: the one the trace names)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prior-only", action="store_true", help="skip the drafters")
    ap.add_argument("--e2e-repeats", type=int, default=2,
                    help="end-to-end generate() runs per prompt with each prior and without (0: off)")
    ap.add_argument("--json", help="write the raw per-step figures here")
    args = ap.parse_args(argv)

    import torch
    from transformers import LogitsProcessorList

    import engine
    import lm_integration
    from lm_integration import smollm2
    from lm_overhead import load_baseline

    torch.set_num_threads(args.threads)
    tr = json.loads(Path(args.trace).read_text())
    index = engine.NgramIndex.open(args.index or tr["index"])
    index.warmup()
    model, _ = smollm2.load(device=args.device)
    cuda = args.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    pkgs = {"new": lm_integration, Path(args.baseline_rev).name: load_baseline(args.baseline_rev)}
    mods = {tag: (importlib.import_module(p.__name__ + ".prior"), importlib.import_module(p.__name__ + ".speculative"))
            for tag, p in pkgs.items()}
    prior = {tag: [] for tag in pkgs}
    prior_cpu = {tag: [] for tag in pkgs}
    drafter = {(tag, kind): [] for tag in pkgs for kind in ("∞-gram", "hybrid")}
    drafter_cpu = {k: [] for k in drafter}
    e2e = {tag: [] for tag in [None, *pkgs]}  # generate() seconds per new token
    same = {tag: True for tag in pkgs}
    same_trace = []  # this tree's prior-guided tokens against the trace's (recorded on CPU)
    if args.prior_only:
        drafter = {}
    lam = dict(lambda_sparse=args.lambdas[0], lambda_dense=args.lambdas[1])
    for p, cont in zip(tr["prompts"][: args.prompts], tr["prior"]):
        ids = torch.tensor([p], device=args.device)
        outs = {}
        for tag, (prior_mod, _) in mods.items():
            proc = prior_mod.InfgramLogitsProcessor(index, **lam)
            steps = []

            def timed(input_ids, scores, proc=proc, steps=steps):
                sync()
                c0, t0 = time.thread_time(), time.perf_counter()
                out = proc(input_ids, scores)
                steps.append((time.perf_counter() - t0, time.thread_time() - c0))
                return out

            outs[tag] = model.generate(ids, max_new_tokens=args.prior_tokens, do_sample=False,
                                       logits_processor=LogitsProcessorList([timed])).cpu()
            prior[tag] += [s[0] for s in steps[1:]]
            prior_cpu[tag] += [s[1] for s in steps[1:]]
            same[tag] &= torch.equal(outs[tag], outs["new"])
        m = min(len(cont), outs["new"].shape[1] - len(p))
        same_trace.append(outs["new"][0, len(p):len(p) + m].tolist() == cont[:m])
        for _ in range(args.e2e_repeats):
            for tag in e2e:
                lp = LogitsProcessorList([mods[tag][0].InfgramLogitsProcessor(index, **lam)] if tag else [])
                sync()
                t0 = time.perf_counter()
                out = model.generate(ids, max_new_tokens=args.prior_tokens, do_sample=False, logits_processor=lp)
                sync()
                e2e[tag].append((time.perf_counter() - t0) / max(out.shape[1] - ids.shape[1], 1))
        for kind in ("∞-gram", "hybrid") if drafter else ():
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

    print(f"in-loop per-step overhead on {args.device}, {args.prompts} prompts, methods interleaved per prompt; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| what | median ms | mean ms | CPU ms (mean) | steps |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for tag in pkgs:
        print(row(f"{tag}: prior", prior[tag], prior_cpu[tag]))
    for (tag, kind), v in drafter.items():
        print(row(f"{tag}: {kind} drafter", v, drafter_cpu[(tag, kind)]))
    print("\nsame tokens with each prior as with this tree's: "
          + ", ".join(f"{tag}: {'yes' if ok else 'NO'}" for tag, ok in same.items())
          + f"; as the trace's (recorded on CPU): {sum(same_trace)} of {len(same_trace)} prompts")
    if args.e2e_repeats:
        n = args.e2e_repeats
        base = e2e[None]
        print(f"end to end, generate() ms per new token ({args.prior_tokens} tokens, {n} runs per prompt "
              f"interleaved; median over runs of the difference to the run without a prior just before it):")
        print(f"| without prior | {1000 * statistics.median(base):.3f} | - |")
        for tag in pkgs:
            d = [1000 * (a - b) for a, b in zip(e2e[tag], base)]
            print(f"| prior, {tag} | {1000 * statistics.median(e2e[tag]):.3f} | {statistics.median(d):+.3f} "
                  f"(mean {statistics.mean(d):+.3f}) |")
    if args.json:
        Path(args.json).write_text(json.dumps({"prior": prior, "prior_cpu": prior_cpu,
                                               "e2e": {str(k): v for k, v in e2e.items()},
                                               "drafter": {f"{t}: {k}": v for (t, k), v in drafter.items()},
                                               "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
