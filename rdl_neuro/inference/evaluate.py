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
from scipy import special

from rdl_neuro._threads import serial_if_small
from rdl_neuro.data.ids import check_id_kinds
from rdl_neuro.inference.bootstrap import MOMENT_METHODS, bootstrap_general, bootstrap_moments, split_resamples
from rdl_neuro.inference.kendall import KENDALL_METHODS, bootstrap_kendall
from rdl_neuro.inference.noise_ceiling import noise_ceiling_bounds
from rdl_neuro.inference.resampling import draw_indices
from rdl_neuro.inference.tests import extract_variances, model_tests, noise_pvalues, pairwise_tests, zero_pvalues
from rdl_neuro.rdm.calc import check_method, n_stimuli_from_length, subset_rdms
from rdl_neuro.rdm.compare import COMPARE_METHODS, RANK_METHODS, compare_rdms
from rdl_neuro.rdm.interop import from_rsatoolbox, rdm_names

__all__ = ["rsa_table", "rsa_evaluate", "RSAResult", "BOOTSTRAPS", "CV_METHODS", "build_result", "prepare_rdms", "run_bootstrap"]

#: ``bootstrap`` choices of :func:`rsa_table`: none (fixed), stimuli, brain RDMs, or both
BOOTSTRAPS = (None, "pattern", "rdm", "both")
#: rsatoolbox's ``Result.cv_method`` for each kind of result (``RSAResult.bootstrap``).
CV_METHODS = {None: "fixed", "pattern": "bootstrap_pattern", "rdm": "bootstrap_rdm", "both": "bootstrap",
              "dual": "dual_bootstrap", "crossval": "crossvalidation", "bootstrap_crossval": "bootstrap_crossval",
              "bootstrap_crossval_pattern": "bootstrap_crossval_pattern",
              "bootstrap_crossval_rdm": "bootstrap_crossval_rdm"}


# ============================================================================ inputs


def _match_stimuli(model_ids: list[Any], brain_ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(model_pos, brain_pos)`` of the common stimuli, in brain order; errors on missing ids."""
    brain_index = {sid: i for i, sid in enumerate(brain_ids)}
    check_id_kinds(model_ids, brain_ids, "the model RDMs", "the brain RDMs")
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
                  descriptor: str | None, dtype: torch.dtype) -> tuple[torch.Tensor, list[str], np.ndarray]:
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
        tensor, ids = from_rsatoolbox(obj, descriptor, dtype=dtype)
        model_pos, brain_pos = _match_stimuli(ids, brain_ids)
        if first_pos is None:
            first_pos, first_ids = brain_pos, set(ids)
        elif not np.array_equal(brain_pos, first_pos):
            only_here, only_first = sorted(set(ids) - first_ids, key=str), sorted(first_ids - set(ids), key=str)
            raise ValueError(f"model_rdms[{i}] covers other stimuli than model_rdms[0]: "
                             f"{len(only_here)} only in [{i}] (e.g. {only_here[:5]}), "
                             f"{len(only_first)} only in [0] (e.g. {only_first[:5]}); "
                             "subset them to the same stimuli")
        vectors.append(subset_rdms(tensor, model_pos))
        names += rdm_names(obj)
    # one object is used as it is: no copy of RDMs that may fill gigabytes
    return (vectors[0] if len(vectors) == 1 else torch.cat(vectors)), names, first_pos




def _check_ci(ci: str) -> None:
    if ci not in ("t", "percentile"):
        raise ValueError(f"ci must be 't' or 'percentile', got {ci!r}")


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


@dataclass
class RSAResult:
    """Everything behind ``rsa_table``.

    Attributes
    ----------
    names : list of str
        One per model RDM.
    method : str
    bootstrap : str or None
        The kind of result: None (fixed), ``pattern``, ``rdm``, ``both``,
        ``dual`` (dual bootstrap), ``crossval``, ``bootstrap_crossval``
        (``_pattern``, ``_rdm``); ``cv_method`` gives rsatoolbox's word.
    evaluations : ndarray
        ``(k, m)`` model-by-brain-RDM comparisons without bootstrap, else
        ``(N, k)`` per-resample means over the (resampled) brain RDMs; NaN
        rows mark resamples rsatoolbox also drops (fewer than 3 stimuli).
        Crossvalidated and dual-bootstrap results keep rsatoolbox's layout
        ``(N, k, folds[, n_cv[, 3]])`` (see ``rsatoolbox_evaluations``).
    noise_ceiling : ndarray
        ``(2,)`` lower and upper bound, or ``(2, N)`` per resample.
    fixed : ndarray ``(k,)``
        Mean over brain RDMs on all stimuli (NaN where not computed).
    mean, sem, ci_low, ci_high, p_zero, p_noise : ndarray ``(k,)``
        rsatoolbox's means, SEMs, 95% intervals and t-test p-values.
    nc_lower, nc_upper : float
    dof : int
    n_stimuli, n_brain : int or None
    rdm_idx, pattern_idx : ndarray or None
        The bootstrap draws.
    variances : ndarray or None
        rsatoolbox's ``Result.variances``: the (uncorrected) covariance of the
        evaluations (and noise-ceiling bounds), or the three covariances of a
        dual bootstrap.
    model_var, diff_var, nc_var : ndarray or None
        ``(k,)``, ``(k (k - 1) / 2,)`` and ``(k, 2)``: corrected variances of
        the evaluations, of the pairwise differences and of the differences
        from the noise ceiling (``extract_variances``).
    models : list or None
        rsatoolbox ``Model`` objects, kept by ``from_rsatoolbox`` and given
        back by ``to_rsatoolbox``.
    params : dict or None
        Fitted parameters of crossvalidated models, by model name.
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
    variances: np.ndarray | None = field(default=None, repr=False)
    model_var: np.ndarray | None = field(default=None, repr=False)
    diff_var: np.ndarray | None = field(default=None, repr=False)
    nc_var: np.ndarray | None = field(default=None, repr=False)
    models: list | None = field(default=None, repr=False)
    params: dict | None = field(default=None, repr=False)

    @property
    def cv_method(self) -> str:
        """rsatoolbox's name of this kind of result (``Result.cv_method``)."""
        return CV_METHODS[self.bootstrap]

    def rsatoolbox_evaluations(self) -> np.ndarray:
        """The evaluations in rsatoolbox's ``Result`` layout ``(N, k, ...)`` (a fixed result: ``(1, k, m)``)."""
        return self.evaluations[None] if self.bootstrap is None else self.evaluations

    def variance_components(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``(model_var, diff_var, nc_var)``, see the class attributes."""
        return self.model_var, self.diff_var, self.nc_var

    @property
    def n_samples(self) -> int:
        """Usable bootstrap samples (0 for fixed and plain crossvalidated results)."""
        if self.bootstrap in (None, "crossval"):
            return 0
        first = self.evaluations.reshape(self.evaluations.shape[0], self.evaluations.shape[1], -1)[:, 0]
        return int(np.isfinite(first).all(1).sum())

    def pairwise(self, test_type: str = "t-test", correction: str = "fdr", alpha: float = 0.05) -> pd.DataFrame:
        """Every pair of models compared, corrected: ``pairwise_tests(self, ...)``."""
        return pairwise_tests(self, test_type, correction, alpha)

    def tests(self, test_type: str = "t-test", correction: str = "fdr", alpha: float = 0.05) -> pd.DataFrame:
        """Each model against 0 and the noise ceiling, corrected: ``model_tests(self, ...)``."""
        return model_tests(self, test_type, correction, alpha)

    def to_rsatoolbox(self):
        """This result as an ``rsatoolbox.inference.Result`` (e.g. for ``rsatoolbox.vis.plot_model_comparison``).

        The models are the rsatoolbox ``Model`` objects this result came with,
        else a bare ``rsatoolbox.model.Model`` per name. Variances are copied,
        so rsatoolbox's tests give this result's numbers; ``n_rdm`` and
        ``n_pattern`` are set as rsatoolbox's evaluation functions leave them.

        Examples
        --------
        >>> import numpy as np
        >>> from rsatoolbox.rdm import RDMs
        >>> rng = np.random.default_rng(0)
        >>> brain = RDMs(rng.random((4, 45)), pattern_descriptors={"stimulus": np.arange(10)})
        >>> models = RDMs(rng.random((2, 45)), pattern_descriptors={"stimulus": np.arange(10)})
        >>> ours = rsa_evaluate(models, brain, "corr")
        >>> theirs = ours.to_rsatoolbox()
        >>> bool(np.allclose(theirs.get_means(), ours.mean))
        True
        """
        from rsatoolbox.inference import Result
        from rsatoolbox.model import Model

        models = list(self.models) if self.models is not None else [Model(name) for name in self.names]
        nc = np.array([np.nan, np.nan]) if self.noise_ceiling is None else self.noise_ceiling
        res = Result(models, self.rsatoolbox_evaluations(), self.method, self.cv_method, nc, dof=self.dof)
        res.variances = self.variances
        res.model_var, res.diff_var, res.noise_ceil_var = self.model_var, self.diff_var, self.nc_var
        res.n_rdm, res.n_pattern = self.n_brain, self.n_stimuli
        return res

    @classmethod
    def from_rsatoolbox(cls, result) -> RSAResult:
        """An ``RSAResult`` from an ``rsatoolbox.inference.Result`` (any ``cv_method``), its numbers kept.

        ``mean``, ``sem``, the t intervals and the t-test p-values are
        rsatoolbox's (``get_means``, ``get_sem``, ``get_ci``, ``test_zero``,
        ``test_noise``); ``fixed`` is NaN (rsatoolbox keeps no full-data
        evaluation). ``to_rsatoolbox`` gives the same object back.
        """
        kinds = {v: key for key, v in CV_METHODS.items()}
        if result.cv_method not in kinds:
            raise ValueError(f"unknown rsatoolbox cv_method {result.cv_method!r}; known: {sorted(kinds)}")
        bootstrap = kinds[result.cv_method]
        evaluations = np.asarray(result.evaluations)
        if bootstrap is None:
            evaluations = evaluations[0]
        k = len(result.models)
        nc = np.asarray(result.noise_ceiling, dtype=float)
        has_nc = bool(np.isfinite(nc).any())
        nan_k = np.full(k, np.nan)
        testable = result.model_var is not None and result.dof is not None and result.dof > 0
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = result.get_means()
            ci_low, ci_high = result.get_ci(0.95) if testable else (nan_k, nan_k)
            p_zero = result.test_zero() if testable else nan_k
            p_noise = result.test_noise() if testable and has_nc else nan_k
            nc_lower, nc_upper = (float(np.nanmean(b)) for b in nc) if has_nc else (np.nan, np.nan)
        return cls(names=[m.name for m in result.models], method=result.method, bootstrap=bootstrap,
                   evaluations=evaluations, noise_ceiling=nc if has_nc else None, fixed=nan_k, mean=mean,
                   sem=result.get_sem() if result.model_var is not None else nan_k, ci_low=ci_low,
                   ci_high=ci_high, p_zero=p_zero, p_noise=p_noise, nc_lower=nc_lower, nc_upper=nc_upper,
                   dof=result.dof, n_stimuli=result.n_pattern, n_brain=result.n_rdm, variances=result.variances,
                   model_var=result.model_var, diff_var=result.diff_var, nc_var=result.noise_ceil_var,
                   models=list(result.models))

    def table(self) -> pd.DataFrame:
        """One row per model RDM (see ``rsa_table``)."""
        n = len(self.names)
        valid = self.n_samples
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


def prepare_rdms(model_rdms: RDMs | Sequence[RDMs], brain_rdms: RDMs, method: str,
                 descriptor: str | None = None,
                 dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Model (float64) and brain RDMs as tensors on the brain's stimuli that the models cover, in brain order.

    Returns
    -------
    models : Tensor ``(k, P)``
    brain : Tensor ``(m, P)``
    names : list of str
        ``k`` model names.
    """
    if not isinstance(brain_rdms, RDMs):
        raise TypeError(f"brain_rdms must be rsatoolbox.rdm.RDMs, got {type(brain_rdms).__name__}")
    brain, brain_ids = from_rsatoolbox(brain_rdms, descriptor, dtype=dtype)
    models, names, brain_pos = _stack_models(model_rdms, brain_rdms, brain_ids, method, descriptor, dtype)
    brain = subset_rdms(brain, brain_pos)
    for name, v in (("model", models), ("brain", brain)):
        if not bool(torch.isnan(v.sum())):
            continue  # no NaN at all (one reduction; the mask below would be as large as the RDMs)
        bad = torch.isnan(v).all(1)
        if bool(bad.any()):
            raise ValueError(f"{name} RDM(s) {torch.nonzero(bad).squeeze(1).tolist()} are entirely NaN")
    return models, brain, names


def run_bootstrap(models: torch.Tensor, brain: torch.Tensor, method: str, rdm_idx: np.ndarray | None,
                  pat_idx: np.ndarray | None, boot_nc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-resample evaluations ``(N, k)`` and noise ceilings ``(2, N)`` from the fastest exact engine.

    ``rdm_idx (N, m)`` and/or ``pat_idx (N, n)`` are the drawn brain RDMs and
    stimuli (None: not resampled); resamples with fewer than 3 distinct
    stimuli are NaN, as in rsatoolbox.
    """
    # a sum is NaN when an entry is (one reduction; no mask of the RDMs' size)
    has_nan = bool(torch.isnan(models.sum()) or torch.isnan(brain.sum()))
    if method in MOMENT_METHODS and not has_nan:
        return bootstrap_moments(models, brain, method, rdm_idx, pat_idx, boot_nc)
    if method in KENDALL_METHODS and rdm_idx is None and not has_nan:
        return bootstrap_kendall(models, brain, method, pat_idx, boot_nc)
    return bootstrap_general(models, brain, method, rdm_idx, pat_idx, boot_nc)


def _n_dissimilarities(rdms: RDMs | Sequence[RDMs]) -> int:
    """Entries of the dissimilarity arrays of ``rdms`` (one RDMs object or a sequence of them)."""
    if isinstance(rdms, RDMs):
        return int(np.size(rdms.dissimilarities))
    return sum(_n_dissimilarities(r) for r in rdms) if isinstance(rdms, Sequence) and not isinstance(rdms, str) else 0


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
    descriptor: str | None = None,
    dtype: torch.dtype = torch.float64,
) -> RSAResult:
    """Evaluate model RDMs against brain RDMs with rsatoolbox's statistics (see ``rsa_table``)."""
    check_method(method, COMPARE_METHODS, "comparison method")
    if bootstrap not in BOOTSTRAPS:
        raise ValueError(f"bootstrap must be one of {BOOTSTRAPS}, got {bootstrap!r}")
    _check_ci(ci)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    # the fixed evaluation of small RDMs is milliseconds of work: on one thread (see rdl_neuro._threads;
    # the bootstraps below keep the thread pool)
    with serial_if_small(_n_dissimilarities(model_rdms) + _n_dissimilarities(brain_rdms)):
        models, brain, names = prepare_rdms(model_rdms, brain_rdms, method, descriptor, dtype)
        n_stim, m = n_stimuli_from_length(brain.shape[1]), brain.shape[0]
        if noise_ceiling and m < 2:
            raise ValueError("noise_ceiling=True needs at least 2 brain RDMs (the lower bound leaves one out); "
                             "got 1 -- pass noise_ceiling=False or more subjects/sessions")
        fixed_all = compare_rdms(models, brain, method).to(torch.float64).numpy()  # (k, m)
        fixed = fixed_all.mean(1)
        nc_point = noise_ceiling_bounds(brain, np.arange(m), method) if noise_ceiling else (np.nan, np.nan)
    rdm_idx = pat_idx = None
    if bootstrap is None:
        evaluations, nc_arr = fixed_all, np.array(nc_point)
        # eval_fixed: the covariance over subjects of the mean, corrected by n_rdm
        variances = np.cov(fixed_all, ddof=0) / m if m > 1 else None
        sizes, dof = (m, None), m - 1
    else:
        if n_bootstrap < 2 and bootstrap_indices is None:
            raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
        rdm_idx, pat_idx = draw_indices(bootstrap, n_bootstrap, n_stim, m, seed, bootstrap_indices)
        if rdm_idx is not None and pat_idx is not None and len(rdm_idx) != len(pat_idx):
            raise ValueError(f"{len(rdm_idx)} rdm and {len(pat_idx)} pattern resamples given")
        boot_nc = noise_ceiling and boot_noise_ceiling
        # under torchrun each rank runs its share of the resamples (the draws are the same everywhere)
        evaluations, nc_arr = split_resamples(
            lambda rdm_part, pat_part: run_bootstrap(models, brain, method, rdm_part, pat_part, boot_nc),
            rdm_idx, pat_idx, models.shape[0])
        ok = np.isfinite(evaluations[:, 0])
        if ok.sum() < 2:
            raise ValueError(f"only {int(ok.sum())} usable bootstrap samples; use more resamples or stimuli")
        sizes = {"pattern": (None, n_stim), "rdm": (m, None), "both": (m, n_stim)}[bootstrap]
        dof = min(n for n in sizes if n is not None) - 1
        if bootstrap == "rdm":
            # eval_bootstrap_rdm overwrites its variances with the evaluations' covariance alone
            variances = np.cov(evaluations.T)
        elif boot_nc:
            variances = np.cov(np.concatenate([evaluations[ok].T, nc_arr[:, ok]]))
        else:
            variances = np.cov(evaluations[ok].T)
        if not noise_ceiling:
            nc_arr = None
        elif not boot_nc:
            nc_arr = np.array(nc_point)
    return build_result(names, method, bootstrap, evaluations, nc_arr, variances, sizes, dof, fixed=fixed, ci=ci,
                        n_stimuli=n_stim, n_brain=m, rdm_idx=rdm_idx, pattern_idx=pat_idx)


def build_result(names: list[str], method: str, bootstrap: str | None, evaluations: np.ndarray,
                 noise_ceiling: np.ndarray | None, variances: np.ndarray | None,
                 sizes: tuple[int | None, int | None], dof: int, *, fixed: np.ndarray | None = None,
                 ci: str = "t", n_stimuli: int | None = None, n_brain: int | None = None, **extra: Any) -> RSAResult:
    """An ``RSAResult`` from evaluations and their covariance, with rsatoolbox's summary statistics.

    Parameters
    ----------
    names : list of str
    method : str
    bootstrap : str or None
        The kind of result (see ``RSAResult``).
    evaluations : ndarray
        ``(k, m)`` for a fixed result, else rsatoolbox's layout ``(N, k, ...)``.
    noise_ceiling : ndarray or None
        ``(2,)`` or ``(2, N, ...)``.
    variances : ndarray or None
        rsatoolbox's uncorrected ``variances`` (see ``extract_variances``);
        ``None`` for no variance estimate (one subject, plain crossvalidation).
    sizes : (int or None, int or None)
        ``(n_rdm, n_pattern)`` of the small-sample correction, as rsatoolbox's
        evaluation function passes them to its ``Result``.
    dof : int
    fixed, ci, n_stimuli, n_brain, **extra
        Stored on the result; ``ci`` is ``"t"`` or ``"percentile"``.
    """
    _check_ci(ci)
    k = len(names)
    rs_evals = evaluations[None] if bootstrap is None else evaluations
    mean = _rsatoolbox_means(rs_evals, bootstrap)
    nan_k = np.full(k, np.nan)
    if variances is not None:
        variances = np.asarray(variances, dtype=float)
        nc_included = variances.ndim > 0 and variances.shape[-1] != k
        model_var, diff_var, nc_var = extract_variances(variances, nc_included, *sizes)
        sem = np.sqrt(np.maximum(model_var, 0))
    else:
        model_var = diff_var = nc_var = None
        sem = nan_k
    has_nc = noise_ceiling is not None
    if has_nc:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            nc_lower, nc_upper = (float(np.nanmean(b)) for b in noise_ceiling)
    else:
        nc_lower = nc_upper = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        testable = model_var is not None and dof > 0
        p_zero = zero_pvalues(rs_evals, "t-test", model_var, dof) if testable else nan_k
        p_noise = noise_pvalues(rs_evals, noise_ceiling, "t-test", nc_var, dof) if testable and has_nc else nan_k
        if ci == "percentile" and bootstrap is not None:
            per_sample = rs_evals.reshape(rs_evals.shape[0], k, -1)
            per_sample = per_sample[:, :, 0] if per_sample.shape[2] == 1 else np.nanmean(per_sample, -1)
            framed = np.concatenate([np.tile([[-np.inf], [np.inf]], (1, k)), per_sample], 0)
            ci_low, ci_high = np.quantile(framed, 0.025, axis=0), np.quantile(framed, 0.975, axis=0)
        else:
            # rsatoolbox's get_ci(0.95), to the bit: its cut is (1 - 0.95) / 2, not 0.025
            # (stats.t.ppf's number: it calls stdtrit, after argument handling that cost a millisecond)
            cut = special.stdtrit(dof, (1 - 0.95) / 2) if dof > 0 else np.nan
            ci_low, ci_high = mean + sem * cut, mean - sem * cut
    return RSAResult(names=list(names), method=method, bootstrap=bootstrap, evaluations=evaluations,
                     noise_ceiling=noise_ceiling, fixed=nan_k if fixed is None else fixed, mean=mean, sem=sem,
                     ci_low=ci_low, ci_high=ci_high, p_zero=np.asarray(p_zero, float),
                     p_noise=np.asarray(p_noise, float), nc_lower=nc_lower, nc_upper=nc_upper, dof=int(dof),
                     n_stimuli=n_stimuli, n_brain=n_brain, variances=variances, model_var=model_var,
                     diff_var=diff_var, nc_var=nc_var, **extra)


def _rsatoolbox_means(evaluations: np.ndarray, bootstrap: str | None) -> np.ndarray:
    """rsatoolbox's ``Result.get_means`` for evaluations ``(N, k, ...)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if bootstrap in (None, "crossval"):
            perf = np.mean(evaluations, axis=0)
            return np.nanmean(perf, axis=-1) if perf.ndim > 1 else perf
        perf = evaluations
        while perf.ndim > 2:
            perf = np.nanmean(perf, axis=-1)
        return perf[~np.isnan(perf[:, 0])].mean(0)


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
    descriptor: str | None = None,
    dtype: torch.dtype = torch.float64,
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
    descriptor : str, optional
        The pattern descriptor that names stimuli (it must exist); default
        ``stimulus``, else ``index`` with a warning (``rdl_neuro.rdm.stimulus_ids_of``).
    dtype : torch.float64 or torch.float32
        Precision of the comparisons and bootstrap moments. float32 halves the memory and time
        of large evaluations (10,000 stimuli: RDMs of 50M entries each); its results stay within
        1e-5 of float64's (``benchmarks/scale.py`` measures the difference). float32 RDMs given
        to rsatoolbox's ``RDMs`` are then used without a copy.

    Returns
    -------
    DataFrame
        ``model, method, bootstrap, mean`` (rsatoolbox ``get_means``: the
        bootstrap mean when bootstrapping), ``fixed`` (mean over brain RDMs on
        all stimuli), ``sem, ci_low, ci_high, p_zero`` (one-sided t-test
        against 0), ``p_noise`` (two-sided t-test against the lower bound),
        ``nc_lower, nc_upper, dof, n_stimuli, n_brain, n_bootstrap``.

    Examples
    --------
    Three identical brain RDMs over 4 stimuli; one model RDM shares their geometry,
    one reverses it:

    >>> import torch
    >>> from rdl_neuro.inference import rsa_table
    >>> from rdl_neuro.rdm import to_rsatoolbox
    >>> brain = to_rsatoolbox(torch.arange(1., 7.).repeat(3, 1), stimulus_ids=[0, 1, 2, 3])
    >>> models = to_rsatoolbox(torch.stack([torch.arange(1., 7.), torch.arange(6., 0., -1.)]),
    ...                        stimulus_ids=[0, 1, 2, 3], rdm_descriptors={"name": ["same", "reversed"]})
    >>> table = rsa_table(models, brain, method="corr")
    >>> table[["model", "mean", "nc_lower", "nc_upper", "n_brain"]].round(3)
          model  mean  nc_lower  nc_upper  n_brain
    0      same   1.0       1.0       1.0        3
    1  reversed  -1.0       1.0       1.0        3
    """
    return rsa_evaluate(model_rdms, brain_rdms, method, bootstrap=bootstrap, n_bootstrap=n_bootstrap,
                        noise_ceiling=noise_ceiling, boot_noise_ceiling=boot_noise_ceiling, ci=ci, seed=seed,
                        bootstrap_indices=bootstrap_indices, descriptor=descriptor, dtype=dtype).table()
