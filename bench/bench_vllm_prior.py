"""The ∞-gram prior inside vLLM (lm_integration.vllm_logits) against Hugging Face greedy decoding with
lm_integration.prior.InfgramLogitsProcessor: same tokens, and what the prior costs vLLM.

Runs in vLLM's own virtual environment (see bench/bench_vllm.py for how it is built), from the
repository root, with the held-out prompts and the SmolLM2-tokenized index of bench_lm.py:

    PYTHONPATH=. nice -n 19 /tmp/vllm-venv/bin/python bench/bench_vllm_prior.py --held-out /tmp/held.json \\
        --index ~/.cache/ngram-engine/bench_lm/kernel-sound-soc-train-smollm2

Four greedy decodings of every prompt (batch size 1, a fixed number of new tokens, end-of-text not
stopping any of them): HF ``generate`` without and with the prior, and one vLLM engine (built with the
logits processor, no prefix cache) serving requests without and with ``extra_args={"infgram": {...}}``,
interleaved per prompt. The index is warmed up and each path runs once before anything is timed. The HF pair
without the prior tells how often HF and vLLM disagree on their own (their kernels differ in the
last bits); the pair with it is the test of the plugin. Where tokens differ, the report says at
which prompt and position, and the two logit margins there.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench.bench_vllm import add_prompt_args, held_out_prompts
from bench.common import write_report

PROCESSOR = "lm_integration.vllm_logits:InfgramVllmLogitsProcessor"


def hf_greedy(model, prompts, new_tokens: int, prior_factory) -> tuple[list[list[int]], float, float]:
    """HF greedy continuations (end-of-text ignored) and the wall and CPU seconds they took;
    ``prior_factory()`` gives a fresh logits processor per prompt, or None."""
    import copy

    import torch
    from transformers import LogitsProcessorList

    gc = copy.deepcopy(model.generation_config)
    gc.eos_token_id = None
    gc.do_sample = False
    gc.max_new_tokens = new_tokens
    outs, seconds, cpu = [], 0.0, 0.0
    for p in prompts:
        procs = LogitsProcessorList([prior_factory()] if prior_factory else [])
        x = torch.tensor([p])
        c0, t0 = cpu_seconds(), time.perf_counter()
        with torch.no_grad():
            y = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gc, logits_processor=procs)
        seconds += time.perf_counter() - t0
        cpu += cpu_seconds() - c0
        outs.append(y[0, len(p):].tolist())
    return outs, seconds, cpu


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and all its children (vLLM's engine and worker)."""
    import psutil

    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    total = 0.0
    for pr in procs:
        try:
            t = pr.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def vllm_greedy(llm, prompt, new_tokens: int, extra_args) -> tuple[list[int], float, float]:
    """vLLM's greedy continuation of one prompt (end-of-text ignored), its wall and CPU seconds."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    sp = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True, extra_args=extra_args)
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], sp, use_tqdm=False)
    return list(out[0].outputs[0].token_ids), time.perf_counter() - t0, cpu_seconds() - c0


def differences(a: list[list[int]], b: list[list[int]]) -> list[tuple[int, int]]:
    """(prompt, first differing position) for every prompt whose tokens differ."""
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            out.append((i, next((j for j, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))))
    return out


def margin_at(model, prompt, tokens, pos, prior_factory) -> float:
    """HF's top-1 minus top-2 score (after the prior, when given) at a position of a continuation:
    how close to a tie the step where two decoders part was."""
    import torch

    ids = torch.tensor([prompt + tokens[:pos]])
    with torch.no_grad():
        scores = model(input_ids=ids).logits[:, -1].float()
    if prior_factory:
        scores = prior_factory()(ids, scores)
    top = torch.topk(scores[0], 2).values
    return float(top[0] - top[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_prompt_args(ap, "SmolLM2-tokenized index for the prior (NGRAM_INDEX)")
    ap.add_argument("--lambdas", type=float, nargs=2, default=(0.83, 0.26), metavar=("SPARSE", "DENSE"))
    ap.add_argument("--repeats", type=int, default=2, help="vLLM passes over the prompts per configuration")
    ap.add_argument("--out", default="bench/results/vllm_prior.md")
    args = ap.parse_args(argv)
    if not args.index:
        ap.error("--index is needed (the prior's corpus)")
    index_dir = str(Path(args.index).expanduser())
    os.environ["NGRAM_INDEX"] = index_dir
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    import torch
    from transformers import AutoModelForCausalLM

    from engine.index import NgramIndex
    from lm_integration.prior import InfgramLogitsProcessor

    prompts = held_out_prompts(args)
    settings = {"lambda_sparse": args.lambdas[0], "lambda_dense": args.lambdas[1]}
    index = NgramIndex.open(index_dir)
    index.warmup()  # compile or load the query kernels before anything is timed

    def prior():
        return InfgramLogitsProcessor(index, check_tokenizer=False, **settings)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    hf_greedy(model, prompts[:1], args.new_tokens, prior)  # warm up
    hf_plain, hf_plain_s, hf_plain_c = hf_greedy(model, prompts, args.new_tokens, None)
    hf_prior, hf_prior_s, hf_prior_c = hf_greedy(model, prompts, args.new_tokens, prior)

    from vllm import LLM

    # no prefix cache: every request computes its prompt, whichever configuration ran it first. The
    # worker process writes the prior's own clock (vllm_logits.TIMES) to a file (in-process engines
    # fail on this build: "'_lib_fn_wrapper' object has no attribute 'get'" when registering kernels).
    import json
    import tempfile

    from lm_integration.vllm_logits import TIMES_ENV

    times_file = Path(tempfile.mkdtemp()) / "prior_times.json"
    os.environ[TIMES_ENV] = str(times_file)
    llm = LLM(model=args.model, dtype="float32", max_model_len=2048, enforce_eager=True,
              enable_prefix_caching=False, logits_processors=[PROCESSOR])

    def prior_times() -> dict:
        return json.loads(times_file.read_text())
    configs = (("plain", None), ("prior", {"infgram": settings}))
    for _, extra in configs:  # warm up both paths
        vllm_greedy(llm, prompts[0], args.new_tokens, extra)
    secs = {name: 0.0 for name, _ in configs}
    cpu = {name: 0.0 for name, _ in configs}
    outs = {name: [None] * len(prompts) for name, _ in configs}
    before = prior_times()
    for _ in range(args.repeats):
        for i, p in enumerate(prompts):  # interleaved per prompt, so that load changes hit both alike
            for name, extra in configs:
                o, s, c = vllm_greedy(llm, p, args.new_tokens, extra)
                if outs[name][i] is not None and outs[name][i] != o:
                    raise AssertionError(f"vLLM gave other tokens on a second pass ({name}, prompt {i})")
                outs[name][i] = o
                secs[name] += s / args.repeats
                cpu[name] += c / args.repeats
    import vllm

    tokens = len(prompts) * args.new_tokens
    pairs = (("vLLM greedy vs HF greedy (no prior)", outs["plain"], hf_plain, None),
             ("vLLM + prior vs HF + InfgramLogitsProcessor", outs["prior"], hf_prior, prior))
    lines = [f"### The ∞-gram prior in vLLM {vllm.__version__} (CPU build), SmolLM2-135M, greedy, batch size 1", "",
             f"{len(prompts)} prompts of {args.prompt_tokens} tokens, {args.new_tokens} new tokens each; index "
             f"{index_dir} ({index.num_tokens:,} tokens); λ_sparse {settings['lambda_sparse']}, λ_dense "
             f"{settings['lambda_dense']}; load {os.getloadavg()[0]:.1f} at the end.", "",
             "| comparison | prompts with identical tokens | first differences (prompt, position, HF's top-1 margin) |",
             "| --- | ---: | --- |"]
    report = {"prompts": len(prompts), "new_tokens": args.new_tokens, "settings": settings, "outputs": outs,
              "hf_plain": hf_plain, "hf_prior": hf_prior}
    for label, a, b, pf in pairs:
        diff = differences(a, b)
        where = ", ".join(f"({i}, {j}, {margin_at(model, prompts[i], b[i], j, pf):.4f})" for i, j in diff) or "none"
        lines.append(f"| {label} | {len(prompts) - len(diff)} / {len(prompts)} | {where} |")
        report[label] = diff
    changed = sum(x != y for x, y in zip(outs["plain"], outs["prior"]))
    lines += ["", "| decoder | tokens/s | wall ms per token | CPU ms per token (all processes) |",
              "| --- | ---: | ---: | ---: |"]
    for label, s, c in (("HF generate", hf_plain_s, hf_plain_c), ("HF generate + InfgramLogitsProcessor", hf_prior_s, hf_prior_c),
                        ("vLLM", secs["plain"], cpu["plain"]),
                        ("vLLM + ∞-gram logits processor", secs["prior"], cpu["prior"])):
        lines.append(f"| {label} | {tokens / s:.1f} | {1000 * s / tokens:.2f} | {1000 * c / tokens:.2f} |")
    after = prior_times()
    calls = after["calls"] - before["calls"]
    if not calls:
        raise AssertionError("the prior never ran inside vLLM")
    lines += ["", f"Inside vLLM the prior took {1000 * (after['seconds'] - before['seconds']) / calls:.3f} ms per "
              f"decoding step (CPU {1000 * (after['cpu_seconds'] - before['cpu_seconds']) / calls:.3f} ms; {calls} "
              f"steps; its own clock, around each request's call). HF + InfgramLogitsProcessor minus HF: "
              f"{1000 * (hf_prior_c - hf_plain_c) / tokens:+.2f} ms of CPU per token."]
    lines += ["", f"End to end in vLLM the prior costs {1000 * (secs['prior'] - secs['plain']) / tokens:+.2f} ms of wall time and "
              f"{1000 * (cpu['prior'] - cpu['plain']) / tokens:+.2f} ms of CPU time per token (means over "
              f"{args.repeats} passes, interleaved per prompt; CPU time is what a busy machine does not distort); "
              f"it changed the greedy tokens of {changed} of {len(prompts)} prompts."]
    report.update(prior_calls=calls, prior_seconds=after["seconds"] - before["seconds"],
                  prior_cpu_seconds=after["cpu_seconds"] - before["cpu_seconds"], seconds=secs, cpu_seconds=cpu, hf_seconds={"plain": hf_plain_s, "prior": hf_prior_s},
                  hf_cpu_seconds={"plain": hf_plain_c, "prior": hf_prior_c})
    write_report("\n".join(lines), args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
