"""Bootstrap engines of the model evaluation: the exact general path and weighted moments.

``bootstrap_general`` builds every resampled RDM as rsatoolbox does and
compares it with ``compare_rdms`` -- exact for every method, NaN entries
included. ``bootstrap_moments`` gives the same numbers for ``corr`` and
``cosine`` from weighted moments of the original RDMs (matrix products over all
resamples, models and subjects, in blocks of bounded memory; see
``rdl_neuro.inference.resampling.weighted_moments``).
Kendall's tau has its own engine in ``rdl_neuro.inference.kendall``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from rdl_neuro.inference.noise_ceiling import moment_noise_ceiling, noise_ceiling_bounds
from rdl_neuro.inference.resampling import MOMENT_BUDGET_BYTES, draw_counts, weighted_moments
from rdl_neuro.rdm.calc import n_stimuli_from_length, subset_rdms
from rdl_neuro.rdm.compare import compare_rdms
from rdl_neuro.train.distributed import gather_no_grad, world_size_and_rank

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
                       pat_idx: np.ndarray | None, boot_nc: bool,
                       budget_bytes: int = MOMENT_BUDGET_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """``corr`` / ``cosine`` bootstrap from weighted moments (equal to the general path, much faster).

    Memory stays near ``budget_bytes`` beyond the inputs, for any number of stimuli and resamples
    (see ``weighted_moments``); the products run in the inputs' dtype (float32 or float64).
    """
    k, m = models.shape[0], brain.shape[0]
    n = n_stimuli_from_length(models.shape[1])
    # shifting by the full-data mean changes no correlation and avoids cancellation in S - mu mu^T
    shift = torch.cat([models.mean(1, keepdim=True), brain.mean(1, keepdim=True)]) if method == "corr" else None
    n_boot = len(rdm_idx if rdm_idx is not None else pat_idx)
    device = models.device  # any device: CUDA runs the products there (benchmarks/gpu_check.py)
    if pat_idx is not None:
        counts = draw_counts(pat_idx, n).to(device)
        valid = np.array([len(np.unique(p)) >= 3 for p in pat_idx])
    else:
        counts = torch.ones(1, n, dtype=torch.float64, device=device)
        valid = np.ones(n_boot, dtype=bool)
    # the second moments needed (B = 1 when only RDMs are resampled): each RDM's own, model x subject,
    # subject x subject; the model x model ones are never used
    r = k + m
    models_i, subjects_j = torch.meshgrid(torch.arange(k), torch.arange(k, r), indexing="ij")
    among_i, among_j = torch.triu_indices(m, m) + k
    iu = torch.cat([torch.arange(k), models_i.flatten(), among_i])
    ju = torch.cat([torch.arange(k), subjects_j.flatten(), among_j])
    # models and subjects are passed apart: never copied whole into one tensor
    total, first, second = weighted_moments((models, brain), counts, (iu, ju), shift, budget_bytes)
    upper = second / total[:, None]
    if method == "corr":
        mean = first / total[:, None]
        upper = upper - mean[:, iu] * mean[:, ju]
    cov = torch.full((counts.shape[0], r, r), float("nan"), dtype=torch.float64, device=device)
    cov[:, iu, ju] = upper
    cov[:, ju, iu] = upper
    sd = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2))
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    model_vs_brain = corr[:, :k, k:]  # (B, k, m)
    among = corr[:, k:, k:]  # (B, m, m): correlations of the subjects' (normalised) RDMs
    if pat_idx is None:
        model_vs_brain = model_vs_brain.expand(n_boot, k, m)
        among = among.expand(n_boot, m, m)
    mult = torch.zeros(n_boot, m, dtype=torch.float64, device=device)
    rows = torch.as_tensor(rdm_idx if rdm_idx is not None else np.tile(np.arange(m), (n_boot, 1)), device=device)
    mult.scatter_add_(1, rows, torch.ones(rows.shape, dtype=torch.float64, device=device))
    evals = (model_vs_brain * mult[:, None, :]).sum(2) / mult.sum(1, keepdim=True)
    nc = np.full((2, n_boot), np.nan)
    if boot_nc:
        nc = torch.stack(moment_noise_ceiling(among, mult)).cpu().numpy().copy()
    evals = evals.cpu().numpy().copy()
    evals[~valid] = np.nan
    nc[:, ~valid] = np.nan
    return evals, nc


Engine = Callable[[np.ndarray | None, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def split_resamples(engine: Engine, rdm_idx: np.ndarray | None, pat_idx: np.ndarray | None,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Run ``engine(rdm_idx, pat_idx) -> (evaluations (N, k), noise ceilings (2, N))`` on this
    process's share of the resamples under ``torch.distributed`` (torchrun), and gather every
    rank's results in resample order; outside a process group, ``engine`` on all of them.

    Every rank must hold the same draws (the same seed or ``bootstrap_indices``). Resamples are
    independent, so the gathered results equal one process's, resample by resample.
    """
    world, rank = world_size_and_rank()
    if world == 1:
        return engine(rdm_idx, pat_idx)
    n_boot = len(rdm_idx if rdm_idx is not None else pat_idx)
    edges = np.linspace(0, n_boot, world + 1).round().astype(int)
    share = slice(edges[rank], edges[rank + 1])
    if share.start < share.stop:
        evals, nc = engine(None if rdm_idx is None else rdm_idx[share], None if pat_idx is None else pat_idx[share])
    else:  # more ranks than resamples
        evals, nc = np.empty((0, k)), np.empty((2, 0))
    both = torch.from_numpy(np.concatenate([evals, nc.T], axis=1).astype(np.float64))  # (share, k + 2)
    gathered = gather_no_grad(both).numpy()
    return gathered[:, :k].copy(), gathered[:, k:].T.copy()
