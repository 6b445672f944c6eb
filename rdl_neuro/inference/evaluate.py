"""Model-brain RSA: comparisons, bootstrap, noise ceilings -> pandas.

``rsa_table`` evaluates model RDMs
against brain RDMs the way rsatoolbox's ``eval_fixed``, ``eval_bootstrap_pattern``,
``eval_bootstrap_rdm`` and ``eval_bootstrap`` do -- same numbers, same t-tests,
same noise ceilings -- and returns a tidy DataFrame (``rsa_evaluate`` returns
the arrays behind it).

How the bootstrap is made fast
------------------------------
Resampling stimuli with replacement gives an RDM over a multiset of stimuli:
rsatoolbox builds it by indexing (``subsample_pattern``), and the pairs of two
copies of the same stimulus become NaN. Every valid entry of that RDM is a copy
of an original pair ``(a, b)``, present ``c_a * c_b`` times, where ``c`` counts
how often each stimulus was drawn. So a statistic of the resampled RDMs is the
*weighted* statistic of the original RDMs with pair weights ``c_a c_b``. For
``corr`` and ``cosine`` that is a handful of weighted moments per resample --
one batched matrix product over all resamples, models and subjects -- and the
noise ceiling follows in closed form from the subjects' weighted correlation
matrix. Kendall's tau-a and tau-b use the same weights differently: the
original entries are ordered once per (model, subject) pair, and a resample is
that order with every entry repeated ``c_a c_b`` times -- one ``np.repeat`` and
one compiled discordance count, no sorting or RDM building (see "Kendall tau,
pattern bootstrap" below); the bootstrapped noise ceiling pools the subjects'
weighted average ranks the same way. Other cases (the remaining rank and whitened
comparisons, RDM bootstraps with tau, NaN entries) take the exact general path:
the resampled RDMs are built as rsatoolbox builds them and compared with
``rdl_neuro.rdm.compare_rdms`` (one batched call per resample).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from rsatoolbox.rdm import RDMs
from scipy import stats

from rdl_neuro.inference.bootstrap import MOMENT_METHODS, bootstrap_general, bootstrap_moments
from rdl_neuro.inference.kendall import KENDALL_METHODS, bootstrap_kendall
from rdl_neuro.inference.noise_ceiling import noise_ceiling_bounds
from rdl_neuro.inference.resampling import draw_indices
from rdl_neuro.rdm.calc import check_method, subset_rdms
from rdl_neuro.rdm.compare import COMPARE_METHODS, RANK_METHODS, compare_rdms
from rdl_neuro.rdm.interop import from_rsatoolbox, rdm_names

__all__ = ["rsa_table", "rsa_evaluate", "RSAResult", "BOOTSTRAPS", "extract_variances"]

#: ``bootstrap`` choices of :func:`rsa_table`: none (fixed), stimuli, brain RDMs, or both
BOOTSTRAPS = (None, "pattern", "rdm", "both")


# ============================================================================ inputs


def _match_stimuli(model_ids: list[Any], brain_ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(model_pos, brain_pos)`` of the common stimuli, in brain order; errors on missing ids."""
    brain_index = {sid: i for i, sid in enumerate(brain_ids)}
    missing = [sid for sid in model_ids if sid not in brain_index]
    if missing:
        if len(missing) == len(model_ids):
            raise ValueError(
                f"the model and brain RDMs share no stimulus ids: model ids start {model_ids[:5]}, "
                f"brain ids start {brain_ids[:5]} (check the stimulus descriptor)")
        raise ValueError(f"{len(missing)} stimulus ids of the model RDMs are missing from the brain RDMs: "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    model_index = {sid: i for i, sid in enumerate(model_ids)}
    brain_pos = np.array([i for i, sid in enumerate(brain_ids) if sid in model_index], dtype=np.int64)
    model_pos = np.array([model_index[brain_ids[i]] for i in brain_pos], dtype=np.int64)
    if len(brain_pos) < 3:
        raise ValueError(f"only {len(brain_pos)} stimuli in common; RSA needs at least 3")
    return model_pos, brain_pos


def _stack_models(model_rdms: RDMs | Sequence[RDMs], brain_rdms: RDMs, brain_ids: list[Any], method: str,
                  descriptor: str) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """Model RDMs from one ``RDMs`` or several (e.g. a network's layers and classic model RDMs),
    restricted to and ordered by the brain's stimuli: ``(models (k, P'), names, brain positions)``.
    Every object must cover the same stimuli, so that all models are compared on one set."""
    objects = [model_rdms] if isinstance(model_rdms, RDMs) else list(model_rdms)
    if not objects:
        raise ValueError("model_rdms is an empty sequence; give an RDMs object or a sequence of them")
    for i, obj in enumerate(objects):
        if not isinstance(obj, RDMs):
            where = "model_rdms" if isinstance(model_rdms, RDMs) else f"model_rdms[{i}]"
            raise TypeError(f"{where} must be rsatoolbox.rdm.RDMs, got {type(obj).__name__}")
    vectors, names, first_pos, first_ids = [], [], None, None
    for i, obj in enumerate(objects):
        _warn_measures(obj, brain_rdms, method)
        tensor, ids = from_rsatoolbox(obj, descriptor)
        model_pos, brain_pos = _match_stimuli(ids, brain_ids)
        if first_pos is None:
            first_pos, first_ids = brain_pos, set(ids)
        elif not np.array_equal(brain_pos, first_pos):
            only_here, only_first = sorted(set(ids) - first_ids, key=str), sorted(first_ids - set(ids), key=str)
            raise ValueError(f"model_rdms[{i}] covers other stimuli than model_rdms[0]: "
                             f"{len(only_here)} only in [{i}] (e.g. {only_here[:5]}), "
                             f"{len(only_first)} only in [0] (e.g. {only_first[:5]}); "
                             "subset them to the same stimuli")
        vectors.append(subset_rdms(tensor, model_pos).to(torch.float64))
        names += rdm_names(obj)
    return torch.cat(vectors), names, first_pos




def _warn_measures(model: RDMs, brain: RDMs, method: str) -> None:
    a, b = model.dissimilarity_measure, brain.dissimilarity_measure
    if not a or not b or a == b:
        return
    monotone = {a, b} <= {"euclidean", "squared euclidean"}
    if monotone and method in RANK_METHODS:
        return  # one is a monotone transform of the other: rank comparisons cannot tell them apart
    warnings.warn(
        f"model RDMs use dissimilarity measure {a!r}, brain RDMs {b!r}: the '{method}' comparison "
        "depends on that choice (compute the model RDMs with the brain's measure, or use a rank method "
        "where only the order matters)", UserWarning, stacklevel=3)


# ============================================================================ statistics (rsatoolbox's)


def _correct(var: np.ndarray, n: int | None) -> np.ndarray:
    return var * (n / (n - 1)) if n is not None and n > 1 else var


def extract_variances(evals: np.ndarray, nc: np.ndarray | None, n_corr: int | None, ddof: int = 1,
               scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """rsatoolbox's ``extract_variances``: ``(model_var (k,), noise_ceiling_var (k,))``."""
    k = evals.shape[1]
    if nc is not None:
        cov = np.atleast_2d(np.cov(np.concatenate([evals.T, nc]), ddof=ddof)) * scale
        model_var = np.diag(cov)[:k]
        nc_var = model_var - 2 * cov[:k, k] + cov[k, k]
    else:
        cov = np.atleast_2d(np.cov(evals.T, ddof=ddof)) * scale
        model_var = np.diag(cov)
        nc_var = model_var
    return _correct(model_var, n_corr), _correct(nc_var, n_corr)


@dataclass
class RSAResult:
    """Everything behind ``rsa_table``.

    Attributes
    ----------
    names : list of str
        One per model RDM.
    method, bootstrap : str, str or None
    evaluations : ndarray
        ``(k, m)`` model-by-brain-RDM comparisons without bootstrap, else
        ``(N, k)`` per-resample means over the (resampled) brain RDMs; NaN
        rows mark resamples rsatoolbox also drops (fewer than 3 stimuli).
    noise_ceiling : ndarray
        ``(2,)`` lower and upper bound, or ``(2, N)`` per resample.
    mean, sem, ci_low, ci_high, p_zero, p_noise : ndarray ``(k,)``
    nc_lower, nc_upper : float
    dof : int
    n_stimuli, n_brain : int
    """

    names: list[str]
    method: str
    bootstrap: str | None
    evaluations: np.ndarray
    noise_ceiling: np.ndarray | None
    fixed: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_zero: np.ndarray
    p_noise: np.ndarray
    nc_lower: float
    nc_upper: float
    dof: int
    n_stimuli: int
    n_brain: int
    rdm_idx: np.ndarray | None = field(default=None, repr=False)
    pattern_idx: np.ndarray | None = field(default=None, repr=False)

    def table(self) -> pd.DataFrame:
        """One row per model RDM (see ``rsa_table``)."""
        n = len(self.names)
        valid = int(np.isfinite(self.evaluations[:, 0]).sum()) if self.bootstrap else 0
        return pd.DataFrame({
            "model": self.names,
            "method": [self.method] * n,
            "bootstrap": [self.bootstrap or "none"] * n,
            "mean": self.mean,
            "fixed": self.fixed,
            "sem": self.sem,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_zero": self.p_zero,
            "p_noise": self.p_noise,
            "nc_lower": [self.nc_lower] * n,
            "nc_upper": [self.nc_upper] * n,
            "dof": [self.dof] * n,
            "n_stimuli": [self.n_stimuli] * n,
            "n_brain": [self.n_brain] * n,
            "n_bootstrap": [valid] * n,
        })


def rsa_evaluate(
    model_rdms: RDMs | Sequence[RDMs],
    brain_rdms: RDMs,
    method: str = "corr",
    *,
    bootstrap: str | None = None,
    n_bootstrap: int = 1000,
    noise_ceiling: bool = True,
    boot_noise_ceiling: bool = True,
    ci: str = "t",
    seed: int | None = 0,
    bootstrap_indices: Any = None,
    descriptor: str = "stimulus",
) -> RSAResult:
    """Evaluate model RDMs against brain RDMs with rsatoolbox's statistics (see ``rsa_table``)."""
    check_method(method, COMPARE_METHODS, "comparison method")
    if bootstrap not in BOOTSTRAPS:
        raise ValueError(f"bootstrap must be one of {BOOTSTRAPS}, got {bootstrap!r}")
    if ci not in ("t", "percentile"):
        raise ValueError(f"ci must be 't' or 'percentile', got {ci!r}")
    if not isinstance(brain_rdms, RDMs):
        raise TypeError(f"brain_rdms must be rsatoolbox.rdm.RDMs, got {type(brain_rdms).__name__}")
    brain, brain_ids = from_rsatoolbox(brain_rdms, descriptor)
    models, names, brain_pos = _stack_models(model_rdms, brain_rdms, brain_ids, method, descriptor)
    brain = subset_rdms(brain, brain_pos)
    n_stim, k, m = len(brain_pos), models.shape[0], brain.shape[0]
    for name, v in (("model", models), ("brain", brain)):
        bad = torch.isnan(v).all(1)
        if bool(bad.any()):
            raise ValueError(f"{name} RDM(s) {torch.nonzero(bad).squeeze(1).tolist()} are entirely NaN")
    if noise_ceiling and m < 2:
        raise ValueError("noise_ceiling=True needs at least 2 brain RDMs (the lower bound leaves one out); "
                         "got 1 -- pass noise_ceiling=False or more subjects/sessions")
    fixed_all = compare_rdms(models, brain, method).numpy()  # (k, m)
    fixed = fixed_all.mean(1)
    nc_point = noise_ceiling_bounds(brain, np.arange(m), method) if noise_ceiling else (np.nan, np.nan)
    rdm_idx = pat_idx = None
    if bootstrap is None:
        evaluations, nc_arr = fixed_all, np.array(nc_point)
        mean = fixed
        dof = m - 1
        if m > 1:
            model_var, nc_var = extract_variances(fixed_all.T, None, m, ddof=0, scale=1.0 / m)
        else:
            model_var = nc_var = np.full(k, np.nan)
        nc_lower, nc_upper = nc_point
    else:
        if n_bootstrap < 2 and bootstrap_indices is None:
            raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
        rdm_idx, pat_idx = draw_indices(bootstrap, n_bootstrap, n_stim, m, seed, bootstrap_indices)
        if rdm_idx is not None and pat_idx is not None and len(rdm_idx) != len(pat_idx):
            raise ValueError(f"{len(rdm_idx)} rdm and {len(pat_idx)} pattern resamples given")
        boot_nc = noise_ceiling and boot_noise_ceiling
        has_nan = bool(torch.isnan(models).any() or torch.isnan(brain).any())
        if method in MOMENT_METHODS and not has_nan:
            evaluations, nc_arr = bootstrap_moments(models, brain, method, rdm_idx, pat_idx, boot_nc)
        elif method in KENDALL_METHODS and bootstrap == "pattern" and not has_nan:
            evaluations, nc_arr = bootstrap_kendall(models, brain, method, pat_idx, boot_nc)
        else:
            evaluations, nc_arr = bootstrap_general(models, brain, method, rdm_idx, pat_idx, boot_nc)
        ok = np.isfinite(evaluations[:, 0])
        if ok.sum() < 2:
            raise ValueError(f"only {int(ok.sum())} usable bootstrap samples; use more resamples or stimuli")
        mean = evaluations[ok].mean(0)
        n_corr = {"pattern": n_stim, "rdm": m, "both": min(m, n_stim)}[bootstrap]
        dof = n_corr - 1
        if bootstrap == "rdm":
            # eval_bootstrap_rdm overwrites its variances with the evaluations' covariance alone
            model_var, nc_var = extract_variances(evaluations, None, n_corr)
        else:
            model_var, nc_var = extract_variances(evaluations[ok], nc_arr[:, ok] if boot_nc else None, n_corr)
        if not noise_ceiling:
            nc_arr, nc_lower, nc_upper = None, np.nan, np.nan
        elif boot_nc:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                nc_lower, nc_upper = (float(v) for v in np.nanmean(nc_arr, axis=1))
        else:
            nc_arr = np.array(nc_point)
            nc_lower, nc_upper = nc_point
    sem = np.sqrt(np.maximum(model_var, 0))
    eps = np.finfo(float).eps
    with np.errstate(invalid="ignore", divide="ignore"):
        p_zero = 1 - stats.t.cdf(mean / np.sqrt(np.maximum(model_var, eps)), dof) if dof > 0 else np.full(k, np.nan)
        if noise_ceiling and dof > 0:
            t_nc = (mean - nc_lower) / np.sqrt(np.maximum(nc_var, eps))
            p_noise = 2 * (1 - stats.t.cdf(np.abs(t_nc), dof))
        else:
            p_noise = np.full(k, np.nan)
    if ci == "percentile" and bootstrap is not None:
        framed = np.concatenate([np.tile([[-np.inf], [np.inf]], (1, k)), evaluations], 0)
        ci_low, ci_high = np.quantile(framed, 0.025, axis=0), np.quantile(framed, 0.975, axis=0)
    else:
        half = -sem * stats.t.ppf(0.025, dof) if dof > 0 else np.full(k, np.nan)
        ci_low, ci_high = mean - half, mean + half
    return RSAResult(names=names, method=method, bootstrap=bootstrap, evaluations=evaluations,
                     noise_ceiling=nc_arr, fixed=fixed, mean=mean, sem=sem, ci_low=ci_low, ci_high=ci_high,
                     p_zero=np.asarray(p_zero, float), p_noise=np.asarray(p_noise, float),
                     nc_lower=float(nc_lower), nc_upper=float(nc_upper), dof=int(dof),
                     n_stimuli=n_stim, n_brain=m, rdm_idx=rdm_idx, pattern_idx=pat_idx)


def rsa_table(
    model_rdms: RDMs | Sequence[RDMs],
    brain_rdms: RDMs,
    method: str = "corr",
    *,
    bootstrap: str | None = None,
    n_bootstrap: int = 1000,
    noise_ceiling: bool = True,
    boot_noise_ceiling: bool = True,
    ci: str = "t",
    seed: int | None = 0,
    bootstrap_indices: Any = None,
    descriptor: str = "stimulus",
) -> pd.DataFrame:
    """Model-brain RSA table with rsatoolbox's statistics, one row per model RDM.

    Parameters
    ----------
    model_rdms : rsatoolbox RDMs, or a sequence of them
        ``k`` model RDMs (e.g. from ``layer_rdms``); names from
        ``rdm_descriptors`` ``layer``, ``name`` or ``model``. A sequence
        (a network's layers and classic model RDMs, say) gives one row per
        RDM of each, in order; every object must cover the same stimuli.
    brain_rdms : rsatoolbox RDMs
        ``m`` brain RDMs (subjects/sessions). Stimuli are matched by
        ``pattern_descriptors[descriptor]``: the brain RDMs are cut to the
        model's stimuli (brain order); model ids the brain lacks are an error.
    method : str
        rsatoolbox comparison: cosine, corr, spearman, rho-a, kendall/tau-b,
        tau-a, corr_cov, cosine_cov.
    bootstrap : None, "pattern", "rdm" or "both"
        None is ``eval_fixed`` (SEM over brain RDMs); the others are
        ``eval_bootstrap_pattern``, ``eval_bootstrap_rdm`` and ``eval_bootstrap``.
    n_bootstrap : int
    noise_ceiling : bool
        Compute the noise ceiling (needs >= 2 brain RDMs) and the test against it.
    boot_noise_ceiling : bool
        As rsatoolbox's ``boot_noise_ceil``: a noise ceiling per resample
        (its covariance with the evaluations enters the test against it) or
        one on the full data.
    ci : "t" or "percentile"
        95% interval: rsatoolbox's t interval (mean +- t * SEM) or bootstrap
        percentiles.
    seed : int or None
        Seeds the resampling (``numpy.random.default_rng``).
    bootstrap_indices : array or (rdm_idx, pattern_idx), optional
        Positions of the drawn stimuli ``(N, n)`` (pattern), brain RDMs
        ``(N, m)`` (rdm) or both: e.g. rsatoolbox's own draws.
    descriptor : str
        The pattern descriptor that names stimuli.

    Returns
    -------
    DataFrame
        ``model, method, bootstrap, mean`` (rsatoolbox ``get_means``: the
        bootstrap mean when bootstrapping), ``fixed`` (mean over brain RDMs on
        all stimuli), ``sem, ci_low, ci_high, p_zero`` (one-sided t-test
        against 0), ``p_noise`` (two-sided t-test against the lower bound),
        ``nc_lower, nc_upper, dof, n_stimuli, n_brain, n_bootstrap``.
    """
    return rsa_evaluate(model_rdms, brain_rdms, method, bootstrap=bootstrap, n_bootstrap=n_bootstrap,
                        noise_ceiling=noise_ceiling, boot_noise_ceiling=boot_noise_ceiling, ci=ci, seed=seed,
                        bootstrap_indices=bootstrap_indices, descriptor=descriptor).table()
