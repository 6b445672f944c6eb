"""The dual bootstrap against rsatoolbox's eval_dual_bootstrap, replaying its own draws."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from rsatoolbox.inference import eval_dual_bootstrap
from rsatoolbox.model import ModelFixed

from rdl_neuro.inference import rsa_dual_bootstrap
from rsa_helpers import assert_dual_equal, fixed_models, random_rdms, record_bootstrap_draws

TOL = dict(atol=1e-9, rtol=0)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _replay(drawn):
    return np.array([r for r, _ in drawn]), np.array([p for _, p in drawn])


@pytest.mark.parametrize("method", ["corr", "cosine", "spearman", "tau-a"])
def test_dual_bootstrap_equals_rsatoolbox(rng, monkeypatch, method):
    models, brain = random_rdms(rng, n=8, k=3, m=5)
    drawn = record_bootstrap_draws(monkeypatch)
    np.random.seed(11)
    ref = eval_dual_bootstrap(fixed_models(models), brain, method=method, N=15)
    ours = rsa_dual_bootstrap(models, brain, method, bootstrap_indices=_replay(drawn))
    assert_dual_equal(ours, ref)


def test_dual_bootstrap_on_the_92_images(kriegeskorte_dir, monkeypatch):
    from rdl_neuro.data.loaders import load_kriegeskorte92

    k92 = load_kriegeskorte92(kriegeskorte_dir)
    names = [str(nm) for nm in k92.models.rdm_descriptors["name"]]
    drawn = record_bootstrap_draws(monkeypatch)
    np.random.seed(2)
    ref = eval_dual_bootstrap([ModelFixed(nm, k92.models[i]) for i, nm in enumerate(names)], k92.human_it,
                              method="corr", N=6)
    ours = rsa_dual_bootstrap(k92.models, k92.human_it, "corr", bootstrap_indices=_replay(drawn))
    assert_dual_equal(ours, ref)


def test_dual_bootstrap_seeded_and_errors(rng):
    models, brain = random_rdms(rng, n=10, k=2, m=4)
    a = rsa_dual_bootstrap(models, brain, n_bootstrap=30, seed=4)
    b = rsa_dual_bootstrap(models, brain, n_bootstrap=30, seed=4)
    np.testing.assert_array_equal(a.evaluations, b.evaluations)
    assert a.table()["n_bootstrap"].iloc[0] == int(np.isfinite(a.evaluations[:, 0, 0, 0, 0]).sum())
    with pytest.raises(ValueError, match="needs at least 2 brain RDMs, got 1"):
        rsa_dual_bootstrap(models, brain[0], n_bootstrap=10)


def test_models_over_different_stimuli_are_named(rng):
    from rsatoolbox.rdm import RDMs

    models, brain = random_rdms(rng, n=10, k=2, m=4)
    other = RDMs(models.get_vectors()[:1], pattern_descriptors={"stimulus": np.arange(10) + 5})
    with pytest.raises(ValueError, match=r"5 stimulus ids of the model RDMs are missing from the brain RDMs: \[10, 11"):
        rsa_dual_bootstrap(other, brain, n_bootstrap=5)
    with pytest.raises(ValueError, match=r"model_rdms\[1\] covers other stimuli than model_rdms\[0\]"):
        rsa_dual_bootstrap([models, models.subsample_pattern("stimulus", np.arange(8))], brain, n_bootstrap=5)
