"""Bootstrap engines of the model evaluation: the exact general path and weighted moments.

``bootstrap_general`` builds every resampled RDM as rsatoolbox does and
compares it with ``compare_rdms`` -- exact for every method, NaN entries
included. ``bootstrap_moments`` gives the same numbers for ``corr`` and
``cosine`` from weighted moments of the original RDMs (one batched product
over all resamples, models and subjects; see ``rdl_neuro.inference.resampling``).
Kendall's tau has its own engine in ``rdl_neuro.inference.kendall``.
"""
from __future__ import annotations

import numpy as np
import torch

from rdl_neuro.inference.noise_ceiling import noise_ceiling_bounds
from rdl_neuro.inference.resampling import pair_weights
from rdl_neuro.rdm.calc import n_stimuli_from_length, subset_rdms
from rdl_neuro.rdm.compare import compare_rdms

# comparison methods whose pattern bootstrap runs on weighted moments
MOMENT_METHODS = ("corr", "cosine")


def bootstrap_general(models: torch.Tensor, brain: torch.Tensor, method: str, rdm_idx: np.ndarray | None,
                       pat_idx: np.ndarray | None, boot_nc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact bootstrap for every method: evaluations ``(N, k)`` and noise ceilings ``(2, N)``."""
    n_boot = len(rdm_idx if rdm_idx is not None else pat_idx)
    evals = np.full((n_boot, models.shape[0]), np.nan)
    nc = np.full((2, n_boot), np.nan)
    fixed = compare_rdms(models, brain, method).numpy() if pat_idx is None else None
    for i in range(n_boot):
        rows = rdm_idx[i] if rdm_idx is not None else np.arange(brain.shape[0])
        if pat_idx is not None:
            if len(np.unique(pat_idx[i])) < 3:
                continue  # rsatoolbox marks such samples NaN
            m_b, y_b = subset_rdms(models, np.sort(pat_idx[i])), subset_rdms(brain[torch.as_tensor(rows)], np.sort(pat_idx[i]))
            evals[i] = compare_rdms(m_b, y_b, method).mean(1).numpy()
        else:
            m_b, y_b = models, brain[torch.as_tensor(rows)]
            evals[i] = fixed[:, rows].mean(1)
        if boot_nc:
            nc[:, i] = noise_ceiling_bounds(y_b, rows, method) if len(np.unique(rows)) > 1 else (np.nan, np.nan)
    return evals, nc


def bootstrap_moments(models: torch.Tensor, brain: torch.Tensor, method: str, rdm_idx: np.ndarray | None,
                       pat_idx: np.ndarray | None, boot_nc: bool) -> tuple[np.ndarray, np.ndarray]:
    """``corr`` / ``cosine`` bootstrap from weighted moments (equal to the general path, much faster)."""
    k, m = models.shape[0], brain.shape[0]
    n = n_stimuli_from_length(models.shape[1])
    z = torch.cat([models, brain]).to(torch.float64)
    if method == "corr":
        # shifting by the full-data mean changes no correlation and avoids cancellation in S - mu mu^T
        z = z - z.mean(1, keepdim=True)
    n_boot = len(rdm_idx if rdm_idx is not None else pat_idx)
    if pat_idx is not None:
        weights = pair_weights(pat_idx, n)
        valid = np.array([len(np.unique(p)) >= 3 for p in pat_idx])
    else:
        weights = torch.ones(1, z.shape[1], dtype=torch.float64)
        valid = np.ones(n_boot, dtype=bool)
    # second moments (B, r, r) of the weighted entries (B = 1 when only RDMs are resampled): one matrix
    # product of the weights with the r (r + 1) / 2 entrywise products of RDM pairs
    r = z.shape[0]
    iu, ju = torch.triu_indices(r, r)
    products = z[iu] * z[ju]  # (r (r + 1) / 2, P)
    total = weights.sum(1)
    cov = torch.empty(weights.shape[0], r, r, dtype=torch.float64)
    upper = (weights @ products.T) / total[:, None]
    if method == "corr":
        mean = (weights @ z.T) / total[:, None]
        upper = upper - mean[:, iu] * mean[:, ju]
    cov[:, iu, ju] = upper
    cov[:, ju, iu] = upper
    sd = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2))
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    model_vs_brain = corr[:, :k, k:]  # (B, k, m)
    among = corr[:, k:, k:]  # (B, m, m): correlations of the subjects' (normalised) RDMs
    if pat_idx is None:
        model_vs_brain = model_vs_brain.expand(n_boot, k, m)
        among = among.expand(n_boot, m, m)
    mult = torch.zeros(n_boot, m, dtype=torch.float64)
    rows = rdm_idx if rdm_idx is not None else np.tile(np.arange(m), (n_boot, 1))
    mult.scatter_add_(1, torch.as_tensor(rows), torch.ones(rows.shape, dtype=torch.float64))
    evals = (model_vs_brain * mult[:, None, :]).sum(2) / mult.sum(1, keepdim=True)
    nc = np.full((2, n_boot), np.nan)
    if boot_nc:
        # pool_rdm z-scores (corr) or rms-normalises (cosine) each RDM and averages the copies, so the
        # pooled RDM is sum_j h_j z_j / sum h_j and its corr/cosine with subject i is
        # sum_j h_j R_ji / sqrt(sum_jl h_j h_l R_jl) with R the subjects' correlation/cosine matrix.
        present = mult > 0
        quad_all = torch.einsum("bj,bjl,bl->b", mult, among, mult)
        upper_i = (among * mult[:, :, None]).sum(1) / torch.sqrt(quad_all)[:, None]  # (B, m)
        h_loo = mult[:, None, :].expand(n_boot, m, m).clone()  # h_loo[b, i, j]: weights without subject i
        h_loo[:, torch.arange(m), torch.arange(m)] = 0
        num = torch.einsum("bij,bji->bi", h_loo, among)
        quad = torch.einsum("bij,bjl,bil->bi", h_loo, among, h_loo)
        lower_i = num / torch.sqrt(quad)
        n_present = present.sum(1)
        lower = torch.where(present, lower_i, torch.zeros_like(lower_i)).sum(1) / n_present
        upper = torch.where(present, upper_i, torch.zeros_like(upper_i)).sum(1) / n_present
        nc = torch.stack([lower, upper]).numpy().copy()
        nc[:, n_present.numpy() < 2] = np.nan
    evals = evals.numpy().copy()
    evals[~valid] = np.nan
    nc[:, ~valid] = np.nan
    return evals, nc
