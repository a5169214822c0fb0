"""What a verification pass over 1 + n tokens costs, weights as stored against column-major.

    python bench/bench_step_cost.py [--rounds 4] [--threads 1] [--context 256]

Loads SmolLM2-135M (``ngram fetch smollm2``) and alternates, round after round in one process, the
weights as transformers lays them out and ``lm_integration.cpu_layout.use_column_major_linears``
(the same tensors' values, re-laid), measuring each time with
``lm_integration.step_cost.measure_step_cost`` (medians of interleaved passes). Prints the median
over rounds of each pass size, in ms, and the fitted ``draft_overhead`` / ``token_cost`` that
``TreeDrafter`` takes. Alternating rounds keep drift on a shared machine from favouring either layout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4, help="rounds per layout, alternating (default 4)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as bench_lm)")
    ap.add_argument("--context", type=int, default=256, help="tokens in the cache before each pass")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 2, 4, 8, 12, 16, 24, 32],
                    help="draft tokens per pass (0: a greedy step)")
    args = ap.parse_args(argv)

    import torch

    from lm_integration import smollm2
    from lm_integration.cpu_layout import use_column_major_linears
    from lm_integration.step_cost import fit_step_cost, measure_step_cost

    torch.set_num_threads(args.threads)
    model, _ = smollm2.load()
    stored = [(m, name, p) for m in model.modules() for name, p in m.named_parameters(recurse=False)]
    use_column_major_linears(model)
    column = [(m, name, p) for m in model.modules() for name, p in m.named_parameters(recurse=False)]

    def lay(params):
        for m, name, p in params:
            setattr(m, name, p)

    runs: dict[str, list[dict]] = {"as stored": [], "column-major": []}
    for r in range(args.rounds):
        for label, params in (("as stored", stored), ("column-major", column))[:: 1 if r % 2 else -1]:
            lay(params)
            runs[label].append(measure_step_cost(model, context_len=args.context, sizes=args.sizes).measured)
    print(f"SmolLM2-135M, {torch.get_num_threads()} thread(s), {args.context}-token context, "
          f"{args.rounds} rounds per layout; ms per pass over 1 + n tokens (median of rounds)")
    print("| layout | " + " | ".join(f"n={n}" for n in args.sizes) + " | draft_overhead | token_cost |")
    print("|---" * (len(args.sizes) + 3) + "|")
    for label, rounds in runs.items():
        med = {n: statistics.median(r[n] for r in rounds) for n in args.sizes}
        fit = fit_step_cost(med)
        print(f"| {label} | " + " | ".join(f"{1000 * med[n]:.1f}" for n in args.sizes)
              + f" | {fit.draft_overhead:.3f} | {fit.token_cost:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
