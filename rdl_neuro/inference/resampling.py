"""Drawing bootstrap resamples and the pair weights they give condensed RDMs.

A pattern resample draws ``n`` stimuli with replacement; the resampled RDM is
the original one over a multiset of stimuli (rsatoolbox's ``subsample_pattern``,
``rdl_neuro.rdm.subset_rdms``), and every valid entry of it is a copy of an
original pair ``(a, b)`` present ``c_a c_b`` times (``c`` = draw counts). The
bootstrap engines use those weights instead of building resampled RDMs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rdl_neuro.rdm.calc import n_stimuli_from_length, triu_indices


def draw_indices(bootstrap: str, n_boot: int, n_stim: int, n_brain: int, seed: int | None,
                  given: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(rdm_idx (N, n_brain) | None, pattern_idx (N, n_stim) | None)``."""
    if given is not None:
        if bootstrap == "both":
            if not (isinstance(given, (tuple, list)) and len(given) == 2):
                raise ValueError("bootstrap='both' takes bootstrap_indices=(rdm_idx (N, n_brain), pattern_idx (N, n_stim))")
            rdm_idx, pat_idx = (np.asarray(g, dtype=np.int64) for g in given)
        elif bootstrap == "pattern":
            rdm_idx, pat_idx = None, np.asarray(given, dtype=np.int64)
        else:
            rdm_idx, pat_idx = np.asarray(given, dtype=np.int64), None
        for name, idx, size in (("rdm", rdm_idx, n_brain), ("pattern", pat_idx, n_stim)):
            if idx is None:
                continue
            if idx.ndim != 2 or idx.shape[1] != size:
                raise ValueError(f"{name} bootstrap indices must have shape (N, {size}), got {idx.shape}")
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"{name} bootstrap indices must lie in [0, {size}), got [{idx.min()}, {idx.max()}]")
        return rdm_idx, pat_idx
    rng = np.random.default_rng(seed)
    rdm_idx = rng.integers(0, n_brain, size=(n_boot, n_brain)) if bootstrap in ("rdm", "both") else None
    pat_idx = rng.integers(0, n_stim, size=(n_boot, n_stim)) if bootstrap in ("pattern", "both") else None
    return rdm_idx, pat_idx


def pair_weights(pat_idx: np.ndarray, n: int) -> torch.Tensor:
    """Pair weights ``c_a c_b`` ``(N, P)`` of pattern resamples ``(N, n)`` (``c`` = draw counts)."""
    c = draw_counts(pat_idx, n)
    rows, cols = triu_indices(n)
    return c[:, rows] * c[:, cols]


def draw_counts(pat_idx: np.ndarray, n: int) -> torch.Tensor:
    """How often each stimulus is drawn, ``(N, n)`` float64, from pattern resamples ``(N, n)``."""
    offsets = np.arange(pat_idx.shape[0])[:, None] * n
    counts = np.bincount((pat_idx + offsets).ravel(), minlength=pat_idx.shape[0] * n).reshape(-1, n)
    return torch.from_numpy(counts.astype(np.float64))


# the largest temporary block (in bytes) of ``weighted_moments``: RDM entries laid out for the product
MOMENT_BUDGET_BYTES = 256 * 2**20


def _row_offset(i: int, n: int) -> int:
    """Position in condensed order of the first pair ``(i, i + 1)`` of row ``i``."""
    return i * n - i * (i + 1) // 2


def weighted_moments(z: torch.Tensor, counts: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor],
                     shift: torch.Tensor | None = None, budget_bytes: int = MOMENT_BUDGET_BYTES,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair-weighted sums of condensed RDMs over resamples, in blocks of bounded memory.

    With pair weights ``w_ab = c_a c_b`` (``c`` = a resample's draw counts), returns
    ``total (N,)`` = sum of the weights, ``first (N, r)`` = ``sum w z_r`` and ``second (N, q)`` =
    ``sum w z_r z_s`` for ``(r, s)`` in ``pairs`` (rows of ``z`` minus ``shift`` if given), all float64.

    No ``(N, P)`` weight matrix is formed: the weights of a pair are a product, so the sum over
    pairs is a quadratic form, ``sum_a c_a sum_{b > a} c_b v(ab)``. Rows ``a`` are taken a block at
    a time: their entries, and the products of the entries of the RDM pairs, are laid out as a
    (vectors x rows x later stimuli) slab, multiplied with the counts of all resamples in one
    matrix product, and weighted by the rows' own counts. The slab and the product's result stay
    under ``budget_bytes`` (about; at least one row at a time), whatever ``n`` and ``N``.
    Products run in ``z``'s dtype (float32 halves time and memory); sums across blocks in float64.

    Parameters
    ----------
    z : Tensor ``(r, P)``
        Condensed RDMs, ``P = n (n - 1) / 2``, without NaN.
    counts : Tensor ``(N, n)``
        Draw counts per resample (``draw_counts``).
    pairs : (Tensor ``(q,)``, Tensor ``(q,)``)
        Row pairs of ``z`` whose weighted products are summed.
    shift : Tensor ``(r, 1)``, optional
        Subtracted from the rows first (e.g. their means: no cancellation in ``S - mu mu^T``).
    budget_bytes : int

    Examples
    --------
    >>> z = torch.rand(3, 10, dtype=torch.float64)  # 3 RDMs of 5 stimuli
    >>> counts = draw_counts(np.array([[0, 0, 1, 2, 4], [0, 1, 2, 3, 4]]), 5)
    >>> total, first, second = weighted_moments(z, counts, (torch.tensor([0]), torch.tensor([1])))
    >>> total.tolist()  # the second resample has every pair once
    [9.0, 10.0]
    """
    r, n_pairs = z.shape
    n, n_boot = n_stimuli_from_length(n_pairs), counts.shape[0]
    iu, ju = pairs
    q = r + len(iu)
    c = counts.to(z.dtype)
    sums = counts.sum(1)
    total = (sums * sums - (counts * counts).sum(1)) / 2
    moments = torch.zeros(q, n_boot, dtype=torch.float64)
    row = 0
    while row < n - 1:
        width = n - 1 - row  # the later stimuli row + 1 .. n - 1
        fit = budget_bytes // (q * (width + n_boot) * z.element_size())
        # short blocks waste little of the slab on the triangle below the diagonal
        height = int(max(1, min(width, fit, max(8, width // 4))))
        stop = row + height
        block = z[:, _row_offset(row, n):_row_offset(stop, n)]
        if shift is not None:
            block = block - shift
        vectors = torch.cat([block, block[iu] * block[ju]])  # (q, entries of the rows)
        slab = z.new_zeros(q, height, width)
        # row row + i holds the pairs with stimuli row + 1 + j for j >= i (row-major, as condensed order)
        slab[:, torch.ones(height, width, dtype=torch.bool).triu()] = vectors
        del vectors
        later = slab.reshape(q * height, width) @ c[:, row + 1:].T  # (q * height, N)
        moments += (later.reshape(q, height, n_boot) * c[:, row:stop].T).sum(1).to(torch.float64)
        row = stop
    return total, moments[:r].T, moments[r:].T
