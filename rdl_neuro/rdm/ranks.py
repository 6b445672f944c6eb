"""Ranks of dissimilarities and Kendall's tau, exactly as scipy and rsatoolbox compute them.

Ranks need no gradient, so they are computed in numpy on the CPU, one RDM row
at a time (each RDM is ranked once per call, not once per pair). ``rankdata``
gives average ranks (Spearman, rho-a), ``kendall_tau`` counts discordant pairs
with scipy's compiled Fenwick-tree routine; ``tau_from_counts`` turns pair
counts into tau-a or tau-b and is shared with the Kendall bootstrap of
``rdl_neuro.inference``.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

# scipy's compiled Fenwick-tree discordance count (it releases the GIL), which
# scipy.stats.kendalltau and rsatoolbox's tau-a call too. It is private to scipy
# (stable since scipy 1.0); the import fails loudly if a release moves it.
from scipy.stats._stats import _kendall_dis


def count_discordant(x_sorted: np.ndarray, y_seq: np.ndarray) -> int:
    """Pairs ``s < t`` with ``y_seq[s] > y_seq[t]`` and ``x_sorted[s] < x_sorted[t]``.

    ``x_sorted`` are ascending dense ranks (ints), ``y_seq`` the dense ranks of
    the other variable in the same order; pairs tied in x are never counted.
    """
    return int(_kendall_dis(x_sorted, y_seq))


def tau_from_counts(con_minus_dis: int, tot: int, ties_x: int, ties_y: int, variant: str) -> float:
    """Kendall's tau-a or tau-b from pair counts, as rsatoolbox's ``_tau_a`` and scipy's ``kendalltau``.

    ``con_minus_dis`` is concordant minus discordant pairs, ``tot`` all pairs,
    ``ties_x`` / ``ties_y`` the pairs tied in each variable. tau-b of a
    constant vector is NaN (scipy's answer).
    """
    if variant == "a":
        return min(1.0, max(-1.0, con_minus_dis / tot))
    if ties_x == tot or ties_y == tot:
        return math.nan
    return min(1.0, max(-1.0, con_minus_dis / math.sqrt(tot - ties_x) / math.sqrt(tot - ties_y)))


##
# Ranks need no gradient, so they are computed in numpy on the CPU, one RDM row
# at a time (each RDM is ranked once per call, not once per pair). The sort is
# the cost: a comparison sort of 500k float64 takes ~30-60 ms here, while
# torch's stable sort of non-negative int32 keys (a radix sort) takes ~5 ms.
# So rows are mapped to order-preserving 31-bit integer keys and radix-sorted;
# the rare runs of equal keys holding different values are then put in order
# by value, which keeps the result exactly the order of the float values.


# below this many entries the integer-key radix sort does not pay for its extra passes
_RADIX_MIN_ENTRIES = 50_000


def _sorted_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ascending order of a 1-D finite float64 array (exact) and, along it, True where a new
    run of equal values starts: ``(order (P,) intp, new (P,) bool)``."""
    if values.size < _RADIX_MIN_ENTRIES:
        # short rows: numpy's stable sort beats the key-building passes and torch's call overhead
        order = np.argsort(values, kind="stable")
        return order, _run_starts(values[order])
    lo, hi = values.min(), values.max()
    with np.errstate(over="ignore", divide="ignore"):
        scale = (2.0**31 - 1) / (hi - lo) if hi > lo else np.inf
    if not np.isfinite(scale) or scale == 0:  # constant row, or a range too large / small to scale
        order = np.argsort(values, kind="stable")
        return order, _run_starts(values[order])
    # rounding is monotone, so the keys never contradict the order of the values
    buffer = np.subtract(values, lo)  # in place from here: fewer fresh 4 MB arrays to fault in
    np.multiply(buffer, scale, out=buffer)
    key = np.minimum(buffer, 2.0**31 - 1, out=buffer).astype(np.int32)
    # non-negative int32 keys take torch's radix-sort fast path (about 2x numpy's two 16-bit passes)
    sorted_key, order = torch.sort(torch.from_numpy(key), stable=True)
    sorted_key, order = sorted_key.numpy(), order.numpy()
    same = sorted_key[1:] == sorted_key[:-1]
    new = np.empty(values.size, dtype=bool)
    new[0] = True
    np.logical_not(same, out=new[1:])  # equal values have equal keys, so a new key starts a new run
    if same.any():
        # equal keys may still hold different values (they are few): put each run of equal keys in
        # order by value and start a new run wherever the value changes inside it
        pairs = np.flatnonzero(same)
        members = np.union1d(pairs, pairs + 1)  # positions in runs of equal keys, ascending
        first = new[members]  # the first member of each such run
        run = np.cumsum(first)
        member_values = values[order[members]]
        fix = np.lexsort((member_values, run))
        order[members] = order[members[fix]]
        member_values = member_values[fix]
        inner = np.flatnonzero(~first)
        new[members[inner]] = member_values[inner] != member_values[inner - 1]
    return order, new


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Boolean ``(P,)``: True where a sorted array starts a new run of equal values."""
    new = np.empty(ordered.size, dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    return new


def _average_ranks_row(values: np.ndarray, out: np.ndarray | None = None, shift: float = 0.0) -> np.ndarray:
    """``scipy.stats.rankdata(values) - shift`` (average method) of a finite float row, into ``out``."""
    p = values.size
    ranks = np.empty(p) if out is None else out
    if values.dtype == np.float32 and _PACKED_MIN_ENTRIES <= p < 2**31:
        if _packed_average_ranks(values, ranks, shift):
            return ranks
    # average ranks do not depend on the order inside a run of ties, so numpy's unstable sort (a
    # vectorised quicksort, faster than the radix path at every size measured) is exact here
    order = np.argsort(values)
    new = _run_starts(values[order])
    if new.all():
        # no ties: one scatter of 1..P (shifted), straight into the output row
        ranks[order] = np.arange(1 - shift, p + 1 - shift, dtype=np.float64)[:p]
    else:
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], p)
        # positions start..end-1 share the 1-based average rank (start + 1 + end) / 2 (exact in float)
        ranks[order] = ((starts + ends + 1) / 2 - shift)[np.cumsum(new) - 1]
    return ranks


##
# Long float32 rows (an RDM of 10,000 stimuli has 50 million entries) are ranked without an
# argsort, which costs ~3 s per such row here: each entry becomes one uint64, its value's
# order-preserving 32-bit key above its index, and numpy sorts those plain integers (a SIMD
# sort, ~10x faster than the argsort). Runs of equal keys are the ties; each entry's doubled
# average rank then replaces its key, the index moves up, and a second integer sort by index
# brings the ranks back to the entries' places (cheaper than a random scatter of 50 million
# floats). All passes run over chunks that stay in cache.

# below this many entries the two integer sorts and the chunked passes cost more than an argsort
_PACKED_MIN_ENTRIES = 50_000
_CHUNK = 1 << 16
# the keys of -inf and +inf: a key outside them is a NaN (which keeps the argsort path's answer)
_KEY_MINUS_INF, _KEY_PLUS_INF = 0x007FFFFF, 0xFF800000


def _packed_average_ranks(values: np.ndarray, out: np.ndarray, shift: float) -> bool:
    """Average ranks minus ``shift`` of a float32 row ``(P,)`` into ``out (P,)`` float64, by two
    sorts of packed uint64 (key, index) words; False (``out`` untouched) if the row holds a NaN."""
    p = values.size
    packed = np.empty(p, dtype=np.uint64)
    words = packed.view(np.uint32).reshape(p, 2)  # little-endian halves: [:, 0] low, [:, 1] high
    if not np.little_endian:  # there the high half comes first
        words = words[:, ::-1]
    _write_keys(values, words)
    packed.sort()  # by key, then by index (which does not matter: ties share their rank)
    keys = words[:, 1]
    if keys[0] < _KEY_MINUS_INF or keys[-1] > _KEY_PLUS_INF:
        return False
    new = _run_starts(keys)
    starts = np.flatnonzero(new)
    # the doubled 1-based average rank of each run: (start + 1) + end = start + end + 1, with
    # run numbers counted from 1 (slot 0 unused); exact integers below 2**32 for P < 2**31
    doubled = np.empty(starts.size + 1, dtype=np.uint32)
    np.add(starts[1:], starts[:-1] + 1, out=doubled[1:-1], casting="unsafe")
    doubled[-1] = starts[-1] + p + 1
    run = np.empty(_CHUNK, dtype=np.uint32)
    runs_before = 0
    for s in range(0, p, _CHUNK):
        e = min(s + _CHUNK, p)
        r = run[:e - s]
        np.cumsum(new[s:e], dtype=np.uint32, out=r)
        np.add(r, np.uint32(runs_before), out=r)
        runs_before = int(r[-1])
        words[s:e, 1] = words[s:e, 0]  # the index moves up ...
        np.take(doubled, r, out=words[s:e, 0])  # ... and the doubled rank takes its place
    packed.sort()  # by index: the ranks in the entries' order
    np.multiply(words[:, 0], 0.5, out=out)
    np.subtract(out, shift, out=out)
    return True


def _write_keys(values: np.ndarray, words: np.ndarray) -> None:
    """Order-preserving uint32 keys of a float32 row into ``words[:, 1]`` and its indices into
    ``words[:, 0]``: the sign bit flipped for positive floats, all bits for negative ones (so the
    integer order is the float order), after mapping -0.0 to +0.0 (equal floats, equal keys)."""
    p = values.size
    index = np.arange(_CHUNK, dtype=np.uint32)
    buffer = np.empty(_CHUNK, dtype=np.float32)
    flip = np.empty(_CHUNK, dtype=np.int32)
    for s in range(0, p, _CHUNK):
        e = min(s + _CHUNK, p)
        b, f = buffer[:e - s], flip[:e - s]
        np.add(values[s:e], np.float32(0.0), out=b)  # -0.0 + 0.0 is +0.0
        np.right_shift(b.view(np.int32), 31, out=f)  # arithmetic shift: -1 for negatives, else 0
        np.bitwise_or(f, np.int32(-2**31), out=f)  # all bits for negatives, the sign bit otherwise
        np.bitwise_xor(b.view(np.uint32), f.view(np.uint32), out=words[s:e, 1])
        np.add(index[:e - s], np.uint32(s), out=words[s:e, 0])


# below this many entries per row, starting threads costs more than it saves
_PARALLEL_MIN_ENTRIES = 50_000


def map_rows(func, rows: list, entries: int, n_threads: int | None = None) -> list:
    """``[func(r) for r in rows]``, on torch's thread count for rows of at least
    ``_PARALLEL_MIN_ENTRIES`` ``entries``: numpy's sorts and gathers and scipy's discordance
    count release the GIL, so threads really run in parallel."""
    n_threads = min(n_threads or torch.get_num_threads(), len(rows))
    if n_threads <= 1 or entries < _PARALLEL_MIN_ENTRIES:
        return [func(r) for r in rows]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(pool.map(func, rows))


def numpy_rows(x: torch.Tensor) -> np.ndarray:
    """``x`` as a float64 numpy array on the CPU (detached), for the numpy/scipy paths."""
    return x.detach().to(device="cpu", dtype=torch.float64).numpy()


def float_rows(x: torch.Tensor) -> np.ndarray:
    """``x`` as a numpy array on the CPU (detached) to be ranked: float32 and float64 as they are
    (their order needs no float64 copy; long float32 rows take the packed-key sort), others as float64."""
    return x.detach().cpu().numpy() if x.dtype in (torch.float32, torch.float64) else numpy_rows(x)


def centered_ranks(*row_blocks: np.ndarray) -> np.ndarray:
    """Average ranks minus their mean, ``(sum of rows, P)`` float64, for the rows of all blocks.

    The mean of average ranks is exactly ``(P + 1) / 2`` (as is numpy's mean of
    them: the sums are exact in float64), so no reduction pass is needed.
    """
    rows = [row for block in row_blocks for row in block]
    out = np.empty((len(rows), rows[0].size))
    middle = (rows[0].size + 1) / 2

    def fill(i: int) -> None:
        _average_ranks_row(rows[i], out[i], middle)

    map_rows(fill, list(range(len(rows))), rows[0].size)
    return out


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank) along the last dim of ``x (k, P)``.

    Equals ``scipy.stats.rankdata(row, method='average')`` for every row; not
    differentiable (the result is detached), same dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.rdm import rankdata
    >>> rankdata(torch.tensor([[3., 1., 2., 1.]]))     # ties share their average rank
    tensor([[4.0000, 1.5000, 3.0000, 1.5000]])
    """
    rows = float_rows(x)
    ranks = np.stack(map_rows(_average_ranks_row, list(rows), x.shape[-1]))
    return torch.from_numpy(ranks).to(device=x.device, dtype=x.dtype)


def kendall_tau(x: torch.Tensor, y: torch.Tensor, variant: str = "b", max_batch_elements: int = 2**25) -> torch.Tensor:
    """Kendall's tau-a or tau-b ``(k, m)`` between every row of ``x (k, P)`` and of ``y (m, P)``.

    Counts discordant pairs exactly (as ``scipy.stats.kendalltau`` and
    rsatoolbox's ``_tau_a``), with ties in either vector handled as they do.
    Not differentiable; the result has the dtype and device of ``x``.
    """
    k, p = x.shape
    xs = map_rows(sorted_dense, list(numpy_rows(x)), p)
    ys = map_rows(sorted_dense, list(numpy_rows(y)), p)
    # y's 1-based dense ranks in its original positions (what gets reordered by each x)
    y_dense = []
    for order, dense_sorted, _ in ys:
        ranks = np.empty(p, dtype=np.intp)
        ranks[order] = dense_sorted
        y_dense.append(ranks)
    tot = p * (p - 1) // 2

    def one_pair(ij: tuple[int, int]) -> float:
        (order, x_sorted, ties_x), ties_y = xs[ij[0]], ys[ij[1]][2]
        y_seq = y_dense[ij[1]][order]
        # Fenwick-tree count of pairs with x_s < x_t and y_s > y_t; pairs tied in x are never counted
        discordant = count_discordant(x_sorted, y_seq)
        joint = _joint_ties(x_sorted, y_seq) if ties_x and ties_y else 0
        return tau_from_counts(tot - ties_x - ties_y + joint - 2 * discordant, tot, ties_x, ties_y, variant)

    taus = map_rows(one_pair, [(i, j) for i in range(k) for j in range(y.shape[0])], p)
    return torch.tensor(taus, dtype=torch.float64).reshape(k, y.shape[0]).to(device=x.device, dtype=x.dtype)


def sorted_dense(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(order, 1-based dense ranks of values[order], number of tied pairs)`` of a float64 row."""
    order, new = _sorted_runs(values)
    dense = np.cumsum(new, dtype=np.intp)
    if dense[-1] == values.size:
        return order, dense, 0
    counts = np.diff(np.append(np.flatnonzero(new), values.size))
    return order, dense, int((counts * (counts - 1) // 2).sum())


def _joint_ties(x_sorted: np.ndarray, y_seq: np.ndarray) -> int:
    """Pairs tied in both x and y, for x dense ranks in ascending order and y dense ranks beside them."""
    n_y = int(y_seq.max()) + 1
    keys = x_sorted.astype(np.int64) * n_y + y_seq
    if int(keys[-1]) < 8 * keys.size:
        counts = np.bincount(keys)  # few distinct values: a histogram is cheapest
    else:
        keys = np.sort(keys)
        counts = np.diff(np.append(np.flatnonzero(_run_starts(keys)), keys.size))
    return int((counts * (counts - 1) // 2).sum())



