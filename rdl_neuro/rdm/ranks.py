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
    """``scipy.stats.rankdata(values) - shift`` (average method) of a finite float64 row, into ``out``."""
    # average ranks do not depend on the order inside a run of ties, so numpy's unstable sort (a
    # vectorised quicksort, faster than the radix path at every size measured) is exact here
    order = np.argsort(values)
    new = _run_starts(values[order])
    p = values.size
    ranks = np.empty(p) if out is None else out
    if new.all():
        # no ties: one scatter of 1..P (shifted), straight into the output row
        ranks[order] = np.arange(1 - shift, p + 1 - shift, dtype=np.float64)[:p]
    else:
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], p)
        # positions start..end-1 share the 1-based average rank (start + 1 + end) / 2 (exact in float)
        ranks[order] = ((starts + ends + 1) / 2 - shift)[np.cumsum(new) - 1]
    return ranks


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
    rows = numpy_rows(x)
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



