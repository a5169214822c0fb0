"""Replay drafters against the model's greedy continuations, without the model in the loop.

Speculative decoding with greedy verification accepts exactly the longest drafted path that agrees with
greedy's own tokens, so once the greedy continuation of each prompt is known (computed once with
SmolLM2 and cached), every drafter's tokens per step, draft size and drafting time follow without
another forward pass. A run takes seconds instead of bench_lm's minutes, and its figures do not move
with the machine's load: the tool for trying drafter ideas. Wall speed is then estimated from a
verification cost line (a pass over n draft tokens costs 1 + draft_overhead + token_cost * n greedy
steps; by default measured here, as bench_lm does) plus the drafter's measured time; bench_lm remains
the measurement of record.

    python bench/replay_drafts.py --corpus kernel:sound/soc --prompt-offset 256 --prompts 8 --new-tokens 48
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lm import ensure_index, load_corpus, tree_drafters  # noqa: E402


def greedy_continuations(prompts, new_tokens: int, cache_file: Path) -> list[list[int]]:
    """SmolLM2's greedy continuation of every prompt (HF generate), cached in ``cache_file``."""
    if cache_file.exists():
        return json.loads(cache_file.read_text())
    import torch

    from lm_integration import smollm2

    model, _ = smollm2.load(device="cpu")
    outs = []
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        out = model.generate(torch.tensor([p]), max_new_tokens=new_tokens, do_sample=False)
        outs.append(out[0, len(p):].tolist())
        print(f"[replay] greedy continuation {i + 1}/{len(prompts)} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(outs))
    return outs


def replay(propose, prompt: list[int], greedy: list[int], num_draft: int) -> dict:
    """Decode ``prompt`` as speculative_generate_tree would, with greedy's tokens standing in for the
    model's: ``propose(context, budget)`` returns root-to-leaf chains. Returns per-step draft sizes,
    accepted counts and drafting seconds."""
    from lm_integration.speculative import draft_trie

    generated = greedy[:1]  # the prefill pass gives the first token
    sizes, accepted, seconds = [], [], []
    while len(generated) < len(greedy):
        budget = min(num_draft, len(greedy) - len(generated) - 1)
        t0 = time.perf_counter()
        chains = propose(prompt + generated, budget) if budget > 0 else []
        seconds.append(time.perf_counter() - t0)
        tokens, parents = draft_trie([[int(x) for x in c[:budget]] for c in chains if c])
        children = {(parent, tok): j for j, (tok, parent) in enumerate(zip(tokens, parents))}
        node, n_acc = -1, 0
        while len(generated) + n_acc < len(greedy) and (node, greedy[len(generated) + n_acc]) in children:
            node = children[(node, greedy[len(generated) + n_acc])]
            n_acc += 1
        generated = greedy[: len(generated) + n_acc + 1]
        sizes.append(len(tokens))
        accepted.append(n_acc)
    return {"sizes": sizes, "accepted": accepted, "seconds": seconds}


def ceiling(index, prompt: list[int], greedy: list[int], num_draft: int, corpus_top: int = 3) -> int:
    """Steps a drafter would need if its tree held every candidate its sources have: any token that
    followed the longest matched suffix in the context, or one of the corpus's ``corpus_top`` most
    frequent next tokens, at every depth up to ``num_draft``. No real tree is that large; this is
    the most the context and the corpus can give, against which a drafter's tokens per step compare."""
    import numpy as np

    from lm_integration.context import ContextNgramModel

    text = prompt + greedy
    context = ContextNgramModel(text[:len(prompt) + 1], max_suffix_len=32)
    known = []  # known[j]: some source proposed greedy[j + 1]
    for t in range(len(prompt) + 1, len(text)):
        if t > len(context):
            context.extend(text[t - 1:t])
        d = context.infgram_ntd(text[:t])
        r = index.infgram_ntd(text[max(0, t - 32):t])
        corpus = np.asarray(r.tokens)[np.argsort(-np.asarray(r.counts), kind="stable")[:corpus_top]]
        known.append(text[t] in d.tokens.tolist() or (r.suffix_len > 0 and text[t] in corpus.tolist()))
    steps, j = 1, 0  # the prefill step gives greedy[0]
    while j < len(known):
        run = 0
        while j + run < len(known) and run < num_draft and known[j + run]:
            run += 1
        j += run + 1
        steps += 1
    return steps


def make_drafters(index, tok, cost: dict, only):
    from lm_integration import PromptLookupDrafter

    pl = PromptLookupDrafter(max_ngram=3)
    drafters = {"prompt lookup (context only)": (lambda ctx, k: [pl.propose(ctx, k)], None)}
    for name, d in tree_drafters(index, tok, None, cost).items():
        drafters[name] = ((lambda ctx, k, d=d: d.propose_tree(ctx, k, width=3)), d)
    return {n: v for n, v in drafters.items() if not only or any(o in n for o in only)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="kernel:sound/soc", help="as bench_lm: kjv, sotu or kernel:SUBDIR")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-offset", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--num-draft", type=int, default=8)
    ap.add_argument("--cost", type=float, nargs=2, metavar=("DRAFT_OVERHEAD", "TOKEN_COST"), default=(0.48, 0.030),
                    help="verification cost line, in greedy steps (default: bench_step_cost's column-major "
                    "figures on this machine)")
    ap.add_argument("--greedy-ms", type=float, default=61.0,
                    help="a greedy step's milliseconds, to weigh drafting time against (default: measured here)")
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--ceiling", type=int, nargs="*", default=[3], metavar="K",
                    help="also print the tokens per step of a tree holding every candidate of the context and "
                    "the corpus's top K (default 3; none to skip)")
    args = ap.parse_args(argv)

    from engine.fetch import cache_dir
    from transformers import AutoTokenizer

    from lm_integration import smollm2

    if not smollm2.is_available():
        smollm2.convert()
    train, held, _, index_name = load_corpus(args.corpus)
    index = ensure_index(train, smollm2.model_dir() / "tokenizer.json", cache_dir() / "bench_lm", index_name)
    index.warmup()
    tok = AutoTokenizer.from_pretrained(smollm2.model_dir())
    held_ids = [tok.encode(t, add_special_tokens=False) for _, t in held]
    need = args.prompt_offset + args.prompt_tokens
    prompts = [ids[args.prompt_offset: need] for ids in held_ids if len(ids) >= need][: args.prompts]
    key = hashlib.sha256(json.dumps([prompts, args.new_tokens]).encode()).hexdigest()[:16]
    greedy = greedy_continuations(prompts, args.new_tokens, cache_dir() / "bench_lm" / f"greedy-{key}.json")

    overhead, token_cost = args.cost
    cost = {"draft_overhead": overhead, "token_cost": token_cost}
    print(f"| method | tokens / step | nodes / step | acceptance | drafter ms / step | est. vs greedy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (propose, drafter) in make_drafters(index, tok, cost, args.only).items():
        steps = nodes = acc = new = 0
        secs = greedy_units = 0.0
        for p, g in zip(prompts, greedy):
            if drafter is not None:
                drafter.reset()
            r = replay(propose, p, g, args.num_draft)
            steps += 1 + len(r["sizes"])  # + the prefill step
            nodes += sum(r["sizes"])
            acc += sum(r["accepted"])
            new += len(g)
            secs += sum(r["seconds"])
            greedy_units += 1 + sum(1 + (overhead + token_cost * n if n else 0.0) for n in r["sizes"])
        greedy_units += 1000 * secs / args.greedy_ms
        print(f"| {name} | {new / steps:.2f} | {nodes / steps:.1f} | {acc / max(nodes, 1):.0%} | "
              f"{1000 * secs / steps:.2f} | {new / greedy_units:.2f}x |")
    for top in args.ceiling:
        steps = sum(ceiling(index, p, g, args.num_draft, top) for p, g in zip(prompts, greedy))
        print(f"| ceiling: every context candidate + corpus top {top} | "
              f"{sum(len(g) for g in greedy) / steps:.2f} | - | - | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
