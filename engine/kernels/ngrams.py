"""numba kernels for frequent n-grams and f-gram matching (same conventions as engine.kernels.suffix).

Frequent n-grams are enumerated as a depth-first walk of the n-gram trie that all shards share:
a node is an n-gram given by one suffix-array range per shard, its count is the sum of the widths,
and a child (the n-gram extended by one token) is kept only when its *total* count reaches
``min_count``; counts only shrink as an n-gram grows, so pruning there is exact.

Finding the children of a node uses the pigeonhole principle instead of visiting every distinct
next token: a child whose total count is at least C over the ``s`` shards where the node occurs has
at least t = ceil(C / s) occurrences in one of them, i.e. a run of width >= t in that shard's
range, and every such run covers one of the ranks lo, lo + t, lo + 2t, ... So each shard is sampled
at that stride; each sampled key's run is bounded by binary search; then the candidates of all
shards are merged and every candidate is counted exactly in every shard (a binary search where it
was not sampled) before the threshold is applied. A node of width w costs about w / t key reads
plus a few binary searches per candidate, which is what makes high thresholds cheap.

Children are visited in token-id order (not key order), so the walk emits n-grams sorted by
token ids with a prefix before its extensions; the Python layer relies on that for its stable
counting sort by count.
"""

from __future__ import annotations

import numpy as np
from numba import njit
import engine.kernels.cache  # noqa: F401  (before any cached kernel: one stamp for all kernel modules)

from engine.kernels.suffix import key_at_rank, lower_bound, narrow_range, run_end, shard_views


@njit(inline="always")
def _key_to_id(key, tw):
    """Token id of a key (the byte swap is its own inverse)."""
    if tw == 1:
        return key
    if tw == 2:
        return ((key & 0xFF) << 8) | ((key >> 8) & 0xFF)
    return ((key & 0xFF) << 24) | (((key >> 8) & 0xFF) << 16) | (((key >> 16) & 0xFF) << 8) | ((key >> 24) & 0xFF)


@njit(inline="always")
def _stride(lo_a, hi_a, min_count):
    """Sampling stride t = ceil(min_count / shards where the node occurs), at least 1."""
    s_eff = 0
    for s in range(lo_a.shape[0]):
        if hi_a[s] > lo_a[s]:
            s_eff += 1
    if s_eff == 0:
        return np.int64(1)
    t = (min_count + s_eff - 1) // s_eff
    return np.int64(max(t, 1))


@njit(inline="always")
def _expand_need(lo_a, hi_a, t):
    """Upper bound on the candidates (and so on the children) one expansion can produce."""
    need = 0
    for s in range(lo_a.shape[0]):
        w = hi_a[s] - lo_a[s]
        if w > 0:
            need += w // t + 1
    return need


@njit(cache=True)
def _expand(st, tw, sep_key, lo_a, hi_a, depth, min_count, t,
            tk, ts, tlo, thi, ck, cn, clo, chi, base):
    """Children of the node with per-shard ranges lo_a/hi_a at byte depth ``depth`` whose total
    count is >= min_count, written at ``base`` of ck (keys), cn (counts), clo/chi (flat, S per
    child), ordered by token id. tk/ts/tlo/thi are scratch of at least _expand_need entries.
    Returns how many children were written."""
    n_shards = st.shape[0]
    nc = 0
    for s in range(n_shards):
        lo = lo_a[s]
        hi = hi_a[s]
        if lo >= hi:
            continue
        ds, sa, ps, _ = shard_views(st, s)
        r = lo
        prev_end = lo
        while r < hi:
            key = key_at_rank(ds, sa, ps, tw, r, depth)
            a = lower_bound(ds, sa, ps, tw, prev_end, r, depth, key)
            b = run_end(ds, sa, ps, tw, r, hi, depth, key)
            if key >= 0 and key != sep_key:
                tk[nc] = key
                ts[nc] = s
                tlo[nc] = a
                thi[nc] = b
                nc += 1
            prev_end = b
            r = lo + ((b - lo + t - 1) // t) * t
    n = 0
    if n_shards == 1:
        for i in range(nc):
            c = thi[i] - tlo[i]
            if c >= min_count:
                ck[base + n] = tk[i]
                cn[base + n] = c
                clo[base + n] = tlo[i]
                chi[base + n] = thi[i]
                n += 1
    else:
        order = np.argsort(tk[:nc], kind="mergesort")
        seen = np.zeros(n_shards, dtype=np.bool_)
        i = 0
        while i < nc:
            key = tk[order[i]]
            j = i
            while j < nc and tk[order[j]] == key:
                j += 1
            row = (base + n) * n_shards
            total = np.int64(0)
            for s in range(n_shards):
                clo[row + s] = lo_a[s]
                chi[row + s] = lo_a[s]
                seen[s] = False
            for q in range(i, j):
                c = order[q]
                clo[row + ts[c]] = tlo[c]
                chi[row + ts[c]] = thi[c]
                total += thi[c] - tlo[c]
                seen[ts[c]] = True
            for s in range(n_shards):
                if hi_a[s] > lo_a[s] and not seen[s]:
                    ds, sa, ps, _ = shard_views(st, s)
                    a, b = narrow_range(ds, sa, ps, tw, lo_a[s], hi_a[s], depth, key)
                    clo[row + s] = a
                    chi[row + s] = b
                    total += b - a
            if total >= min_count:
                ck[base + n] = key
                cn[base + n] = total
                n += 1
            i = j
    if tw > 1 and n > 1:
        # Key order is not id order for u16/u32: reorder the children by token id.
        ids = np.empty(n, dtype=np.int64)
        for i in range(n):
            ids[i] = _key_to_id(ck[base + i], tw)
        perm = np.argsort(ids, kind="mergesort")
        keys = ck[base:base + n].copy()
        counts = cn[base:base + n].copy()
        los = clo[base * n_shards:(base + n) * n_shards].copy()
        his = chi[base * n_shards:(base + n) * n_shards].copy()
        for i in range(n):
            p = perm[i]
            ck[base + i] = keys[p]
            cn[base + i] = counts[p]
            for s in range(n_shards):
                clo[(base + i) * n_shards + s] = los[p * n_shards + s]
                chi[(base + i) * n_shards + s] = his[p * n_shards + s]
    return n


@njit(nogil=True, cache=True)
def expand_node(st, tw, sep_key, lo_a, hi_a, depth, min_count):
    """Children of one node (see _expand) as new arrays: keys, counts, lo (n, S), hi (n, S)."""
    n_shards = st.shape[0]
    t = _stride(lo_a, hi_a, min_count)
    need = _expand_need(lo_a, hi_a, t)
    tk, ts, tlo, thi, ck, cn, clo, chi = _new_buffers(need, n_shards)
    n = _expand(st, tw, sep_key, lo_a, hi_a, depth, min_count, t, tk, ts, tlo, thi, ck, cn, clo, chi, 0)
    return ck[:n].copy(), cn[:n].copy(), clo[:n * n_shards].reshape(n, n_shards).copy(), \
        chi[:n * n_shards].reshape(n, n_shards).copy()


@njit(inline="always")
def _grow(a, need):
    if a.shape[0] >= need:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


@njit(inline="always")
def _grow_buffers(tk, ts, tlo, thi, ck, cn, clo, chi, need, children, n_shards):
    """_expand's buffers grown for ``need`` candidates, and room for ``children`` children in all."""
    return (_grow(tk, need), _grow(ts, need), _grow(tlo, need), _grow(thi, need), _grow(ck, children),
            _grow(cn, children), _grow(clo, children * n_shards), _grow(chi, children * n_shards))


@njit(inline="always")
def _new_buffers(size, n_shards):
    """Empty buffers for _expand: room for ``size`` candidates and children."""
    z = np.empty(0, dtype=np.int64)
    return _grow_buffers(z, z, z, z, z, z, z, z, max(size, 1), max(size, 1), n_shards)


@njit(nogil=True, cache=True)
def enumerate_frequent(st, tw, sep_key, root_paths, root_depths, root_lo, root_hi, root_counts,
                       first_root, n_min, n_max, min_count, out_paths, out_counts, counts_only):
    """Walk the subtrees of roots first_root.. in order, emitting every n-gram (root included) with
    n_min <= n <= n_max and total count >= min_count: its key path (padded with -1) in out_paths
    and its count in out_counts, in pre-order with children in token-id order.

    A root's subtree is emitted whole or not at all: when the outputs would overflow, the rows of
    the unfinished root are dropped and the walk stops. Returns (next root, rows written); the
    caller writes the rows and calls again from the returned root (or splits a root that does not
    fit alone). ``counts_only`` skips writing paths.
    """
    n_shards = st.shape[0]
    cap = out_counts.shape[0]
    levels = n_max + 1
    seg_start = np.zeros(levels, dtype=np.int64)
    seg_n = np.zeros(levels, dtype=np.int64)
    cur = np.zeros(levels, dtype=np.int64)
    path = np.full(n_max, -1, dtype=np.int64)
    tk, ts, tlo, thi, ck, cn, clo, chi = _new_buffers(1024, n_shards)
    n_out = 0
    for r in range(first_root, root_depths.shape[0]):
        start_out = n_out
        d0 = root_depths[r]
        for k in range(n_max):
            path[k] = root_paths[r, k]
        overflow = False
        if d0 >= n_min and d0 <= n_max and root_counts[r] >= min_count:
            if n_out >= cap:
                return r, start_out
            if not counts_only:
                for k in range(n_max):
                    out_paths[n_out, k] = path[k] if k < d0 else -1
            out_counts[n_out] = root_counts[r]
            n_out += 1
        if d0 >= n_max:
            continue
        # Level 0 holds the children of the root.
        lo_a = root_lo[r]
        hi_a = root_hi[r]
        t = _stride(lo_a, hi_a, min_count)
        need = _expand_need(lo_a, hi_a, t)
        tk, ts, tlo, thi, ck, cn, clo, chi = _grow_buffers(tk, ts, tlo, thi, ck, cn, clo, chi, need, need, n_shards)
        seg_start[0] = 0
        seg_n[0] = _expand(st, tw, sep_key, lo_a, hi_a, d0 * tw, min_count, t,
                           tk, ts, tlo, thi, ck, cn, clo, chi, 0)
        cur[0] = 0
        lev = 0
        while lev >= 0:
            if cur[lev] >= seg_n[lev]:
                lev -= 1
                if lev >= 0:
                    cur[lev] += 1
                continue
            c = seg_start[lev] + cur[lev]
            depth = d0 + 1 + lev
            path[depth - 1] = ck[c]
            if depth >= n_min:
                if n_out >= cap:
                    overflow = True
                    break
                if not counts_only:
                    for k in range(n_max):
                        out_paths[n_out, k] = path[k] if k < depth else -1
                out_counts[n_out] = cn[c]
                n_out += 1
            if depth < n_max:
                base = seg_start[lev] + seg_n[lev]
                lo_c = clo[c * n_shards:(c + 1) * n_shards]
                hi_c = chi[c * n_shards:(c + 1) * n_shards]
                t = _stride(lo_c, hi_c, min_count)
                need = _expand_need(lo_c, hi_c, t)
                tk, ts, tlo, thi, ck, cn, clo, chi = _grow_buffers(tk, ts, tlo, thi, ck, cn, clo, chi, need,
                                                                   base + need, n_shards)
                n = _expand(st, tw, sep_key, lo_c, hi_c, depth * tw, min_count, t,
                            tk, ts, tlo, thi, ck, cn, clo, chi, base)
                lev += 1
                seg_start[lev] = base
                seg_n[lev] = n
                cur[lev] = 0
            else:
                cur[lev] += 1
        if overflow:
            return r, start_out
    return root_depths.shape[0], n_out


# ---------------------------------------------------------------------------- f-gram matching
@njit(nogil=True, cache=True)
def fgram_longest(rev, rev_len, rev_id, tokens, out_id, out_len):
    """For each position t of ``tokens``, the id and length of the longest f-gram ending at t.

    ``rev`` (S, K) holds every f-gram reversed and right-padded with -1, rows sorted
    lexicographically (so a row that is a prefix of another comes first); rev_len / rev_id give
    each row's length and f-gram id. Walking backwards from t narrows the row range one column at
    a time by binary search; a range whose first row has exactly the matched length is an f-gram.
    Positions with no f-gram get id -1 and length 0.
    """
    n_rows = rev.shape[0]
    width = rev.shape[1]
    for t in range(tokens.shape[0]):
        best = -1
        best_len = 0
        lo = 0
        hi = n_rows
        d = 0
        while d < width and d <= t and lo < hi:
            v = tokens[t - d]
            # lower bound of v in column d over [lo, hi)
            a = lo
            b = hi
            while a < b:
                m = (a + b) >> 1
                if rev[m, d] < v:
                    a = m + 1
                else:
                    b = m
            lo2 = a
            b = hi
            while a < b:
                m = (a + b) >> 1
                if rev[m, d] <= v:
                    a = m + 1
                else:
                    b = m
            lo = lo2
            hi = a
            d += 1
            if lo < hi and rev_len[lo] == d:
                best = rev_id[lo]
                best_len = d
        out_id[t] = best
        out_len[t] = best_len
