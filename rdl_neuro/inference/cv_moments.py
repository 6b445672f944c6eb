"""Crossvalidation on weighted moments: every fold of every resample at once, for ``corr`` and ``cosine``.

A fold of a resample is the original RDMs with pair weights ``u_a u_b``,
where ``u`` counts how often each stimulus is in the fold (0 outside it; see
``rdl_neuro.inference.crossval``). Everything rsatoolbox computes on a fold
under ``corr`` or ``cosine`` -- the pooled training RDM, the least-squares fit
of a weighted model (``fit_regress[_nn]``), the choice of a selection model,
the test comparisons and the noise ceiling -- is a function of the weighted
second moments ``S(u) = sum_ab u_a u_b z_i[a, b] z_j[a, b]`` of all RDMs
(models and subjects, plus a row of ones for the weight total and the means).
So the engine computes those moments and does the rest in closed form,
batched over folds and resamples:

- test folds are small: their moments are one sparse matrix (folds x pairs,
  the weights) times the products of the RDMs' entries;
- a training part is the resample minus a test fold, so its moments are
  ``S(c) - 2 u^T Q c + S(u)`` with ``c`` the resample's counts and ``Q`` the
  square products of the RDMs: one matrix product per resample (``Q c``).
"""
from __future__ import annotations

import numpy as np
import torch

from rdl_neuro.model.fitted import solve_weights
from rdl_neuro.model.rsa_models import RSAModel
from rdl_neuro.rdm.calc import n_stimuli_from_length, to_square

__all__ = ["MOMENT_FITTERS", "moments_cover", "folds_cover", "evaluate_folds_moments"]

#: Fitters the moment engine fits in closed form (with fixed models: no fitter).
MOMENT_FITTERS = (None, "regress", "regress_nn", "select")

# distinct resamples per batch of Q c (memory: about 2 * batch * n * rows^2 / 2 floats)
_SAMPLE_BATCH = 256


def moments_cover(models: list[RSAModel], method: str) -> bool:
    """Whether ``evaluate_folds_moments`` computes these models under ``method``."""
    return method in ("corr", "cosine") and all(m.fitter in MOMENT_FITTERS for m in models)


def folds_cover(pattern_counts: np.ndarray, folds) -> bool:
    """Whether every fold trains on the sample ``pattern_counts (n,)`` minus its test part (or all of it, k = 1)."""
    rest = folds.train_patterns == pattern_counts[None] - folds.test_patterns
    whole = (folds.test_patterns == pattern_counts[None]).all(1) & (folds.train_patterns == pattern_counts[None]).all(1)
    return bool((rest.all(1) | whole).all())


def _pair_weights(counts: np.ndarray):
    """Sparse ``(F, P)`` weights ``2 u_a u_b`` of the pairs within each fold (``counts (F, n)``; 2: ordered pairs)."""
    import scipy.sparse

    n_folds, n = counts.shape
    width = int((counts > 0).sum(1).max())
    order = np.argsort(counts <= 0, axis=1, kind="stable")[:, :width]  # each fold's stimuli first
    weight = np.take_along_axis(counts, order, 1).astype(np.float64)
    pa, pb = np.triu_indices(width, 1)
    lo, hi = np.minimum(order[:, pa], order[:, pb]), np.maximum(order[:, pa], order[:, pb])
    values = 2 * weight[:, pa] * weight[:, pb]
    column = np.where(values > 0, lo * n - lo * (lo + 1) // 2 + (hi - lo - 1), 0)
    return scipy.sparse.csr_matrix((values.ravel(), column.ravel(), np.arange(0, values.size + 1, len(pa))),
                                   shape=(n_folds, n * (n - 1) // 2))


def _rows_of(comps: list[torch.Tensor]) -> tuple[torch.Tensor, list[list[int]]]:
    """Distinct model RDM rows ``(R, P)`` and each model's row numbers (shared components counted once)."""
    rows: list[torch.Tensor] = []
    index: list[list[int]] = []
    for c in comps:
        own = []
        for vec in c:
            hit = next((i for i, r in enumerate(rows) if torch.equal(r, vec)), None)
            if hit is None:
                rows.append(vec)
                hit = len(rows) - 1
            own.append(hit)
        index.append(own)
    return torch.stack(rows), index


def _cov(mom: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C (..., R, R), half_total (...))`` from moment matrices ``(..., R + 1, R + 1)`` (row 0: ones)."""
    total = mom[..., 0, 0]
    second = mom[..., 1:, 1:] / total[..., None, None]
    if method == "corr":
        mean = mom[..., 0, 1:] / total[..., None]
        second = second - mean[..., :, None] * mean[..., None, :]
    return second, total / 2


def _pool_corr(cov: torch.Tensor, coef: torch.Tensor, subj: slice, test_w: torch.Tensor) -> torch.Tensor:
    """Mean (weights ``test_w (F, m)``) comparison of the pool ``sum_s coef_s z_s`` with each subject, ``(F,)``."""
    c_ss = cov[:, subj, subj]
    num = (coef[:, :, None] * c_ss).sum(1)  # (F, m): cov(pool, subject t)
    var = torch.einsum("fs,fst,ft->f", coef, c_ss, coef)
    corr = _ratio(num, var[:, None], torch.diagonal(c_ss, dim1=1, dim2=2))
    return _weighted_mean(corr, test_w)


def _ratio(num: torch.Tensor, var_a: torch.Tensor, var_b: torch.Tensor) -> torch.Tensor:
    """``num / sqrt(var_a var_b)``, 0 where a variance is 0 (a constant RDM; rsatoolbox's rule)."""
    ok = (var_a > 0) & (var_b > 0)
    return torch.where(ok, num / torch.sqrt(torch.where(ok, var_a * var_b, torch.ones_like(num))), torch.zeros_like(num))


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (torch.where(weights > 0, values, torch.zeros_like(values)) * weights).sum(-1) / weights.sum(-1)


def evaluate_folds_moments(models: list[RSAModel], comps: list[torch.Tensor], brain: torch.Tensor, method: str,
                           jobs: list, with_noise_ceiling: bool) -> tuple[np.ndarray, np.ndarray, list]:
    """Evaluations, cv noise ceilings and parameters of many fold sets, from weighted moments.

    Parameters
    ----------
    models : list of RSAModel
        Covered by ``moments_cover``.
    comps : list of Tensor ``(c_i, P)``
        The models' RDMs (NaN-free).
    brain : Tensor ``(m, P)``
        NaN-free.
    method : "corr" or "cosine"
    jobs : list of (rdm_counts (m,), pattern_counts (n,), CVFolds)
        One sample (resample, or the data with counts of one) and its folds
        each; every job has the same number of folds ``F``.
    with_noise_ceiling : bool

    Returns
    -------
    evaluations : ndarray ``(T, k, F)``
    noise_ceiling : ndarray ``(T, 2)`` (NaN without)
    params : list (per model) of fitted parameters ``(T, F, ...)``
    """
    n, m = n_stimuli_from_length(brain.shape[1]), brain.shape[0]
    model_rows, index = _rows_of(comps)
    z = torch.cat([model_rows, brain]).to(torch.float64)
    if method == "corr":
        # a shift changes no correlation and keeps E[xy] - E[x]E[y] free of cancellation
        z = z - z.mean(1, keepdim=True)
    n_rows = z.shape[0]
    r_mod = model_rows.shape[0]
    subj = slice(r_mod, n_rows)
    square = torch.cat([(1 - torch.eye(n, dtype=torch.float64))[None], to_square(z)])  # (R + 1, n, n), zero diagonal
    iu, ju = torch.triu_indices(n_rows + 1, n_rows + 1)
    products = (square[iu] * square[ju]).permute(1, 2, 0).reshape(n, n * len(iu))  # Q: (n, n * features)
    with_ones = torch.cat([torch.ones(1, z.shape[1], dtype=torch.float64), z])
    condensed = (with_ones[iu] * with_ones[ju]).T.numpy()  # (P, features)

    def as_matrix(features: torch.Tensor) -> torch.Tensor:
        out = features.new_empty(features.shape[:-1] + (n_rows + 1, n_rows + 1))
        out[..., iu, ju] = features
        out[..., ju, iu] = features
        return out

    n_jobs, n_folds = len(jobs), len(jobs[0][2])
    c_all = torch.as_tensor(np.stack([j[1] for j in jobs]), dtype=torch.float64)  # (T, n)
    u_te = torch.as_tensor(np.stack([j[2].test_patterns for j in jobs]), dtype=torch.float64)  # (T, F, n)
    u_tr = torch.as_tensor(np.stack([j[2].train_patterns for j in jobs]), dtype=torch.float64)
    h_te = torch.as_tensor(np.stack([j[2].test_rdms for j in jobs]), dtype=torch.float64)  # (T, F, m)
    h_tr = torch.as_tensor(np.stack([j[2].train_rdms for j in jobs]), dtype=torch.float64)
    h_ceil = torch.as_tensor(np.stack([j[2].train_rdms if j[2].ceil_rdms is None else j[2].ceil_rdms
                                       for j in jobs]), dtype=torch.float64)
    h_sample = torch.as_tensor(np.stack([j[0] for j in jobs]), dtype=torch.float64)  # (T, m)

    # moments of the samples, S(c), and of the folds' cross terms u^T Q c
    sample_mom = torch.empty(n_jobs, len(iu), dtype=torch.float64)
    cross = torch.empty(n_jobs, n_folds, len(iu), dtype=torch.float64)
    # resamples repeat over crossvalidation repetitions (consecutive jobs): one Q c each
    first = torch.ones(n_jobs, dtype=torch.bool)
    first[1:] = (c_all[1:] != c_all[:-1]).any(1)
    group = torch.cumsum(first, 0) - 1
    distinct = c_all[first]
    for start in range(0, len(distinct), _SAMPLE_BATCH):
        qc = (distinct[start:start + _SAMPLE_BATCH] @ products).reshape(-1, n, len(iu))  # (b, n, features)
        members = torch.nonzero((group >= start) & (group < start + _SAMPLE_BATCH)).squeeze(1)
        per_job = qc[group[members] - start]
        sample_mom[members] = torch.einsum("bn,bnq->bq", c_all[members], per_job)
        cross[members] = u_te[members] @ per_job

    # test moments: each fold's few pairs, weighted, times the products of the RDMs (a sparse matrix product)
    test_mom = as_matrix(torch.from_numpy(_pair_weights(u_te.reshape(-1, n).numpy()) @ condensed))
    test_mom = test_mom.reshape(n_jobs, n_folds, n_rows + 1, n_rows + 1)
    whole = (u_te == c_all[:, None, :]).all(-1)  # folds that test on the whole sample (k_pattern = 1)
    train_feat = sample_mom[:, None, :] - 2 * cross + test_mom[..., iu, ju]
    train_mom = torch.where(whole[..., None, None], test_mom, as_matrix(train_feat))
    if not bool(((u_tr == c_all[:, None, :] - u_te) | whole[..., None]).all()):
        raise ValueError("the moment engine needs folds whose training part is the sample minus the test part "
                         "(k-fold sets); use the general engine")

    flat = n_jobs * n_folds
    c_te, _ = _cov(test_mom.reshape(flat, n_rows + 1, n_rows + 1), method)
    c_tr, half_tr = _cov(train_mom.reshape(flat, n_rows + 1, n_rows + 1), method)
    h_te, h_tr = h_te.reshape(flat, m), h_tr.reshape(flat, m)
    sd_te = torch.sqrt(torch.diagonal(c_te, dim1=1, dim2=2))  # (flat, R)
    sd_tr = torch.sqrt(torch.diagonal(c_tr, dim1=1, dim2=2))
    # every model row against every test subject, averaged over the test RDMs
    var_te = sd_te**2
    row_scores_te = _weighted_mean(_ratio(c_te[:, :r_mod, subj], var_te[:, :r_mod, None], var_te[:, None, subj]),
                                   h_te[:, None, :])  # (flat, R_mod)
    evaluations = torch.empty(flat, len(models), dtype=torch.float64)
    params: list[list] = []
    for j, (model, rows) in enumerate(zip(models, index)):
        rows_t = torch.as_tensor(rows)
        if model.fitter is None:
            evaluations[:, j] = row_scores_te[:, rows[0]]
            theta = np.zeros((flat, 0))
        elif model.fitter == "select":
            var_tr = sd_tr**2
            train_scores = _weighted_mean(
                _ratio(c_tr[:, rows_t][:, :, subj], var_tr[:, rows_t, None], var_tr[:, None, subj]), h_tr[:, None, :])
            choice = torch.argmax(train_scores, 1)
            evaluations[:, j] = row_scores_te[:, rows_t][torch.arange(flat), choice]
            theta = choice.numpy()
        else:
            # fit_regress: the pooled training RDM is sum_s h_s z_s / (sd_s sum h)
            coef = h_tr / (sd_tr[:, subj] * h_tr.sum(1, keepdim=True))
            c_kk = c_tr[:, rows_t][:, :, rows_t]
            ata = half_tr[:, None, None] * c_kk + model.options.get("ridge_weight", 0.0) * torch.eye(len(rows))
            aty = half_tr[:, None] * (c_tr[:, rows_t][:, :, subj] @ coef[:, :, None]).squeeze(-1)
            weights = solve_weights(ata, aty, nonneg=model.fitter == "regress_nn",
                                    normalize=model.options.get("normalize", True))
            te_kk = c_te[:, rows_t][:, :, rows_t]
            num = torch.einsum("fk,fkt->ft", weights, c_te[:, rows_t][:, :, subj])
            var = torch.einsum("fk,fkl,fl->f", weights, te_kk, weights)
            evaluations[:, j] = _weighted_mean(_ratio(num, var[:, None], var_te[:, subj]), h_te)
            theta = weights.numpy()
        theta = np.asarray(theta)
        params.append(theta.reshape((n_jobs, n_folds) + theta.shape[1:]))
    evaluations = evaluations.reshape(n_jobs, n_folds, len(models)).permute(0, 2, 1).numpy()
    noise_ceiling = np.full((n_jobs, 2), np.nan)
    if with_noise_ceiling:
        h_ceil = h_ceil.reshape(flat, m)
        lower = _pool_corr(c_te, h_ceil / sd_te[:, subj], subj, h_te)
        c_sample, _ = _cov(as_matrix(sample_mom), method)
        sd_sample = torch.sqrt(torch.diagonal(c_sample, dim1=1, dim2=2))[:, subj]  # (T, m)
        coef = (h_sample / sd_sample)[:, None, :].expand(n_jobs, n_folds, m).reshape(flat, m)
        upper = _pool_corr(c_te, coef, subj, h_te)
        noise_ceiling = torch.stack([lower.reshape(n_jobs, n_folds).mean(1),
                                     upper.reshape(n_jobs, n_folds).mean(1)], 1).numpy()
    return evaluations, noise_ceiling, params
