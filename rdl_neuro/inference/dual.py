"""The dual bootstrap of Schuett et al. (2023): inference that generalises to new subjects and new stimuli.

rsatoolbox's ``eval_dual_bootstrap`` evaluates the models on three resamples
made from one draw: subjects and stimuli resampled together, subjects alone and
stimuli alone. The covariances of the three give a variance estimate for
generalising over both factors at once (``extract_variances`` combines them,
with the small-sample correction). Each of the three is one call of the fast
bootstrap engines (``run_bootstrap``: weighted moments for ``corr``/``cosine``,
the Kendall engine for tau), with the same draws.

Reference: Schuett, Kipnis, Diedrichsen & Kriegeskorte (2023), Statistical
inference on representational geometries, eLife 12:e82566.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rsatoolbox.rdm import RDMs

from rdl_neuro.inference.evaluate import RSAResult, build_result, prepare_rdms, run_bootstrap
from rdl_neuro.inference.resampling import draw_indices
from rdl_neuro.rdm.calc import check_method, n_stimuli_from_length
from rdl_neuro.rdm.compare import COMPARE_METHODS, compare_rdms

__all__ = ["rsa_dual_bootstrap", "dual_bootstrap_variances"]


def dual_bootstrap_variances(evaluations: np.ndarray, noise_ceiling: np.ndarray) -> np.ndarray:
    """rsatoolbox's covariances ``(3, k + 2, k + 2)`` of a dual bootstrap (both, RDMs, patterns resampled).

    Parameters
    ----------
    evaluations : ndarray ``(N, k, folds, n_cv, 3)``
        NaN samples (too few stimuli drawn) are left out.
    noise_ceiling : ndarray ``(2, N, n_cv, 3)``
    """
    ok = ~np.isnan(evaluations[:, 0, 0, 0, 0])
    evals_mean = evaluations[ok].mean(-2).mean(-2)  # (N, k, 3)
    nc_mean = noise_ceiling[:, ok].mean(-2).transpose(1, 0, 2)  # (N, 2, 3)
    matrix = np.concatenate([evals_mean, nc_mean], 1)
    matrix = matrix - matrix.mean(0, keepdims=True)
    return np.einsum("ijk,ilk->kjl", matrix, matrix) / (matrix.shape[0] - 1)


def rsa_dual_bootstrap(
    model_rdms: RDMs | Sequence[RDMs],
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
) -> RSAResult:
    """Dual bootstrap of fixed model RDMs against brain RDMs: rsatoolbox's ``eval_dual_bootstrap``.

    Parameters
    ----------
    model_rdms : rsatoolbox RDMs, or a sequence of them
        ``k`` model RDMs over the brain's stimuli (see ``rsa_table``).
    brain_rdms : rsatoolbox RDMs
        ``m >= 2`` brain RDMs (subjects).
    method : str
        Comparison method (see ``rsa_table``).
    n_bootstrap : int
    k_pattern, k_rdm : int
        Crossvalidation folds inside each resample; only 1 (no
        crossvalidation, right for fixed models) is available here, so
        ``n_cv`` and ``use_correction`` are not used (rsatoolbox too sets
        ``n_cv = 1`` and drops the correction when both are 1).
    n_cv : int
    use_correction : bool
    seed : int or None
        Seeds the draws (``numpy.random.default_rng``).
    bootstrap_indices : (rdm_idx (N, m), pattern_idx (N, n)), optional
        The draws, e.g. rsatoolbox's own.
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
    if k_pattern != 1 or k_rdm != 1:
        raise ValueError(f"k_pattern={k_pattern}, k_rdm={k_rdm}: crossvalidation inside the dual bootstrap "
                         "is for fitted models; fixed model RDMs take k_pattern=1, k_rdm=1")
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
