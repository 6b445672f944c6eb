"""Torch RDMs: ``compute_rdm`` and condensed <-> square conversion.

Everything here is a pure, differentiable function of its inputs and works on
any device and floating dtype. RDMs are built from Gram matrices (one matrix
product per RDM) rather than ``n x n x p`` intermediates or Python loops.

Condensed RDMs follow scipy ``squareform`` / rsatoolbox order: the row-major
upper triangle without the diagonal, of length ``n (n - 1) / 2``.

Method names (see ``METHODS``):

``euclidean``
    true Euclidean distance ``||x_i - x_j||`` (the paper's and RKD's).
``sqeuclidean``
    squared Euclidean distance divided by the number of channels ``p``:
    exactly rsatoolbox's ``euclidean`` ("squared euclidean").
``correlation``
    ``1 - Pearson r`` between the two patterns (rsatoolbox's ``correlation``).
``cosine``
    ``1 - cosine similarity``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

#: dissimilarity measures of :func:`compute_rdm` (see the module docstring)
METHODS = ("euclidean", "sqeuclidean", "correlation", "cosine")

#: The library's floor for zero-variance patterns under correlation/cosine (training losses, the
#: RDM probe, ``layer_rdms``): a pattern whose norm is below NORM_FLOOR times the largest norm among
#: the patterns counts as uncorrelated with every other (dissimilarity 1) instead of stopping the
#: run. Relative, so that features that are merely small (norms of 1e-10) keep their RDM.
NORM_FLOOR = 1e-8

#: rsatoolbox's ``dissimilarity_measure`` string for each of our method names
RSATOOLBOX_MEASURE = {
    "euclidean": "euclidean",
    "sqeuclidean": "squared euclidean",
    "correlation": "correlation",
    "cosine": "cosine",
}


def check_method(method: str, valid: tuple[str, ...] = METHODS, what: str = "RDM method") -> str:
    """Return ``method`` if it is one of ``valid``, else raise a ValueError listing them."""
    if method not in valid:
        raise ValueError(f"unknown {what} {method!r}; valid methods are: {', '.join(valid)}")
    return method


def n_stimuli_from_length(n_pairs: int) -> int:
    """Number of stimuli ``n`` of a condensed RDM with ``n_pairs = n (n - 1) / 2`` entries."""
    n = int(round((1 + math.sqrt(1 + 8 * n_pairs)) / 2))
    if n * (n - 1) // 2 != n_pairs or n < 2:
        raise ValueError(
            f"condensed RDM length {n_pairs} is not n(n-1)/2 for any number of stimuli n >= 2 "
            "(valid lengths: 1, 3, 6, 10, 15, ...)"
        )
    return n


@lru_cache(maxsize=64)
def _triu_indices_cpu(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = torch.triu_indices(n, n, offset=1)
    return rows, cols


@lru_cache(maxsize=8)
def _triu_flat_indices_cpu(n: int) -> torch.Tensor:
    """Flat indices ``i * n + j`` of the condensed entries of an ``(n, n)`` matrix: one
    ``index_select`` of the flattened matrix gathers them ~10x faster than ``m[rows, cols]``."""
    rows, cols = _triu_indices_cpu(n)
    return rows * n + cols


def triu_indices(n: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the condensed order for ``n`` stimuli, each ``(n(n-1)/2,)``."""
    rows, cols = _triu_indices_cpu(n)
    if device is not None and torch.device(device) != rows.device:
        rows, cols = rows.to(device), cols.to(device)
    return rows, cols


def to_condensed(square: torch.Tensor) -> torch.Tensor:
    """Square RDMs ``(..., n, n)`` -> condensed upper triangles ``(..., n(n-1)/2)``.

    Only the upper triangle is read; use ``check_square_rdm`` in code paths
    that must verify symmetry and the zero diagonal.
    """
    if square.ndim < 2 or square.shape[-1] != square.shape[-2]:
        raise ValueError(f"expected square RDMs of shape (..., n, n), got shape {tuple(square.shape)}")
    n = square.shape[-1]
    if n < 2:
        raise ValueError(f"an RDM needs at least 2 stimuli, got a {n}x{n} matrix")
    flat = _triu_flat_indices_cpu(n).to(square.device)
    return square.flatten(-2).index_select(-1, flat)


def to_square(condensed: torch.Tensor) -> torch.Tensor:
    """Condensed RDMs ``(..., n(n-1)/2)`` -> symmetric square RDMs ``(..., n, n)`` with zero diagonal.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.rdm import to_condensed, to_square
    >>> to_square(torch.tensor([1., 2., 3.]))
    tensor([[0., 1., 2.],
            [1., 0., 3.],
            [2., 3., 0.]])
    >>> to_condensed(to_square(torch.tensor([1., 2., 3.])))
    tensor([1., 2., 3.])
    """
    if condensed.ndim < 1:
        raise ValueError("expected condensed RDMs of shape (..., n_pairs), got a scalar")
    n = n_stimuli_from_length(condensed.shape[-1])
    rows, cols = triu_indices(n, condensed.device)
    square = condensed.new_zeros(*condensed.shape[:-1], n, n)
    square[..., rows, cols] = condensed
    square[..., cols, rows] = condensed
    return square


def is_square_rdm(x: torch.Tensor, rtol: float = 1e-6) -> bool:
    """Whether a 2-D ``x (n, n)`` reads as one square RDM: symmetric (NaN included) with a zero diagonal.

    Functions that take condensed RDMs ``(k, n_pairs)`` use this to recognise a
    square RDM passed by mistake (a stack of ``n`` condensed RDMs of ``n``
    entries each is only ever symmetric with a zero diagonal by accident).
    """
    if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] < 2:
        return False
    if bool((torch.diagonal(x) != 0).any()):
        return False
    nan = torch.isnan(x)
    if not torch.equal(nan, nan.T):
        return False
    finite = torch.where(nan, torch.zeros_like(x), x)
    scale = float(finite.abs().max())
    return bool(((finite - finite.T).abs() <= rtol * scale).all())


def as_condensed(x: torch.Tensor) -> torch.Tensor:
    """Condensed RDMs ``(k, n_pairs)`` from condensed ``(n_pairs,)`` / ``(k, n_pairs)`` or square
    ``(n, n)`` / ``(k, n, n)`` input (a 2-D input is square when ``is_square_rdm`` says so); other
    shapes are returned as they are, for the caller's shape check."""
    if (x.ndim == 3 and x.shape[-1] == x.shape[-2]) or (x.ndim == 2 and is_square_rdm(x)):
        return to_condensed(x).reshape(-1, x.shape[-1] * (x.shape[-1] - 1) // 2)
    return x.unsqueeze(0) if x.ndim == 1 else x


def _describe_position(index: tuple[int, ...]) -> str:
    """'row 3' for a plain (n, p) input, 'row 3 of batch element (1, 0)' for batched ones."""
    *batch, row = index
    return f"row {row}" + (f" of batch element {tuple(batch)}" if batch else "")


def check_features(features: torch.Tensor) -> None:
    """Raise a clear error unless ``features`` is a floating tensor of shape ``(..., n_stimuli, n_channels)``."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"features must have a floating dtype, got {features.dtype}")
    if features.ndim < 2:
        raise ValueError(f"features must have shape (n, p) or (..., n, p), got shape {tuple(features.shape)}")
    if features.shape[-2] < 2:
        raise ValueError(f"an RDM needs at least 2 stimuli (rows), got features of shape {tuple(features.shape)}")
    if features.shape[-1] < 1:
        raise ValueError(f"features have no channels (columns): shape {tuple(features.shape)}")


def check_finite_rows(features: torch.Tensor, row_stat: torch.Tensor) -> None:
    """Raise naming the rows of ``features`` with NaN/inf, given a per-row statistic ``(..., n)``.

    The statistic (squared norms or norms, computed anyway) is non-finite for
    every row holding NaN or inf, so the full scan of ``features`` only runs
    on the error path, not on every training step.
    """
    if bool(torch.isfinite(row_stat).all()):
        return
    finite_rows = torch.isfinite(features).all(dim=-1)
    if bool(finite_rows.all()):
        raise ValueError(
            "features are finite but too large: their squared norms overflow "
            f"{features.dtype} (max |value| {features.detach().abs().max().item():.3g}); rescale them"
        )
    bad = torch.nonzero(~finite_rows)[:5].tolist()
    where = ", ".join(_describe_position(tuple(b)) for b in bad)
    raise ValueError(f"features contain NaN or infinite values in {where}")


# what a zero norm means for each method that normalises its patterns (error messages)
_ZERO_NORM = {
    "correlation": "zero variance across channels (constant pattern) under 'correlation'",
    "cosine": "zero norm (all-zero pattern) under 'cosine'",
}


def zero_norm_rows(norms: torch.Tensor, scale: torch.Tensor, tol: float) -> torch.Tensor:
    """Bool mask of the patterns whose norm counts as zero: ``norms <= tol * scale``.

    The one zero-variance rule of ``correlation`` / ``cosine`` RDMs (whose dissimilarity is undefined
    for such a pattern). Its two callers compute norms differently, so they leave different rounding
    and pass their own ``scale`` and ``tol``:

    - ``compute_rdm`` normalises the (centred) features themselves: ``scale`` is each row's largest
      absolute entry and ``tol = eps(dtype) * sqrt(p)`` (a norm of ``p`` entries, each exact to ``eps``);
    - ``zero_variance_rows`` (``gram_to_rdm``, ``layer_rdms``) centres inside the Gram matrix,
      ``G_ii - s_i^2 / p``: that cancellation leaves rounding noise of order ``eps * max G_ii`` where
      ``compute_rdm`` leaves exact zeros, so ``scale`` is ``sqrt(max G_ii)`` and ``tol = 1e3 * eps(dtype)``
      (or the relative floor ``eps=`` asked for, when larger).

    Parameters
    ----------
    norms : Tensor ``(..., n)`` or ``(..., n, 1)``
    scale : Tensor broadcasting against ``norms``
    tol : float

    Examples
    --------
    >>> import torch
    >>> zero_norm_rows(torch.tensor([0.0, 1e-20, 1.0]), torch.tensor(1.0), 1e-12)
    tensor([ True,  True, False])
    """
    return norms <= tol * scale


def _unit_rows(x: torch.Tensor, what: str, eps: float | None = None) -> torch.Tensor:
    """Rows scaled to unit norm.

    Without ``eps``, rows whose norm is (numerically) zero raise a ValueError
    naming them; with ``eps``, norms are clamped at ``eps`` times the largest
    norm of the ``n`` rows instead (a floor relative to the features' scale),
    so such a row becomes (close to) the zero vector: similarity 0,
    dissimilarity 1.
    """
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    check_finite_rows(x, norms.squeeze(-1))
    if eps is not None:
        # the scale is detached: the floor only decides which rows count as dead, it is not a feature
        floor = (eps * norms.detach().amax(dim=-2, keepdim=True)).clamp_min(torch.finfo(x.dtype).tiny)
        return x / torch.maximum(norms, floor)
    # a row is degenerate when its norm is at rounding level relative to its own entries
    tiny = zero_norm_rows(norms.detach(), x.detach().abs().amax(dim=-1, keepdim=True),
                          torch.finfo(x.dtype).eps * math.sqrt(x.shape[-1]))
    if bool(tiny.any()):
        bad = torch.nonzero(tiny.squeeze(-1))[:5].tolist()
        where = ", ".join(_describe_position(tuple(b)) for b in bad)
        raise ValueError(
            f"{what} in {where}: the dissimilarity is undefined there "
            "(pass eps=... to treat such patterns as uncorrelated with all others)"
        )
    return x / norms


def safe_sqrt(d2: torch.Tensor) -> torch.Tensor:
    """sqrt of squared distances ``d2 >= 0`` with finite gradients where two patterns coincide.

    Clamping at the smallest normal number keeps ``sqrt``'s derivative finite
    at 0 (the clamp passes no gradient there) and maps rounding-level negative
    values to 0; the mask keeps exact zeros.
    """
    return torch.sqrt(d2.clamp_min(torch.finfo(d2.dtype).tiny)) * (d2 > 0)


class _SymmetricGram(torch.autograd.Function):
    """``X @ X.T`` ``(..., n, n)``, exactly symmetric, with a one-product backward ``(G' + G'^T) X``.

    Autograd's generic matmul backward would take two products (one per
    operand); in a training step that is a visible share of the RDL cost.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        gram = x @ x.transpose(-1, -2)
        # BLAS leaves rounding-level asymmetry; averaging with the transpose removes it exactly
        return (gram + gram.transpose(-1, -2)) / 2

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return (grad + grad.transpose(-1, -2)) @ x


def squared_distances(sq_norms_a: torch.Tensor, sq_norms_b: torch.Tensor, inner: torch.Tensor,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """``||a||^2 + ||b||^2 - 2 a.b`` elementwise (broadcasting): the one place squared distances
    are formed from inner products (square RDMs, condensed RDMs, ``gram_to_rdm``, the fused RDL
    term). Not clamped: rounding can leave coinciding patterns slightly negative. ``out`` (may be
    ``inner`` itself, outside autograd) receives the result."""
    return torch.add(sq_norms_a + sq_norms_b, inner, alpha=-2, out=out)


def square_squared_distances(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared euclidean distances ``(..., n, n)`` from a Gram matrix, and its diagonal ``(..., n)``
    (the squared norms). ``g_ii + g_ii - 2 g_ii`` is exactly 0: the diagonal needs no masking."""
    sq_norms = torch.diagonal(gram, dim1=-2, dim2=-1)
    return squared_distances(sq_norms.unsqueeze(-1), sq_norms.unsqueeze(-2), gram), sq_norms


def _square_rdm(x: torch.Tensor, method: str, n_channels: int) -> torch.Tensor:
    """Square RDMs ``(..., n, n)`` from prepared rows ``x`` (unit rows for correlation/cosine)."""
    gram = _SymmetricGram.apply(x)
    if method in ("correlation", "cosine"):
        # 1 - g_ii is only zero up to rounding: set the diagonal exactly
        n = x.shape[-2]
        return (1 - gram).masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), 0)
    d2, sq_norms = square_squared_distances(gram)
    check_finite_rows(x, sq_norms)
    if method == "sqeuclidean":
        # rounding can make coinciding rows slightly negative
        return d2.clamp_min(0) / n_channels
    return safe_sqrt(d2)


def _row_blocks(n: int) -> list[tuple[int, int]]:
    """Row ranges for the blocked upper-triangle Gram product.

    Block ``[s, e)`` needs only columns ``s..n-1``, so ``K`` blocks cost about
    ``(K + 1) / (2K)`` of a full ``X @ X.T`` (0.75 for 2, 0.625 for 4). Blocks
    stay a few hundred rows tall so each product still runs at full BLAS speed.
    """
    k = max(1, min(4, n // 400))
    edges = [round(i * n / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


@lru_cache(maxsize=64)
def _block_take_indices_cpu(n: int, start: int, stop: int) -> torch.Tensor:
    """Flat indices into the ``(stop-start, n-start)`` block product of its condensed entries ``j > i``."""
    rows, cols = torch.triu_indices(stop - start, n - start, offset=1)
    return rows * (n - start) + cols


def _uses_syrk(x: torch.Tensor, method: str) -> bool:
    """Whether the euclidean Gram of ``x`` is left to numpy's symmetric product (CPU float64, no autograd, one set).

    float64 only: the networks' float32 features (teacher RDMs in training included) keep the
    blocked torch path, so training results stay bit-identical to earlier releases.
    """
    return (method in ("euclidean", "sqeuclidean") and x.device.type == "cpu" and x.ndim == 2
            and x.dtype == torch.float64 and not (x.requires_grad and torch.is_grad_enabled()))


def _syrk_squared_distances(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Condensed squared distances ``(n(n-1)/2,)`` (not clamped) and squared norms ``(n,)`` of the
    rows of ``x (n, p)``, through numpy, whose ``x @ x.T`` is a symmetric rank-k product (BLAS syrk).

    A syrk computes one triangle: half the multiplications of a general product,
    fewer than the blocked torch path (``_row_blocks``). Used for the euclidean
    methods outside autograd, where nothing needs the graph. The distances are
    formed in place in the ``(n, n)`` product (the same operations, so the same
    bits, as on the condensed entries) and then condensed by one gather: the
    passes after the product cost little beside it.
    """
    xn = x.detach().contiguous().numpy()
    gram = torch.from_numpy(xn @ xn.T)
    sq_norms = torch.diagonal(gram).clone()
    squared_distances(sq_norms[:, None], sq_norms[None, :], gram, out=gram)
    return to_condensed(gram), sq_norms


def _condensed_gram(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Condensed Gram entries ``x_i . x_j`` for ``i < j`` ``(..., n(n-1)/2)`` and the diagonal ``(..., n)``.

    Only (roughly) the upper triangle is multiplied, block row by block row;
    the condensed order is row-major, so the blocks' entries concatenate in order.
    """
    n = x.shape[-2]
    pieces, diags = [], []
    for start, stop in _row_blocks(n):
        block = x[..., start:stop, :] @ x[..., start:, :].transpose(-1, -2)  # (..., stop-start, n-start)
        diags.append(torch.diagonal(block, dim1=-2, dim2=-1))
        index = _block_take_indices_cpu(n, start, stop).to(x.device)
        pieces.append(block.flatten(-2).index_select(-1, index))
    condensed = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
    return condensed, torch.cat(diags, dim=-1) if len(diags) > 1 else diags[0]


def compute_rdm(
    features: torch.Tensor, method: str = "correlation", *, square: bool = False, eps: float | None = None
) -> torch.Tensor:
    """Representational dissimilarity matrices of activation patterns.

    Parameters
    ----------
    features : Tensor ``(n, p)`` or ``(..., n, p)``
        ``n`` stimuli by ``p`` channels (units, voxels); leading dimensions
        (layers, subjects) are batched. Any floating dtype and device.
    method : {"euclidean", "sqeuclidean", "correlation", "cosine"}
        See the module docstring; ``sqeuclidean`` and ``correlation`` equal
        rsatoolbox's ``euclidean`` and ``correlation``.
    square : bool
        Return square matrices ``(..., n, n)`` instead of condensed vectors.
    eps : float, optional
        For ``correlation`` / ``cosine`` only. By default a pattern with zero
        variance (zero norm) raises, since its dissimilarity is undefined. With
        ``eps`` the norms are clamped at ``eps`` times the largest norm among
        the ``n`` patterns (relative, so small but healthy features keep their
        RDM), so a zero-variance pattern counts as uncorrelated with every
        other (dissimilarity 1). Training losses use this (``NORM_FLOOR``) so
        that one image with an all-zero ReLU layer does not stop training.

    Returns
    -------
    Tensor ``(..., n(n-1)/2)`` (condensed, scipy ``squareform`` order) or ``(..., n, n)``.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.rdm import compute_rdm
    >>> x = torch.tensor([[0., 0.], [3., 4.], [6., 8.]])   # 3 stimuli, 2 channels
    >>> compute_rdm(x, "euclidean")                      # pairs (0, 1), (0, 2), (1, 2)
    tensor([ 5., 10.,  5.])
    >>> compute_rdm(x, "euclidean", square=True)
    tensor([[ 0.,  5., 10.],
            [ 5.,  0.,  5.],
            [10.,  5.,  0.]])
    >>> compute_rdm(torch.randn(4, 92, 512), "correlation").shape   # batched: 4 layers
    torch.Size([4, 4186])
    """
    check_method(method)
    check_features(features)
    n = features.shape[-2]
    if method == "correlation":
        centered = features - features.mean(dim=-1, keepdim=True)
        x = _unit_rows(centered, _ZERO_NORM[method], eps)
    elif method == "cosine":
        x = _unit_rows(features, _ZERO_NORM[method], eps)
    else:
        x = features
    if square:
        # one full (symmetric) Gram product: at training batch sizes this beats the blocked
        # condensed path followed by a scatter back to square form
        return _square_rdm(x, method, features.shape[-1])
    # condensed: the Gram product of the upper triangle only (see _row_blocks), and the
    # elementwise work on n(n-1)/2 entries instead of n^2
    if _uses_syrk(x, method):
        d2, diag = _syrk_squared_distances(x)
        check_finite_rows(x, diag)
        if method == "sqeuclidean":  # d2 is a fresh tensor outside autograd: clamp and scale in place
            return d2.clamp_min_(0).div_(features.shape[-1])
        return safe_sqrt(d2)
    gram, diag = _condensed_gram(x)
    if method in ("correlation", "cosine"):
        return 1 - gram
    check_finite_rows(x, diag)
    rows, cols = triu_indices(n, x.device)
    d2 = squared_distances(diag[..., rows], diag[..., cols], gram)
    # rounding can make coinciding rows slightly negative (safe_sqrt clamps them too)
    return safe_sqrt(d2) if method == "euclidean" else d2.clamp_min(0) / features.shape[-1]


def zero_variance_rows(gram: torch.Tensor, sums: torch.Tensor, n_channels: int, method: str,
                       eps: float | None = None) -> torch.Tensor:
    """Which stimuli have a zero-variance pattern under ``correlation`` / ``cosine``, from a Gram matrix.

    Parameters
    ----------
    gram, sums, n_channels, method
        As for ``gram_to_rdm``.
    eps : float, optional
        Also count patterns whose (centred) norm is below ``eps`` times the
        largest one (``NORM_FLOOR`` is the library's floor). Without it only
        norms at rounding level count.

    Returns
    -------
    Tensor ``(n,)`` bool; all False for the euclidean methods.
    """
    if method not in ("correlation", "cosine"):
        return torch.zeros(gram.shape[-1], dtype=torch.bool, device=gram.device)
    sq_norms = torch.diagonal(gram)
    if method == "correlation":
        # the centred Gram's diagonal, G_ii - s_i^2 / p, without centring the whole matrix
        sq_norms = sq_norms - sums * sums / n_channels
    norms = sq_norms.clamp_min(0).sqrt()
    # a looser test than compute_rdm's (see zero_norm_rows for why)
    scale = sq_norms.abs().max().sqrt().clamp_min(torch.finfo(gram.dtype).tiny)
    return zero_norm_rows(norms, scale, max(1e3 * torch.finfo(gram.dtype).eps, eps or 0.0))


def gram_to_rdm(gram: torch.Tensor, sums: torch.Tensor, n_channels: int, method: str = "correlation",
                *, eps: float | None = None) -> torch.Tensor:
    """Condensed RDM from a Gram matrix and per-stimulus feature sums.

    Parameters
    ----------
    gram : Tensor ``(n, n)``
        ``X @ X.T`` of the features ``X (n, p)``.
    sums : Tensor ``(n,)``
        ``X.sum(1)``; needed by ``correlation`` (centring), ignored otherwise.
    n_channels : int
        ``p``, the number of features.
    method : str
        One of ``METHODS``; the result equals
        ``compute_rdm(X, method)`` up to rounding.
    eps : float, optional
        For ``correlation`` / ``cosine``: by default a zero-variance pattern
        raises (its dissimilarity is undefined). With ``eps`` the patterns that
        ``zero_variance_rows(..., eps=eps)`` finds count as uncorrelated with
        every other: dissimilarity exactly 1 (as ``compute_rdm(X, method, eps=eps)``
        gives for an all-zero pattern).

    Returns
    -------
    Tensor ``(n (n - 1) / 2,)``
    """
    check_method(method)
    n = gram.shape[-1]
    rows, cols = triu_indices(n, gram.device)
    if method in ("euclidean", "sqeuclidean"):
        diag = torch.diagonal(gram)
        d2 = squared_distances(diag[rows], diag[cols], gram[rows, cols]).clamp_min(0)
        return d2.sqrt() if method == "euclidean" else d2 / n_channels
    bad = zero_variance_rows(gram, sums, n_channels, method, eps)
    if method == "correlation":
        # centring each pattern across channels: G_c = G - s s^T / p
        gram = gram - torch.outer(sums, sums) / n_channels
    norms = torch.diagonal(gram).clamp_min(0).sqrt()
    if bool(bad.any()):
        if eps is None:
            raise ValueError(f"{_ZERO_NORM[method]} for stimuli at rows {torch.nonzero(bad).squeeze(1)[:5].tolist()}: "
                             "the dissimilarity is undefined there (pass eps=... to floor such patterns)")
        # floored patterns are uncorrelated with every other: zero similarity, unit norm
        keep = (~bad).to(gram.dtype)
        gram = gram * keep[:, None] * keep[None, :]
        norms = torch.where(bad, torch.ones_like(norms), norms)
    return 1 - gram[rows, cols] / (norms[rows] * norms[cols])


def subset_rdms(vectors: torch.Tensor, positions) -> torch.Tensor:
    """Condensed RDMs ``(r, P)`` over the stimuli at ``positions`` (in that order) -> ``(r, P')``.

    ``positions`` may repeat a stimulus: the pairs of two copies are NaN, as in
    rsatoolbox's ``subsample_pattern`` (a bootstrap resample is
    ``subset_rdms(v, np.sort(idx))``).
    """
    n = n_stimuli_from_length(vectors.shape[1])
    pos = np.asarray(positions, dtype=np.int64)
    if len(pos) == n and np.array_equal(pos, np.arange(n)):
        return vectors
    rows, cols = triu_indices(n)
    square = torch.full((vectors.shape[0], n, n), float("nan"), dtype=vectors.dtype)
    square[:, rows, cols] = vectors
    square[:, cols, rows] = vectors
    idx = torch.as_tensor(pos)
    sub = square[:, idx][:, :, idx]
    rows, cols = triu_indices(len(pos))
    return sub[:, rows, cols]
