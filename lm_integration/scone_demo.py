"""Two tiny byte-level LMs with equal inference FLOPs, trained on the same text for the same steps:
one with plain token embeddings, one whose input embeddings come from SCONE f-gram embeddings
(the longest frequent byte n-gram ending at each position). Prints their validation losses.

    python -m lm_integration.scone_demo --text ~/.cache/ngram-engine/canterbury/*.txt
    python -m lm_integration.scone_demo --synthetic --steps 50     # no files needed

At inference the SCONE model's f-gram embeddings come from a precomputed table (a memory map);
the transformer body and output head are identical in both models, so inference FLOPs are equal.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lm_integration.fgram import FgramVocab
from lm_integration.scone import FgramEncoder, SconeEmbedding, open_fgram_table, precompute_fgram_table


def build_fgram_vocab(data: np.ndarray, *, n_min: int = 2, n_max: int = 4, size: int = 2048,
                      min_count: int = 2) -> FgramVocab:
    """The ``size`` most frequent byte n-grams (n_min..n_max) with at least ``min_count``
    occurrences; ties by shorter n, then by bytes."""
    rows = []
    for n in range(n_min, n_max + 1):
        w = np.lib.stride_tricks.sliding_window_view(data.astype(np.int64), n)
        code = np.zeros(len(w), dtype=np.int64)
        for j in range(n):
            code = code * 256 + w[:, j]
        u, c = np.unique(code, return_counts=True)
        keep = c >= min_count
        rows.append(np.stack([-c[keep], np.full(keep.sum(), n), u[keep]], axis=1))
    allr = np.concatenate(rows)
    allr = allr[np.lexsort((allr[:, 2], allr[:, 1], allr[:, 0]))][:size]
    grams = []
    for negc, n, code in allr:
        g = []
        for _ in range(int(n)):
            g.append(int(code % 256))
            code //= 256
        grams.append(g[::-1])
    return FgramVocab(grams, counts=[-int(x) for x in allr[:, 0]])


class TinyLM(nn.Module):
    """Causal transformer over any input-embedding module (same body and head for both models)."""

    def __init__(self, embed: nn.Module, vocab_size: int, d: int, n_layers: int, n_heads: int, ctx: int):
        super().__init__()
        self.embed = embed
        self.pos = nn.Embedding(ctx, d)
        layer = nn.TransformerEncoderLayer(d, n_heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        x = self.embed(ids) + self.pos(torch.arange(T, device=ids.device))
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device)
        return self.head(self.norm(self.body(x, mask=mask, is_causal=True)))

    def body_flops_per_token(self) -> int:
        """Multiply-adds of the parts that run per token at inference (embedding lookups excluded)."""
        return sum(p.numel() for n, p in self.named_parameters()
                   if not n.startswith(("embed.", "pos.")) and p.dim() > 1)


def synthetic_text(n_bytes: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    words = [bytes(rng.integers(97, 123, rng.integers(2, 8)).tolist()) for _ in range(300)]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    phrases = [b" ".join(words[i] for i in rng.choice(len(words), 4, p=zipf)) for _ in range(200)]
    out = bytearray()
    while len(out) < n_bytes:
        out += phrases[rng.integers(len(phrases))] if rng.random() < 0.5 else words[rng.choice(len(words), p=zipf)]
        out += b". " if rng.random() < 0.1 else b" "
    return bytes(out[:n_bytes])


def batches(data: np.ndarray, batch: int, ctx: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, len(data) - ctx - 1, batch)
        x = np.stack([data[s : s + ctx + 1] for s in starts]).astype(np.int64)
        yield torch.from_numpy(x[:, :-1]), torch.from_numpy(x[:, 1:])


@torch.no_grad()
def val_loss(model, data, ctx, n_batches=8, batch=16, prefetch=False) -> float:
    model.eval()
    tot = 0.0
    it = list(batches(data, batch, ctx, n_batches, seed=1234))
    emb = model.embed if isinstance(model.embed, SconeEmbedding) else None
    if prefetch and emb is not None:
        emb.prefetch(it[0][0])
    for i, (x, y) in enumerate(it):
        if prefetch and emb is not None and i + 1 < len(it):
            out = model(x)  # forward consumes the prefetched rows of x ...
            emb.prefetch(it[i + 1][0])  # ... then starts the next batch's gather
        else:
            out = model(x)
        tot += nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).item()
    model.train()
    return tot / n_batches


def train(model, data, *, steps, batch, ctx, lr, seed, log_every=0, name="") -> float:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(batches(data, batch, ctx, steps, seed)):
        out = model(x)
        loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"  {name} step {step + 1}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    return time.perf_counter() - t0


def default_texts() -> list[Path]:
    root = Path(os.environ.get("NGRAM_CACHE") or Path.home() / ".cache" / "ngram-engine")
    return sorted((root / "canterbury").glob("*.txt"))


def run(data: bytes, *, steps=300, batch=16, ctx=128, d=64, layers=2, heads=4, fgrams=2048, n_max=4,
        lr=3e-3, seed=0, log_every=0, table_dir=None) -> dict:
    arr = np.frombuffer(data, dtype=np.uint8)
    cut = int(len(arr) * 0.9)
    train_d, val_d = arr[:cut], arr[cut:]
    vocab = build_fgram_vocab(train_d, n_max=n_max, size=fgrams)
    torch.manual_seed(seed)
    base = TinyLM(nn.Embedding(256, d), 256, d, layers, heads, ctx)
    torch.manual_seed(seed)
    enc = FgramEncoder(256, vocab.max_len, d, d_model=d, n_layers=1)
    scone = TinyLM(SconeEmbedding(256, d, vocab, encoder=enc), 256, d, layers, heads, ctx)
    t_base = train(base, train_d, steps=steps, batch=batch, ctx=ctx, lr=lr, seed=seed, log_every=log_every, name="baseline")
    t_scone = train(scone, train_d, steps=steps, batch=batch, ctx=ctx, lr=lr, seed=seed, log_every=log_every, name="scone")
    res = {
        "train_bytes": len(train_d), "val_bytes": len(val_d), "fgrams": len(vocab), "steps": steps,
        "baseline_val_loss": val_loss(base, val_d, ctx),
        "scone_val_loss_train_mode": val_loss(scone, val_d, ctx),
        "train_seconds": {"baseline": t_base, "scone": t_scone},
        "inference_params_per_token": {"baseline": base.body_flops_per_token(), "scone": scone.body_flops_per_token()},
    }
    with tempfile.TemporaryDirectory(dir=table_dir) as tmp:
        path = precompute_fgram_table(enc, vocab, Path(tmp) / "fgram_table.f32")
        scone.embed.use_table(open_fgram_table(path, "mmap"))
        res["scone_val_loss"] = val_loss(scone, val_d, ctx, prefetch=True)
        res["table_rows"] = len(vocab)
        res["table_rows_gathered_per_batch"] = scone.embed.rows_gathered / 8
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lm_integration.scone_demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", nargs="*", help="training text files (default: the Canterbury texts in the cache)")
    ap.add_argument("--synthetic", action="store_true", help="train on generated text instead of files")
    ap.add_argument("--max-bytes", type=int, default=600_000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--fgrams", type=int, default=2048, help="f-gram vocabulary size")
    ap.add_argument("--n-max", type=int, default=4, help="longest f-gram (bytes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.synthetic:
        data = synthetic_text(args.max_bytes, args.seed)
        what = "synthetic text"
    else:
        files = [Path(f) for f in (args.text or default_texts())]
        if not files:
            print("no text: pass --text FILES, run `ngram fetch canterbury`, or use --synthetic", file=sys.stderr)
            return 2
        data = b"\n".join(f.read_bytes() for f in files)[: args.max_bytes]
        what = ", ".join(f.name for f in files)
    res = run(data, steps=args.steps, batch=args.batch, ctx=args.ctx, d=args.d, layers=args.layers,
              fgrams=args.fgrams, n_max=args.n_max, seed=args.seed, log_every=max(args.steps // 5, 1))
    ln2 = math.log(2)
    print(f"SCONE demo on {what}: {res['train_bytes']:,} training bytes, {res['val_bytes']:,} validation bytes, "
          f"{res['steps']} steps of {args.batch}x{args.ctx}, d={args.d}, {args.layers} layers, {res['fgrams']} f-grams "
          f"(n = 2..{args.n_max})")
    print()
    print("| model | inference weights per token (matmul) | validation loss (nats/byte) | bits/byte | train s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| baseline (token embeddings) | {res['inference_params_per_token']['baseline']:,} | "
          f"{res['baseline_val_loss']:.4f} | {res['baseline_val_loss'] / ln2:.3f} | {res['train_seconds']['baseline']:.0f} |")
    print(f"| SCONE (f-gram table, memory-mapped) | {res['inference_params_per_token']['scone']:,} | "
          f"{res['scone_val_loss']:.4f} | {res['scone_val_loss'] / ln2:.3f} | {res['train_seconds']['scone']:.0f} |")
    print()
    print(f"SCONE validation loss with the f-gram encoder (training mode): {res['scone_val_loss_train_mode']:.4f}; "
          f"from the precomputed table: {res['scone_val_loss']:.4f}; rows gathered per batch: "
          f"{res['table_rows_gathered_per_batch']:.0f} of {res['table_rows']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
