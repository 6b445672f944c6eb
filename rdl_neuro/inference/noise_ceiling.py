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


def leave_one_out_rdms(brain: torch.Tensor, method: str) -> torch.Tensor:
    """Each subject's lower-bound reference: the pool of all the other subjects' RDMs.

    Parameters
    ----------
    brain : torch.Tensor, shape (r, P)
        One RDM vector per subject (at least 2).
    method : str
        The comparison the pool is made for (``pool_rdm``'s normalisation).

    Returns
    -------
    torch.Tensor, shape (r, P)
        Row ``k`` is ``pool_rdm(brain without row k, method)``; comparing it with
        ``brain[k]`` gives subject ``k``'s lower noise-ceiling bound, whose mean over
        subjects is ``noise_ceiling_bounds``' lower bound.

    Examples
    --------
    >>> import torch
    >>> brain = torch.tensor([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]])
    >>> leave_one_out_rdms(brain, "corr").shape
    torch.Size([3, 3])
    """
    r = brain.shape[0]
    if brain.ndim != 2 or r < 2:
        raise ValueError(f"leave-one-out pools need brain RDMs of shape (r >= 2, P), got {tuple(brain.shape)}")
    return torch.cat([pool_rdm(brain[[j for j in range(r) if j != k]], method) for k in range(r)])


def moment_noise_ceiling(among: torch.Tensor, mult: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``corr`` / ``cosine`` noise ceilings ``(lower (B,), upper (B,))`` from the subjects'
    correlations (cosines) ``among (B, m, m)`` and how often each subject is drawn, ``mult (B, m)``.

    ``pool_rdm`` z-scores (corr) or rms-normalises (cosine) each RDM and averages the copies, so
    the pooled RDM is ``sum_j h_j z_j / sum_j h_j`` and its corr / cosine with subject ``i`` is
    ``sum_j h_j R_ji / sqrt(sum_jl h_j h_l R_jl)``; the lower bound leaves subject ``i`` out of
    ``h``. Bounds average over the subjects present (NaN where fewer than 2 are).
    """
    n_boot, m = mult.shape
    present = mult > 0
    quad_all = torch.einsum("bj,bjl,bl->b", mult, among, mult)
    upper_i = (among * mult[:, :, None]).sum(1) / torch.sqrt(quad_all)[:, None]  # (B, m)
    h_loo = mult[:, None, :].expand(n_boot, m, m).clone()  # h_loo[b, i, j]: weights without subject i
    diag = torch.arange(m, device=mult.device)
    h_loo[:, diag, diag] = 0
    num = torch.einsum("bij,bji->bi", h_loo, among)
    quad = torch.einsum("bij,bjl,bil->bi", h_loo, among, h_loo)
    lower_i = num / torch.sqrt(quad)
    n_present = present.sum(1)
    lower = torch.where(present, lower_i, torch.zeros_like(lower_i)).sum(1) / n_present
    upper = torch.where(present, upper_i, torch.zeros_like(upper_i)).sum(1) / n_present
    too_few = n_present < 2
    return lower.masked_fill(too_few, float("nan")), upper.masked_fill(too_few, float("nan"))


def noise_ceiling_bounds(brain: torch.Tensor, groups: np.ndarray, method: str) -> tuple[float, float]:
    """rsatoolbox's ``boot_noise_ceiling`` on ``brain (r, P)``; ``groups`` are the rows' ``index`` values."""
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError("a noise ceiling needs at least 2 brain RDMs (subjects/sessions); got 1")
    if method in ("corr", "cosine") and len(unique) == len(groups) and not bool(torch.isnan(brain).any()):
        # closed form from the subjects' correlation matrix: no pooled RDMs to build
        among = compare_rdms(brain, brain, method)[None]
        lower, upper = moment_noise_ceiling(among, torch.ones(1, brain.shape[0], dtype=among.dtype))
        return float(lower[0]), float(upper[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pooled_all = pool_rdm(brain, method)
        lower, upper = [], []
        for g in unique:
            test = torch.as_tensor(groups == g)
            lower.append(float(compare_rdms(pool_rdm(brain[~test], method), brain[test], method).mean()))
            upper.append(float(compare_rdms(pooled_all, brain[test], method).mean()))
    return float(np.mean(lower)), float(np.mean(upper))
