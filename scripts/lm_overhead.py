#!/usr/bin/env python
"""Per-step overhead of the ∞-gram prior and the drafters, replayed from a recorded trace (no model
forward passes), optionally against an older revision of lm_integration, methods interleaved per
prompt and repeated so that load from other processes hits them alike; medians reported.

    python scripts/lm_trace.py --out /tmp/trace-soc.json            # once (runs the model)
    python scripts/lm_overhead.py --trace /tmp/trace-soc.json --baseline-rev 74f2030 --repeats 5

Prior: the processor is called on every prefix of each prompt's prior-guided continuation with a
fixed random score row, as generate() would call it; per-step time is the processor's own clock.
Drafters: speculative decoding is simulated exactly with the recorded greedy continuation as the
verifier (a draft token is accepted iff it equals the greedy token there), so tokens per step and
drafter ms per step are what speculative_generate would see, minus the model.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_baseline(rev: str, dest: str | None = None):
    """lm_integration as of git revision ``rev``, imported as package ``lm_integration_<rev>``.
    ``rev`` may also be a package directory written earlier (``--export-baseline``), for machines
    without the git history; ``dest``: write the package there (its parent must exist)."""
    if Path(rev).is_dir() and (Path(rev) / "__init__.py").exists():
        d = Path(rev).resolve()
        sys.path.insert(0, str(d.parent))
        return importlib.import_module(d.name)
    name = "lm_integration_" + re.sub(r"\W", "_", rev)
    tmp = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="lm_baseline_"))
    pkg = tmp / name
    pkg.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(["git", "ls-tree", "--name-only", rev, "lm_integration/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        if not f.endswith(".py"):
            continue
        src = subprocess.run(["git", "show", f"{rev}:{f}"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout
        src = re.sub(r"\blm_integration\b(?=[\. ])", name, src)
        (pkg / Path(f).name).write_text(src)
    sys.path.insert(0, str(tmp))
    return importlib.import_module(name)


_POLLUTE = None


def pollute():
    """Stream through a buffer the size of the model's weights' working set, as a forward pass
    does between two drafting or prior steps (their data and code are then out of the caches)."""
    if _POLLUTE is not None:
        _POLLUTE[:] += 1.0


def simulate(drafter, prompts, greedy, num_draft):
    """(drafter seconds, steps after the prefill, new tokens) of speculative decoding with greedy
    verification against the recorded continuations."""
    secs, steps, new = 0.0, 0, 0
    for p, g in zip(prompts, greedy):
        gen = [g[0]]  # the prefill's token
        steps += 0
        while len(gen) < len(g):
            budget = min(num_draft, len(g) - len(gen) - 1)
            pollute()
            t0 = time.perf_counter()
            d = drafter.propose(p + gen, budget, key=0) if budget > 0 else []
            secs += time.perf_counter() - t0
            m = 0
            while m < len(d) and d[m] == g[len(gen) + m]:
                m += 1
            gen += g[len(gen):len(gen) + m + 1]
            steps += 1
        new += len(gen)
    return secs, steps, new


def prior_ms(pkg, index, prompts, conts, lam, V, threads_scores, device="cpu"):
    """Per-prompt mean ms per processor call (bench_lm's measure), one value per prompt. On a GPU
    the inputs are made there and the clock starts after a synchronisation, as in bench_lm."""
    import torch

    proc_cls = importlib.import_module(pkg.__name__ + ".prior").InfgramLogitsProcessor
    cuda = device.startswith("cuda")
    out = []
    for p, c in zip(prompts, conts):
        proc = proc_cls(index, lambda_sparse=lam[0], lambda_dense=lam[1])
        seq = p + c
        for t in range(len(p), len(seq)):
            x, sc = torch.tensor([seq[:t]], device=device), threads_scores.clone()
            pollute()
            if cuda:
                torch.cuda.synchronize()
            proc(x, sc)
        if cuda:
            torch.cuda.synchronize()
        out.append(1000.0 * proc.seconds / max(proc.calls, 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", required=True, help="written by scripts/lm_trace.py")
    ap.add_argument("--baseline-rev", help="also time lm_integration as of this git revision")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--num-draft", type=int, default=8)
    ap.add_argument("--min-prob", type=float, default=0.0)
    ap.add_argument("--prior-prompts", type=int, default=4)
    ap.add_argument("--lambdas", type=float, nargs=2, default=(0.83, 0.26))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the raw per-repeat figures here")
    ap.add_argument("--index", help="the index directory (default: the one the trace names)")
    ap.add_argument("--device", default="cpu", help="where the prior's score rows live (cpu, cuda)")
    ap.add_argument("--prior-only", action="store_true", help="skip the drafters")
    ap.add_argument("--export-baseline", metavar="DIR",
                    help="write lm_integration as of --baseline-rev under DIR (for --baseline-rev DIR/<package> "
                         "on a machine without the git history) and exit")
    ap.add_argument("--pollute-mb", type=int, default=0,
                    help="touch this many MB between steps (a forward pass evicts the caches; 0: off)")
    args = ap.parse_args(argv)

    if args.export_baseline:
        print(load_baseline(args.baseline_rev, dest=args.export_baseline).__file__)
        return 0

    import numpy as np
    import torch

    import engine
    import lm_integration

    torch.set_num_threads(args.threads)
    global _POLLUTE
    if args.pollute_mb:
        _POLLUTE = np.zeros(args.pollute_mb << 17, dtype=np.float64)
    tr = json.loads(Path(args.trace).read_text())
    index = engine.NgramIndex.open(args.index or tr["index"])
    index.warmup()
    V = 49152
    scores = torch.from_numpy(np.random.default_rng(0).normal(0, 5, size=(1, V)).astype(np.float32)).to(args.device)
    pkgs = {"new": lm_integration}
    if args.baseline_rev:
        pkgs["baseline"] = load_baseline(args.baseline_rev)
    kw = dict(min_prob=args.min_prob)
    methods = {}
    for tag, pkg in pkgs.items():
        methods[f"{tag}: ∞-gram drafter"] = lambda pkg=pkg: pkg.InfgramDrafter(index, **kw)
        methods[f"{tag}: hybrid drafter"] = lambda pkg=pkg: pkg.HybridDrafter(index, **kw)
    methods["prompt lookup"] = lambda: lm_integration.PromptLookupDrafter(max_ngram=3)
    if args.prior_only:
        methods = {}
    res = {m: [] for m in methods}
    tps = {}
    prior = {tag: [] for tag in pkgs}
    P = args.prior_prompts
    for _ in range(args.repeats):
        for tag, pkg in pkgs.items():
            prior[tag].append(statistics.median(prior_ms(pkg, index, tr["prompts"][:P], tr["prior"][:P],
                                                         args.lambdas, V, scores, args.device)))
        for name, make in methods.items():
            secs, steps, new = simulate(make(), tr["prompts"], tr["greedy"], args.num_draft)
            res[name].append(1000.0 * secs / max(steps, 1))
            tps[name] = new / (steps + len(tr["prompts"]))
    print(f"{len(tr['prompts'])} prompts, {args.repeats} repeats, methods interleaved; medians over repeats "
          f"(min-max), prior on {args.device}. load average {__import__('os').getloadavg()[0]:.1f}")
    print("| what | ms / step (median) | min | max | tokens / step |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for tag in pkgs:
        v = prior[tag]
        print(f"| {tag}: prior (interpolation, per call) | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} | - |")
    for name, v in res.items():
        print(f"| {name} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} | {tps[name]:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"prior": prior, "drafters": res, "tokens_per_step": tps,
                                               "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
