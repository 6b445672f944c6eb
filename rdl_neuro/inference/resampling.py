"""Drawing bootstrap resamples and the pair weights they give condensed RDMs.

A pattern resample draws ``n`` stimuli with replacement; the resampled RDM is
the original one over a multiset of stimuli (rsatoolbox's ``subsample_pattern``,
``rdl_neuro.rdm.subset_rdms``), and every valid entry of it is a copy of an
original pair ``(a, b)`` present ``c_a c_b`` times (``c`` = draw counts). The
bootstrap engines use those weights instead of building resampled RDMs.
"""
from __future__ import annotations

from collections.abc import Sequence
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


def fold_subject_bootstrap(per_fold: Sequence[np.ndarray], n_subjects: int, seed: int | None) -> np.ndarray:
    """Bootstrap of a crossed design: image resamples within each fold, subjects resampled across folds.

    In leave-images-out x leave-one-subject-out designs every fold ``f`` yields, for
    each of its ``n_boot`` image resamples, one evaluation per held-out subject.
    Resample ``b`` draws ``n_subjects`` subjects with replacement (the same draw in
    every fold, so rows stay paired when called with one seed), averages the drawn
    subjects' evaluations within each fold, then averages over folds.

    Parameters
    ----------
    per_fold : sequence of arrays, each (n_boot, n_subjects)
        Per fold, the evaluation of every image resample for every held-out subject.
    n_subjects : int
        Number of subjects (the arrays' second axis).
    seed : int or None
        Seed of the subject draws.

    Returns
    -------
    np.ndarray, shape (n_boot,)
        The bootstrap distribution of the mean over folds and subjects.

    Examples
    --------
    >>> import numpy as np
    >>> folds = [np.ones((5, 3)), np.full((5, 3), 3.0)]
    >>> fold_subject_bootstrap(folds, 3, seed=0)
    array([2., 2., 2., 2., 2.])
    """
    shapes = {np.shape(b) for b in per_fold}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[1] != n_subjects:
        raise ValueError(f"every fold needs an array (n_boot, n_subjects={n_subjects}); got shapes {sorted(shapes)}")
    n_boot = next(iter(shapes))[0]
    subj = np.random.default_rng(seed).integers(0, n_subjects, (n_boot, n_subjects))
    return np.mean([np.asarray(b)[np.arange(n_boot)[:, None], subj].mean(1) for b in per_fold], axis=0)


def pair_weights(pat_idx: np.ndarray, n: int) -> torch.Tensor:
    """Pair weights ``c_a c_b`` ``(N, P)`` of pattern resamples ``(N, n)`` (``c`` = draw counts)."""
    return pair_weights_of(draw_counts(pat_idx, n))


def pair_weights_of(counts: torch.Tensor) -> torch.Tensor:
    """Pair weights ``c_a c_b`` ``(N, P)`` from draw counts ``(N, n)``."""
    rows, cols = triu_indices(counts.shape[1], counts.device)
    return counts[:, rows] * counts[:, cols]


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


def _vectors(parts: Sequence[torch.Tensor], start: int, stop: int, iu: torch.Tensor, ju: torch.Tensor,
             shift: torch.Tensor | None) -> torch.Tensor:
    """``(r + q, stop - start)``: the rows of ``parts`` (stacked) at entries ``start:stop`` minus
    ``shift``, then the products of the row pairs ``(iu, ju)``, written in place (no gathered copies)."""
    r = sum(part.shape[0] for part in parts)
    first = parts[0]
    vectors = torch.empty(r + len(iu), stop - start, dtype=first.dtype, device=first.device)
    row = 0
    for part in parts:
        vectors[row:row + part.shape[0]] = part[:, start:stop]
        row += part.shape[0]
    if shift is not None:
        vectors[:r] -= shift
    for p, (i, j) in enumerate(zip(iu.tolist(), ju.tolist())):
        torch.mul(vectors[i], vectors[j], out=vectors[r + p])
    return vectors


def weighted_moments(z: torch.Tensor | Sequence[torch.Tensor], counts: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor],
                     shift: torch.Tensor | None = None, budget_bytes: int = MOMENT_BUDGET_BYTES,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair-weighted sums of condensed RDMs over resamples, in blocks of bounded memory.

    With pair weights ``w_ab = c_a c_b`` (``c`` = a resample's draw counts), returns
    ``total (N,)`` = sum of the weights, ``first (N, r)`` = ``sum w z_r`` and ``second (N, q)`` =
    ``sum w z_r z_s`` for ``(r, s)`` in ``pairs`` (rows of ``z`` minus ``shift`` if given), all float64.

    No ``(N, P)`` weight matrix is formed: the weights of a pair are a product, so the sum over
    pairs is a quadratic form, ``sum_a c_a sum_{b > a} c_b v(ab)``, for every resample at once
    ``((V @ C) * C).sum`` with ``V`` the strict upper triangle of the square matrix of an RDM (or of
    the product of two) and ``C (n, N)`` the counts. It runs over blocks of rows ``a0:a1``: the rows'
    entries right of ``a0`` (zero on and left of the diagonal), of all ``q`` vectors, fill one buffer
    ``(q (a1 - a0), n - a0 - 1)`` of about ``budget_bytes`` (at least one row), reused by every block,
    and one matrix product with the later stimuli's counts ``(n - a0 - 1, N)`` gives the block's
    sums (a GEMM at BLAS speed, not one skinny product per row), weighted by ``c_a``. Problems whose
    weight matrix fits the budget (the 92-image set: 1000 x 4186) take one product of the weights
    with the vectors instead. Products run in ``z``'s dtype (float32 halves time and memory); sums
    across blocks in float64.

    Parameters
    ----------
    z : Tensor ``(r, P)``, or a sequence of them (stacked, e.g. models and subjects)
        Condensed RDMs, ``P = n (n - 1) / 2``, without NaN. A sequence is never concatenated
        whole (at 10,000 stimuli 16 RDMs hold 3.2 GB in float32), only block by block.
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
    parts = [z] if isinstance(z, torch.Tensor) else list(z)
    z = parts[0]  # dtype, device and length of all
    r, n_pairs = sum(part.shape[0] for part in parts), z.shape[1]
    n, n_boot = n_stimuli_from_length(n_pairs), counts.shape[0]
    iu, ju = pairs
    q = r + len(iu)
    counts = counts.to(z.device)
    counts_t = counts.T.to(z.dtype).contiguous()  # (n, N): the later stimuli's counts, contiguous rows
    sums = counts.sum(1)
    total = (sums * sums - (counts * counts).sum(1)) / 2
    if (n_boot + q) * n_pairs * z.element_size() <= budget_bytes:
        # small enough to hold the weights: one product, no per-row calls (each costs a thread wake-up)
        vectors = _vectors(parts, 0, n_pairs, iu, ju, shift)
        moments = (pair_weights_of(counts).to(z.dtype) @ vectors.T).to(torch.float64)  # (N, q)
        return total, moments[:, :r], moments[:, r:]
    moments = torch.zeros(q, n_boot, dtype=torch.float64, device=z.device)
    counts64 = counts.T.contiguous()  # (n, N) float64: the block's own counts weigh its products
    # one buffer, reused by every block: never a fresh allocation per block or pair
    width = max(n - 1, budget_bytes // (q * z.element_size()))  # entries per vector, one row at least
    buffer = torch.empty(q * width, dtype=z.dtype, device=z.device)
    row = 0
    while row < n - 1:
        # rows row:stop of the square matrices, columns row + 1:n (zero left of the diagonal): one GEMM
        cols = n - 1 - row
        stop = min(n - 1, row + max(1, width // cols))
        block = buffer[:q * (stop - row) * cols].view(q, stop - row, cols)
        _fill_block(block, parts, row, n, shift)
        for p, (i, j) in enumerate(zip(iu.tolist(), ju.tolist())):
            torch.mul(block[i], block[j], out=block[r + p])
        later = block.view(-1, cols) @ counts_t[row + 1:]  # (q (stop - row), N)
        moments += (later.view(q, stop - row, n_boot).to(torch.float64) * counts64[row:stop]).sum(1)
        row = stop
    return total, moments[:r].T, moments[r:].T


def _fill_block(block: torch.Tensor, parts: Sequence[torch.Tensor], row: int, n: int,
                shift: torch.Tensor | None) -> None:
    """Write rows ``row:row + b`` of the square RDMs ``parts`` (stacked, minus ``shift``), columns
    ``row + 1:n``, into ``block[:r]`` ``(q, b, n - row - 1)``; entries on or left of the diagonal are 0."""
    r = sum(part.shape[0] for part in parts)
    for a in range(row, row + block.shape[1]):
        lead, start = a - row, _row_offset(a, n)
        block[:r, a - row, :lead] = 0  # the products, formed over the whole block, inherit the zeros
        first = 0
        for part in parts:
            rows = slice(first, first + part.shape[0])
            entries = part[:, start:start + n - 1 - a]
            if shift is None:
                block[rows, a - row, lead:] = entries
            else:
                torch.sub(entries, shift[rows], out=block[rows, a - row, lead:])
            first += part.shape[0]
