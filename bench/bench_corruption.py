"""Random damage to small u8/u16/u32 indexes: open, query and verify each damaged copy in a subprocess.

    python bench/bench_corruption.py --n 1000 [--seed 0] [--workdir DIR]

Prints how many corruptions ran, how many killed the process with a signal (target 0), how many
raised something other than an engine.NgramError, and how many changed an answer (or made the
index refuse to open) while ``verify_index`` (default options: checksums and sampled order)
reported nothing (target 0). ``silent without checksums`` counts the same for
``verify_index(full=True, checksums=False)``, for information: the structural checks alone cannot
see a changed byte that leaves every file well formed. The harness is tests/helpers/corruption.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import corruption  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="corruptions in all (spread over u8, u16, u32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--show", type=int, default=10, help="failure examples to print")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        sources = {name: corruption.build_case(work / "pristine" / name, name) for name in corruption.CASES}
        rng = np.random.default_rng(args.seed)
        jobs = [{"source": str(sources[n]), "case": n, "corruption": None} for n in corruption.CASES]
        names = list(corruption.CASES)
        for i in range(args.n):
            name = names[i % len(names)]
            jobs.append({"source": str(sources[name]), "case": name,
                         "corruption": corruption.random_corruption(rng, name)})
        started = time.time()
        results = corruption.run_jobs(work / "jobs", jobs)
        reference = {}
        for job, res in zip(jobs[:len(names)], results[:len(names)]):
            if "answers" not in res or res.get("problems"):
                print(f"pristine {job['case']} index failed: {res}", file=sys.stderr)
                return 2
            reference[job["case"]] = res["answers"]
        summary = corruption.judge(results, reference, jobs)
    print(f"corruptions: {summary['corruptions']} (u8/u16/u32; {time.time() - started:.0f} s)")
    print(f"signals: {summary['signals']}")
    print(f"untyped errors: {summary['untyped']}")
    print(f"verify crashed: {summary['verify_crashed']}")
    print(f"answers changed or refused: {summary['changed']} (refused with an NgramError: {summary['refused']})")
    print(f"answers-changed-but-verify-silent: {summary['silent']}")
    print(f"silent without checksums (verify --full --no-checksums): {summary['silent_without_checksums']}")
    for example in summary["examples"][:args.show]:
        print(json.dumps(example)[:800])
    return 0 if summary["signals"] == summary["untyped"] == summary["silent"] == summary["verify_crashed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
