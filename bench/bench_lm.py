"""LM-integration benchmark: speculative decoding with ∞-gram drafts, the ∞-gram prior's per-step
cost, and held-out perplexity with interpolation, all with SmolLM2-135M on CPU (and a GPU when
one is visible).

    python bench/bench_lm.py                      # KJV Bible: index the training chapters, test on the rest
    python bench/bench_lm.py --prompts 4 --new-tokens 48 --ppl-tokens 2000   # quicker

The corpus is the King James Bible (engine.fetch "kjv"), one document per chapter; every 20th
chapter is held out and never indexed. The index is built once with the model's own tokenizer
(SmolLM2's tokenizer.json) under $NGRAM_CACHE/bench_lm/ and reused. Prints a markdown table and
exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def chapters(jsonl: Path) -> list[tuple[str, str]]:
    """[(citation, text)] with one entry per chapter, in Bible order."""
    out: list[tuple[str, list[str]]] = []
    last = None
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            v = json.loads(line)
            key = (v["book"], v["chapter"])
            if key != last:
                out.append((f"{v['book']} {v['chapter']}", []))
                last = key
            out[-1][1].append(v["text"])
    return [(c, " ".join(vs)) for c, vs in out]


def split(chs, every: int = 20):
    train = [t for i, (_, t) in enumerate(chs) if i % every != every // 2]
    held = [(c, t) for i, (c, t) in enumerate(chs) if i % every == every // 2]
    return train, held


def kernel_files(root: Path, subdir: str) -> list[tuple[str, str]]:
    files = sorted(p for p in (root / subdir).rglob("*") if p.suffix in (".c", ".h") and p.is_file())
    return [(str(p.relative_to(root)), p.read_text(encoding="utf-8", errors="replace")) for p in files]


def load_corpus(name: str):
    """(train texts, [(label, held-out text)], description, index name)."""
    from bench.corpora import fetch  # the catalogue's items and the kernel sources

    if name == "kjv":
        train, held = split(chapters(fetch("kjv") / "kjv.jsonl"))
        return train, held, "the KJV Bible, one document per chapter, every 20th chapter held out", "kjv-train-smollm2"
    if name == "sotu":
        files = sorted(fetch("sotu").glob("*.txt"))
        train, held = split([(p.stem, p.read_text(encoding="utf-8", errors="replace")) for p in files], every=10)
        return (train, held, "233 State of the Union addresses, one document each, every 10th held out",
                "sotu-train-smollm2")
    if name.startswith("kernel:"):
        sub = name.split(":", 1)[1]
        train, held = split(kernel_files(fetch("linux-kernel-src"), sub))
        return (train, held, f"Linux 6.1 {sub}/ .c/.h files, one document per file, every 20th file held out",
                "kernel-" + sub.replace("/", "-") + "-train-smollm2")
    raise SystemExit(f"unknown corpus {name!r}: use kjv, sotu or kernel:SUBDIR (e.g. kernel:sound/soc)")


def ensure_index(train_texts, tokenizer_json: Path, root: Path, name: str):
    import engine

    path = root / name
    if not (path / "manifest.json").exists():
        t0 = time.perf_counter()
        engine.build_index(path, documents=train_texts, tokenizer=str(tokenizer_json), progress=False)
        print(f"[bench_lm] built {path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return engine.NgramIndex.open(path)


def machine(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    s = f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.startswith("cuda"):
        s += f", {torch.cuda.get_device_name(0)}"
    return s


def tree_drafters(index, tok, model, sized: dict) -> dict:
    """The benchmark's TreeDrafters by method name; ``sized``: TreeDrafter's cost arguments for the
    CPU-sized trees (StepCost.drafter_kwargs(), or {} for its defaults)."""
    from lm_integration.tree_drafter import TreeDrafter

    return {
        "tree (context + history)": TreeDrafter(None, **sized),
        "tree (corpus + context + history)": TreeDrafter(index, tokenizer=tok, model=model, **sized),
        # sized as if verification were free (a GPU): more tokens per step, bigger passes
        "tree, large (corpus + context + history)": TreeDrafter(index, tokenizer=tok, model=model, token_cost=0.0,
                                                                max_nodes=48, min_path_prob=0.03, branch=5),
    }


def run_spec(model, tok, index, prompts, new_tokens, num_draft, device, min_count, with_null=False, min_prob=0.0,
             lookahead=8, step_cost=None, only=None):
    """Every method on every prompt, methods interleaved per prompt (so that load drift on a shared
    machine hits them alike). ``step_cost``: the measured cost of a verification pass
    (lm_integration.step_cost), which sizes the CPU trees; None keeps TreeDrafter's defaults. ``only``:
    substrings of the method names to run (HF greedy always runs: it is the reference).
    Returns {method: (SpecStats summed over prompts, same_as_greedy, prompts slower than greedy)}."""
    import torch

    from lm_integration import HybridDrafter, InfgramDrafter, NullDrafter, PromptLookupDrafter
    from lm_integration.speculative import SpecStats, speculative_generate, speculative_generate_tree
    from lm_integration.tree_drafter import TreeDrafter

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    methods = {"greedy (HF generate)": None}
    if with_null:
        methods["greedy (our loop, no drafts)"] = lambda: NullDrafter()
    methods.update({
        "prompt lookup (context only)": lambda: PromptLookupDrafter(max_ngram=3),
        "∞-gram drafter (corpus only)": lambda: InfgramDrafter(index, min_count=min_count, min_prob=min_prob,
                                                               lookahead=lookahead, tokenizer=tok),
        "hybrid (corpus + context)": lambda: HybridDrafter(index, min_count=min_count, min_prob=min_prob,
                                                           lookahead=lookahead, tokenizer=tok),
    })
    # Draft trees, verified in one pass each. One drafter per method for the whole run, reset between
    # prompts: its history (earlier outputs) and calibration carry over, as in a serving process.
    sized = step_cost.drafter_kwargs() if step_cost is not None else {}
    methods.update(tree_drafters(index, tok, model, sized))
    if only:
        methods = {name: m for name, m in methods.items() if m is None or any(o in name for o in only)}
    agg = {name: SpecStats() for name in methods}
    same = {name: True for name in methods}
    slower = {name: 0 for name in methods}
    for p in prompts:
        ids = torch.tensor([p], device=device)
        ref = None
        greedy_seconds = None
        for name, make in methods.items():
            sync()
            t0 = time.perf_counter()
            if make is None:
                out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
            elif isinstance(make, TreeDrafter):
                make.reset()
                out, st = speculative_generate_tree(model, make, ids, new_tokens, width=3, num_draft=num_draft,
                                                    return_stats=True)
            else:
                out, st = speculative_generate(model, make(), ids, new_tokens, num_draft=num_draft, return_stats=True)
            sync()
            a = agg[name]
            seconds = time.perf_counter() - t0
            a.seconds += seconds
            if make is None:
                greedy_seconds = seconds
            else:
                slower[name] += seconds > greedy_seconds
            if make is None:
                ref = out.cpu()
                n = out.shape[1] - ids.shape[1]
                a.new_tokens += n
                a.row_steps += n
                a.steps += n
            else:
                same[name] &= torch.equal(out.cpu(), ref)
                for k in ("new_tokens", "row_steps", "steps", "drafted", "accepted", "drafter_seconds",
                          "drafter_cpu_seconds"):
                    setattr(a, k, getattr(a, k) + getattr(st, k))
                a.drafter_step_seconds += st.drafter_step_seconds
    return {name: (agg[name], same[name], slower[name]) for name in methods}


def prior_overhead(model, index, prompts, new_tokens, device, lam_s, lam_d):
    """The prior's cost per decoding step inside model.generate: (median over prompts of the mean
    wall ms per step, median wall ms over all steps, mean thread-CPU ms per step, end-to-end ms
    per step that generate() with the prior takes over generate() without it).

    On a GPU the processor's clock starts after a synchronisation (else it would count the rest of
    the forward pass, still running when generate() calls it); the end-to-end figure has no such
    help (generate with and without the prior, interleaved per prompt)."""
    import torch
    from transformers import LogitsProcessorList

    from lm_integration.prior import InfgramLogitsProcessor

    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    per_prompt, steps, extra = [], [], []
    cpu = calls = 0.0
    for p in prompts:
        ids = torch.tensor([p], device=device)
        proc = InfgramLogitsProcessor(index, lambda_sparse=lam_s, lambda_dense=lam_d)
        proc.step_seconds = []

        def synced(input_ids, scores, proc=proc):
            sync()
            return proc(input_ids, scores)

        model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                       logits_processor=LogitsProcessorList([synced if cuda else proc]))
        per_prompt.append(proc.seconds / max(proc.calls, 1))
        steps += proc.step_seconds
        cpu += proc.cpu_seconds
        calls += proc.calls
        times = []
        for with_prior in (False, True, False, True):
            lp = LogitsProcessorList([InfgramLogitsProcessor(index, lambda_sparse=lam_s, lambda_dense=lam_d)]
                                     if with_prior else [])
            sync()
            t0 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, logits_processor=lp)
            sync()
            times.append((time.perf_counter() - t0) / max(out.shape[1] - ids.shape[1], 1))
        extra.append(1000 * (times[1] + times[3] - times[0] - times[2]) / 2)
    return (statistics.median(per_prompt) * 1000, statistics.median(steps) * 1000 if steps else 0.0,
            1000 * cpu / max(calls, 1), statistics.median(extra))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="kjv", help="kjv (default), sotu, or kernel:SUBDIR, e.g. kernel:sound/soc")
    ap.add_argument("--prompts", type=int, default=8, help="held-out documents used as prompts")
    ap.add_argument("--prompt-offset", type=int, default=0, help="prompt starts this many tokens into the document")
    ap.add_argument("--with-null", action="store_true", help="also time our loop with no drafts")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--num-draft", type=int, default=8)
    ap.add_argument("--min-count", type=int, default=1, help="∞-gram drafter: stop at continuations seen fewer times")
    ap.add_argument("--min-prob", type=float, default=0.0,
                    help="∞-gram drafter: stop where the top continuation's share is below this")
    ap.add_argument("--lookahead", type=int, default=8,
                    help="∞-gram drafter: compute the chain locally once the continued string occurs at most this often")
    ap.add_argument("--lambdas", type=float, nargs=2, metavar=("SPARSE", "DENSE"),
                    help="λs of the prior's timing run (default: tuned by the perplexity run, else 0.5 0.5)")
    ap.add_argument("--prior-prompts", type=int, default=4)
    ap.add_argument("--prior-tokens", type=int, default=32)
    ap.add_argument("--ppl-tokens", type=int, default=4000, help="tokens scored per split (validation, test)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core machine more threads spin against each other)")
    ap.add_argument("--weights", choices=("column-major", "as-stored"), default="column-major",
                    help="on CPU, re-lay linear weights column-major (lm_integration.cpu_layout: cheaper "
                    "multi-token passes) for every method, greedy included (default), or keep them as stored")
    ap.add_argument("--step-cost", choices=("measured", "default"), default="measured",
                    help="size the trees by this machine's measured verification cost (default) or by "
                    "TreeDrafter's built-in figures")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="run only the methods whose names contain one of these (e.g. 'prompt lookup' tree); "
                    "HF greedy always runs")
    ap.add_argument("--ppl-doc-tokens", type=int, default=512, help="tokens scored per held-out document")
    ap.add_argument("--skip-ppl", action="store_true")
    ap.add_argument("--skip-spec", action="store_true")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--index", help="open this index (built with the model's tokenizer) instead of building one")
    ap.add_argument("--held-out", help="JSON [[label, text], ...] of held-out documents, instead of reading the "
                    "corpus (see --export-held-out); for machines without the corpus")
    ap.add_argument("--export-held-out", help="write the corpus's held-out documents to this JSON file and exit")
    args = ap.parse_args(argv)

    import torch

    from engine.fetch import cache_dir
    from lm_integration import check_tokenizer_compat, smollm2
    from lm_integration.cpu_layout import use_column_major_linears
    from lm_integration.eval_lm import evaluate, format_table
    from lm_integration.step_cost import measure_step_cost

    if args.threads:
        torch.set_num_threads(args.threads)
    if not smollm2.is_available():
        smollm2.convert()
    if args.export_held_out:
        held = load_corpus(args.corpus)[1]
        Path(args.export_held_out).write_text(json.dumps([[c, t] for c, t in held]))
        return 0
    if args.held_out:
        held = [tuple(x) for x in json.loads(Path(args.held_out).read_text())]
        corpus_desc = f"{args.corpus}: held-out documents from {args.held_out}"
        train = index_name = None
    else:
        train, held, corpus_desc, index_name = load_corpus(args.corpus)
    if args.index:
        import engine

        index = engine.NgramIndex.open(args.index)
    else:
        if train is None:
            raise SystemExit("--held-out needs --index")
        index = ensure_index(train, smollm2.model_dir() / "tokenizer.json", cache_dir() / "bench_lm", index_name)
    index.warmup()
    model, tok = smollm2.load(device=args.device)
    check_tokenizer_compat(index, tok, model=model)
    relaid = use_column_major_linears(model) if args.weights == "column-major" else 0
    step_cost = None
    if args.step_cost == "measured" and not args.skip_spec:
        step_cost = measure_step_cost(model, context_len=args.prompt_tokens)
        print(f"[bench_lm] step cost: greedy {1000 * step_cost.greedy_seconds:.1f} ms, draft_overhead "
              f"{step_cost.draft_overhead:.3f}, token_cost {step_cost.token_cost:.4f} "
              f"({relaid} weights re-laid column-major)", file=sys.stderr)
    print(f"[bench_lm] index: {index.num_tokens:,} tokens, {index.num_docs} documents; held out: {len(held)}",
          file=sys.stderr)

    held_ids = [tok.encode(t, add_special_tokens=False) for _, t in held]
    need = args.prompt_offset + args.prompt_tokens
    prompts = [ids[args.prompt_offset : need] for ids in held_ids if len(ids) >= need][: args.prompts]
    load_before = os.getloadavg()[0]
    spec = {}
    if not args.skip_spec:
        # warm up (first calls allocate, compile kernels)
        run_spec(model, tok, index, prompts[:1], 8, args.num_draft, args.device, args.min_count,
                 lookahead=args.lookahead)
        spec = run_spec(model, tok, index, prompts, args.new_tokens, args.num_draft, args.device, args.min_count,
                        args.with_null, args.min_prob, args.lookahead, step_cost, args.only)

    raw: dict = {"machine": machine(args.device), "args": vars(args)}
    if step_cost is not None:
        raw["step_cost"] = {"greedy_seconds": step_cost.greedy_seconds, "draft_overhead": step_cost.draft_overhead,
                            "token_cost": step_cost.token_cost, "measured": step_cost.measured}
    lam_s, lam_d = 0.5, 0.5
    ppl = None
    if not args.skip_ppl:
        half = len(held_ids) // 2
        # validation: the first half of the held-out chapters; test: the second half (disjoint from prompts? no
        # need: perplexity is scored on the held-out text itself)
        ppl = evaluate(model, index, held_ids[:half], held_ids[half:], window=args.window, stride=args.stride,
                       max_tokens=args.ppl_tokens, progress=True, doc_tokens=args.ppl_doc_tokens)
        lam_s, lam_d = ppl["lambda_sparse"], ppl["lambda_dense"]
        raw["perplexity"] = ppl
    if args.lambdas:
        lam_s, lam_d = args.lambdas
    prior_ms, prior_med, prior_cpu, prior_e2e = prior_overhead(model, index, prompts[: min(args.prior_prompts, len(prompts))],
                                                    args.prior_tokens, args.device, lam_s, lam_d)

    lines = [
        f"### LM integration: SmolLM2-135M + ∞-gram index ({args.corpus}, {args.device})",
        "",
        f"Corpus: {corpus_desc}. Machine: {raw['machine']}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after. Index: {index.num_tokens:,} tokens ({index.num_docs} documents); "
        f"{len(held)} held-out documents; {len(prompts)} prompts of {args.prompt_tokens} tokens "
        f"(from token {args.prompt_offset} of a held-out document), greedy, "
        f"{args.new_tokens} new tokens each, up to {args.num_draft} draft tokens per step. Weights: "
        f"{args.weights}" + (f"; trees sized by the measured step cost (a greedy step {1000 * step_cost.greedy_seconds:.1f} ms, "
                             f"a pass over n draft tokens x(1 + {step_cost.draft_overhead:.3f} + {step_cost.token_cost:.4f} n))"
                             if step_cost is not None else "") + ".",
        "",
    ]
    if spec:
        lines += [
            "| method | tokens / step | acceptance | drafter ms / step (mean / median / CPU) | tokens / s | vs HF greedy | "
            "prompts slower than greedy | same tokens as greedy |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
        ]
        base_tps = spec["greedy (HF generate)"][0].tokens_per_second
    raw["speculative"] = {}
    for name, (st, same, slow) in spec.items():
        raw["speculative"][name] = {**st.as_dict(), "same_as_greedy": same, "prompts_slower_than_greedy": slow}
        acc = f"{100 * st.acceptance_rate:.0f}%" if st.drafted else "-"
        dms = (f"{st.drafter_ms_per_step:.3f} / {st.drafter_median_ms:.3f} / {st.drafter_cpu_ms_per_step:.3f}"
               if st.drafted or "drafter" in name else "-")
        lines.append(f"| {name} | {st.tokens_per_step:.2f} | {acc} | {dms} | {st.tokens_per_second:.1f} | "
                     f"{st.tokens_per_second / base_tps:.2f}x | {slow} of {len(prompts)} | {'yes' if same else 'NO'} |")
    line = (f"∞-gram prior (interpolation, λ_sparse={lam_s}, λ_dense={lam_d}; {min(args.prior_prompts, len(prompts))} "
            f"prompts x {args.prior_tokens} tokens): {prior_ms:.3f} ms per decoding step (median over prompts of "
            f"the mean), median step {prior_med:.3f} ms, CPU {prior_cpu:.3f} ms; end to end, generate() with the "
            f"prior takes {prior_e2e:.3f} ms per step more than without (median over prompts)")
    if spec:
        for name in ("∞-gram drafter (corpus only)", "hybrid (corpus + context)"):
            if name not in spec:
                continue
            st = spec[name][0]
            line += (f"; with the {name.split(' (')[0].replace(' drafter', '')} drafter: mean {prior_ms + st.drafter_ms_per_step:.3f} ms, "
                     f"median {prior_med + st.drafter_median_ms:.3f} ms, CPU "
                     f"{prior_cpu + st.drafter_cpu_ms_per_step:.3f} ms")
        line += " (target <= 1 ms)"
    lines += ["", line + "."]
    raw["prior_median_ms"] = prior_med
    raw["prior_cpu_ms"] = prior_cpu
    raw["prior_end_to_end_ms"] = prior_e2e
    raw["prior_ms_per_step"] = prior_ms
    if ppl is not None:
        lines += ["", f"Held-out perplexity (documents never indexed; at most {args.ppl_doc_tokens} tokens of each):",
                  "", format_table(ppl)]
    lines += ["", f"Reproduce: `python bench/bench_lm.py --corpus {args.corpus} "
              + (f"--index {args.index} " if args.index else "") + (f"--held-out {args.held_out} " if args.held_out else "")
              + f"--prompt-offset {args.prompt_offset} --prompts {args.prompts} --new-tokens {args.new_tokens} "
              f"--num-draft {args.num_draft} --min-count {args.min_count} --min-prob {args.min_prob} --lookahead {args.lookahead} "
              + (f"--lambdas {args.lambdas[0]} {args.lambdas[1]} " if args.lambdas else "")
              + f"--ppl-tokens {args.ppl_tokens} --ppl-doc-tokens {args.ppl_doc_tokens} "
              f"--device {args.device} --threads {args.threads} --weights {args.weights} --step-cost {args.step_cost}"
              + (" --skip-ppl" if args.skip_ppl else "") + (" --skip-spec" if args.skip_spec else "")
              + (" --only " + " ".join(shlex.quote(o) for o in args.only) if args.only else "") + "`"]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
