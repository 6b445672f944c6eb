"""RSAResult <-> rsatoolbox.inference.Result: exact round trips, and rsatoolbox's figure on ours."""
from __future__ import annotations

import dataclasses
import warnings

import matplotlib
import numpy as np
import pytest
from rsatoolbox.inference import Result, eval_bootstrap_pattern, eval_dual_bootstrap, eval_fixed

from rdl_neuro.inference import RSAResult, rsa_dual_bootstrap, rsa_evaluate
from rsa_helpers import fixed_models, random_rdms

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, (list, tuple)) and not isinstance(a, np.ndarray):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (np.ndarray, float, np.floating)) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return a == b


def _ours(kind, rng):
    models, brain = random_rdms(rng, n=10, k=4, m=5)
    if kind == "dual":
        return rsa_dual_bootstrap(models, brain, "corr", n_bootstrap=20)
    return rsa_evaluate(models, brain, "corr", bootstrap=kind, n_bootstrap=20)


@pytest.mark.parametrize("kind", [None, "pattern", "rdm", "both", "dual"])
def test_ours_to_rsatoolbox_and_back_is_exact(rng, kind):
    ours = _ours(kind, rng)
    theirs = ours.to_rsatoolbox()
    assert isinstance(theirs, Result) and theirs.cv_method == ours.cv_method
    np.testing.assert_array_equal(theirs.get_means(), ours.mean)
    np.testing.assert_array_equal(theirs.get_sem(), ours.sem)
    np.testing.assert_array_equal(theirs.test_zero(), ours.p_zero)
    np.testing.assert_array_equal(theirs.test_noise(), ours.p_noise)
    back = RSAResult.from_rsatoolbox(theirs)
    skip = {"fixed", "rdm_idx", "pattern_idx", "models"}
    for f in dataclasses.fields(RSAResult):
        if f.name not in skip:
            assert _same(getattr(back, f.name), getattr(ours, f.name)), f.name
    assert [m.name for m in back.models] == ours.names


def _theirs(kind, rng):
    models, brain = random_rdms(rng, n=10, k=3, m=5)
    np.random.seed(0)
    if kind == "fixed":
        return eval_fixed(fixed_models(models), brain, method="corr")
    if kind == "pattern":
        return eval_bootstrap_pattern(fixed_models(models), brain, method="corr", N=10)
    return eval_dual_bootstrap(fixed_models(models), brain, method="corr", N=10)


@pytest.mark.parametrize("kind", ["fixed", "pattern", "dual"])
def test_rsatoolbox_to_ours_and_back_is_exact(rng, kind):
    theirs = _theirs(kind, rng)
    ours = RSAResult.from_rsatoolbox(theirs)
    np.testing.assert_array_equal(ours.mean, theirs.get_means())
    again = ours.to_rsatoolbox()
    for name in ("models", "evaluations", "method", "cv_method", "noise_ceiling", "variances", "dof", "n_rdm",
                 "n_pattern", "model_var", "diff_var", "noise_ceil_var", "n_bootstraps", "n_model"):
        assert _same(getattr(again, name), getattr(theirs, name)), name
    assert again.models[0] is theirs.models[0]


def test_rsatoolbox_plot_model_comparison_runs_on_ours(rng):
    from rsatoolbox.vis import plot_model_comparison

    ours = _ours("pattern", rng)
    fig, ax, _ = plot_model_comparison(ours.to_rsatoolbox())
    assert [t.get_text() for t in ax.get_xticklabels()] == ours.names
    matplotlib.pyplot.close(fig)


def test_unknown_cv_method_is_named(rng):
    theirs = _theirs("fixed", rng)
    theirs.cv_method = "leave_one_out"
    with pytest.raises(ValueError, match="unknown rsatoolbox cv_method 'leave_one_out'"):
        RSAResult.from_rsatoolbox(theirs)
