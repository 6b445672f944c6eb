"""The dual bootstrap of Schuett et al. (2023): inference that generalises to new subjects and new stimuli.

rsatoolbox's ``eval_dual_bootstrap`` evaluates the models on three resamples
made from one draw: subjects and stimuli resampled together, subjects alone and
stimuli alone. The covariances of the three give a variance estimate for
generalising over both factors at once (``extract_variances`` combines them,
with the small-sample correction). Each of the three is one call of the fast
bootstrap engines (``run_bootstrap``: weighted moments for ``corr``/``cosine``,
the Kendall engine for tau), with the same draws.

With crossvalidation inside each resample (``k_pattern`` or ``k_rdm`` above
1, for fitted models) every one of the three resamples is split ``n_cv``
times into folds as rsatoolbox's ``bootstrap_crossval`` does
(``rdl_neuro.inference.crossval``), and the variance is corrected for the
randomness of the split (``use_correction``).

Reference: Schuett, Kipnis, Diedrichsen & Kriegeskorte (2023), Statistical
inference on representational geometries, eLife 12:e82566.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from rsatoolbox.rdm import RDMs

from rdl_neuro.inference.crossval import check_fold_sizes, draw_cv_folds, evaluate_jobs, prepare_models
from rdl_neuro.inference.evaluate import RSAResult, build_result, prepare_rdms, run_bootstrap
from rdl_neuro.inference.resampling import draw_indices
from rdl_neuro.rdm.calc import check_method, n_stimuli_from_length
from rdl_neuro.rdm.compare import COMPARE_METHODS, compare_rdms

__all__ = ["rsa_dual_bootstrap", "dual_bootstrap_variances"]


def dual_bootstrap_variances(evaluations: np.ndarray, noise_ceiling: np.ndarray, n_cv: int = 1) -> np.ndarray:
    """rsatoolbox's covariances ``(3, k + 2, k + 2)`` of a dual bootstrap (both, RDMs, patterns resampled).

    Parameters
    ----------
    evaluations : ndarray ``(N, k, folds, n_cv, 3)``
        NaN samples (too few stimuli drawn) are left out.
    noise_ceiling : ndarray ``(2, N, n_cv, 3)``
    n_cv : int
        Above 1: the covariance corrected for the crossvalidation's
        randomness, extrapolated from one and ``n_cv`` repetitions to
        infinitely many: ``(n_cv V_mean - V_1) / (n_cv - 1)`` (rsatoolbox's
        ``use_correction``); 1: the covariance of the means.
    """
    ok = ~np.isnan(evaluations[:, 0, 0, 0, 0])
    evals_mean = evaluations[ok].mean(-2).mean(-2)  # (N, k, 3)
    nc_mean = noise_ceiling[:, ok].mean(-2).transpose(1, 0, 2)  # (N, 2, 3)
    matrix = np.concatenate([evals_mean, nc_mean], 1)
    matrix = matrix - matrix.mean(0, keepdims=True)
    var_mean = np.einsum("ijk,ilk->kjl", matrix, matrix) / (matrix.shape[0] - 1)
    if n_cv <= 1:
        return var_mean
    per_rep = np.concatenate([evaluations[ok].mean(-3), noise_ceiling[:, ok].transpose(1, 0, 2, 3)], 1)
    per_rep = per_rep - per_rep.mean(0, keepdims=True)  # (N, k + 2, n_cv, 3)
    var_1 = np.einsum("ijmk,ilmk->kjl", per_rep, per_rep) / (per_rep.shape[0] - 1) / per_rep.shape[2]
    return (n_cv * var_mean - var_1) / (n_cv - 1)


def rsa_dual_bootstrap(
    model_rdms: Any,
    brain_rdms: RDMs,
    method: str = "corr",
    *,
    n_bootstrap: int = 1000,
    k_pattern: int = 1,
    k_rdm: int = 1,
    n_cv: int = 2,
    use_correction: bool = True,
    seed: int | None = 0,
    bootstrap_indices: Any = None,
    ci: str = "t",
    descriptor: str | None = None,
    fitter: Any = None,
    random_state: Any = None,
) -> RSAResult:
    """Dual bootstrap of fixed model RDMs against brain RDMs: rsatoolbox's ``eval_dual_bootstrap``.

    Parameters
    ----------
    model_rdms : rsatoolbox RDMs, models, or a sequence of them
        ``k`` model RDMs over the brain's stimuli (see ``rsa_table``), or
        models with parameters (``rdl_neuro.model`` or rsatoolbox ``Model``
        objects, see ``as_models``), fitted on the training part of each fold.
    brain_rdms : rsatoolbox RDMs
        ``m >= 2`` brain RDMs (subjects).
    method : str
        Comparison method (see ``rsa_table``).
    n_bootstrap : int
    k_pattern, k_rdm : int
        Crossvalidation folds inside each resample (1: none over that
        factor); as rsatoolbox, both 1 sets ``n_cv = 1`` and drops the
        correction. Resamples with fewer than ``k_rdm`` distinct brain RDMs
        or ``3 k_pattern`` distinct stimuli are NaN.
    n_cv : int
        Crossvalidation repetitions per resample.
    use_correction : bool
        Correct the variance for the crossvalidation's randomness (needs
        ``n_cv > 1``).
    seed : int or None
        Seeds the draws of fixed model RDMs without crossvalidation
        (``numpy.random.default_rng``).
    bootstrap_indices : (rdm_idx (N, m), pattern_idx (N, n)), optional
        The draws, e.g. rsatoolbox's own (fixed model RDMs, no crossvalidation).
    fitter : str, callable or sequence, optional
        Overrides the models' fitters (see ``as_models``).
    random_state : int or numpy RandomState, optional
        With crossvalidation or fitted models: the draws and the folds are
        those of rsatoolbox after ``np.random.seed(random_state)`` (legacy
        ``RandomState``, rsatoolbox's order of calls), so its results replay
        exactly; default ``seed``.
    ci : "t" or "percentile"
    descriptor : str, optional
        The pattern descriptor that names stimuli; ``None`` reads ``stimulus``, else ``index`` with a warning (``rdl_neuro.rdm.stimulus_ids_of``).

    Returns
    -------
    RSAResult
        ``bootstrap="dual"``; ``evaluations (N, k, 1, 1, 3)`` and
        ``noise_ceiling (2, N, 1, 3)`` in rsatoolbox's layout (last axis:
        both factors, subjects, stimuli resampled); ``variances (3, k + 2,
        k + 2)``; ``sem``, ``p_zero``, ``p_noise`` and ``pairwise_tests``
        use the dual-bootstrap variance; ``dof = min(m, n) - 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from rsatoolbox.rdm import RDMs
    >>> rng = np.random.default_rng(0)
    >>> brain = RDMs(rng.random((4, 45)), pattern_descriptors={"stimulus": np.arange(10)})
    >>> models = RDMs(rng.random((2, 45)), pattern_descriptors={"stimulus": np.arange(10)})
    >>> res = rsa_dual_bootstrap(models, brain, "corr", n_bootstrap=50)
    >>> res.evaluations.shape, res.variances.shape
    ((50, 2, 1, 1, 3), (3, 4, 4))
    """
    check_method(method, COMPARE_METHODS, "comparison method")
    if not _plain_rdms(model_rdms) or k_pattern != 1 or k_rdm != 1:
        return _dual_crossval(model_rdms, brain_rdms, method, n_bootstrap=n_bootstrap, k_pattern=k_pattern,
                              k_rdm=k_rdm, n_cv=n_cv, use_correction=use_correction,
                              random_state=seed if random_state is None else random_state, ci=ci,
                              descriptor=descriptor, fitter=fitter)
    models, brain, names = prepare_rdms(model_rdms, brain_rdms, method, descriptor)
    n, m = n_stimuli_from_length(brain.shape[1]), brain.shape[0]
    if m < 2:
        raise ValueError(f"the dual bootstrap resamples subjects and needs at least 2 brain RDMs, got {m}")
    if bootstrap_indices is None and n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    rdm_idx, pat_idx = draw_indices("both", n_bootstrap, n, m, seed, bootstrap_indices)
    if len(rdm_idx) != len(pat_idx):
        raise ValueError(f"{len(rdm_idx)} rdm and {len(pat_idx)} pattern resamples given")
    runs = [run_bootstrap(models, brain, method, rdm_idx, pat_idx, True),
            run_bootstrap(models, brain, method, rdm_idx, None, True),
            run_bootstrap(models, brain, method, None, pat_idx, True)]
    valid = np.array([len(np.unique(p)) >= 3 for p in pat_idx])
    evaluations = np.stack([e for e, _ in runs], -1)[:, :, None, None, :]  # (N, k, 1, 1, 3)
    noise_ceiling = np.stack([nc for _, nc in runs], -1)[:, :, None, :]  # (2, N, 1, 3)
    # rsatoolbox marks all three NaN when the joint draw has too few stimuli
    evaluations[~valid] = np.nan
    noise_ceiling[:, ~valid] = np.nan
    if valid.sum() < 2:
        raise ValueError(f"only {int(valid.sum())} usable resamples; use more resamples or stimuli")
    variances = dual_bootstrap_variances(evaluations, noise_ceiling)
    fixed = compare_rdms(models, brain, method).numpy().mean(1)
    return build_result(names, method, "dual", evaluations, noise_ceiling, variances, (m, n), min(m, n) - 1,
                        fixed=fixed, ci=ci, n_stimuli=n, n_brain=m, rdm_idx=rdm_idx, pattern_idx=pat_idx)


def _plain_rdms(model_rdms: Any) -> bool:
    return isinstance(model_rdms, RDMs) or (isinstance(model_rdms, (list, tuple))
                                            and all(isinstance(x, RDMs) for x in model_rdms))


def _dual_crossval(model_rdms: Any, brain_rdms: RDMs, method: str, *, n_bootstrap: int, k_pattern: int,
                   k_rdm: int, n_cv: int, use_correction: bool, random_state: Any, ci: str,
                   descriptor: str | None, fitter: Any) -> RSAResult:
    """The dual bootstrap with models fitted in crossvalidation folds: rsatoolbox's draws, folds and numbers."""
    models, comps, brain = prepare_models(model_rdms, brain_rdms, method, fitter, descriptor)
    m, n = brain.shape[0], n_stimuli_from_length(brain.shape[1])
    if m < 2:
        raise ValueError(f"the dual bootstrap resamples subjects and needs at least 2 brain RDMs, got {m}")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    check_fold_sizes(m, n, k_rdm, k_pattern)
    if k_rdm == 1 and k_pattern == 1:
        n_cv, use_correction = 1, False  # as rsatoolbox: nothing to correct without crossvalidation
    if n_cv < 1 or (use_correction and n_cv < 2):
        raise ValueError(f"use_correction needs n_cv >= 2 crossvalidation repetitions per resample, got n_cv={n_cv}")
    rs = np.random.RandomState(random_state) if not isinstance(random_state, np.random.RandomState) else random_state
    ones_m, ones_n = np.ones(m, np.int64), np.ones(n, np.int64)
    jobs, where, rdm_draws, pattern_draws = [], [], [], []
    for i in range(n_bootstrap):
        rdm_idx, pat_idx = rs.randint(0, m, size=m), rs.randint(0, n, size=n)
        rdm_draws.append(rdm_idx)
        pattern_draws.append(pat_idx)
        rdm_counts, pat_counts = np.bincount(rdm_idx, minlength=m), np.bincount(pat_idx, minlength=n)
        if (rdm_counts > 0).sum() < k_rdm or (pat_counts > 0).sum() < 3 * k_pattern:
            continue
        for r in range(n_cv):  # rsatoolbox's order: both factors, subjects, stimuli resampled
            for v, (rc, pc) in enumerate(((rdm_counts, pat_counts), (rdm_counts, ones_n), (ones_m, pat_counts))):
                jobs.append((rc, pc, draw_cv_folds(rs, rc, pc, k_rdm, k_pattern)))
                where.append((i, r, v))
    n_folds = k_rdm * k_pattern
    evaluations = np.full((n_bootstrap, len(models), n_folds, n_cv, 3), np.nan)
    noise_ceiling = np.full((2, n_bootstrap, n_cv, 3), np.nan)
    if len(set(i for i, _, _ in where)) < 2:
        raise ValueError(f"only {len(set(i for i, _, _ in where))} usable resamples; use more resamples, fewer "
                         "folds or more data")
    noise = "cv" if n_folds > 1 else "sample"
    evals, nc, params = evaluate_jobs(models, comps, brain, method, jobs, noise)
    rows, reps, kinds = (np.array(x, dtype=np.int64) for x in zip(*where))
    evaluations[rows, :, :, reps, kinds] = evals
    noise_ceiling[:, rows, reps, kinds] = np.stack(nc, 1)
    variances = dual_bootstrap_variances(evaluations, noise_ceiling, n_cv if use_correction else 1)
    names = [mod.name for mod in models]
    return build_result(names, method, "dual", evaluations, noise_ceiling, variances, (m, n), min(m, n) - 1, ci=ci,
                        n_stimuli=n, n_brain=m, rdm_idx=np.array(rdm_draws), pattern_idx=np.array(pattern_draws),
                        models=[mod.to_rsatoolbox() for mod in models], params=_params_by_model(models, params, where,
                                                                                                n_bootstrap, n_cv))


def _params_by_model(models: list, params: list, where: list, n_bootstrap: int, n_cv: int) -> dict:
    """Fitted parameters ``(N, n_cv, 3, F, ...)`` per model name (NaN for unusable resamples)."""
    rows, reps, kinds = (np.array(x, dtype=np.int64) for x in zip(*where))
    out = {}
    for model, p in zip(models, params):
        full = np.full((n_bootstrap, n_cv, 3) + p.shape[1:], np.nan)
        full[rows, reps, kinds] = p
        out[model.name] = full
    return out
