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
call, long float32 RDMs as packed integer keys (see ``rdl_neuro.rdm.ranks``), and tau counts discordant
pairs with scipy's compiled Fenwick-tree routine, pairs spread over
``torch.get_num_threads()`` threads.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rdl_neuro._threads import serial_if_small
from rdl_neuro.rdm.calc import as_condensed, check_method, n_stimuli_from_length, triu_indices
from rdl_neuro.rdm.ranks import centered_ranks, float_rows, kendall_tau

#: rsatoolbox's RDM comparison methods, all supported by :func:`compare_rdms`
COMPARE_METHODS = ("cosine", "corr", "spearman", "rho-a", "kendall", "tau-b", "tau-a", "corr_cov", "cosine_cov")
#: comparison methods with gradients (usable in losses)
DIFFERENTIABLE_METHODS = ("cosine", "corr", "corr_cov", "cosine_cov")
#: comparison methods that only see the order of the dissimilarities
RANK_METHODS = ("spearman", "rho-a", "kendall", "tau-b", "tau-a")


def _as_rdm_matrix(x: torch.Tensor | np.ndarray, name: str) -> tuple[torch.Tensor, bool]:
    """Condensed RDMs as a 2-D floating tensor ``(n_rdms, n_pairs)``, and whether any entry is NaN."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of condensed RDMs, got {type(x).__name__}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    x = as_condensed(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n_rdms, n_pairs) or (n_pairs,) (or square (n, n) / "
                         f"(n_rdms, n, n)), got shape {tuple(x.shape)}")
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
        Square RDMs ``(k, n, n)`` and a single square ``(n, n)`` (symmetric with
        a zero diagonal, see ``rdl_neuro.rdm.calc.is_square_rdm``) are read as
        such and condensed first.
    b : Tensor ``(m, n_pairs)`` or ``(n_pairs,)``, or square like ``a``
    method : str
        One of ``COMPARE_METHODS`` (see the module docstring).

    Returns
    -------
    Tensor ``(k, m)``: similarity of ``a[i]`` and ``b[j]``, in the promoted dtype of the inputs.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.rdm import compare_rdms
    >>> a = torch.tensor([[1., 2., 3., 4., 5., 6.]])                 # one RDM of 4 stimuli
    >>> b = torch.tensor([[2., 4., 6., 8., 10., 12.], [6., 5., 4., 3., 2., 1.]])
    >>> compare_rdms(a, b, "corr")                                  # (1, 2): every pair
    tensor([[ 1., -1.]])
    >>> compare_rdms(a, b, "tau-a")
    tensor([[ 1., -1.]])
    """
    check_method(method, COMPARE_METHODS, "comparison method")
    if _needs_grad(a) or _needs_grad(b):
        return _compare_rdms(a, b, method)  # training losses: the thread count stays the caller's
    with serial_if_small(_numel(a) + _numel(b)):
        return _compare_rdms(a, b, method)


def _needs_grad(x) -> bool:
    return isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled()


def _numel(x) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else int(np.size(x))


def _compare_rdms(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, method: str) -> torch.Tensor:
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
        if _needs_grad(x) or _needs_grad(y) or x.shape[1] <= _CENTER_BLOCK:
            # one block: the whole centred copies cost no more than a block's (and give the same bits as ever)
            return _cosine(_center(x), _center(y))
        return _centered_cosine(x, y)
    if method in ("spearman", "rho-a"):
        return _rank_correlation(x, y, method)
    if method in ("kendall", "tau-b", "tau-a"):
        return kendall_tau(x, y, variant="a" if method == "tau-a" else "b")
    if method == "corr_cov":
        x, y = _center(x), _center(y)
    n_stim = n_stimuli_from_length(mask.shape[0])
    if full:
        return _whitened_cosine(x, y, n_stim)
    return _cosine(_whiten(x, mask, n_stim, full), _whiten(y, mask, n_stim, full))


def _rank_correlation(x: torch.Tensor, y: torch.Tensor, method: str) -> torch.Tensor:
    """Spearman or rho-a ``(k, m)`` of the rows of ``x (k, P)`` and ``y (m, P)``.

    Every RDM is ranked once (not once per pair), in float64 (exact average ranks). ``y``'s ranks
    are held whole, ``x``'s a few rows at a time: at 10,000 stimuli an RDM's ranks take 400 MB.
    """
    rank_y = torch.from_numpy(centered_ranks(float_rows(y)))
    x_rows, step = float_rows(x), max(1, torch.get_num_threads())
    dots, norms = [], []
    for i in range(0, len(x_rows), step):
        rank_x = torch.from_numpy(centered_ranks(x_rows[i:i + step]))
        dots.append(rank_x @ rank_y.T)
        norms.append(torch.linalg.vector_norm(rank_x, dim=1))
    if method == "spearman":
        out = _divide_by_norms(torch.cat(dots), torch.cat(norms), torch.linalg.vector_norm(rank_y, dim=1))
    else:
        n = x.shape[1]
        out = torch.cat(dots) * (12.0 / (n**3 - n))
    return out.to(device=x.device, dtype=x.dtype)


def _center(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=1, keepdim=True)


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(k, m)`` of rows; 0 where either row is all zeros (rsatoolbox's rule)."""
    # divide the small (k, m) product rather than the long rows (as rsatoolbox does)
    return _divide_by_norms(x @ y.T, torch.linalg.vector_norm(x, dim=1), torch.linalg.vector_norm(y, dim=1))


# columns per block of _centered_cosine: a few MB per block, reused from the cache
_CENTER_BLOCK = 1 << 16


def _centered_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``_cosine(_center(x), _center(y))`` ``(k, m)``, centring block by block of columns.

    The centred copies of long rows are never held whole: a fresh (k, P) array costs page faults
    that took longer than the product itself (8 x 499,500: 21 ms per copy against 20 ms for
    the product, one core). Same formula, so the same numbers up to the order of the sums.
    """
    mean_x, mean_y = x.mean(dim=1, keepdim=True), y.mean(dim=1, keepdim=True)
    dots = x.new_zeros(x.shape[0], y.shape[0])
    sq_x, sq_y = x.new_zeros(x.shape[0]), y.new_zeros(y.shape[0])
    for start in range(0, x.shape[1], _CENTER_BLOCK):
        xc = x[:, start:start + _CENTER_BLOCK] - mean_x
        yc = y[:, start:start + _CENTER_BLOCK] - mean_y
        dots.addmm_(xc, yc.T)
        sq_x += (xc * xc).sum(1)
        sq_y += (yc * yc).sum(1)
    return _divide_by_norms(dots, sq_x.sqrt(), sq_y.sqrt())


def _divide_by_norms(dots: torch.Tensor, norm_x: torch.Tensor, norm_y: torch.Tensor) -> torch.Tensor:
    """``dots (k, m) / (norm_x (k,) norm_y (m,))``, 0 where a norm is 0 (rsatoolbox's rule)."""
    ok_x, ok_y = norm_x > 0, norm_y > 0
    safe_x = torch.where(ok_x, norm_x, torch.ones_like(norm_x))
    safe_y = torch.where(ok_y, norm_y, torch.ones_like(norm_y))
    cos = dots / safe_x[:, None] / safe_y[None, :]
    return torch.where(ok_x[:, None] & ok_y[None, :], cos, torch.zeros_like(cos))


# ----------------------------------------------------------------------------- whitening


def _whitened_cosine(x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """Cosines ``(k, m)`` of the whitened vectors of complete RDMs ``x (k, P)``, ``y (m, P)``,
    without building them: equal to ``_cosine(_whiten(x), _whiten(y))``.

    The whitened vectors hold the double-centred matrices ``H A H`` (``A = -D / 2`` square, zero
    diagonal, ``H`` the centring projector), weighted so that their dot product is the Frobenius
    product. As ``H`` is a projector, ``<HAH, HBH> = tr(AHBH) = <A, B> - (2/n) (A1).(B1) +
    (1/n^2) (1'A1)(1'B1)``: one product of the RDM vectors plus per-stimulus sums, O(k m P)
    instead of O((k + m) P) gathers and the (k, P + n) copies.
    """
    rows, cols = triu_indices(n, x.device)

    def parts(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = -0.5 * v
        per_stimulus = v.new_zeros(v.shape[0], n).index_add(1, rows, w).index_add(1, cols, w)  # A 1
        return w, per_stimulus, per_stimulus.sum(1)  # 1'A1

    def inner(p: tuple, q: tuple) -> torch.Tensor:
        return 2 * (p[0] @ q[0].T) - (2 / n) * (p[1] @ q[1].T) + torch.outer(p[2], q[2]) / (n * n)

    px, py = parts(x), parts(y)
    norm_x = torch.sqrt(torch.diagonal(inner(px, px)).clamp_min(0))
    norm_y = torch.sqrt(torch.diagonal(inner(py, py)).clamp_min(0))
    return _divide_by_norms(inner(px, py), norm_x, norm_y)


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
