"""Fitted models and crossvalidation equal rsatoolbox's: fitters, crossval, bootstrap_crossval, cv_noise_ceiling."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from rsatoolbox.inference import bootstrap_crossval as rs_bootstrap_crossval
from rsatoolbox.inference import crossval as rs_crossval
from rsatoolbox.inference import sets_k_fold as rs_sets_k_fold
from rsatoolbox.inference.noise_ceiling import cv_noise_ceiling as rs_cv_noise_ceiling
from rsatoolbox.model import ModelFixed, ModelInterpolate, ModelSelect, ModelWeighted
from rsatoolbox.model.fitter import (fit_interpolate, fit_optimize, fit_optimize_positive, fit_regress,
                                     fit_regress_nn, fit_select)
from rsatoolbox.rdm import RDMs, compare

from rdl_neuro.inference import (CVFolds, RSAResult, bootstrap_crossval, crossval, cv_noise_ceiling, pairwise_tests,
                                 sets_k_fold)
from rdl_neuro.model import FixedModel, InterpolateModel, SelectModel, WeightedModel, as_models
from rsa_helpers import random_rdms


def rs_models(comps: RDMs) -> tuple[list, list]:
    """One model of each kind over ``comps``, with deterministic fitters (rsatoolbox's fit_optimize draws)."""
    models = [ModelFixed("fixed", comps[0]), ModelWeighted("ls", comps), ModelWeighted("nnls", comps),
              ModelSelect("select", comps), ModelInterpolate("interp", comps)]
    return models, [None, fit_regress, fit_regress_nn, None, None]


def quiet(func, *args, **kwargs):
    with contextlib.redirect_stderr(io.StringIO()):  # rsatoolbox's tqdm bars
        return func(*args, **kwargs)


@pytest.mark.parametrize("method", ["corr", "cosine"])
def test_fitters_equal_rsatoolbox(rng, method):
    for _ in range(3):
        comps, brain = random_rdms(rng, n=12, k=3, m=4)
        for ours, theirs, ref_fit in ((WeightedModel("w", comps), ModelWeighted("w", comps), fit_regress),
                                      (WeightedModel("w", comps, "regress_nn"), ModelWeighted("w", comps),
                                       fit_regress_nn),
                                      (SelectModel("s", comps), ModelSelect("s", comps), fit_select),
                                      (InterpolateModel("i", comps), ModelInterpolate("i", comps), fit_interpolate)):
            ref = ref_fit(theirs, brain, method=method)
            np.testing.assert_allclose(ours.fit(brain, method), ref, atol=1e-6, rtol=0)
            np.testing.assert_allclose(ours.predict(ref).numpy(), theirs.predict(ref), atol=1e-12)


@pytest.mark.parametrize("method,positive", [("corr", False), ("cosine", True), ("spearman", False)])
def test_optimize_fitter_reaches_rsatoolbox_optimum(rng, method, positive):
    comps, brain = random_rdms(rng, n=10, k=3, m=4)
    theirs = ModelWeighted("w", comps)
    np.random.seed(0)
    ref = (fit_optimize_positive if positive else fit_optimize)(theirs, brain, method=method)
    ours = WeightedModel("w", comps, "optimize_positive" if positive else "optimize").fit(brain, method)
    score = compare(theirs.predict_rdm(ours), brain, method).mean()
    score_ref = compare(theirs.predict_rdm(ref), brain, method).mean()
    assert score >= score_ref - 1e-6
    if positive:
        assert (ours >= 0).all()
    if method != "spearman":  # a smooth optimum: the same weights
        np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_rsatoolbox_models_convert_and_back(rng):
    comps, _ = random_rdms(rng, n=8, k=3, m=2)
    models, _ = rs_models(comps)
    ours = as_models(models)
    assert [m.kind for m in ours] == ["fixed", "weighted", "weighted", "select", "interpolate"]
    assert [m.fitter for m in ours] == [None, "optimize", "optimize", "select", "interpolate"]
    back = [m.to_rsatoolbox() for m in ours]
    assert [type(b).__name__ for b in back] == [type(m).__name__ for m in models]
    theta = np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(back[1].predict(theta), models[1].predict(theta))
    assert as_models(models, fitter=[None, fit_regress, "regress_nn", None, None])[1].fitter == "regress"


def test_sets_k_fold_are_rsatoolbox_folds(rng):
    _, brain = random_rdms(rng, n=14, k=1, m=7)
    for k_rdm, k_pattern in ((3, 4), (1, 2), (2, 1)):
        np.random.seed(11)
        ref = CVFolds.from_rsatoolbox(*rs_sets_k_fold(brain, k_rdm=k_rdm, k_pattern=k_pattern), n_stimuli=14,
                                      n_brain=7)
        ours = sets_k_fold(brain, k_rdm, k_pattern, random_state=11)
        for name in ("train_patterns", "test_patterns", "train_rdms", "test_rdms", "ceil_rdms"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(ref, name), err_msg=name)


@pytest.mark.parametrize("method", ["corr", "cosine", "spearman"])
def test_crossval_equals_rsatoolbox(rng, method):
    comps, brain = random_rdms(rng, n=14, k=3, m=5)
    models, fitters = rs_models(comps)
    if method == "spearman":  # least squares fits corr and cosine only
        models, fitters = [models[0], models[3], models[4]], None
    np.random.seed(3)
    sets = rs_sets_k_fold(brain, k_rdm=2, k_pattern=3)
    ref = rs_crossval(models, brain, *sets, method=method, fitter=fitters)
    ours = crossval(models, brain, sets, method, fitter=fitters)
    assert ours.evaluations.shape == ref.evaluations.shape == (1, len(models), 6)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=1e-12, rtol=0)
    # our folds from the same random state are rsatoolbox's
    again = crossval(models, brain, sets_k_fold(brain, 2, 3, random_state=3), method, fitter=fitters)
    np.testing.assert_array_equal(again.evaluations, ours.evaluations)
    # folds over stimuli only: a leave-one-out noise ceiling per fold, as rsatoolbox without a ceil_set
    from rsatoolbox.inference.crossvalsets import sets_k_fold_pattern

    sets = rs_sets_k_fold_pattern = sets_k_fold_pattern(brain, k=3)
    ref = rs_crossval(models, brain, *rs_sets_k_fold_pattern, method=method, fitter=fitters)
    ours = crossval(models, brain, sets, method, fitter=fitters)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=1e-12, rtol=0)
    # the fitted parameters come back per fold
    assert len(ours.params[models[-1].name]) == 3


def test_cv_noise_ceiling_equals_rsatoolbox(rng):
    _, brain = random_rdms(rng, n=12, k=1, m=6)
    np.random.seed(4)
    train, test, ceil = rs_sets_k_fold(brain, k_rdm=3, k_pattern=2)
    for method in ("corr", "cosine", "tau-a"):
        ref = rs_cv_noise_ceiling(brain, ceil, test, method=method)
        ours = cv_noise_ceiling(brain, CVFolds.from_rsatoolbox(train, test, ceil, 12, 6), method)
        np.testing.assert_allclose(ours, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("boot_type", ["both", "pattern", "rdm"])
@pytest.mark.parametrize("method", ["corr", "cosine", "spearman"])
def test_bootstrap_crossval_equals_rsatoolbox(rng, method, boot_type):
    comps, brain = random_rdms(rng, n=16, k=3, m=5)
    models, fitters = rs_models(comps)
    if method == "spearman":
        models, fitters = [models[0], models[3]], None
    k_rdm = 1 if boot_type == "pattern" else 2
    np.random.seed(5)
    ref = quiet(rs_bootstrap_crossval, models, brain, method=method, fitter=fitters, N=5, k_pattern=2, k_rdm=k_rdm,
                boot_type=boot_type)
    ours = bootstrap_crossval(models, brain, method, fitter=fitters, n_bootstrap=5, k_pattern=2, k_rdm=k_rdm,
                              boot_type=boot_type, random_state=5)
    assert ours.evaluations.shape == ref.evaluations.shape
    np.testing.assert_array_equal(np.isnan(ours.evaluations), np.isnan(ref.evaluations))
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=1e-12, rtol=0)
    np.testing.assert_allclose(ours.variances, ref.variances, atol=1e-10, rtol=0)
    assert ours.cv_method == ref.cv_method and ours.dof == ref.dof
    # the result converts: rsatoolbox's statistics on ours are ours
    theirs = ours.to_rsatoolbox()
    np.testing.assert_allclose(theirs.get_means(), ours.mean, atol=1e-12)
    np.testing.assert_allclose(theirs.test_zero(), ours.p_zero, atol=1e-12)
    back = RSAResult.from_rsatoolbox(theirs)
    np.testing.assert_array_equal(back.evaluations, ours.evaluations)
    np.testing.assert_allclose(back.sem, ours.sem, atol=1e-15)
    assert len(pairwise_tests(ours)) == len(models) * (len(models) - 1) // 2


def test_crossval_on_the_92_images(kriegeskorte_dir):
    from rdl_neuro.data.loaders import load_kriegeskorte92

    k92 = load_kriegeskorte92(kriegeskorte_dir)
    brain, comps = k92.human_it, k92.models
    names = list(comps.rdm_descriptors["name"])
    models = [ModelFixed(name, comps[i]) for i, name in enumerate(names)] + [ModelWeighted("weighted", comps)]
    fitters = [None] * len(names) + [fit_regress]
    np.random.seed(0)
    sets = rs_sets_k_fold(brain, k_rdm=2, k_pattern=4)
    ref = rs_crossval(models, brain, *sets, method="corr", fitter=fitters)
    ours = crossval(models, brain, sets, "corr", fitter=fitters)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=1e-12, rtol=0)
    np.random.seed(1)
    ref = quiet(rs_bootstrap_crossval, models, brain, method="corr", fitter=fitters, N=2)
    ours = bootstrap_crossval(models, brain, "corr", fitter=fitters, n_bootstrap=2, random_state=1)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=1e-12, rtol=0)
    # the fitted weights of every fold are there, unit length
    thetas = np.array(ours.params["weighted"][0][0])
    assert thetas.shape == (10, 8)
    np.testing.assert_allclose(np.linalg.norm(thetas, axis=1), 1.0)


def test_bad_input_messages(rng):
    comps, brain = random_rdms(rng, n=12, k=3, m=4)
    other = RDMs(comps.get_vectors()[:1], pattern_descriptors={"stimulus": np.arange(100, 112)})
    with pytest.raises(ValueError, match="share no stimulus ids"):
        crossval([FixedModel("a", comps[0]), FixedModel("b", other)], brain, k_rdm=2, k_pattern=2)
    shifted = RDMs(comps.get_vectors()[:1, :55], pattern_descriptors={"stimulus": np.arange(1, 12)})
    with pytest.raises(ValueError, match=r"model_rdms\[1\] covers other stimuli"):
        crossval([FixedModel("a", comps[0]), FixedModel("b", shifted)], brain, k_rdm=2, k_pattern=2)
    with pytest.raises(ValueError, match="k_rdm=5 folds over brain RDMs need at least 5 subjects"):
        bootstrap_crossval(comps, brain, k_rdm=5, k_pattern=2, n_bootstrap=2)
    with pytest.raises(ValueError, match=r"need at least 5 subjects \(brain RDMs\), got 4"):
        crossval(comps, brain, folds=None, k_rdm=5, k_pattern=2)
    with pytest.raises(ValueError, match="at least 3 stimuli per fold"):
        bootstrap_crossval(comps, brain, k_rdm=2, k_pattern=5, n_bootstrap=2)
    with pytest.raises(ValueError, match="weighted model 'w' has 1 component RDM; a weighted model needs at least 2"):
        WeightedModel("w", comps[0])
    with pytest.raises(ValueError, match="weighted model 'w' has 1 component RDM"):
        crossval([ModelWeighted("w", comps[0])], brain, k_rdm=2, k_pattern=2)
    with pytest.raises(ValueError, match="the 'regress' fitter maximises"):
        crossval([WeightedModel("w", comps)], brain, method="spearman", k_rdm=2, k_pattern=2)
    with pytest.raises(ValueError, match="unknown fitter 'ridge'"):
        WeightedModel("w", comps, "ridge")
    with pytest.raises(ValueError, match=r"k_pattern=5 folds need at least 3 stimuli per fold \(15 stimuli\), got 12"):
        sets_k_fold(brain, 2, 5)
    from rsatoolbox.inference.crossvalsets import sets_k_fold_pattern

    with pytest.raises(ValueError, match="fold 0 tests on 2 stimuli; every fold needs at least 3 stimuli"):
        crossval(comps, brain, sets_k_fold_pattern(brain, k=6))


def test_crossvalidated_results_draw_and_convert(rng):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rsatoolbox.vis import plot_model_comparison as rs_plot_model_comparison

    from rdl_neuro.vis import plot_model_comparison

    comps, brain = random_rdms(rng, n=16, k=3, m=6)
    models = [FixedModel(f"m{i}", comps[i]) for i in range(3)] + [WeightedModel("w", comps)]
    for res in (crossval(models, brain, k_rdm=2, k_pattern=2, random_state=0),
                bootstrap_crossval(models, brain, n_bootstrap=10, k_rdm=2, k_pattern=2, random_state=0)):
        ax = plot_model_comparison(res).axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["m0", "m1", "m2", "w"]
        heights = [p.get_height() for p in ax.patches]
        assert all(any(abs(h - mean) < 1e-12 for h in heights) for mean in res.mean)  # a bar per model's mean
        with pytest.warns(UserWarning) if res.bootstrap == "crossval" else contextlib.nullcontext():
            rs_plot_model_comparison(res.to_rsatoolbox())  # rsatoolbox's figure takes ours
        back = RSAResult.from_rsatoolbox(res.to_rsatoolbox())
        np.testing.assert_array_equal(back.evaluations, res.evaluations)
        np.testing.assert_allclose(back.mean, res.mean, atol=1e-15)
        plt.close("all")
