"""Helpers shared by the tests that check rdl_neuro.inference against rsatoolbox."""
from __future__ import annotations

import numpy as np
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs


def random_rdms(rng: np.random.Generator, n: int = 10, k: int = 3, m: int = 4) -> tuple[RDMs, RDMs]:
    """``(models, brain)``: k model and m brain RDMs over n stimuli, related through a shared trend."""
    p = n * (n - 1) // 2
    trend = np.linspace(0, 1, p)
    brain = RDMs(rng.random((m, p)) + trend, dissimilarity_measure="correlation",
                 pattern_descriptors={"stimulus": np.arange(n)})
    models = RDMs(rng.random((k, p)) + trend * rng.random((k, 1)), dissimilarity_measure="correlation",
                  pattern_descriptors={"stimulus": np.arange(n)}, rdm_descriptors={"name": [f"m{i}" for i in range(k)]})
    return models, brain


def fixed_models(rdms: RDMs) -> list[ModelFixed]:
    """One rsatoolbox ModelFixed per RDM, named m0, m1, ..."""
    return [ModelFixed(f"m{i}", rdms[i]) for i in range(rdms.n_rdm)]


def replay_draws(kind: str, n_boot: int, n: int, m: int, seed: int):
    """The draws rsatoolbox's eval_* make after np.random.seed(seed), in their order."""
    np.random.seed(seed)
    rdm_idx, pat_idx = [], []
    for _ in range(n_boot):
        if kind in ("rdm", "both"):
            rdm_idx.append(np.random.randint(0, m, size=m))
        if kind in ("pattern", "both"):
            pat_idx.append(np.random.randint(0, n, size=n))
    if kind == "pattern":
        return np.array(pat_idx)
    if kind == "rdm":
        return np.array(rdm_idx)
    return np.array(rdm_idx), np.array(pat_idx)


def record_bootstrap_draws(monkeypatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Record the (rdm_idx, pattern_idx) of every rsatoolbox ``bootstrap_sample`` call made by its evaluate module."""
    import rsatoolbox.inference.evaluate as rs_evaluate

    drawn: list[tuple[np.ndarray, np.ndarray]] = []
    original = rs_evaluate.bootstrap_sample

    def recording(*args, **kwargs):
        sample, rdm_idx, pattern_idx = original(*args, **kwargs)
        drawn.append((np.asarray(rdm_idx).copy(), np.asarray(pattern_idx).copy()))
        return sample, rdm_idx, pattern_idx

    monkeypatch.setattr(rs_evaluate, "bootstrap_sample", recording)
    return drawn


def assert_dual_equal(ours, ref, tol: float = 1e-9) -> None:
    """A dual-bootstrap result equals rsatoolbox's: samples, variances, means, tests (to ``tol``)."""
    from rdl_neuro.inference import pairwise_tests

    close = dict(atol=tol, rtol=0)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, **close)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, **close)
    np.testing.assert_allclose(ours.variances, ref.variances, **close)
    np.testing.assert_allclose(ours.model_var, ref.model_var, **close)
    np.testing.assert_allclose(ours.diff_var, ref.diff_var, **close)
    np.testing.assert_allclose(ours.nc_var, ref.noise_ceil_var, **close)
    np.testing.assert_allclose(ours.mean, ref.get_means(), **close)
    np.testing.assert_allclose(ours.sem, ref.get_sem(), **close)
    np.testing.assert_allclose(ours.p_zero, ref.test_zero(), **close)
    np.testing.assert_allclose(ours.p_noise, ref.test_noise(), **close)
    assert ours.dof == ref.dof and ours.cv_method == ref.cv_method
    k = len(ours.names)
    i, j = np.triu_indices(k, 1)
    for test_type in ("t-test", "bootstrap"):
        np.testing.assert_allclose(pairwise_tests(ours, test_type, "none")["p"], ref.test_pairwise(test_type)[i, j],
                                   **close)
