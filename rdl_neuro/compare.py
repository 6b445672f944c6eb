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
rank methods are not (ranks are piecewise constant).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rdl_neuro.rdm import check_method, n_stimuli_from_length, triu_indices

COMPARE_METHODS = ("cosine", "corr", "spearman", "rho-a", "kendall", "tau-b", "tau-a", "corr_cov", "cosine_cov")
DIFFERENTIABLE_METHODS = ("cosine", "corr", "corr_cov", "cosine_cov")


def _as_rdm_matrix(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Condensed RDMs as a 2-D floating tensor ``(n_rdms, n_pairs)``."""
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
    if torch.isinf(x).any():
        raise ValueError(f"{name} contains infinite dissimilarities")
    return x


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
    a = _as_rdm_matrix(a, "a")
    b = _as_rdm_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"RDMs of different lengths: a has {a.shape[1]} entries per RDM "
            f"({n_stimuli_from_length(a.shape[1])} stimuli), b has {b.shape[1]} "
            f"({n_stimuli_from_length(b.shape[1])} stimuli)"
        )
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(device=a.device, dtype=dtype)

    valid_a, valid_b = ~torch.isnan(a), ~torch.isnan(b)
    patterns_a, group_a = torch.unique(valid_a, dim=0, return_inverse=True)
    patterns_b, group_b = torch.unique(valid_b, dim=0, return_inverse=True)
    if len(patterns_a) == 1 and len(patterns_b) == 1:
        return _compare_on_mask(a, b, patterns_a[0] & patterns_b[0], method)

    out = a.new_empty(a.shape[0], b.shape[0])
    for i, pattern_a in enumerate(patterns_a):
        rows_a = torch.nonzero(group_a == i).squeeze(1)
        for j, pattern_b in enumerate(patterns_b):
            rows_b = torch.nonzero(group_b == j).squeeze(1)
            block = _compare_on_mask(a[rows_a], b[rows_b], pattern_a & pattern_b, method)
            out = out.index_put((rows_a[:, None], rows_b[None, :]), block)
    return out


def _compare_on_mask(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, method: str) -> torch.Tensor:
    """Compare ``a (k, P)`` with ``b (m, P)`` on the entries where ``mask (P,)`` is True."""
    full = bool(mask.all())
    x = a if full else a[:, mask]
    y = b if full else b[:, mask]
    if x.shape[1] < 2:
        raise ValueError(f"fewer than 2 dissimilarities are valid (not NaN) in both RDMs: {x.shape[1]}")
    if method == "cosine":
        return _cosine(x, y)
    if method == "corr":
        return _cosine(_center(x), _center(y))
    if method == "spearman":
        return _cosine(_center(rankdata(x)), _center(rankdata(y)))
    if method == "rho-a":
        n = x.shape[1]
        return _center(rankdata(x)) @ _center(rankdata(y)).T * (12.0 / (n**3 - n))
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
    cos = (x / safe_x[:, None]) @ (y / safe_y[:, None]).T
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


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank) along the last dim of ``x (k, P)``.

    Equals ``scipy.stats.rankdata(row, method='average')`` for every row.
    """
    k, p = x.shape
    sorted_x, order = torch.sort(x, dim=1)
    new_run = torch.ones_like(sorted_x, dtype=torch.bool)
    new_run[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    # run ids are global over the flattened rows (every row starts a new run)
    run_id = torch.cumsum(new_run.reshape(-1), 0) - 1
    n_runs = int(run_id[-1]) + 1
    position = torch.arange(p, device=x.device).repeat(k)
    first = torch.full((n_runs,), p, dtype=position.dtype, device=x.device).scatter_reduce(
        0, run_id, position, reduce="amin"
    )
    count = torch.bincount(run_id, minlength=n_runs)
    avg_rank = first.to(x.dtype) + (count.to(x.dtype) + 1) / 2
    ranks = torch.empty_like(x)
    ranks.scatter_(1, order, avg_rank[run_id].reshape(k, p))
    return ranks


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
    """
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
