"""Torch RDM comparisons, batched over many RDMs: ``compare_rdms``.

The methods and their numbers are rsatoolbox's (``rsatoolbox.rdm.compare``):

``cosine``      cosine similarity of the dissimilarity vectors
``corr``        Pearson correlation
``spearman``    Spearman correlation (average ranks for ties)
``rho-a``       Spearman's rho-a (no tie correction), ``12 / (N^3 - N) * sum(r_a r_b)``
``kendall``     Kendall's tau-b (``tau-b`` is accepted too)
``tau-a``       Kendall's tau-a
``corr_cov``    Pearson correlation after whitening with the RDM covariance
``cosine_cov``  cosine similarity after whitening (the unbiased distance correlation)

The whitened comparisons use rsatoolbox's default covariance for ``n``
stimuli (independent, equal-variance patterns): the RDM vectors are mapped to
double-centred second-moment matrices, as rsatoolbox's ``_cov_weighting``
does, and compared there.

NaN entries mark missing dissimilarities. Each pair of RDMs is compared on
the entries that are valid in both; RDMs are grouped by their NaN pattern so
the work stays vectorised (one block per pair of patterns). Where all RDMs
share one NaN pattern this is exactly rsatoolbox's rule.

``cosine``, ``corr``, ``corr_cov`` and ``cosine_cov`` are differentiable; the
rank methods are not (ranks are piecewise constant), so they run in numpy on
the CPU (any device in, the same device out): every RDM is sorted once per
call with a radix sort of integer keys (see ``_sorted_runs``), and tau counts discordant
pairs with scipy's compiled Fenwick-tree routine, pairs spread over
``torch.get_num_threads()`` threads.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

try:
    # scipy's compiled Fenwick-tree discordance count (it releases the GIL), which
    # scipy.stats.kendalltau and rsatoolbox's tau-a call too. It is private, so a
    # pure-torch fallback (_kendall_tau_torch) is used if a scipy release moves it.
    from scipy.stats._stats import _kendall_dis
except ImportError:  # pragma: no cover
    _kendall_dis = None

from rdl_neuro.rdm import check_method, n_stimuli_from_length, triu_indices

COMPARE_METHODS = ("cosine", "corr", "spearman", "rho-a", "kendall", "tau-b", "tau-a", "corr_cov", "cosine_cov")
DIFFERENTIABLE_METHODS = ("cosine", "corr", "corr_cov", "cosine_cov")


def _as_rdm_matrix(x: torch.Tensor | np.ndarray, name: str) -> tuple[torch.Tensor, bool]:
    """Condensed RDMs as a 2-D floating tensor ``(n_rdms, n_pairs)``, and whether any entry is NaN."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of condensed RDMs, got {type(x).__name__}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n_rdms, n_pairs) or (n_pairs,), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no RDMs (shape {tuple(x.shape)})")
    n_stimuli_from_length(x.shape[1])
    # the sum is finite when every entry is (one cheap reduction in the common case); an
    # overflowing sum falls through to the full check; the slower search only names the culprit
    if bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all()):
        return x, False
    if bool(torch.isinf(x).any()):
        rdm, entry = torch.nonzero(torch.isinf(x))[0].tolist()
        raise ValueError(f"{name} contains an infinite dissimilarity (RDM {rdm}, condensed entry {entry})")
    return x, True


def compare_rdms(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, method: str = "corr") -> torch.Tensor:
    """Compare every RDM in ``a`` with every RDM in ``b``.

    Parameters
    ----------
    a : Tensor ``(k, n_pairs)`` or ``(n_pairs,)``
        Condensed RDMs (scipy ``squareform`` order); NaN marks missing entries.
    b : Tensor ``(m, n_pairs)`` or ``(n_pairs,)``
    method : str
        One of ``COMPARE_METHODS`` (see the module docstring).

    Returns
    -------
    Tensor ``(k, m)``: similarity of ``a[i]`` and ``b[j]``, in the promoted dtype of the inputs.
    """
    check_method(method, COMPARE_METHODS, "comparison method")
    a, a_has_nan = _as_rdm_matrix(a, "a")
    b, b_has_nan = _as_rdm_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"RDMs of different lengths: a has {a.shape[1]} entries per RDM "
            f"({n_stimuli_from_length(a.shape[1])} stimuli), b has {b.shape[1]} "
            f"({n_stimuli_from_length(b.shape[1])} stimuli)"
        )
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(device=a.device, dtype=dtype)

    if not (a_has_nan or b_has_nan):
        return _compare_on_mask(a, b, None, method)
    valid_a, valid_b = ~torch.isnan(a), ~torch.isnan(b)
    # the usual case, one NaN pattern per side (often none), needs no grouping (torch.unique
    # over rows of 500k entries alone costs more than a whole rank comparison)
    if bool((valid_a == valid_a[0]).all()) and bool((valid_b == valid_b[0]).all()):
        return _compare_on_mask(a, b, valid_a[0] & valid_b[0], method)
    patterns_a, group_a = torch.unique(valid_a, dim=0, return_inverse=True)
    patterns_b, group_b = torch.unique(valid_b, dim=0, return_inverse=True)

    out = a.new_empty(a.shape[0], b.shape[0])
    for i, pattern_a in enumerate(patterns_a):
        rows_a = torch.nonzero(group_a == i).squeeze(1)
        for j, pattern_b in enumerate(patterns_b):
            rows_b = torch.nonzero(group_b == j).squeeze(1)
            block = _compare_on_mask(a[rows_a], b[rows_b], pattern_a & pattern_b, method)
            out = out.index_put((rows_a[:, None], rows_b[None, :]), block)
    return out


def _compare_on_mask(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, method: str) -> torch.Tensor:
    """Compare ``a (k, P)`` with ``b (m, P)`` on the entries where ``mask (P,)`` is True (None: all)."""
    full = mask is None or bool(mask.all())
    if mask is None:
        mask = torch.ones(a.shape[1], dtype=torch.bool, device=a.device)
    x = a if full else a[:, mask]
    y = b if full else b[:, mask]
    if x.shape[1] < 2:
        raise ValueError(f"fewer than 2 dissimilarities are valid (not NaN) in both RDMs: {x.shape[1]}")
    if method == "cosine":
        return _cosine(x, y)
    if method == "corr":
        return _cosine(_center(x), _center(y))
    if method in ("spearman", "rho-a"):
        # every RDM is ranked once (k + m rankings, in parallel), not once per pair
        ranks = torch.from_numpy(_centered_ranks(_numpy_rows(x), _numpy_rows(y))).to(device=x.device, dtype=x.dtype)
        rank_x, rank_y = ranks[: x.shape[0]], ranks[x.shape[0] :]
        if method == "spearman":
            return _cosine(rank_x, rank_y)
        n = x.shape[1]
        return rank_x @ rank_y.T * (12.0 / (n**3 - n))
    if method in ("kendall", "tau-b", "tau-a"):
        return kendall_tau(x, y, variant="a" if method == "tau-a" else "b")
    if method == "corr_cov":
        x, y = _center(x), _center(y)
    n_stim = n_stimuli_from_length(mask.shape[0])
    return _cosine(_whiten(x, mask, n_stim, full), _whiten(y, mask, n_stim, full))


def _center(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=1, keepdim=True)


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(k, m)`` of rows; 0 where either row is all zeros (rsatoolbox's rule)."""
    norm_x = torch.linalg.vector_norm(x, dim=1)
    norm_y = torch.linalg.vector_norm(y, dim=1)
    ok_x, ok_y = norm_x > 0, norm_y > 0
    safe_x = torch.where(ok_x, norm_x, torch.ones_like(norm_x))
    safe_y = torch.where(ok_y, norm_y, torch.ones_like(norm_y))
    # divide the small (k, m) product rather than the long rows (as rsatoolbox does)
    cos = (x @ y.T) / safe_x[:, None] / safe_y[None, :]
    return torch.where(ok_x[:, None] & ok_y[None, :], cos, torch.zeros_like(cos))


# ----------------------------------------------------------------------------- whitening


def _whiten(vectors: torch.Tensor, mask: torch.Tensor, n: int, full: bool) -> torch.Tensor:
    """RDM vectors ``(k, P_valid)`` -> whitened vectors ``(k, P_valid + n)``.

    rsatoolbox's ``_cov_weighting`` without ``sigma_k``: the dissimilarities
    become the entries of ``G = -D / 2``, which is double-centred (least-squares
    projection on the valid entries when some are missing), the diagonal is
    appended and the off-diagonal part weighted by ``sqrt(2)`` so that plain
    cosines of these vectors are Frobenius cosines of the centred matrices.
    """
    rows, cols = triu_indices(n, vectors.device)
    if not full:
        rows, cols = rows[mask], cols[mask]
    k = vectors.shape[0]
    w_pairs = -0.5 * vectors
    # vector_w @ sumI: each pair value is added to both of its stimuli (the diagonal part is 0)
    per_stimulus = vectors.new_zeros(k, n)
    per_stimulus = per_stimulus.index_add(1, rows, w_pairs).index_add(1, cols, w_pairs)
    if full:
        # G - row means - column means + grand mean, written on the pair and diagonal entries
        row_mean = per_stimulus / n
        grand_mean = 2 * w_pairs.sum(dim=1, keepdim=True) / (n * n)
        pairs = w_pairs - row_mean[:, rows] - row_mean[:, cols] + grand_mean
        diag = -2 * row_mean + grand_mean
    else:
        # vector_w - vector_w @ S @ inv(S' W S) @ (W S)', with S the stimulus indicator of every
        # entry (pairs touch two stimuli, diagonal entries one) and W = 1/2 on pairs, 1 on the diagonal.
        gram = torch.eye(n, dtype=vectors.dtype, device=vectors.device)
        ones = torch.full_like(rows, 1, dtype=vectors.dtype)
        degree = vectors.new_zeros(n).index_add(0, rows, ones).index_add(0, cols, ones)
        gram = gram + 0.5 * torch.diag(degree)
        gram = gram.index_put((rows, cols), 0.5 * ones, accumulate=True).index_put((cols, rows), 0.5 * ones, accumulate=True)
        coef = torch.linalg.solve(gram, per_stimulus.T).T  # (k, n)
        pairs = w_pairs - 0.5 * (coef[:, rows] + coef[:, cols])
        diag = -coef
    return torch.cat([pairs * math.sqrt(2), diag], dim=1)


# ----------------------------------------------------------------------------- ranks
#
# Ranks need no gradient, so they are computed in numpy on the CPU, one RDM row
# at a time (each RDM is ranked once per call, not once per pair). The sort is
# the cost: a comparison sort of 500k float64 takes ~30-60 ms here, while
# torch's stable sort of non-negative int32 keys (a radix sort) takes ~5 ms.
# So rows are mapped to order-preserving 31-bit integer keys and radix-sorted;
# the rare runs of equal keys holding different values are then put in order
# by value, which keeps the result exactly the order of the float values.


def _sorted_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ascending order of a 1-D finite float64 array (exact) and, along it, True where a new
    run of equal values starts: ``(order (P,) intp, new (P,) bool)``."""
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
    order, new = _sorted_runs(values)
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


def _map_rows(func, rows: list, entries: int, n_threads: int | None = None) -> list:
    """``[func(r) for r in rows]``, on torch's thread count for rows of at least
    ``_PARALLEL_MIN_ENTRIES`` ``entries``: numpy's sorts and gathers and scipy's discordance
    count release the GIL, so threads really run in parallel."""
    n_threads = min(n_threads or torch.get_num_threads(), len(rows))
    if n_threads <= 1 or entries < _PARALLEL_MIN_ENTRIES:
        return [func(r) for r in rows]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(pool.map(func, rows))


def _numpy_rows(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(device="cpu", dtype=torch.float64).numpy()


def _centered_ranks(*row_blocks: np.ndarray) -> np.ndarray:
    """Average ranks minus their mean, ``(sum of rows, P)`` float64, for the rows of all blocks.

    The mean of average ranks is exactly ``(P + 1) / 2`` (as is numpy's mean of
    them: the sums are exact in float64), so no reduction pass is needed.
    """
    rows = [row for block in row_blocks for row in block]
    out = np.empty((len(rows), rows[0].size))
    middle = (rows[0].size + 1) / 2

    def fill(i: int) -> None:
        _average_ranks_row(rows[i], out[i], middle)

    _map_rows(fill, list(range(len(rows))), rows[0].size)
    return out


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank) along the last dim of ``x (k, P)``.

    Equals ``scipy.stats.rankdata(row, method='average')`` for every row; not
    differentiable (the result is detached), same dtype and device as ``x``.
    """
    rows = _numpy_rows(x)
    ranks = np.stack(_map_rows(_average_ranks_row, list(rows), x.shape[-1]))
    return torch.from_numpy(ranks).to(device=x.device, dtype=x.dtype)


def _dense_ranks(x: torch.Tensor) -> torch.Tensor:
    """Dense integer ranks ``(k, P)`` (0-based; equal values share a rank)."""
    sorted_x, order = torch.sort(x, dim=1)
    new_run = torch.zeros_like(sorted_x, dtype=torch.long)
    new_run[:, 1:] = (sorted_x[:, 1:] != sorted_x[:, :-1]).long()
    dense_sorted = torch.cumsum(new_run, dim=1)
    return torch.empty_like(dense_sorted).scatter_(1, order, dense_sorted)


def _tied_pairs(keys: torch.Tensor, n_values: int) -> torch.Tensor:
    """Number of tied pairs ``sum c (c - 1) / 2`` per row of integer keys ``(B, P)`` in ``[0, n_values)``."""
    b = keys.shape[0]
    offsets = torch.arange(b, device=keys.device)[:, None] * n_values
    counts = torch.bincount((keys + offsets).reshape(-1), minlength=b * n_values).reshape(b, n_values)
    return (counts * (counts - 1) // 2).sum(dim=1)


def _inversions(perm: torch.Tensor) -> torch.Tensor:
    """Inversions ``#{i < j : perm[i] > perm[j]}`` of each row of ``perm (B, P)``, a permutation of ``0..P-1``.

    Most-significant-bit-first radix: at bit ``b`` the sequence is stably
    ordered by ``value >> (b + 1)``; inside each such group every pair of an
    earlier 1-bit value and a later 0-bit value is an inversion whose highest
    differing bit is ``b``. A stable partition by bit ``b`` then prepares the
    next level. ``O(P log P)`` vectorised work, no Python loop over elements.
    """
    n_rows, p = perm.shape
    seq = perm.clone()
    total = torch.zeros(n_rows, dtype=torch.long, device=perm.device)
    index = torch.arange(p, device=perm.device).expand(n_rows, p)
    for bit in reversed(range(max(1, (p - 1).bit_length()))):
        half = 1 << bit
        start = (seq >> (bit + 1)) << (bit + 1)  # first position of the group (perm is a permutation)
        ones = (seq >> bit) & 1
        ones_before = torch.cumsum(ones, dim=1) - ones
        ones_before_in_group = ones_before - ones_before.gather(1, start)
        total += ((1 - ones) * ones_before_in_group).sum(dim=1)
        zeros_in_group = torch.clamp(p - start, max=half)
        zeros_before_in_group = index - start - ones_before_in_group
        new_pos = start + torch.where(ones == 1, zeros_in_group + ones_before_in_group, zeros_before_in_group)
        seq = torch.empty_like(seq).scatter_(1, new_pos, seq)
    return total


def kendall_tau(x: torch.Tensor, y: torch.Tensor, variant: str = "b", max_batch_elements: int = 2**25) -> torch.Tensor:
    """Kendall's tau-a or tau-b ``(k, m)`` between every row of ``x (k, P)`` and of ``y (m, P)``.

    Counts discordant pairs exactly (as ``scipy.stats.kendalltau`` and
    rsatoolbox's ``_tau_a``), with ties in either vector handled as they do.
    Not differentiable; the result has the dtype and device of ``x``.
    """
    if _kendall_dis is None:
        return _kendall_tau_torch(x, y, variant, max_batch_elements)
    k, p = x.shape
    xs = _map_rows(_sorted_dense, list(_numpy_rows(x)), p)
    ys = _map_rows(_sorted_dense, list(_numpy_rows(y)), p)
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
        discordant = int(_kendall_dis(x_sorted, y_seq))
        joint = _joint_ties(x_sorted, y_seq) if ties_x and ties_y else 0
        con_minus_dis = tot - ties_x - ties_y + joint - 2 * discordant
        if variant == "a":
            return min(1.0, max(-1.0, con_minus_dis / tot))
        if ties_x == tot or ties_y == tot:
            return math.nan  # scipy's answer for a constant vector
        return min(1.0, max(-1.0, con_minus_dis / math.sqrt(tot - ties_x) / math.sqrt(tot - ties_y)))

    taus = _map_rows(one_pair, [(i, j) for i in range(k) for j in range(y.shape[0])], p)
    return torch.tensor(taus, dtype=torch.float64).reshape(k, y.shape[0]).to(device=x.device, dtype=x.dtype)


def _sorted_dense(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
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


def _kendall_tau_torch(
    x: torch.Tensor, y: torch.Tensor, variant: str = "b", max_batch_elements: int = 2**25
) -> torch.Tensor:
    """Pure-torch ``kendall_tau`` (MSB radix inversion count); used when scipy's compiled count is missing."""
    k, p = x.shape
    m = y.shape[0]
    rank_x, rank_y = _dense_ranks(x), _dense_ranks(y)
    tot = p * (p - 1) // 2
    ties_x = _tied_pairs(rank_x, p)  # (k,)
    ties_y = _tied_pairs(rank_y, p)  # (m,)
    pair_i, pair_j = torch.meshgrid(torch.arange(k), torch.arange(m), indexing="ij")
    pair_i, pair_j = pair_i.reshape(-1), pair_j.reshape(-1)
    chunk = max(1, max_batch_elements // p)
    numerators = []
    for start in range(0, k * m, chunk):
        i, j = pair_i[start : start + chunk], pair_j[start : start + chunk]
        rx, ry = rank_x[i], rank_y[j]
        # order by (x, y): within tied x, ascending y makes no inversions, so only true discordances count
        order = torch.argsort(rx * p + ry, dim=1)
        y_sorted = ry.gather(1, order)
        # a stable rank of y breaks its ties by position, so tied y never count as inversions
        perm = torch.empty_like(y_sorted).scatter_(
            1, torch.sort(y_sorted, dim=1, stable=True).indices, torch.arange(p, device=x.device).expand_as(y_sorted)
        )
        discordant = _inversions(perm)
        joint_ties = _tied_pairs(rx * p + ry, p * p) if p * p * len(i) < 2**27 else _joint_ties_sorted(rx, ry, order)
        numerators.append(tot - ties_x[i] - ties_y[j] + joint_ties - 2 * discordant)
    con_minus_dis = torch.cat(numerators).to(torch.float64)
    if variant == "a":
        tau = con_minus_dis / tot
    else:
        denom = torch.sqrt((tot - ties_x[pair_i]).to(torch.float64)) * torch.sqrt((tot - ties_y[pair_j]).to(torch.float64))
        tau = con_minus_dis / denom
    return tau.clamp(-1, 1).reshape(k, m).to(x.dtype)


def _joint_ties_sorted(rx: torch.Tensor, ry: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Pairs tied in both x and y, from rows already ordered by ``(x, y)``."""
    sx, sy = rx.gather(1, order), ry.gather(1, order)
    same = (sx[:, 1:] == sx[:, :-1]) & (sy[:, 1:] == sy[:, :-1])
    new_run = torch.ones_like(sx, dtype=torch.bool)
    new_run[:, 1:] = ~same
    b, p = sx.shape
    run_id = torch.cumsum(new_run.reshape(-1), 0) - 1
    counts = torch.bincount(run_id)
    per_run = counts * (counts - 1) // 2
    row_of_run = torch.zeros_like(counts).scatter_(0, run_id, torch.arange(b, device=rx.device).repeat_interleave(p))
    return torch.zeros(b, dtype=torch.long, device=rx.device).index_add(0, row_of_run, per_run)
