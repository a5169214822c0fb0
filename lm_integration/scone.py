"""SCONE-style f-gram input embeddings (needs torch).

* FgramEncoder: the small "f-gram model" that maps an f-gram's tokens to an embedding. It is
  trained with the LM and then run once over the whole vocabulary (precompute_fgram_table) so
  that inference needs only a table lookup: no extra FLOPs on the accelerator.
* SconeEmbedding: token embedding, with the embedding of the longest f-gram ending at each
  position (CausalFgramMatcher) added to it (``combine="add"``, the default) or replacing it. In training mode the f-gram
  embeddings come from the encoder (only the distinct f-grams of the batch are encoded); in
  inference mode they come from a table kept off the accelerator, a memory map or pinned CPU
  memory, and only the rows a batch needs are gathered and copied. ``prefetch(ids)`` starts
  that gather (and the host-to-device copy, on a side CUDA stream) for the next batch while the
  current one computes; ``forward`` picks it up.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lm_integration.fgram import CausalFgramMatcher, FgramVocab


class FgramEncoder(nn.Module):
    """f-gram tokens (S, L), right-padded with -1 -> (S, d_out)."""

    def __init__(self, vocab_size: int, max_len: int, d_out: int, d_model: int = 64, n_layers: int = 1,
                 n_heads: int = 4):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False) if n_layers else None
        self.out = nn.Linear(d_model, d_out)
        self.max_len = max_len

    def forward(self, grams: torch.Tensor) -> torch.Tensor:
        valid = grams >= 0
        x = self.tok(grams.clamp_min(0)) + self.pos(torch.arange(grams.shape[1], device=grams.device))
        if self.body is not None:
            x = self.body(x, src_key_padding_mask=~valid)
        x = (x * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        return self.out(x)


@torch.no_grad()
def precompute_fgram_table(encoder: FgramEncoder, vocab: FgramVocab, path, *, batch_size: int = 4096,
                           dtype: str = "float32") -> Path:
    """Run the encoder over every f-gram once; write ``path`` (raw rows, np.memmap-able) and
    ``path + '.json'`` (shape, dtype). Returns the path."""
    path = Path(path)
    was_training = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    padded = vocab.padded()
    d = encoder.out.out_features
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(len(vocab), d)) \
        if path.suffix == ".npy" else np.memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(len(vocab), d))
    for s in range(0, len(vocab), batch_size):
        g = torch.as_tensor(padded[s : s + batch_size], device=dev)
        mm[s : s + len(g)] = encoder(g).float().cpu().numpy().astype(dtype)
    mm.flush()
    del mm
    if path.suffix != ".npy":
        Path(str(path) + ".json").write_text(json.dumps({"shape": [len(vocab), d], "dtype": dtype}))
    encoder.train(was_training)
    return path


def open_fgram_table(path, mode: str = "mmap"):
    """The precomputed table: a read-only np.memmap (``mode="mmap"``), or a pinned CPU tensor
    (``"pinned"``; plain CPU memory when pinning is unavailable)."""
    path = Path(path)
    if path.suffix == ".npy":
        mm = np.load(path, mmap_mode="r")
    else:
        meta = json.loads(Path(str(path) + ".json").read_text())
        mm = np.memmap(path, mode="r", dtype=np.dtype(meta["dtype"]), shape=tuple(meta["shape"]))
    if mode == "mmap":
        return mm
    if mode == "pinned":
        t = torch.from_numpy(np.array(mm))  # a private, writable copy
        try:
            return t.pin_memory()
        except RuntimeError:  # no accelerator driver: pinning is not available
            return t
    raise ValueError(f"mode must be 'mmap' or 'pinned', not {mode!r}")


class SconeEmbedding(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, fgram_vocab: FgramVocab, *,
                 encoder: FgramEncoder | None = None, table=None, combine: str = "add"):
        super().__init__()
        if combine not in ("replace", "add"):
            raise ValueError("combine must be 'replace' or 'add'")
        self.tok = nn.Embedding(vocab_size, d_model)
        self.vocab = fgram_vocab
        self.matcher = CausalFgramMatcher(fgram_vocab)
        self._padded = torch.as_tensor(fgram_vocab.padded())
        self.encoder = encoder
        self.table = table  # np.memmap / CPU tensor (S, d): never a registered buffer, never moved
        self.combine = combine
        self._pool: ThreadPoolExecutor | None = None
        self._pending = None  # (ids tensor, future)
        self.rows_gathered = 0

    def use_table(self, table) -> "SconeEmbedding":
        """Switch to inference from a precomputed table (drops the encoder)."""
        self.table = table
        self.encoder = None
        return self

    # -- gathering ---------------------------------------------------------------------------
    def _gather(self, ids: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fids (B,T) on device, unique ids, rows (U, d) on device) from the table."""
        fids = torch.as_tensor(self.matcher(ids))
        uniq, inv = torch.unique(fids[fids >= 0], return_inverse=True)
        local = torch.full_like(fids, -1)
        local[fids >= 0] = inv
        if len(uniq):
            if isinstance(self.table, np.ndarray):  # memmap: reads only these rows
                rows = torch.from_numpy(np.asarray(self.table[uniq.numpy()], dtype=np.float32))
            else:
                rows = self.table.index_select(0, uniq).float()
        else:
            rows = torch.zeros((0, self.tok.embedding_dim))
        dev = torch.device(device)
        if dev.type == "cuda":
            stream = torch.cuda.Stream(device=dev)
            with torch.cuda.stream(stream):
                rows = rows.pin_memory().to(dev, non_blocking=True)
                local_d = local.pin_memory().to(dev, non_blocking=True)
            return local_d, uniq, rows, stream
        self.rows_gathered += len(uniq)
        return local, uniq, rows, None

    def prefetch(self, ids: torch.Tensor) -> None:
        """Start matching + gathering table rows (and their copy to the device) for ``ids`` in the
        background; the next forward(ids) with the same tensor uses the result."""
        if self.table is None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scone-prefetch")
        dev = self.tok.weight.device
        self._pending = (ids, self._pool.submit(self._gather, ids.detach().cpu(), dev))

    def _fgram_embeddings(self, ids: torch.Tensor):
        """(local ids (B,T) with -1 = no f-gram, rows (U, d)) on the embedding's device."""
        dev = self.tok.weight.device
        if self.table is not None:
            if self._pending is not None and self._pending[0] is ids:
                local, _uniq, rows, stream = self._pending[1].result()
                self._pending = None
            else:
                local, _uniq, rows, stream = self._gather(ids.detach().cpu(), dev)
            if stream is not None:
                torch.cuda.current_stream(dev).wait_stream(stream)
            return local.to(dev), rows.to(dev, dtype=self.tok.weight.dtype)
        if self.encoder is None:
            raise RuntimeError("SconeEmbedding needs an encoder (training) or a table (inference)")
        fids = torch.as_tensor(self.matcher(ids))
        uniq, inv = torch.unique(fids[fids >= 0], return_inverse=True)
        local = torch.full_like(fids, -1)
        local[fids >= 0] = inv
        grams = self._padded[uniq].to(dev)
        rows = self.encoder(grams) if len(uniq) else torch.zeros((0, self.tok.embedding_dim), device=dev)
        return local.to(dev), rows

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids)
        local, rows = self._fgram_embeddings(ids)
        if rows.shape[0] == 0:
            return x
        has = local >= 0
        f = rows[local.clamp_min(0)]
        if self.combine == "replace":
            return torch.where(has.unsqueeze(-1), f, x)
        return x + f * has.unsqueeze(-1)
