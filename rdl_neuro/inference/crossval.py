"""Crossvalidation of fitted RSA models, as rsatoolbox's ``crossval``, ``bootstrap_crossval`` and ``cv_noise_ceiling``.

A fold trains a model on some brain RDMs over some stimuli and tests it on
other brain RDMs (or the same, ``k_rdm = 1``) over the held-out stimuli.
Folds are kept as *counts* (``CVFolds``): how often each stimulus and each
brain RDM enters the fold's training and test part. Counts above one come
from bootstrap resamples, where rsatoolbox copies a drawn stimulus (the pairs
of two copies are NaN) and a drawn subject; a statistic of such a resample is
the statistic of the original RDMs with pair weights ``c_a c_b``.

Two engines give the same numbers:

- the general one builds every fold's RDMs as rsatoolbox does and fits and
  compares them (``rdl_neuro.model.fit_model``, ``compare_rdms``): every
  comparison method and fitter;
- for ``corr`` and ``cosine`` with fixed, weighted (``regress``,
  ``regress_nn``) and selection models, ``rdl_neuro.inference.cv_moments``
  computes each fold's weighted second moments of all RDMs at once (batched
  over folds and resamples) and fits, evaluates and takes the noise ceiling
  from them in closed form.

Random folds and resamples follow rsatoolbox's draws: with ``random_state=s``
the draws are those rsatoolbox makes after ``np.random.seed(s)`` (same calls
of the legacy ``RandomState``, in the same order), so its results can be
replayed exactly (as long as no fitter draws random numbers, which
rsatoolbox's ``fit_optimize`` does).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rsatoolbox.rdm import RDMs
from rsatoolbox.util.inference_util import default_k_pattern, default_k_rdm

from rdl_neuro._progress import progress_bar
from rdl_neuro.inference.cv_moments import evaluate_folds_moments, folds_cover, moments_cover
from rdl_neuro.inference.evaluate import RSAResult, build_result, prepare_rdms
from rdl_neuro.inference.noise_ceiling import noise_ceiling_bounds, pool_rdm
from rdl_neuro.model.rsa_models import RSAModel, as_models, fit_model, predict_with
from rdl_neuro.rdm.calc import check_method, n_stimuli_from_length, subset_rdms
from rdl_neuro.rdm.compare import COMPARE_METHODS, compare_rdms

__all__ = ["CVFolds", "sets_k_fold", "crossval", "cv_noise_ceiling", "bootstrap_crossval", "prepare_models",
           "draw_cv_folds", "BOOT_TYPES"]

#: ``boot_type`` choices of :func:`bootstrap_crossval`: stimuli and brain RDMs, stimuli only, brain RDMs only.
BOOT_TYPES = ("both", "pattern", "rdm")


@dataclass
class CVFolds:
    """Crossvalidation folds as counts over the stimuli and brain RDMs.

    Attributes
    ----------
    train_patterns, test_patterns : ndarray ``(F, n)`` int
        How often each of the ``n`` stimuli enters each fold's training and
        test part (0/1 without resampling).
    train_rdms, test_rdms : ndarray ``(F, m)`` int
        The same for the ``m`` brain RDMs.
    ceil_rdms : ndarray ``(F, m)`` or None
        The brain RDMs whose pool (over the test stimuli) gives the lower
        noise-ceiling bound (rsatoolbox's ``ceil_set``); None for folds over
        stimuli only, where each fold's ceiling is the leave-one-out ceiling
        on its test stimuli (as rsatoolbox's ``crossval`` without a ``ceil_set``).
    """

    train_patterns: np.ndarray
    test_patterns: np.ndarray
    train_rdms: np.ndarray
    test_rdms: np.ndarray
    ceil_rdms: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.test_patterns)

    @classmethod
    def from_rsatoolbox(cls, train_set: Sequence, test_set: Sequence, ceil_set: Sequence | None, n_stimuli: int,
                        n_brain: int) -> CVFolds:
        """Folds from rsatoolbox's ``(train_set, test_set, ceil_set)`` lists of ``(RDMs, pattern_idx)``.

        The sets must have been made (e.g. by rsatoolbox's ``sets_k_fold``)
        from the brain RDMs that are evaluated, with the default descriptors:
        ``pattern_idx`` and the ``index`` RDM descriptor are positions.
        """
        if len(train_set) != len(test_set) or (ceil_set is not None and len(ceil_set) != len(test_set)):
            raise ValueError(f"train_set, test_set and ceil_set must have one entry per fold, got {len(train_set)}, "
                             f"{len(test_set)}, {None if ceil_set is None else len(ceil_set)}")

        def pattern_counts(entries):
            return np.stack([_counts(e[1], n_stimuli, "pattern_idx") for e in entries])

        def rdm_counts(entries):
            return np.stack([_counts(e[0].rdm_descriptors["index"], n_brain, "RDM index") for e in entries])

        return cls(pattern_counts(train_set), pattern_counts(test_set), rdm_counts(train_set), rdm_counts(test_set),
                   None if ceil_set is None else rdm_counts(ceil_set))


def _counts(values: Any, size: int, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= size):
        raise ValueError(f"{what} values must be positions in [0, {size}), got [{values.min()}, {values.max()}]")
    return np.bincount(values, minlength=size)


# ============================================================================ folds


@functools.lru_cache(maxsize=256)
def _fold_of_position(length: int, k: int) -> np.ndarray:
    """rsatoolbox's k-fold split of ``length`` shuffled values: the test group of each position.

    Groups are consecutive runs of ``length // k``; the ``length % k`` left
    over, from the end, go one each to the first groups.
    """
    size, extra = length // k, length % k
    out = np.repeat(np.arange(k), size)
    return np.concatenate([out, np.arange(extra)[::-1]])


def draw_cv_folds(rs: np.random.RandomState, rdm_counts: np.ndarray, pattern_counts: np.ndarray, k_rdm: int,
                  k_pattern: int) -> CVFolds:
    """rsatoolbox's ``sets_k_fold`` (random) on a sample given by counts, drawing from ``rs`` as rsatoolbox does.

    Parameters
    ----------
    rs : numpy RandomState
        Shuffles the drawn brain RDMs once, then the drawn stimuli once per
        group of brain RDMs (rsatoolbox's order of ``np.random.shuffle`` calls).
    rdm_counts : ndarray ``(m,)``
        How often each brain RDM is in the sample.
    pattern_counts : ndarray ``(n,)``
        How often each stimulus is in the sample.
    k_rdm, k_pattern : int

    Returns
    -------
    CVFolds
        ``k_rdm * k_pattern`` folds (brain-RDM groups outer); the ceiling's
        brain RDMs are each fold's training ones. With ``k = 1`` training
        and test part are the whole sample.
    """
    rdm_values = np.nonzero(rdm_counts)[0]
    pattern_values = np.nonzero(pattern_counts)[0]
    if k_rdm > len(rdm_values):
        raise ValueError(f"k_rdm={k_rdm} folds need at least {k_rdm} distinct brain RDMs (subjects), got "
                         f"{len(rdm_values)}")
    if k_pattern > len(pattern_values):
        raise ValueError(f"k_pattern={k_pattern} folds need at least {k_pattern} stimuli, got {len(pattern_values)}")
    rs.shuffle(rdm_values)
    group = np.full(len(rdm_counts), -1)
    group[rdm_values] = _fold_of_position(len(rdm_values), k_rdm)
    test_r = (group[None] == np.arange(k_rdm)[:, None]) * rdm_counts[None]  # (k_rdm, m)
    train_r = test_r if k_rdm == 1 else rdm_counts[None] - test_r
    test_p = np.empty((k_rdm, k_pattern, len(pattern_counts)), dtype=np.int64)
    for i in range(k_rdm):
        shuffled = pattern_values.copy()
        rs.shuffle(shuffled)
        group = np.full(len(pattern_counts), -1)
        group[shuffled] = _fold_of_position(len(shuffled), k_pattern)
        test_p[i] = (group[None] == np.arange(k_pattern)[:, None]) * pattern_counts[None]
    test_p = test_p.reshape(k_rdm * k_pattern, -1)
    train_p = test_p if k_pattern == 1 else pattern_counts[None] - test_p
    test_r, train_r = np.repeat(test_r, k_pattern, 0), np.repeat(train_r, k_pattern, 0)
    return CVFolds(train_p, test_p, train_r, test_r, train_r.copy())


def _legacy_state(random_state: Any) -> np.random.RandomState:
    if isinstance(random_state, np.random.RandomState):
        return random_state
    return np.random.RandomState(random_state)


def sets_k_fold(brain_rdms: RDMs, k_rdm: int | None = None, k_pattern: int | None = None, *, random: bool = True,
                random_state: Any = None) -> CVFolds:
    """k-fold sets over stimuli and brain RDMs at once: rsatoolbox's ``sets_k_fold``.

    Parameters
    ----------
    brain_rdms : rsatoolbox RDMs
        ``m`` brain RDMs over ``n`` stimuli.
    k_rdm, k_pattern : int, optional
        Folds over brain RDMs and stimuli (rsatoolbox's ``default_k_rdm(m)``
        and ``default_k_pattern(n)`` when None); 1 does not crossvalidate that
        factor (training and test part are all of it).
    random : bool
        Shuffle before splitting (else the given order, as rsatoolbox).
    random_state : int or numpy RandomState, optional
        The shuffles are those of rsatoolbox after ``np.random.seed(random_state)``.

    Returns
    -------
    CVFolds
        ``k_rdm * k_pattern`` folds.

    Examples
    --------
    >>> import numpy as np
    >>> brain = RDMs(np.random.default_rng(0).random((4, 45)))
    >>> folds = sets_k_fold(brain, k_rdm=2, k_pattern=2, random_state=0)
    >>> len(folds), folds.test_patterns.sum(1).tolist(), folds.test_rdms.sum(1).tolist()
    (4, [5, 5, 5, 5], [2, 2, 2, 2])
    """
    n, m = brain_rdms.n_cond, brain_rdms.n_rdm
    k_rdm = default_k_rdm(m) if k_rdm is None else k_rdm
    k_pattern = default_k_pattern(n) if k_pattern is None else k_pattern
    check_fold_sizes(m, n, k_rdm, k_pattern)
    if random:
        return draw_cv_folds(_legacy_state(random_state), np.ones(m, np.int64), np.ones(n, np.int64), k_rdm, k_pattern)

    class _InOrder:  # no shuffling: rsatoolbox's random=False
        @staticmethod
        def shuffle(_):
            return None

    return draw_cv_folds(_InOrder(), np.ones(m, np.int64), np.ones(n, np.int64), k_rdm, k_pattern)


# ============================================================================ models


def prepare_models(models: Any, brain_rdms: RDMs, method: str, fitter: Any = None,
                   descriptor: str | None = None) -> tuple[list[RSAModel], list[torch.Tensor], torch.Tensor]:
    """Models, their RDMs ``[(c_i, P)]`` and the brain RDMs ``(m, P)`` on common stimuli, in brain order.

    Every model must cover the same stimuli (an error names the ids that
    differ); the brain RDMs are cut to them.
    """
    models = as_models(models, fitter)
    stacked, brain, _ = prepare_rdms([model.rdms for model in models], brain_rdms, method, descriptor)
    sizes = [model.n_rdm for model in models]
    return models, list(torch.split(stacked, sizes)), brain


# ============================================================================ the general engine


def _rows(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def param_shape(model: RSAModel) -> tuple[int, ...]:
    """Shape of a model's fitted parameters: ``(c,)`` (weighted, interpolate), ``()`` (select), ``(0,)`` (fixed)."""
    return {"fixed": (0,), "select": ()}.get(model.kind, (model.n_rdm,))


def evaluate_folds_general(models: list[RSAModel], comps: list[torch.Tensor], brain: torch.Tensor, method: str,
                           sample_rdms: np.ndarray, sample_patterns: np.ndarray, folds: CVFolds,
                           noise: str | None) -> tuple[np.ndarray, np.ndarray, list]:
    """Evaluations ``(k, F)``, noise ceiling and fitted parameters of folds of one sample, as rsatoolbox builds them.

    ``noise``: ``"cv"`` (``cv_noise_ceiling`` over the folds, ``(2,)``),
    ``"fold"`` (leave-one-out ceiling on each fold's test stimuli, ``(2, F)``),
    ``"sample"`` (leave-one-out on the whole sample, ``(2,)``) or None.
    """
    pos_s, rows_s = _rows(sample_patterns), _rows(sample_rdms)
    n_folds = len(folds)
    evals = np.full((len(models), n_folds), np.nan)
    params = [np.full((n_folds,) + param_shape(model), np.nan) for model in models]
    lower, upper = np.full(n_folds, np.nan), np.full(n_folds, np.nan)
    pooled_sample = None
    for f in range(n_folds):
        pos_tr, pos_te = _rows(folds.train_patterns[f]), _rows(folds.test_patterns[f])
        rows_tr, rows_te = _rows(folds.train_rdms[f]), _rows(folds.test_rdms[f])
        data_te = subset_rdms(brain[torch.as_tensor(rows_te)], pos_te)
        if noise == "cv":
            ceil = subset_rdms(brain[torch.as_tensor(_rows(folds.ceil_rdms[f]))], pos_te)
            lower[f] = float(compare_rdms(pool_rdm(ceil, method), data_te, method).mean())
            if pooled_sample is None:
                pooled_sample = pool_rdm(subset_rdms(brain[torch.as_tensor(rows_s)], pos_s), method)
            at_test = np.nonzero(folds.test_patterns[f][pos_s] > 0)[0]
            upper[f] = float(compare_rdms(subset_rdms(pooled_sample, at_test), data_te, method).mean())
        if len(rows_tr) == 0 or len(rows_te) == 0 or len(pos_tr) <= 2 or len(pos_te) <= 2:
            continue  # rsatoolbox leaves such folds NaN
        data_tr = subset_rdms(brain[torch.as_tensor(rows_tr)], pos_tr)
        for j, (model, c) in enumerate(zip(models, comps)):
            theta = (fit_model(model.kind, subset_rdms(c, pos_tr), data_tr, method, model.fitter, **model.options)
                     if model.fitter is not None else np.zeros(0))
            pred = predict_with(model.kind, c, theta)[None]
            evals[j, f] = float(compare_rdms(subset_rdms(pred, pos_te), data_te, method).mean())
            params[j][f] = theta
        if noise == "fold":
            lower[f], upper[f] = noise_ceiling_bounds(subset_rdms(brain, pos_te), np.arange(brain.shape[0]), method)
    if noise == "cv":
        nc = np.array([lower.mean(), upper.mean()])
    elif noise == "fold":
        nc = np.stack([lower, upper])
    elif noise == "sample":
        nc = np.array(noise_ceiling_bounds(subset_rdms(brain[torch.as_tensor(rows_s)], pos_s), rows_s, method))
    else:
        nc = np.array([np.nan, np.nan])
    return evals, nc, params


def cv_noise_ceiling(brain_rdms: RDMs, folds: CVFolds, method: str = "corr", *,
                     descriptor: str | None = None) -> tuple[float, float]:
    """rsatoolbox's ``cv_noise_ceiling``: the noise ceiling of crossvalidated evaluations.

    For each fold, the lower bound compares the pool of the ceiling's brain
    RDMs (``folds.ceil_rdms``, over the fold's test stimuli) with the fold's
    test RDMs; the upper bound compares the pool of all brain RDMs with them.
    Both are averaged over the test RDMs and then the folds.

    Parameters
    ----------
    brain_rdms : rsatoolbox RDMs
        ``m`` brain RDMs over ``n`` stimuli (the folds' positions).
    folds : CVFolds
        With ``ceil_rdms`` (e.g. from ``sets_k_fold``).
    method : str
    descriptor : str, optional
        The stimulus descriptor (``None``: ``stimulus``, else ``index``).

    Returns
    -------
    (lower, upper) : float
    """
    check_method(method, COMPARE_METHODS, "comparison method")
    if folds.ceil_rdms is None:
        raise ValueError("cv_noise_ceiling needs folds with ceil_rdms (folds over brain RDMs, e.g. sets_k_fold)")
    brain, _, _ = prepare_rdms(brain_rdms, brain_rdms, method, descriptor)
    m, n = brain.shape[0], n_stimuli_from_length(brain.shape[1])
    _check_fold_shapes(folds, n, m)
    _, nc, _ = evaluate_folds_general([], [], brain, method, np.ones(m, np.int64), np.ones(n, np.int64), folds, "cv")
    return float(nc[0]), float(nc[1])


def _check_fold_shapes(folds: CVFolds, n: int, m: int) -> None:
    for name in ("train_patterns", "test_patterns"):
        if getattr(folds, name).shape[1:] != (n,):
            raise ValueError(f"folds.{name} has shape {getattr(folds, name).shape}; the data have {n} stimuli")
    for name in ("train_rdms", "test_rdms", "ceil_rdms"):
        value = getattr(folds, name)
        if value is not None and value.shape[1:] != (m,):
            raise ValueError(f"folds.{name} has shape {value.shape}; the data have {m} brain RDMs")


# ============================================================================ crossval


def crossval(
    models: Any,
    brain_rdms: RDMs,
    folds: CVFolds | tuple | None = None,
    method: str = "corr",
    *,
    fitter: Any = None,
    k_rdm: int | None = None,
    k_pattern: int | None = None,
    random_state: Any = None,
    noise_ceiling: bool = True,
    descriptor: str | None = None,
) -> RSAResult:
    """Evaluate models on crossvalidation folds: fit on each training part, compare on its test part.

    rsatoolbox's ``crossval`` (with ``calc_noise_ceil``), the same numbers.

    Parameters
    ----------
    models : RSAModel, rsatoolbox Model or RDMs, or a sequence of them
        See ``rdl_neuro.model.as_models``; all over the same stimuli.
    brain_rdms : rsatoolbox RDMs
        ``m`` brain RDMs.
    folds : CVFolds or (train_set, test_set, ceil_set), optional
        Ours (``sets_k_fold``) or rsatoolbox's sets (made from ``brain_rdms``);
        default ``sets_k_fold(brain_rdms, k_rdm, k_pattern, random_state=...)``.
    method : str
        Comparison method.
    fitter : str, callable or sequence, optional
        Overrides the models' fitters (see ``as_models``).
    k_rdm, k_pattern, random_state
        For the default folds.
    noise_ceiling : bool
    descriptor : str, optional
        The stimulus descriptor (``None``: ``stimulus``, else ``index`` with a warning).

    Returns
    -------
    RSAResult
        ``bootstrap="crossval"`` (rsatoolbox ``cv_method="crossvalidation"``):
        ``evaluations (1, k, F)``; ``noise_ceiling`` ``(2,)`` from
        ``cv_noise_ceiling`` when the folds have ``ceil_rdms``, else ``(2, F)``
        (leave-one-out on each fold's test stimuli); ``mean`` over folds;
        ``params[name]``: the fitted parameters per fold (rsatoolbox issue 313).

    Examples
    --------
    >>> import numpy as np
    >>> from rdl_neuro.model import FixedModel, WeightedModel
    >>> rng = np.random.default_rng(0)
    >>> brain = RDMs(rng.random((4, 66)), pattern_descriptors={"stimulus": np.arange(12)})
    >>> comps = RDMs(rng.random((3, 66)), pattern_descriptors={"stimulus": np.arange(12)})
    >>> res = crossval([FixedModel("first", comps[0]), WeightedModel("all", comps)], brain,
    ...                k_rdm=2, k_pattern=2, random_state=0)
    >>> res.evaluations.shape, len(res.params["all"])
    ((1, 2, 4), 4)
    """
    check_method(method, COMPARE_METHODS, "comparison method")
    model_list, comps, brain = prepare_models(models, brain_rdms, method, fitter, descriptor)
    m, n = brain.shape[0], n_stimuli_from_length(brain.shape[1])
    if folds is None:
        folds = sets_k_fold(_shape_only(m, n), k_rdm, k_pattern, random_state=random_state)
    elif isinstance(folds, (tuple, list)):
        if len(folds) != 3:
            raise ValueError("folds given as rsatoolbox sets must be (train_set, test_set, ceil_set)")
        folds = CVFolds.from_rsatoolbox(*folds, n_stimuli=n, n_brain=m)
    _check_fold_shapes(folds, n, m)
    few = np.nonzero((folds.test_patterns > 0).sum(1) < 3)[0]
    if len(few):
        raise ValueError(f"fold {int(few[0])} tests on {int((folds.test_patterns[few[0]] > 0).sum())} stimuli; "
                         "every fold needs at least 3 stimuli (use fewer pattern folds)")
    noise = None if not noise_ceiling else ("cv" if folds.ceil_rdms is not None else "fold")
    ones_m, ones_n = np.ones(m, np.int64), np.ones(n, np.int64)
    evals, nc, params = evaluate_jobs(model_list, comps, brain, method, [(ones_m, ones_n, folds)], noise)
    evals, nc, params = evals[0], nc[0], [p[0] for p in params]
    if noise is None:
        nc = None
    return build_result([mod.name for mod in model_list], method, "crossval", evals[None], nc, None, (None, None), 1,
                        n_stimuli=n, n_brain=m, params={mod.name: p for mod, p in zip(model_list, params)},
                        models=[mod.to_rsatoolbox() for mod in model_list])


def _shape_only(m: int, n: int) -> RDMs:
    return RDMs(np.zeros((m, n * (n - 1) // 2)))


# ============================================================================ bootstrap_crossval


def bootstrap_crossval(
    models: Any,
    brain_rdms: RDMs,
    method: str = "corr",
    *,
    fitter: Any = None,
    k_pattern: int | None = None,
    k_rdm: int | None = None,
    n_bootstrap: int = 1000,
    n_cv: int = 2,
    boot_type: str = "both",
    use_correction: bool = True,
    random_state: Any = None,
    descriptor: str | None = None,
    progress: bool = False,
) -> RSAResult:
    """k-fold crossvalidation inside a bootstrap: rsatoolbox's ``bootstrap_crossval``, the same numbers.

    Each resample (stimuli and/or brain RDMs drawn with replacement) is split
    ``n_cv`` times into ``k_rdm * k_pattern`` folds; the models are fitted on
    each training part and evaluated on its test part, and the noise ceiling
    is ``cv_noise_ceiling`` of those folds. The variance of the mean
    evaluation is corrected for the crossvalidation's own randomness
    (``use_correction``, needs ``n_cv > 1``).

    Parameters
    ----------
    models : RSAModel, rsatoolbox Model or RDMs, or a sequence of them
    brain_rdms : rsatoolbox RDMs
    method : str
    fitter : str, callable or sequence, optional
    k_pattern, k_rdm : int, optional
        Folds per resample; default as rsatoolbox, from the expected number
        of distinct stimuli and RDMs in a resample.
    n_bootstrap : int
    n_cv : int
        Crossvalidation repetitions per resample.
    boot_type : "both", "pattern" or "rdm"
    use_correction : bool
    random_state : int or numpy RandomState, optional
        Draws as rsatoolbox's after ``np.random.seed(random_state)``.
    descriptor : str, optional
    progress : bool
        A progress bar over resamples (general engine).

    Returns
    -------
    RSAResult
        ``bootstrap="bootstrap_crossval"`` (``_pattern``, ``_rdm``):
        ``evaluations (N, k, k_rdm * k_pattern, n_cv)``, ``noise_ceiling
        (2, N, n_cv)``, NaN for resamples with fewer than ``k_rdm`` distinct
        brain RDMs or ``3 k_pattern`` distinct stimuli; rsatoolbox's
        ``variances``, ``dof``; ``params[name]`` per resample, repetition and fold.
    """
    check_method(method, COMPARE_METHODS, "comparison method")
    if boot_type not in BOOT_TYPES:
        raise ValueError(f"boot_type must be one of {BOOT_TYPES}, got {boot_type!r}")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    if n_cv < 1:
        raise ValueError(f"n_cv must be >= 1, got {n_cv}")
    if use_correction and n_cv < 2:
        raise ValueError("use_correction needs n_cv >= 2 crossvalidation repetitions per resample")
    model_list, comps, brain = prepare_models(models, brain_rdms, method, fitter, descriptor)
    m, n = brain.shape[0], n_stimuli_from_length(brain.shape[1])
    if k_pattern is None:
        k_pattern = default_k_pattern((1 - 1 / np.exp(1)) * n)
    if k_rdm is None:
        k_rdm = 1 if m == 1 else default_k_rdm((1 - 1 / np.exp(1)) * m)
    check_fold_sizes(m, n, k_rdm, k_pattern)
    rs = _legacy_state(random_state)
    samples = []
    for _ in range(n_bootstrap):
        rdm_idx = rs.randint(0, m, size=m) if boot_type in ("both", "rdm") else np.arange(m)
        pat_idx = rs.randint(0, n, size=n) if boot_type in ("both", "pattern") else np.arange(n)
        samples.append(draw_sample_folds(rs, rdm_idx, pat_idx, m, n, k_rdm, k_pattern, n_cv))
    noise = "cv" if k_rdm > 1 or k_pattern > 1 else "sample"
    evals, nc, params = run_samples(model_list, comps, brain, method, samples, k_rdm * k_pattern, n_cv, progress,
                                    noise)
    variances = cv_variances(evals, nc, n_cv, use_correction)
    kind = "bootstrap_crossval" + ("" if boot_type == "both" else f"_{boot_type}")
    sizes = {"both": (m, n), "pattern": (None, n), "rdm": (m, None)}[boot_type]
    dof = min(s for s in sizes if s is not None) - 1
    return build_result([mod.name for mod in model_list], method, kind, evals, nc, variances, sizes, dof,
                        n_stimuli=sizes[1], n_brain=sizes[0], params={mod.name: p for mod, p in zip(model_list, params)},
                        models=[mod.to_rsatoolbox() for mod in model_list])


def check_fold_sizes(m: int, n: int, k_rdm: int, k_pattern: int) -> None:
    """Errors for fold counts the data cannot fill (rsatoolbox would return all-NaN results)."""
    if k_rdm < 1 or k_pattern < 1:
        raise ValueError(f"k_rdm and k_pattern must be >= 1, got {k_rdm}, {k_pattern}")
    if k_rdm > m:
        raise ValueError(f"k_rdm={k_rdm} folds over brain RDMs need at least {k_rdm} subjects (brain RDMs), got {m}")
    if 3 * k_pattern > n:
        raise ValueError(f"k_pattern={k_pattern} folds need at least 3 stimuli per fold ({3 * k_pattern} stimuli), "
                         f"got {n}")


def draw_sample_folds(rs: np.random.RandomState, rdm_idx: np.ndarray, pat_idx: np.ndarray, m: int, n: int,
                      k_rdm: int, k_pattern: int, n_cv: int) -> tuple | None:
    """``(rdm_counts, pattern_counts, [CVFolds] * n_cv)`` of one resample, or None where it cannot be split."""
    rdm_counts, pat_counts = np.bincount(rdm_idx, minlength=m), np.bincount(pat_idx, minlength=n)
    if (rdm_counts > 0).sum() < k_rdm or (pat_counts > 0).sum() < 3 * k_pattern:
        return None
    return rdm_counts, pat_counts, [draw_cv_folds(rs, rdm_counts, pat_counts, k_rdm, k_pattern) for _ in range(n_cv)]


def run_samples(models: list[RSAModel], comps: list[torch.Tensor], brain: torch.Tensor, method: str,
                samples: list, n_folds: int, n_cv: int, progress: bool = False,
                noise: str = "cv") -> tuple[np.ndarray, np.ndarray, list]:
    """Evaluations ``(N, k, F, n_cv)``, noise ceilings ``(2, N, n_cv)`` and parameters of resamples' folds.

    ``samples``: entries of ``draw_sample_folds`` (None: NaN). ``noise``:
    ``"cv"`` or ``"sample"`` (leave-one-out on the resample, rsatoolbox's
    choice without crossvalidation).
    """
    k, n_boot = len(models), len(samples)
    evals = np.full((n_boot, k, n_folds, n_cv), np.nan)
    nc = np.full((2, n_boot, n_cv), np.nan)
    params = [np.full((n_boot, n_cv, n_folds) + param_shape(model), np.nan) for model in models]
    where = [(i, r) for i, s in enumerate(samples) if s is not None for r in range(len(s[2]))]
    jobs = [(s[0], s[1], folds) for s in samples if s is not None for folds in s[2]]
    if not jobs:
        return evals, nc, params
    e, c, p = evaluate_jobs(models, comps, brain, method, jobs, noise, progress)
    rows, reps = (np.array(x, dtype=np.int64) for x in zip(*where))
    evals[rows, :, :, reps] = e
    nc[:, rows, reps] = np.stack(c, 1)
    for j in range(k):
        params[j][rows, reps] = p[j]
    return evals, nc, params


def evaluate_jobs(models: list[RSAModel], comps: list[torch.Tensor], brain: torch.Tensor, method: str, jobs: list,
                  noise: str | None, progress: bool = False) -> tuple[np.ndarray, list, list]:
    """Evaluations ``(T, k, F)``, noise ceilings and parameters of fold sets ``(rdm_counts, pattern_counts, folds)``.

    The models the moment engine covers run there, all jobs at once; the
    others (and the leave-one-out ceilings) run on the general engine, job by job.
    """
    has_nan = bool(torch.isnan(brain).any()) or any(bool(torch.isnan(c).any()) for c in comps)
    fast_ok = not has_nan and all(folds_cover(j[1], j[2]) for j in jobs)
    fast = [j for j, mod in enumerate(models) if fast_ok and moments_cover([mod], method)]
    slow = [j for j in range(len(models)) if j not in fast]
    n_jobs, n_folds = len(jobs), len(jobs[0][2])
    evals = np.full((n_jobs, len(models), n_folds), np.nan)
    params = [np.full((n_jobs, n_folds) + param_shape(model), np.nan) for model in models]
    nc: list = [None] * n_jobs
    moment_nc = bool(fast) and noise == "cv"
    if fast:
        e, c, p = evaluate_folds_moments([models[j] for j in fast], [comps[j] for j in fast], brain, method, jobs,
                                         moment_nc)
        evals[:, fast] = e
        for i, j in enumerate(fast):
            params[j] = p[i]
        if moment_nc:
            nc = list(c)
    if slow or not moment_nc:
        for t, (rdm_counts, pat_counts, folds) in enumerate(progress_bar(jobs, desc="crossval folds",
                                                                         disable=not progress)):
            e, c, p = evaluate_folds_general([models[j] for j in slow], [comps[j] for j in slow], brain, method,
                                             rdm_counts, pat_counts, folds, None if moment_nc else noise)
            evals[t, slow] = e
            for i, j in enumerate(slow):
                params[j][t] = p[i]
            if not moment_nc:
                nc[t] = c
    return evals, nc, params


def cv_variances(evaluations: np.ndarray, noise_ceiling: np.ndarray, n_cv: int, use_correction: bool) -> np.ndarray:
    """rsatoolbox's ``bootstrap_crossval`` covariance ``(k + 2, k + 2)`` of the mean evaluations and ceilings.

    With ``use_correction`` (``n_cv > 1``) the variance is extrapolated to
    infinitely many crossvalidation repetitions: ``(n_cv V_mean - V_1) / (n_cv - 1)``.

    Parameters
    ----------
    evaluations : ndarray ``(N, k, F, n_cv)``
    noise_ceiling : ndarray ``(2, N, n_cv)``
    n_cv : int
    use_correction : bool
    """
    ok = ~np.isnan(evaluations[:, 0, 0, 0])
    if ok.sum() < 2:
        raise ValueError(f"only {int(ok.sum())} usable resamples; use more resamples, fewer folds or more data")
    evals_mean = evaluations[ok].mean(-1).mean(-1)
    nc_mean = noise_ceiling[:, ok].mean(-1)
    var_mean = np.cov(np.concatenate([evals_mean.T, nc_mean]))
    if not (use_correction and n_cv > 1):
        return var_mean
    evals_1 = evaluations[ok].mean(-2)
    var_1 = np.mean([np.cov(np.concatenate([evals_1[:, :, i].T, noise_ceiling[:, ok, i]])) for i in range(n_cv)], 0)
    return (n_cv * var_mean - var_1) / (n_cv - 1)
