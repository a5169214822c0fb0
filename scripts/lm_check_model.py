#!/usr/bin/env python
"""Check that the SmolLM2-135M copy on this machine is the reference one: a sha256 over its weights
(fp32, sorted by name) and its greedy continuations of a recorded trace's prompts
(scripts/lm_trace.py), compared token by token.

    python scripts/lm_check_model.py --trace /tmp/trace-soc.json --device cuda
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def weights_sha256(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import torch

    from lm_integration import smollm2

    if not smollm2.is_available():
        smollm2.convert()
    model, _ = smollm2.load(device=args.device)
    out = {"weights_sha256": weights_sha256(model), "device": args.device}
    if args.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    if args.trace:
        tr = json.loads(Path(args.trace).read_text())
        same = total = rows_same = 0
        first_diff = []
        for p, g in zip(tr["prompts"], tr["greedy"]):
            ids = torch.tensor([p], device=args.device)
            got = model.generate(ids, max_new_tokens=len(g), do_sample=False)[0, len(p):].tolist()
            k = next((i for i, (a, b) in enumerate(zip(got, g)) if a != b), min(len(got), len(g)))
            first_diff.append(k)
            same += k
            total += len(g)
            rows_same += got == g
        out.update(greedy_prompts=len(tr["greedy"]), greedy_prompts_identical=rows_same,
                   greedy_tokens_before_first_difference=same, greedy_tokens=total, first_difference_at=first_diff)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
