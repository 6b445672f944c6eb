"""Statistical tests on model evaluations: pairwise, against 0, against the noise ceiling.

The numbers are rsatoolbox's (``rsatoolbox.util.inference_util``): the same
variances of evaluations and of their pairwise differences (``extract_variances``,
with the small-sample corrections and the dual-bootstrap combination), the same
t-tests, bootstrap-proportion tests and Wilcoxon signed-rank tests, and the
multiple-comparison rules of ``rsatoolbox.vis.plot_model_comparison`` (FDR after
Benjamini-Hochberg, Bonferroni, none) -- as tidy DataFrames.

Evaluations arrays follow rsatoolbox's ``Result.evaluations`` layout:
``(n_samples, n_models, ...)``; trailing axes (subjects, folds, crossvalidation
repeats) are averaged with ``nanmean`` as rsatoolbox does.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special, stats

if TYPE_CHECKING:
    from rdl_neuro.inference.evaluate import RSAResult

__all__ = ["TEST_TYPES", "CORRECTIONS", "pairwise_contrast", "extract_variances", "correct_pvalues",
           "significant_pvalues", "pair_pvalues", "zero_pvalues", "noise_pvalues", "pairwise_tests",
           "model_tests", "paired_unit_tests"]

#: rsatoolbox's test types: t-test with the bootstrap/subject variances, bootstrap proportions, Wilcoxon signed-rank.
TEST_TYPES = ("t-test", "bootstrap", "ranksum")
#: Corrections for multiple comparisons: Benjamini-Hochberg FDR, Bonferroni, none.
CORRECTIONS = ("fdr", "bonferroni", "none")
PAIR_COLUMNS = ["model_a", "model_b", "diff", "sem", "p", "p_corrected", "significant"]


@lru_cache(maxsize=32)
def _pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(k, 1)``, read-only and cached (it costs more than a small test itself)."""
    i, j = np.triu_indices(k, 1)
    i.setflags(write=False)
    j.setflags(write=False)
    return i, j


def _check_test_type(test_type: str) -> None:
    if test_type not in TEST_TYPES:
        raise ValueError(f"unknown test_type {test_type!r}; choose one of {', '.join(TEST_TYPES)}")


def _check_correction(correction: str) -> None:
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)} "
                         "('fdr' is Benjamini-Hochberg)")


# ============================================================================ variances


def pairwise_contrast(k: int) -> np.ndarray:
    """Contrasts ``(k (k - 1) / 2, k)`` of every pair ``i < j`` (row-major): ``+1`` at ``i``, ``-1`` at ``j``.

    Examples
    --------
    >>> pairwise_contrast(3)
    array([[ 1., -1.,  0.],
           [ 1.,  0., -1.],
           [ 0.,  1., -1.]])
    """
    i, j = _pairs(k)
    c = np.zeros((len(i), k))
    c[np.arange(len(i)), i] = 1.0
    c[np.arange(len(i)), j] = -1.0
    return c


def _correct_small_sample(var: np.ndarray, n_rdm: int | None, n_pattern: int | None) -> np.ndarray:
    """rsatoolbox's ``_correct_1d``: ``n / (n - 1)`` with ``n`` the bootstrapped factor's size (the smaller of two)."""
    sizes = [n for n in (n_rdm, n_pattern) if n is not None]
    if not sizes:
        return var
    n = min(sizes)
    return (n / (n - 1)) * var


def _dual_bootstrap(var: np.ndarray, n_rdm: int | None, n_pattern: int | None) -> np.ndarray:
    """Schuett et al. (2023) combination of ``var[0]`` (both factors), ``var[1]`` (RDMs) and ``var[2]`` (patterns)."""
    both, rdm, pattern = var[0], var[1], var[2]
    if n_rdm is None or n_pattern is None:
        out = np.maximum(np.maximum(2 * (rdm + pattern) - both, rdm), pattern)
    else:
        cr, cp = n_rdm / (n_rdm - 1), n_pattern / (n_pattern - 1)
        out = cr * rdm + cp * pattern - (n_pattern * n_rdm / (n_pattern - 1) / (n_rdm - 1)) * (both - rdm - pattern)
        out = np.maximum(np.maximum(out, cr * rdm), cp * pattern)
    return np.minimum(out, both)


def extract_variances(variance: np.ndarray, nc_included: bool = True, n_rdm: int | None = None,
                      n_pattern: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Variances of model evaluations, of their pairwise differences and of their distance to the noise ceiling.

    rsatoolbox's ``extract_variances``, vectorised.

    Parameters
    ----------
    variance : ndarray
        ``(k [+ 2],)`` independent variances, ``(k [+ 2], k [+ 2])`` one
        covariance matrix, or ``(3, k [+ 2], k [+ 2])`` the covariances of a
        dual bootstrap (both factors, RDMs, patterns), combined with the
        correction of Schuett et al. (2023). The last two rows/columns are the
        noise ceiling's lower and upper bound when ``nc_included``.
    nc_included : bool
    n_rdm, n_pattern : int or None
        Sizes of the bootstrapped factors, for the small-sample correction
        ``n / (n - 1)`` (pass only the ones that were resampled).

    Returns
    -------
    model_var : ndarray ``(k,)``
    diff_var : ndarray ``(k (k - 1) / 2,)``
        In ``pairwise_contrast`` order.
    nc_var : ndarray ``(k, 2)``
        Of each model's difference from the lower and the upper bound.
    """
    variance = np.asarray(variance, dtype=float)
    if variance.ndim == 0:
        variance = variance[None]
    if variance.ndim == 1:
        k = variance.shape[0] - 2 if nc_included else variance.shape[0]
        model_var = variance[:k]
        nc_var = model_var[:, None] + variance[k:][None, :] if nc_included else np.stack([model_var, model_var], 1)
        c = pairwise_contrast(k)
        diff_var = (c**2) @ model_var
    else:
        stacked = variance if variance.ndim == 3 else variance[None]
        k = stacked.shape[1] - 2 if nc_included else stacked.shape[1]
        diag = np.einsum("ijj->ij", stacked)
        model_var = diag[:, :k]
        if nc_included:
            nc_var = model_var[:, :, None] - 2 * stacked[:, :k, k:] + diag[:, None, k:]
        else:
            nc_var = np.stack([model_var, model_var], 2)
        c = pairwise_contrast(k)
        diff_var = np.einsum("ij,kjl,il->ki", c, stacked[:, :k, :k], c)
        if variance.ndim == 2:
            model_var, nc_var, diff_var = model_var[0], nc_var[0], diff_var[0]
        else:
            return tuple(_dual_bootstrap(v, n_rdm, n_pattern) for v in (model_var, diff_var, nc_var))
    return tuple(_correct_small_sample(v, n_rdm, n_pattern) for v in (model_var, diff_var, nc_var))


# ============================================================================ corrections


def correct_pvalues(p: np.ndarray, correction: str = "fdr") -> np.ndarray:
    """Adjust p-values for multiple comparisons.

    Parameters
    ----------
    p : array_like
        p-values of one family of tests, any shape; NaN entries stay NaN and
        do not count as tests.
    correction : "fdr", "bonferroni" or "none"
        ``fdr``: Benjamini-Hochberg adjusted p-values (``p_(i) n / i``,
        monotone from the largest down, at most 1); ``bonferroni``:
        ``min(n p, 1)``; ``none``: ``p`` unchanged.

    Returns
    -------
    ndarray
        Same shape as ``p``.

    Examples
    --------
    >>> correct_pvalues([0.01, 0.04, 0.03], "fdr")
    array([0.03, 0.04, 0.04])
    >>> correct_pvalues([0.01, 0.04, 0.03], "bonferroni")
    array([0.03, 0.12, 0.09])
    """
    _check_correction(correction)
    p = np.asarray(p, dtype=float)
    out = p.copy()
    ok = np.isfinite(p)
    n = int(ok.sum())
    if correction == "none" or n == 0:
        return out
    vals = p[ok]
    if correction == "bonferroni":
        out[ok] = np.minimum(vals * n, 1.0)
        return out
    order = np.argsort(vals, kind="stable")
    scaled = vals[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    res = np.empty(n)
    res[order] = adjusted
    out[ok] = res
    return out


def significant_pvalues(p: np.ndarray, correction: str = "fdr", alpha: float = 0.05) -> np.ndarray:
    """Which tests of one family are significant, by ``rsatoolbox.vis.plot_model_comparison``'s rules.

    ``fdr``: the Benjamini-Hochberg step-up rule (``p < alpha i_max / n``);
    ``bonferroni``: ``p < alpha / n``; ``none``: ``p < alpha``. ``n`` counts
    the non-NaN p-values; NaN is never significant. Equal to
    ``correct_pvalues(p, correction) < alpha`` up to rounding at the threshold.
    """
    _check_correction(correction)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie between 0 and 1 (the false-positive rate, e.g. 0.05), got {alpha!r}")
    p = np.asarray(p, dtype=float)
    ok = np.isfinite(p)
    n = int(ok.sum())
    if n == 0:
        return np.zeros(p.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        if correction == "none":
            return ok & (p < alpha)
        if correction == "bonferroni":
            return ok & (p < alpha / n)
        ps = np.sort(p[ok])
        criterion = alpha * np.arange(1, n + 1) / n
        passing = np.nonzero(ps < criterion)[0]
        crit = criterion[passing.max()] if len(passing) else 0.0
        return ok & (p < crit)


# ============================================================================ p-values (rsatoolbox's tests)


@contextmanager
def _quiet_nanmean():
    """Silence numpy's 'mean of empty slice' warning (all-NaN rows stay NaN, as in rsatoolbox)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _model_means(evaluations: np.ndarray) -> np.ndarray:
    """rsatoolbox's reduction: ``nanmean`` over samples, then over every trailing axis."""
    if evaluations.size and not np.isnan(evaluations).any():
        # without NaN, nanmean is mean (the same sum over the same axis, divided by the count)
        out = evaluations.mean(0)
        while out.ndim > 1:
            out = out.mean(axis=-1)
        return out
    with _quiet_nanmean():
        out = np.nanmean(evaluations, 0)
        while out.ndim > 1:
            out = np.nanmean(out, axis=-1)
    return out


def _per_sample(evaluations: np.ndarray) -> np.ndarray:
    """``(n_samples, k)``: trailing axes averaged with ``nanmean``."""
    out = evaluations
    with _quiet_nanmean():
        while out.ndim > 2:
            out = np.nanmean(out, axis=-1)
    return out


def _units(evaluations: np.ndarray) -> np.ndarray:
    """``(k, n_units)`` for Wilcoxon tests: rsatoolbox needs 3-D evaluations and averages the samples out."""
    if evaluations.ndim != 3:
        raise ValueError(f"the ranksum test needs evaluations with one value per unit (samples x models x units, "
                         f"e.g. a fixed evaluation's subjects or crossvalidation folds); got shape {evaluations.shape}")
    with _quiet_nanmean():
        return np.nanmean(evaluations, 0)


def _wilcoxon(d: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-values of the rows of ``d``, as ``scipy.stats.wilcoxon(row)``."""
    return np.array([stats.wilcoxon(row).pvalue for row in d]) if len(d) else np.zeros(0)


def _t_cdf(t: np.ndarray, dof: float) -> np.ndarray:
    """``scipy.stats.t.cdf(t, dof)``, the same numbers (it calls ``stdtr`` too; NaN for ``dof <= 0``)
    without its argument handling, which cost 10x the function itself on a few dozen values."""
    return special.stdtr(dof, t)


def _t_two_sided(t: np.ndarray, dof: float) -> np.ndarray:
    return 2 * (1 - _t_cdf(np.abs(t), dof))


def _sqrt_var(var: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(var, np.finfo(float).eps))


def pair_pvalues(evaluations: np.ndarray, test_type: str = "t-test", diff_var: np.ndarray | None = None,
                 dof: int = 1) -> np.ndarray:
    """p-values ``(k, k)`` of every pair of models (rsatoolbox's ``pair_tests``), symmetric, diagonal 1.

    Parameters
    ----------
    evaluations : ndarray ``(n_samples, k, ...)``
    test_type : "t-test", "bootstrap" or "ranksum"
        Two-sided t-test of the mean difference with ``diff_var``; the
        bootstrap proportion of samples ordered against the mean difference;
        Wilcoxon signed-rank over the units of 3-D evaluations.
    diff_var : ndarray ``(k (k - 1) / 2,)``
        From ``extract_variances`` (t-test only).
    dof : int
    """
    _check_test_type(test_type)
    evaluations = np.asarray(evaluations, dtype=float)
    k = evaluations.shape[1]
    i, j = _pairs(k)
    out = np.ones((k, k))
    if test_type == "t-test":
        if diff_var is None:
            raise ValueError("the t-test needs the variances of the pairwise differences (diff_var)")
        means = _model_means(evaluations)
        p = _t_two_sided((means[i] - means[j]) / _sqrt_var(np.asarray(diff_var)), dof)
    elif test_type == "bootstrap":
        e = _per_sample(evaluations)
        n = e.shape[0]
        less = (e[:, i] < e[:, j]).sum(0)
        equal = (e[:, i] == e[:, j]).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            prop = less / (n - equal)
        p = (n - 1) / n * (np.minimum(prop, 1 - prop) * 2) + 1 / n
    else:
        u = _units(evaluations)
        p = _wilcoxon(u[i] - u[j])
    out[i, j] = p
    out[j, i] = p
    return out


def zero_pvalues(evaluations: np.ndarray, test_type: str = "t-test", model_var: np.ndarray | None = None,
                 dof: int = 1) -> np.ndarray:
    """One-sided p-values ``(k,)`` of each model's evaluation being above 0 (rsatoolbox's ``zero_tests``).

    The t-test uses ``model_var``; ``bootstrap`` is the proportion of samples
    ``<= 0`` (plus one, over ``n_samples``; trailing axes averaged first, as
    ``plot_model_comparison`` does); ``ranksum`` is the two-sided Wilcoxon
    test, as rsatoolbox has it.
    """
    _check_test_type(test_type)
    evaluations = np.asarray(evaluations, dtype=float)
    if test_type == "t-test":
        if model_var is None:
            raise ValueError("the t-test needs the variances of the model evaluations (model_var)")
        return 1 - _t_cdf(_model_means(evaluations) / _sqrt_var(np.asarray(model_var)), dof)
    if test_type == "bootstrap":
        e = _per_sample(evaluations)
        return ((e <= 0).sum(axis=0) + 1) / e.shape[0]
    return _wilcoxon(_units(evaluations))


def noise_pvalues(evaluations: np.ndarray, noise_ceiling: np.ndarray, test_type: str = "t-test",
                  nc_var: np.ndarray | None = None, dof: int = 1) -> np.ndarray:
    """p-values ``(k,)`` of each model against the noise ceiling's lower bound (rsatoolbox's ``nc_tests``).

    The t-test is two-sided, with ``nc_var[:, 0]`` and the mean lower bound;
    ``bootstrap`` is the proportion of samples in which a model reaches the
    lower bound (one-sided: below the ceiling) -- the sample's own lower bound
    where the noise ceiling was bootstrapped too (rsatoolbox's code only runs
    with a fixed one); ``ranksum`` is the Wilcoxon test against the mean
    lower bound.

    Parameters
    ----------
    noise_ceiling : ndarray
        ``(2,)`` bounds or ``(2, n_samples, ...)`` per sample.
    """
    _check_test_type(test_type)
    evaluations = np.asarray(evaluations, dtype=float)
    noise_ceiling = np.asarray(noise_ceiling, dtype=float)
    with _quiet_nanmean():
        lower = np.nanmean(noise_ceiling[0])
    if test_type == "t-test":
        if nc_var is None:
            raise ValueError("the t-test needs the variances of the differences from the noise ceiling (nc_var)")
        return _t_two_sided((_model_means(evaluations) - lower) / _sqrt_var(np.asarray(nc_var)[:, 0]), dof)
    if test_type == "bootstrap":
        e = _per_sample(evaluations)
        lower_bs = _per_sample(noise_ceiling[0][:, None]) if noise_ceiling.ndim > 1 else lower.reshape(1, 1)
        return (((lower_bs - e) <= 0).sum(axis=0) + 1) / e.shape[0]
    return _wilcoxon(_units(evaluations) - lower)


# ============================================================================ tables


def _pair_table(names: Sequence[str], diff: np.ndarray, sem: np.ndarray, p: np.ndarray, correction: str,
                alpha: float, pairs: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    i, j = pairs
    names = np.array(names, dtype=object)
    # the dict is in PAIR_COLUMNS order: no columns= (a reindex that costs a third of the call)
    return pd.DataFrame(dict(zip(PAIR_COLUMNS, (
        names[i], names[j], np.asarray(diff, dtype=float), np.asarray(sem, dtype=float), np.asarray(p, dtype=float),
        correct_pvalues(p, correction), significant_pvalues(p, correction, alpha)))), copy=False)


def pairwise_tests(result: RSAResult, test_type: str = "t-test", correction: str = "fdr",
                   alpha: float = 0.05) -> pd.DataFrame:
    """Every pair of models of a result compared, corrected for multiple comparisons.

    Parameters
    ----------
    result : RSAResult
        From ``rsa_evaluate`` (fixed or bootstrapped), the dual bootstrap or
        crossvalidation.
    test_type : "t-test", "bootstrap" or "ranksum"
        rsatoolbox's test types (see ``pair_pvalues``); ``ranksum`` needs one
        evaluation per unit (a fixed evaluation's subjects, crossvalidation).
    correction : "fdr", "bonferroni" or "none"
        Over the ``k (k - 1) / 2`` pairs (see ``correct_pvalues``).
    alpha : float

    Returns
    -------
    DataFrame
        One row per pair ``a < b`` (model order): ``model_a, model_b, diff``
        (mean evaluation of a minus b), ``sem`` (square root of the difference's
        variance, rsatoolbox's ``diff_var``), ``p`` (two-sided),
        ``p_corrected`` and ``significant`` (by ``significant_pvalues``).
    """
    _check_test_type(test_type)
    _check_correction(correction)
    evaluations = result.rsatoolbox_evaluations()
    _, diff_var, _ = result.variance_components()
    k = len(result.names)
    if diff_var is None:
        if test_type == "t-test":
            raise ValueError(f"this {result.cv_method} result has no variance estimate, so no t-test; "
                             "use bootstrap or crossvalidation with bootstrap")
        diff_var = np.full(k * (k - 1) // 2, np.nan)
    pairs = _pairs(k)
    p = pair_pvalues(evaluations, test_type, diff_var, result.dof)[pairs]
    means = _model_means(evaluations)
    return _pair_table(result.names, means[pairs[0]] - means[pairs[1]], np.sqrt(np.maximum(diff_var, 0)), p,
                       correction, alpha, pairs)


def model_tests(result: RSAResult, test_type: str = "t-test", correction: str = "fdr",
                alpha: float = 0.05) -> pd.DataFrame:
    """Each model against 0 and against the noise ceiling, each family corrected over the ``k`` models.

    Parameters
    ----------
    result : RSAResult
    test_type, correction, alpha
        As ``pairwise_tests``.

    Returns
    -------
    DataFrame
        One row per model: ``model, mean, sem, p_zero, p_zero_corrected,
        above_zero`` (one-sided test of the evaluation being above 0),
        ``p_noise, p_noise_corrected, below_noise_ceiling`` (test against the
        noise ceiling's lower bound; see ``noise_pvalues``).
    """
    _check_test_type(test_type)
    _check_correction(correction)
    evaluations = result.rsatoolbox_evaluations()
    model_var, _, nc_var = result.variance_components()
    if model_var is None and test_type == "t-test":
        raise ValueError(f"this {result.cv_method} result has no variance estimate, so no t-test")
    p_zero = zero_pvalues(evaluations, test_type, model_var, result.dof)
    if result.noise_ceiling is None or not np.isfinite(np.asarray(result.noise_ceiling, float)).any():
        p_noise = np.full(len(result.names), np.nan)
    else:
        p_noise = noise_pvalues(evaluations, result.noise_ceiling, test_type, nc_var, result.dof)
    return pd.DataFrame({
        "model": list(result.names),
        "mean": _model_means(evaluations),
        "sem": np.sqrt(np.maximum(model_var, 0)) if model_var is not None else np.nan,
        "p_zero": p_zero,
        "p_zero_corrected": correct_pvalues(p_zero, correction),
        "above_zero": significant_pvalues(p_zero, correction, alpha),
        "p_noise": p_noise,
        "p_noise_corrected": correct_pvalues(p_noise, correction),
        "below_noise_ceiling": significant_pvalues(p_noise, correction, alpha),
    })


def paired_unit_tests(values: np.ndarray, names: Sequence[str], reference: str | None = None,
                      correction: str = "fdr", alpha: float = 0.05, *, test_type: str = "t-test") -> pd.DataFrame:
    """Paired tests between models over units that each give one value per model.

    For experiments whose units (e.g. held-out folds x subjects) each yield
    one evaluation of every model: the t-test is the paired t-test over
    units (equal to rsatoolbox's pairwise t-test of a fixed evaluation whose
    subjects are the units), ``ranksum`` the Wilcoxon signed-rank test.

    Parameters
    ----------
    values : array_like ``(n_units, k)``
        NaN-free.
    names : sequence of str
        ``k`` model names.
    reference : str, optional
        Compare every other model with this one (``model_a`` = the model,
        ``model_b`` = the reference); default: every pair ``a < b``.
    correction : "fdr", "bonferroni" or "none"
        Over the tests made.
    alpha : float
    test_type : "t-test" or "ranksum"

    Returns
    -------
    DataFrame
        ``model_a, model_b, diff`` (mean over units of a minus b), ``sem``
        (standard error of that mean difference), ``p`` (two-sided),
        ``p_corrected, significant``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = rng.normal(size=(16, 3)) + [0.0, 0.5, 1.0]
    >>> paired_unit_tests(v, ["base", "a", "b"], reference="base")[["model_a", "model_b"]].values.tolist()
    [['a', 'base'], ['b', 'base']]
    """
    _check_correction(correction)
    if test_type not in ("t-test", "ranksum"):
        raise ValueError(f"unknown test_type {test_type!r} for paired units; choose 't-test' or 'ranksum'")
    values = np.asarray(values, dtype=float)
    names = list(names)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"values must have shape (n_units, {len(names)}) for {len(names)} names, got {values.shape}")
    if values.shape[0] < 2:
        raise ValueError(f"paired tests need at least 2 units, got {values.shape[0]}")
    if np.isnan(values).any():
        rows, cols = np.nonzero(np.isnan(values))
        raise ValueError(f"values contain NaN (unit {rows[0]}, model {names[cols[0]]!r}); drop or fill those units")
    k = len(names)
    if reference is None:
        pairs = _pairs(k)
    else:
        if reference not in names:
            raise ValueError(f"reference {reference!r} is not among the names {names}")
        r = names.index(reference)
        others = np.array([i for i in range(k) if i != r], dtype=np.int64)
        pairs = (others, np.full(len(others), r))
    d = values[:, pairs[0]] - values[:, pairs[1]]  # (n_units, n_pairs)
    n = d.shape[0]
    diff = d.mean(0)
    sem = d.std(0, ddof=1) / np.sqrt(n)
    if test_type == "t-test":
        p = _t_two_sided(diff / _sqrt_var(sem**2), n - 1)
    else:
        p = _wilcoxon(d.T)
    return _pair_table(names, diff, sem, p, correction, alpha, pairs)
