"""rdl_neuro.inference.tests against rsatoolbox itself: variances, pairwise tests, tests against 0 and the ceiling,
corrections for multiple comparisons, paired unit tests."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from rsatoolbox.inference import eval_bootstrap, eval_bootstrap_pattern, eval_bootstrap_rdm, eval_fixed
from rsatoolbox.model import ModelFixed
from rsatoolbox.util import inference_util as iu
from scipy import stats

from rdl_neuro.inference import (correct_pvalues, extract_variances, model_tests, noise_pvalues, pair_pvalues,
                                 paired_unit_tests, pairwise_contrast, pairwise_tests, rsa_evaluate,
                                 significant_pvalues, zero_pvalues)
from rsa_helpers import fixed_models, random_rdms, replay_draws

TOL = dict(atol=1e-9, rtol=0)
EVAL = {"pattern": eval_bootstrap_pattern, "rdm": eval_bootstrap_rdm, "both": eval_bootstrap}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _random_cov(rng, r: int) -> np.ndarray:
    a = rng.normal(size=(r, 2 * r))
    return a @ a.T / (2 * r)


def test_pairwise_contrast_equals_rsatoolbox():
    from rsatoolbox.util.matrix import pairwise_contrast as theirs
    for k in (1, 2, 5):
        np.testing.assert_array_equal(pairwise_contrast(k), theirs(np.arange(k)))


@pytest.mark.parametrize("ndim", [0, 1, 2, 3])
@pytest.mark.parametrize("nc_included", [True, False])
@pytest.mark.parametrize("sizes", [(None, None), (7, None), (None, 11), (7, 11)])
def test_extract_variances_equals_rsatoolbox(rng, ndim, nc_included, sizes):
    k = 1 if ndim == 0 else 5
    r = k + 2 if nc_included and ndim else k
    if ndim == 0:
        nc_included = False
        v = np.array(rng.random())
    elif ndim == 1:
        v = rng.random(r)
    elif ndim == 2:
        v = _random_cov(rng, r)
    else:
        both = _random_cov(rng, r) * 3
        v = np.stack([both, _random_cov(rng, r), _random_cov(rng, r)])
    ours = extract_variances(v, nc_included, *sizes)
    theirs = iu.extract_variances(v, nc_included, *sizes)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, **TOL)
        assert np.shape(a) == np.shape(b)


@pytest.mark.parametrize("test_type", ["t-test", "bootstrap", "ranksum"])
@pytest.mark.parametrize("shape", [(200, 6), (50, 6, 9), (1, 6, 12)])
def test_array_tests_equal_rsatoolbox(rng, test_type, shape):
    evals = rng.normal(0.2, 0.3, size=shape) + np.linspace(0, 0.3, shape[1]).reshape((1, -1) + (1,) * (len(shape) - 2))
    if len(shape) == 2:
        evals[3] = np.nan  # a dropped resample
    if test_type == "ranksum" and len(shape) == 2:
        with pytest.raises(ValueError, match="one value per unit"):
            pair_pvalues(evals, test_type)
        return
    k = shape[1]
    model_var, diff_var, nc_var = extract_variances(_random_cov(rng, k + 2) / 50, True, 9, 30)
    nc = np.array([0.5, 0.6])
    np.testing.assert_allclose(pair_pvalues(evals, test_type, diff_var, 8),
                               iu.pair_tests(evals, test_type, diff_var, 8), **TOL)
    if test_type != "bootstrap" or len(shape) == 2:  # rsatoolbox's bootstrap zero/nc tests skip the averaging
        np.testing.assert_allclose(zero_pvalues(evals, test_type, model_var, 8),
                                   iu.zero_tests(evals, test_type, model_var, 8), **TOL)
        np.testing.assert_allclose(noise_pvalues(evals, nc.copy(), test_type, nc_var, 8),
                                   iu.nc_tests(evals, nc.copy(), test_type, nc_var, 8), **TOL)


def test_bootstrap_test_against_a_bootstrapped_ceiling_uses_each_sample(rng):
    evals = rng.normal(0.5, 0.1, size=(40, 3))
    lower = rng.normal(0.55, 0.1, size=40)
    nc = np.stack([lower, lower + 0.1])
    expected = (((lower[:, None] - evals) <= 0).sum(0) + 1) / 40
    np.testing.assert_array_equal(noise_pvalues(evals, nc, "bootstrap"), expected)


def _rsatoolbox_significant(p: np.ndarray, correction: str, alpha: float) -> np.ndarray:
    """The rule inside rsatoolbox.vis.plot_model_comparison (model_plot.py), on one family of p-values."""
    n = len(p)
    if correction == "bonferroni":
        return p < alpha / n
    if correction == "fdr":
        ps = np.sort(p)
        criterion = alpha * (np.arange(n) + 1) / n
        k_ok = ps < criterion
        crit = criterion[np.max(np.where(k_ok)[0])] if np.any(k_ok) else 0
        return p < crit
    return p < alpha


@pytest.mark.parametrize("correction", ["fdr", "bonferroni", "none"])
def test_corrections(rng, correction):
    for _ in range(50):
        p = rng.random(rng.integers(1, 30)) ** 3
        adj = correct_pvalues(p, correction)
        sig = significant_pvalues(p, correction, 0.05)
        np.testing.assert_array_equal(sig, _rsatoolbox_significant(p, correction, 0.05))
        np.testing.assert_array_equal(sig, adj < 0.05)
        if correction == "fdr":
            np.testing.assert_allclose(adj, stats.false_discovery_control(p, method="bh"), atol=1e-15)
        elif correction == "bonferroni":
            np.testing.assert_allclose(adj, np.minimum(p * len(p), 1), atol=0)
        else:
            np.testing.assert_array_equal(adj, p)


def test_corrections_leave_nan_out():
    p = np.array([0.01, np.nan, 0.02])
    np.testing.assert_allclose(correct_pvalues(p, "bonferroni"), [0.02, np.nan, 0.04])
    np.testing.assert_array_equal(significant_pvalues(p, "bonferroni", 0.05), [True, False, True])


def _check_pairs_against(result, ref, test_type: str, correction: str = "none"):
    table = pairwise_tests(result, test_type, correction)
    k = len(result.names)
    i, j = np.triu_indices(k, 1)
    assert list(table.columns) == ["model_a", "model_b", "diff", "sem", "p", "p_corrected", "significant"]
    assert list(table["model_a"]) == [result.names[a] for a in i]
    means = ref.get_means()
    np.testing.assert_allclose(table["diff"], means[i] - means[j], **TOL)
    np.testing.assert_allclose(table["sem"], np.sqrt(np.maximum(ref.diff_var, 0)), **TOL)
    np.testing.assert_allclose(table["p"], ref.test_pairwise(test_type)[i, j], **TOL)
    np.testing.assert_allclose(table["p_corrected"], correct_pvalues(table["p"], correction), atol=0)
    tests = model_tests(result, test_type, correction)
    np.testing.assert_allclose(tests["p_zero"], ref.test_zero(test_type), **TOL)
    if test_type != "bootstrap" or np.ndim(ref.noise_ceiling) == 1:
        np.testing.assert_allclose(tests["p_noise"], ref.test_noise(test_type), **TOL)
    np.testing.assert_array_equal(tests["above_zero"], significant_pvalues(tests["p_zero"], correction))


@pytest.mark.parametrize("test_type", ["t-test", "ranksum"])
@pytest.mark.parametrize("correction", ["fdr", "bonferroni", "none"])
def test_pairwise_tests_of_a_fixed_evaluation_equal_rsatoolbox(rng, test_type, correction):
    models, brain = random_rdms(rng, n=12, k=5, m=9)
    ref = eval_fixed(fixed_models(models), brain, method="corr")
    ours = rsa_evaluate(models, brain, "corr")
    _check_pairs_against(ours, ref, test_type, correction)
    np.testing.assert_allclose(ours.diff_var, ref.diff_var, **TOL)
    np.testing.assert_allclose(ours.nc_var, ref.noise_ceil_var, **TOL)


@pytest.mark.parametrize("kind", ["pattern", "rdm", "both"])
@pytest.mark.parametrize("test_type", ["t-test", "bootstrap"])
@pytest.mark.parametrize("boot_nc", [True, False])
def test_pairwise_tests_of_bootstraps_equal_rsatoolbox(rng, kind, test_type, boot_nc):
    models, brain = random_rdms(rng, n=9, k=4, m=5)
    draws = replay_draws(kind, 12, brain.n_cond, brain.n_rdm, seed=7)
    np.random.seed(7)
    ref = EVAL[kind](fixed_models(models), brain, method="corr", N=12, boot_noise_ceil=boot_nc)
    ours = rsa_evaluate(models, brain, "corr", bootstrap=kind, bootstrap_indices=draws, boot_noise_ceiling=boot_nc)
    _check_pairs_against(ours, ref, test_type, "fdr")
    np.testing.assert_allclose(ours.variances, ref.variances, **TOL)


def test_pairwise_tests_on_the_92_images(kriegeskorte_dir):
    from rdl_neuro.data.loaders import load_kriegeskorte92

    k92 = load_kriegeskorte92(kriegeskorte_dir)
    names = [str(nm) for nm in k92.models.rdm_descriptors["name"]]
    draws = replay_draws("pattern", 20, 92, k92.human_it.n_rdm, seed=3)
    np.random.seed(3)
    ref = eval_bootstrap_pattern([ModelFixed(nm, k92.models[i]) for i, nm in enumerate(names)], k92.human_it,
                                 method="corr", N=20)
    ours = rsa_evaluate(k92.models, k92.human_it, "corr", bootstrap="pattern", bootstrap_indices=draws)
    for test_type in ("t-test", "bootstrap"):
        _check_pairs_against(ours, ref, test_type, "fdr")
    fixed = rsa_evaluate(k92.models, k92.human_it, "corr")
    _check_pairs_against(fixed, eval_fixed([ModelFixed(nm, k92.models[i]) for i, nm in enumerate(names)],
                                           k92.human_it, method="corr"), "ranksum", "bonferroni")


def test_result_methods_give_the_tables(rng):
    models, brain = random_rdms(rng, n=10, k=3, m=6)
    ours = rsa_evaluate(models, brain, "corr")
    assert ours.pairwise("t-test", "bonferroni").equals(pairwise_tests(ours, "t-test", "bonferroni"))
    assert ours.tests().equals(model_tests(ours))
    np.testing.assert_allclose(ours.tests(correction="none")["p_zero"], ours.p_zero, **TOL)
    np.testing.assert_allclose(ours.tests(correction="none")["p_noise"], ours.p_noise, **TOL)


def test_paired_unit_tests_equal_paired_t_and_wilcoxon_and_rsatoolbox(rng):
    v = rng.normal(size=(16, 4)) + [0.0, 0.3, 0.6, 0.05]
    names = ["base", "a", "b", "c"]
    table = paired_unit_tests(v, names)
    i, j = np.triu_indices(4, 1)
    ref = stats.ttest_rel(v[:, i], v[:, j], axis=0)
    np.testing.assert_allclose(table["p"], ref.pvalue, **TOL)
    np.testing.assert_allclose(table["diff"], (v[:, i] - v[:, j]).mean(0), **TOL)
    np.testing.assert_allclose(table["sem"], stats.sem(v[:, i] - v[:, j], axis=0), **TOL)
    # the same as rsatoolbox's pairwise t-test of a fixed evaluation whose subjects are the units
    res_var = np.cov(v.T, ddof=0) / 16
    _, diff_var, _ = iu.extract_variances(res_var, False, 16, None)
    np.testing.assert_allclose(table["p"], iu.t_tests(v.T[None], diff_var, 15)[i, j], **TOL)
    vs_base = paired_unit_tests(v, names, reference="base", correction="bonferroni", test_type="ranksum")
    assert list(vs_base["model_a"]) == ["a", "b", "c"] and set(vs_base["model_b"]) == {"base"}
    np.testing.assert_allclose(vs_base["p"], [stats.wilcoxon(v[:, c], v[:, 0]).pvalue for c in (1, 2, 3)], **TOL)
    np.testing.assert_allclose(vs_base["p_corrected"], np.minimum(vs_base["p"] * 3, 1), **TOL)


def test_unknown_test_type_and_correction_are_named(rng):
    models, brain = random_rdms(rng)
    res = rsa_evaluate(models, brain, "corr")
    with pytest.raises(ValueError, match=r"unknown correction 'holm'; choose one of fdr, bonferroni, none"):
        pairwise_tests(res, correction="holm")
    with pytest.raises(ValueError, match=r"unknown test_type 'z-test'; choose one of t-test, bootstrap, ranksum"):
        pairwise_tests(res, test_type="z-test")
    with pytest.raises(ValueError, match="unknown correction 'FDR'"):
        correct_pvalues([0.1], "FDR")
    with pytest.raises(ValueError, match="unknown test_type 'bootstrap' for paired units"):
        paired_unit_tests(np.ones((3, 2)), ["a", "b"], test_type="bootstrap")
    with pytest.raises(ValueError, match=r"reference 'x' is not among the names \['a', 'b'\]"):
        paired_unit_tests(np.ones((3, 2)), ["a", "b"], reference="x")
    with pytest.raises(ValueError, match=r"values must have shape \(n_units, 3\) for 3 names, got \(3, 2\)"):
        paired_unit_tests(np.ones((3, 2)), ["a", "b", "c"])
    bad = np.ones((3, 2))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="values contain NaN \\(unit 1, model 'b'\\)"):
        paired_unit_tests(bad, ["a", "b"])


def test_every_test_entry_point_names_an_unknown_test_type_correction_or_alpha(rng):
    """Issue 14's bad input: each way in (result methods, the dual bootstrap's result, the p-value functions,
    the figure) names the bad choice and the valid ones."""
    from rdl_neuro.inference import rsa_dual_bootstrap
    from rdl_neuro.vis import plot_model_comparison

    models, brain = random_rdms(rng)
    res = rsa_evaluate(models, brain, "corr")
    dual = rsa_dual_bootstrap(models, brain, n_bootstrap=20)
    bad_type = r"unknown test_type 'z-test'; choose one of t-test, bootstrap, ranksum"
    bad_correction = r"unknown correction 'holm'; choose one of fdr, bonferroni, none \('fdr' is Benjamini-Hochberg\)"
    for call in (lambda: model_tests(res, test_type="z-test"), lambda: res.tests(test_type="z-test"),
                 lambda: res.pairwise(test_type="z-test"), lambda: pairwise_tests(dual, test_type="z-test"),
                 lambda: pair_pvalues(res.rsatoolbox_evaluations(), "z-test"),
                 lambda: zero_pvalues(res.rsatoolbox_evaluations(), "z-test"),
                 lambda: noise_pvalues(res.rsatoolbox_evaluations(), res.noise_ceiling, "z-test"),
                 lambda: plot_model_comparison(res, test_type="z-test")):
        with pytest.raises(ValueError, match=bad_type):
            call()
    for call in (lambda: model_tests(res, correction="holm"), lambda: res.pairwise(correction="holm"),
                 lambda: pairwise_tests(dual, correction="holm"), lambda: significant_pvalues([0.01], "holm"),
                 lambda: paired_unit_tests(np.ones((3, 2)), ["a", "b"], correction="holm")):
        with pytest.raises(ValueError, match=bad_correction):
            call()
    # alpha is a rate: 5 (meant as 5 %) would call every test significant
    for call in (lambda: pairwise_tests(res, alpha=5), lambda: model_tests(dual, alpha=0.0),
                 lambda: significant_pvalues([0.01], "none", alpha=1.0)):
        with pytest.raises(ValueError, match="alpha must lie between 0 and 1"):
            call()
    assert pairwise_tests(res, alpha=0.5)["significant"].dtype == bool
    with pytest.raises(ValueError, match="ci must be 't' or 'percentile', got 'bca'"):
        rsa_dual_bootstrap(models, brain, n_bootstrap=5, ci="bca")
