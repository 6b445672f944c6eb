"""Noise ceilings: rsatoolbox's ``pool_rdm`` and ``boot_noise_ceiling`` on tensors.

The upper bound compares each subject's RDM with the pool of all of them, the
lower bound with the pool of the others (leave one out).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from rdl_neuro.rdm.compare import RANK_METHODS, compare_rdms
from rdl_neuro.rdm.ranks import rankdata


def nan_rank_rows(v: torch.Tensor) -> torch.Tensor:
    """Average ranks of each row's non-NaN entries (NaN stays NaN), as rsatoolbox's ``_nan_rank_data``."""
    valid = ~torch.isnan(v)
    if bool(valid.all()):
        return rankdata(v)
    out = torch.full_like(v, float("nan"))
    for i in range(v.shape[0]):
        out[i, valid[i]] = rankdata(v[i, valid[i]][None])[0]
    return out


def pool_rdm(v: torch.Tensor, method: str) -> torch.Tensor:
    """rsatoolbox's ``pool_rdm``: the RDM ``(1, P)`` that best represents ``v (r, P)`` under ``method``."""
    if method in ("cosine", "cosine_cov"):
        v = v / torch.sqrt(torch.nanmean(v**2, dim=1, keepdim=True))
    elif method in ("corr", "corr_cov"):
        v = v - torch.nanmean(v, dim=1, keepdim=True)
        std = torch.sqrt(torch.nanmean(v**2, dim=1, keepdim=True))
        v = v / std
    elif method in RANK_METHODS:
        v = nan_rank_rows(v)
    # _nan_mean: the entries valid in the first RDM
    keep = ~torch.isnan(v[0])
    pooled = torch.full((1, v.shape[1]), float("nan"), dtype=v.dtype)
    pooled[0, keep] = v[:, keep].mean(0)
    if method in ("corr", "corr_cov"):
        pooled = pooled - pooled[~torch.isnan(pooled)].min()
    return pooled


def noise_ceiling_bounds(brain: torch.Tensor, groups: np.ndarray, method: str) -> tuple[float, float]:
    """rsatoolbox's ``boot_noise_ceiling`` on ``brain (r, P)``; ``groups`` are the rows' ``index`` values."""
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError("a noise ceiling needs at least 2 brain RDMs (subjects/sessions); got 1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pooled_all = pool_rdm(brain, method)
        lower, upper = [], []
        for g in unique:
            test = torch.as_tensor(groups == g)
            lower.append(float(compare_rdms(pool_rdm(brain[~test], method), brain[test], method).mean()))
            upper.append(float(compare_rdms(pooled_all, brain[test], method).mean()))
    return float(np.mean(lower)), float(np.mean(upper))
