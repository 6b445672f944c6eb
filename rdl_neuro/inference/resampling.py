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

from rdl_neuro.rdm.calc import triu_indices


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
    offsets = np.arange(pat_idx.shape[0])[:, None] * n
    counts = np.bincount((pat_idx + offsets).ravel(), minlength=pat_idx.shape[0] * n).reshape(-1, n)
    c = torch.from_numpy(counts.astype(np.float64))
    rows, cols = triu_indices(n)
    return c[:, rows] * c[:, cols]
