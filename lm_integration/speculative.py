"""Speculative decoding with greedy verification and a KV cache (needs torch).

``speculative_generate(model, drafter, input_ids, max_new_tokens)`` returns exactly the tokens
plain greedy decoding (``model.generate(do_sample=False)``) returns, for any drafter: each step
feeds the pending token plus the row's draft through the model once, keeps the longest draft prefix
that matches the model's own argmax, and adds the model's next token after it. Batches of any size:
rows accept different numbers of tokens; rejected cache slots are masked out (and cropped once no
row needs them), positions are tracked per row.

``generate_with_drafter`` plugs a drafter into Hugging Face's own assisted ``generate`` loop
(batch size 1, the library's limit) through its candidate-generator interface.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lm_integration.errors import UnsupportedTransformersError


@dataclass
class SpecStats:
    """What a speculative_generate call did. A step is one forward pass of the model over a batch
    (the prefill included); per-row figures are averaged over the rows that were still generating."""

    new_tokens: int = 0  # tokens generated, all rows
    row_steps: int = 0  # sum over steps of the rows still generating
    steps: int = 0  # forward passes, prefill included
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens accepted
    drafter_seconds: float = 0.0
    drafter_cpu_seconds: float = 0.0  # this thread's CPU time in the drafter (immune to preemption)
    model_seconds: float = 0.0
    seconds: float = 0.0
    per_row_new_tokens: list = field(default_factory=list)
    drafter_step_seconds: list = field(default_factory=list)  # wall time of each step's drafting

    @property
    def tokens_per_step(self) -> float:
        """Mean tokens a row gains per forward pass (1.0 for plain greedy)."""
        return self.new_tokens / max(self.row_steps, 1)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def drafter_ms_per_step(self) -> float:
        return 1000.0 * self.drafter_seconds / max(self.steps - 1, 1)

    @property
    def drafter_cpu_ms_per_step(self) -> float:
        return 1000.0 * self.drafter_cpu_seconds / max(self.steps - 1, 1)

    @property
    def drafter_median_ms(self) -> float:
        """Median wall time of one step's drafting (robust to the odd preempted step)."""
        v = sorted(self.drafter_step_seconds)
        if not v:
            return 0.0
        m = len(v) // 2
        return 1000.0 * (v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m]))

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("per_row_new_tokens", "drafter_step_seconds")}
        d.update(tokens_per_step=self.tokens_per_step, acceptance_rate=self.acceptance_rate,
                 drafter_ms_per_step=self.drafter_ms_per_step, drafter_cpu_ms_per_step=self.drafter_cpu_ms_per_step,
                 drafter_median_ms=self.drafter_median_ms, tokens_per_second=self.tokens_per_second)
        return d


def _eos_set(model, eos_token_id) -> set[int]:
    if eos_token_id is None:
        gc = getattr(model, "generation_config", None)
        eos_token_id = getattr(gc, "eos_token_id", None)
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, (list, tuple, set)):
        return {int(e) for e in eos_token_id}
    if torch.is_tensor(eos_token_id):
        return {int(e) for e in eos_token_id.reshape(-1).tolist()}
    return {int(eos_token_id)}


def new_kv_cache(model):
    """An empty KV cache for ``model`` (transformers DynamicCache), or None for a model that keeps its own."""
    try:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=model.config)
        except TypeError:
            return DynamicCache()
    except Exception:  # pragma: no cover - a model outside transformers keeps its own cache
        return None


@torch.no_grad()
def speculative_generate(
    model,
    drafter,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    attention_mask: torch.Tensor | None = None,
    num_draft: int = 8,
    eos_token_id=None,
    pad_token_id: int | None = None,
    return_stats: bool = False,
):
    """Greedy generation accelerated by ``drafter`` (see module docstring).

    ``input_ids`` (B, T), left-padded when rows differ in length, with ``attention_mask``. Returns
    (B, T + n) like ``model.generate``: n is the longest row's new-token count; rows that stopped at
    EOS earlier are filled with ``pad_token_id``. With ``return_stats`` returns (ids, SpecStats).
    """
    t_start = time.perf_counter()
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    device = input_ids.device
    B, T0 = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device=device, dtype=torch.long)
    eos = _eos_set(model, eos_token_id)
    if pad_token_id is None:
        gc = getattr(model, "generation_config", None)
        pad_token_id = getattr(gc, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = min(eos) if eos else 0
    stats = SpecStats()
    if max_new_tokens <= 0:
        return (input_ids, stats) if return_stats else input_ids

    # prefill
    pos = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    cache = new_kv_cache(model)
    t0 = time.perf_counter()
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, cache=cache, use_cache=True)
    stats.model_seconds += time.perf_counter() - t0
    cache = out.cache
    first = out.logits[:, -1, :].argmax(-1).tolist()
    stats.steps = 1
    stats.row_steps = B

    mask_np = attention_mask.cpu().numpy()
    ids_np = input_ids.cpu().numpy()
    contexts = [ids_np[b][mask_np[b].astype(bool)].tolist() for b in range(B)]  # real tokens
    generated: list[list[int]] = [[first[b]] for b in range(B)]
    done = [first[b] in eos or max_new_tokens <= 1 for b in range(B)]
    next_pos = attention_mask.sum(-1).clone()  # position of each row's pending token
    kv_mask = attention_mask.clone()  # which cache slots a row may attend to
    kv_any = mask_np.astype(bool).any(0)  # host copy of kv_mask.any(0): cropping needs no device sync

    while not all(done):
        active = [b for b in range(B) if not done[b]]
        drafts: list[list[int]] = [[] for _ in range(B)]
        t0, c0 = time.perf_counter(), time.thread_time()
        for b in active:
            budget = min(num_draft, max_new_tokens - len(generated[b]) - 1)
            if budget > 0:
                d = drafter.propose(contexts[b] + generated[b], budget, key=b)
                drafts[b] = [int(x) for x in d[:budget]]
        dt = time.perf_counter() - t0
        stats.drafter_seconds += dt
        stats.drafter_cpu_seconds += time.thread_time() - c0
        stats.drafter_step_seconds.append(dt)
        K = max(len(drafts[b]) for b in range(B))
        block = torch.full((B, 1 + K), int(pad_token_id), dtype=torch.long)
        bmask = torch.zeros((B, 1 + K), dtype=torch.long)
        for b in range(B):
            block[b, 0] = generated[b][-1]
            bmask[b, 0] = 1
            if drafts[b]:
                block[b, 1 : 1 + len(drafts[b])] = torch.tensor(drafts[b])
                bmask[b, 1 : 1 + len(drafts[b])] = 1
        block, bmask = block.to(device), bmask.to(device)
        pos = (next_pos.unsqueeze(1) + torch.arange(1 + K, device=device).unsqueeze(0))
        full_mask = torch.cat([kv_mask, bmask], dim=1)
        t0 = time.perf_counter()
        out = model(input_ids=block, attention_mask=full_mask, position_ids=pos, cache=cache, use_cache=True)
        stats.model_seconds += time.perf_counter() - t0
        cache = out.cache
        greedy = out.logits.argmax(-1).cpu().numpy()  # (B, 1+K)
        stats.steps += 1
        stats.row_steps += len(active)
        valid = torch.zeros((B, 1 + K), dtype=torch.long)
        for b in range(B):
            if done[b]:
                continue
            d = drafts[b]
            m = 0
            while m < len(d) and d[m] == greedy[b, m]:
                m += 1
            stats.drafted += len(d)
            stats.accepted += m
            valid[b, : m + 1] = 1
            next_pos[b] += m + 1
            for tok in d[:m] + [int(greedy[b, m])]:
                generated[b].append(tok)
                if tok in eos or len(generated[b]) >= max_new_tokens:
                    done[b] = True
                    break
        kv_mask = torch.cat([kv_mask, valid.to(device)], dim=1)
        kv_any = np.concatenate([kv_any, valid.numpy().any(0)])
        # crop cache slots that no row attends to any more (always exact for batch size 1)
        used = np.flatnonzero(kv_any)
        keep = int(used[-1]) + 1 if len(used) else 0
        if keep < kv_mask.shape[1] and hasattr(cache, "crop"):
            cache.crop(keep - kv_mask.shape[1])  # negative: remove that many (old and new transformers)
            kv_mask = kv_mask[:, :keep]
            kv_any = kv_any[:keep]

    n = max(len(g) for g in generated)
    out_ids = torch.full((B, T0 + n), int(pad_token_id), dtype=input_ids.dtype, device=device)
    out_ids[:, :T0] = input_ids
    for b in range(B):
        out_ids[b, T0 : T0 + len(generated[b])] = torch.tensor(generated[b], dtype=input_ids.dtype)
    stats.new_tokens = sum(len(g) for g in generated)
    stats.per_row_new_tokens = [len(g) for g in generated]
    stats.seconds = time.perf_counter() - t_start
    return (out_ids, stats) if return_stats else out_ids


# generate_with_drafter replaces GenerationMixin._get_candidate_generator, which is not public API and
# changes between releases (5.25 added num_drafting_tokens to the generator's contract). It is tested on
# these releases only; speculative_generate needs nothing private and works on any transformers 5.
HF_HOOK_SUPPORTED = (">=5.25", "<5.26")


def _check_hf_hook_version(version: str) -> None:
    from packaging.version import Version

    low, high = (Version(b.lstrip("<>=")) for b in HF_HOOK_SUPPORTED)
    if not low <= Version(version) < high:
        raise UnsupportedTransformersError(
            f"generate_with_drafter hooks into transformers' assisted generation, which is not public API; it "
            f"supports transformers {','.join(HF_HOOK_SUPPORTED)} and this is {version}. Install a supported "
            "release (requirements.lock pins one) or use speculative_generate, which works on any transformers 5"
        )


def generate_with_drafter(model, drafter, input_ids: torch.Tensor, *, num_draft: int = 8, **generate_kwargs):
    """Hugging Face ``model.generate`` (greedy, batch size 1) with ``drafter`` supplying candidates
    through the library's assisted-generation loop. Extra kwargs go to ``generate``.

    Raises UnsupportedTransformersError outside the transformers releases in HF_HOOK_SUPPORTED."""
    import transformers
    from transformers.generation.candidate_generator import CandidateGenerator

    _check_hf_hook_version(transformers.__version__)

    class _DrafterCandidates(CandidateGenerator):
        def __init__(self):
            self.seconds = 0.0

        @property
        def num_drafting_tokens(self):  # how many tokens a step may draft (asked for by transformers 5.25)
            return num_draft

        def get_candidates(self, input_ids, **kwargs):
            t0 = time.perf_counter()
            ctx = input_ids[0].tolist()
            d = drafter.propose(ctx, num_draft, key=0)
            self.seconds += time.perf_counter() - t0
            if not d:
                return input_ids, None
            cand = torch.tensor([d], dtype=input_ids.dtype, device=input_ids.device)
            return torch.cat([input_ids, cand], dim=1), None

        def update_candidate_strategy(self, input_ids, scores, num_matches):
            return

    if input_ids.shape[0] != 1:
        raise ValueError("Hugging Face assisted generation supports batch size 1 only; "
                         "use speculative_generate for batches")
    gen = _DrafterCandidates()
    original = model._get_candidate_generator
    model._get_candidate_generator = lambda *a, **k: gen
    try:
        generate_kwargs.setdefault("do_sample", False)
        return model.generate(input_ids, prompt_lookup_num_tokens=num_draft, **generate_kwargs)
    finally:
        try:
            del model._get_candidate_generator
        except AttributeError:
            model._get_candidate_generator = original


def draft_trie(chains: list[list[int]]) -> tuple[list[int], list[int]]:
    """Merge draft chains into one tree: (tokens, parents), a node per distinct prefix, parent -1 for
    the children of the root (the token before the draft). Depth-first order with chains[0] first, so
    the first chain's nodes are nodes 0, 1, 2, ... (contiguous, the common case to keep in the cache)."""
    tokens: list[int] = []
    parents: list[int] = []
    children: dict[tuple[int, int], int] = {}
    for chain in chains:
        parent = -1
        for tok in chain:
            node = children.get((parent, int(tok)))
            if node is None:
                node = children[(parent, int(tok))] = len(tokens)
                tokens.append(int(tok))
                parents.append(parent)
            parent = node
    # depth-first order: insertion order already is, for chains[0]; reorder the rest
    order: list[int] = []
    kids: dict[int, list[int]] = {}
    for j, parent in enumerate(parents):
        kids.setdefault(parent, []).append(j)
    stack = list(reversed(kids.get(-1, [])))
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(kids.get(j, [])))
    new_index = {old: i for i, old in enumerate(order)}
    return [tokens[j] for j in order], [new_index[parents[j]] if parents[j] >= 0 else -1 for j in order]


def _tree_block(pending: list[int], tokens: list[int], parents: list[int], cached: int, dtype, device):
    """Input ids, positions and the additive 4D attention mask that verify a draft tree in one pass:
    every token sees the cache, the pending tokens before it, and (draft nodes) its own ancestors."""
    P, N = len(pending), len(tokens)
    depth = [0] * N
    allowed = torch.zeros((P + N, cached + P + N), dtype=torch.bool)
    allowed[:, :cached] = True
    allowed[:P, cached : cached + P] = torch.tril(torch.ones((P, P), dtype=torch.bool))
    allowed[P:, cached : cached + P] = True
    for j, parent in enumerate(parents):
        depth[j] = 1 if parent < 0 else depth[parent] + 1
        allowed[P + j, cached + P + j] = True
        while parent >= 0:
            allowed[P + j, cached + P + parent] = True
            parent = parents[parent]
    ids = torch.tensor([pending + tokens], dtype=torch.long, device=device)
    pos = torch.tensor([[cached + i for i in range(P)] + [cached + P - 1 + d for d in depth]], device=device)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return ids, pos, mask[None, None].to(device)


@torch.no_grad()
def speculative_generate_tree(model, drafter, input_ids: torch.Tensor, max_new_tokens: int, *, width: int = 2,
                              num_draft: int = 8, eos_token_id=None, return_stats: bool = False):
    """Batch-1 speculative decoding over a draft tree: ``drafter.propose_tree(context, k, width)`` gives
    chains, merged into a tree (draft_trie) and verified in one forward pass with a tree attention mask
    (each node attends to its ancestors only) and per-node positions. The longest path the model
    agrees with is accepted, plus the model's own next token. Same tokens as greedy.

    The cache keeps what it can: the first chain's accepted nodes stay (they are contiguous); accepted
    nodes of another branch are cropped and fed again, as pending tokens, at the front of the next pass."""
    t_start = time.perf_counter()
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.shape[0] != 1:
        raise ValueError("speculative_generate_tree handles batch size 1; use speculative_generate for batches")
    device = input_ids.device
    eos = _eos_set(model, eos_token_id)
    stats = SpecStats()
    if max_new_tokens <= 0:
        return (input_ids, stats) if return_stats else input_ids
    cache = new_kv_cache(model)
    t0 = time.perf_counter()
    out = model(input_ids=input_ids, cache=cache, use_cache=True)
    stats.model_seconds += time.perf_counter() - t0
    cache = out.cache
    dtype = out.logits.dtype
    generated = [int(out.logits[0, -1].argmax())]
    stats.steps = stats.row_steps = 1
    ctx = input_ids[0].tolist()
    cached = input_ids.shape[1]  # tokens in the cache
    pending = [generated[0]]  # generated tokens not in the cache yet (the last one always)
    done = generated[0] in eos or max_new_tokens <= 1
    while not done:
        budget = min(num_draft, max_new_tokens - len(generated) - 1)
        t0, c0 = time.perf_counter(), time.thread_time()
        chains = drafter.propose_tree(ctx + generated, budget, width=width, key=0) if budget > 0 else []
        tokens, parents = draft_trie([[int(x) for x in c[:budget]] for c in chains if c])
        dt = time.perf_counter() - t0
        stats.drafter_seconds += dt
        stats.drafter_cpu_seconds += time.thread_time() - c0
        stats.drafter_step_seconds.append(dt)
        ids, pos, mask = _tree_block(pending, tokens, parents, cached, dtype, device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
        stats.model_seconds += time.perf_counter() - t0
        cache = out.cache
        greedy = out.logits[0].argmax(-1).tolist()
        P = len(pending)
        children = {(parent, tok): j for j, (tok, parent) in enumerate(zip(tokens, parents))}
        accepted: list[int] = []
        node, row = -1, P - 1  # row: the block position whose logits predict the next token
        while (node, greedy[row]) in children:
            node = children[(node, greedy[row])]
            accepted.append(node)
            row = P + node
        new = [tokens[j] for j in accepted] + [greedy[row]]
        stats.steps += 1
        stats.row_steps += 1
        stats.drafted += len(tokens)
        stats.accepted += len(accepted)
        kept = 0  # accepted nodes that are the first chain's, hence already in the right cache slots
        while kept < len(accepted) and accepted[kept] == kept:
            kept += 1
        extra = len(tokens) - kept  # draft slots past what stays: crop takes a negative count to remove
        cached += P + kept
        if extra:
            cache.crop(-extra)
        pending = [tokens[j] for j in accepted[kept:]] + [greedy[row]]
        for tok in new:
            generated.append(tok)
            if tok in eos or len(generated) >= max_new_tokens:
                done = True
                break
    ids = torch.cat([input_ids, torch.tensor([generated], dtype=input_ids.dtype, device=device)], dim=1)
    stats.new_tokens = len(generated)
    stats.per_row_new_tokens = [len(generated)]
    stats.seconds = time.perf_counter() - t_start
    return (ids, stats) if return_stats else ids
