"""rdl_neuro.inference (and layer_rdms) against rsatoolbox itself: fixed evaluation, bootstraps, noise ceilings, p-values."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from rsatoolbox.inference import eval_bootstrap, eval_bootstrap_pattern, eval_bootstrap_rdm, eval_fixed
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs

from rdl_neuro.rdm.compare import COMPARE_METHODS
from rdl_neuro.inference import rsa_evaluate, rsa_table
from rdl_neuro.model import layer_rdms
from rdl_neuro.rdm import gram_to_rdm
from rdl_neuro.rdm import METHODS, compute_rdm
from rsa_helpers import fixed_models, random_rdms, replay_draws

ALL = [m for m in COMPARE_METHODS if m != "tau-b"]


_data, _models = random_rdms, fixed_models


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("method", ALL)
def test_fixed_equals_eval_fixed(rng, method):
    models, brain = _data(rng)
    ref = eval_fixed(_models(models), brain, method=method)
    ours = rsa_evaluate(models, brain, method)
    np.testing.assert_allclose(ours.fixed, ref.get_means(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations[0], atol=1e-9, rtol=0)
    np.testing.assert_allclose([ours.nc_lower, ours.nc_upper], ref.noise_ceiling, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.sem, ref.get_sem(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.p_zero, ref.test_zero(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.p_noise, ref.test_noise(), atol=1e-9, rtol=0)
    low, high = ref.get_ci(0.95)
    np.testing.assert_allclose(ours.ci_low, low, atol=1e-9)
    np.testing.assert_allclose(ours.ci_high, high, atol=1e-9)


_draws = replay_draws


EVAL = {"pattern": eval_bootstrap_pattern, "rdm": eval_bootstrap_rdm, "both": eval_bootstrap}


@pytest.mark.parametrize("kind", ["pattern", "rdm", "both"])
@pytest.mark.parametrize("method", ALL)
def test_bootstrap_equals_rsatoolbox_with_its_draws(rng, method, kind):
    models, brain = _data(rng, n=9)
    n_boot = 8
    draws = _draws(kind, n_boot, brain.n_cond, brain.n_rdm, seed=5)
    np.random.seed(5)
    ref = EVAL[kind](_models(models), brain, method=method, N=n_boot)
    ours = rsa_evaluate(models, brain, method, bootstrap=kind, bootstrap_indices=draws)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.mean, ref.get_means(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.sem, ref.get_sem(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.p_zero, ref.test_zero(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.p_noise, ref.test_noise(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("method", ["corr", "cosine", "tau-a", "kendall"])
def test_fast_pattern_bootstraps_on_the_92_images(kriegeskorte_dir, method):
    """The moment (corr, cosine) and weights (tau-a, kendall) bootstraps on the real data."""
    from rdl_neuro.data.loaders import load_kriegeskorte92

    k92 = load_kriegeskorte92(kriegeskorte_dir)
    n_boot = 4
    draws = _draws("pattern", n_boot, 92, 8, seed=1)
    np.random.seed(1)
    models = [ModelFixed(str(nm), k92.models[i]) for i, nm in enumerate(k92.models.rdm_descriptors["name"])]
    ref = eval_bootstrap_pattern(models, k92.human_it, method=method, N=n_boot)
    ours = rsa_evaluate(k92.models, k92.human_it, method, bootstrap="pattern", bootstrap_indices=draws)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.p_noise, ref.test_noise(), atol=1e-9, rtol=0)


def test_boot_noise_ceiling_false_matches_rsatoolbox(rng):
    models, brain = _data(rng)
    draws = _draws("pattern", 6, brain.n_cond, brain.n_rdm, seed=2)
    np.random.seed(2)
    ref = eval_bootstrap_pattern(_models(models), brain, method="corr", N=6, boot_noise_ceil=False)
    ours = rsa_evaluate(models, brain, "corr", bootstrap="pattern", bootstrap_indices=draws, boot_noise_ceiling=False)
    np.testing.assert_allclose([ours.nc_lower, ours.nc_upper], ref.noise_ceiling, atol=1e-9)
    np.testing.assert_allclose(ours.p_noise, ref.test_noise(), atol=1e-9)


def test_table_columns_and_seeded_draws(rng):
    models, brain = _data(rng)
    t1 = rsa_table(models, brain, "corr", bootstrap="pattern", n_bootstrap=20, seed=3)
    t2 = rsa_table(models, brain, "corr", bootstrap="pattern", n_bootstrap=20, seed=3)
    assert list(t1["model"]) == ["m0", "m1", "m2"]
    for col in ("mean", "sem", "ci_low", "ci_high", "p_zero", "p_noise", "nc_lower", "nc_upper"):
        assert col in t1.columns and np.isfinite(t1[col]).all()
    assert t1.equals(t2)
    assert (t1["ci_low"] <= t1["mean"]).all() and (t1["mean"] <= t1["ci_high"]).all()


def test_stimuli_are_matched_by_id(rng):
    models, brain = _data(rng, n=10)
    order = np.array([3, 1, 7, 0, 2, 9, 4, 5])  # a reordered subset of the brain's stimuli
    sub = models.subsample_pattern("stimulus", order)  # rsatoolbox sorts the selection...
    perm = rng.permutation(len(order))
    sub.reorder(perm)  # ...so shuffle it explicitly
    ours = rsa_evaluate(sub, brain, "corr", noise_ceiling=False)
    ref_brain = brain.subsample_pattern("stimulus", np.sort(order))
    ref = eval_fixed(_models(models.subsample_pattern("stimulus", np.sort(order))), ref_brain, method="corr")
    np.testing.assert_allclose(ours.fixed, ref.get_means(), atol=1e-12)
    assert ours.n_stimuli == len(order)


def test_several_model_rdms_objects_make_one_table(rng):
    """A network's layers and classic model RDMs in one call: the rows of both, each object
    matched to the brain by id (the second is reordered), equal to one concatenated object."""
    models, brain = _data(rng, n=9)
    first, second = models.subset("name", ["m0", "m1"]), models.subset("name", ["m2"])
    perm = rng.permutation(9)
    second_shuffled = second.copy()
    second_shuffled.reorder(perm)
    both = rsa_evaluate([first, second_shuffled], brain, "spearman", bootstrap="pattern", n_bootstrap=20, seed=3)
    ref = rsa_evaluate(models, brain, "spearman", bootstrap="pattern", n_bootstrap=20, seed=3)
    assert both.names == ref.names
    np.testing.assert_allclose(both.evaluations, ref.evaluations, atol=1e-12)
    np.testing.assert_allclose(both.p_noise, ref.p_noise, atol=1e-12)
    table = rsa_table([first, second_shuffled], brain, "corr")
    assert list(table["model"]) == ref.names
    with pytest.raises(ValueError, match=r"model_rdms\[1\] covers other stimuli than model_rdms\[0\]"):
        rsa_evaluate([first, second.subsample_pattern("stimulus", np.arange(8))], brain, "corr")
    with pytest.raises(TypeError, match=r"model_rdms\[1\] must be rsatoolbox.rdm.RDMs"):
        rsa_evaluate([first, np.zeros(36)], brain, "corr")
    with pytest.raises(ValueError, match="empty sequence"):
        rsa_evaluate([], brain, "corr")


def test_bad_inputs(rng):
    models, brain = _data(rng, n=8)
    other = RDMs(models.get_vectors(), pattern_descriptors={"stimulus": np.arange(100, 108)})
    with pytest.raises(ValueError, match="share no stimulus ids"):
        rsa_table(other, brain)
    partly = RDMs(models.get_vectors(), pattern_descriptors={"stimulus": np.r_[np.arange(6), 50, 51]})
    with pytest.raises(ValueError, match=r"2 stimulus ids .* missing from the brain RDMs: \[50, 51\]"):
        rsa_table(partly, brain)
    with pytest.raises(ValueError, match="at least 2 brain RDMs"):
        rsa_table(models, brain[0])
    single = rsa_table(models, brain[0], noise_ceiling=False, bootstrap="pattern", n_bootstrap=10)
    assert np.isfinite(single["sem"]).all() and np.isnan(single["p_noise"]).all()
    with pytest.raises(ValueError, match="bootstrap must be one of"):
        rsa_table(models, brain, bootstrap="subjects")
    with pytest.raises(ValueError, match="unknown comparison method"):
        rsa_table(models, brain, "pearson")
    with pytest.raises(ValueError, match=r"shape \(N, 8\)"):
        rsa_table(models, brain, bootstrap="pattern", bootstrap_indices=np.zeros((3, 5), int))
    with pytest.raises(TypeError, match="rsatoolbox"):
        rsa_table(models.get_vectors(), brain)


def test_measure_mismatch_warns_only_where_it_matters(rng):
    models, brain = _data(rng)
    eu = RDMs(models.get_vectors(), dissimilarity_measure="euclidean", pattern_descriptors={"stimulus": np.arange(10)})
    sq = RDMs(brain.get_vectors(), dissimilarity_measure="squared euclidean",
              pattern_descriptors={"stimulus": np.arange(10)})
    with pytest.warns(UserWarning, match="dissimilarity measure"):
        warnings.simplefilter("always")
        rsa_table(eu, brain, "corr")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        rsa_table(eu, sq, "spearman", noise_ceiling=False)  # monotone transform: ranks agree


def test_nan_entries(rng):
    models, brain = _data(rng, n=9)
    vb = brain.get_vectors().copy()
    vm = models.get_vectors().copy()
    vb[:, [2, 11]] = np.nan
    vm[:, [2, 11]] = np.nan
    brain_nan = RDMs(vb, pattern_descriptors={"stimulus": np.arange(9)})
    models_nan = RDMs(vm, pattern_descriptors={"stimulus": np.arange(9)})
    for method in ("corr", "spearman"):
        ref = eval_fixed(_models(models_nan), brain_nan, method=method)
        ours = rsa_evaluate(models_nan, brain_nan, method)
        np.testing.assert_allclose(ours.fixed, ref.get_means(), atol=1e-9)
        np.testing.assert_allclose([ours.nc_lower, ours.nc_upper], ref.noise_ceiling, atol=1e-9)
    draws = _draws("pattern", 4, 9, 4, seed=0)
    np.random.seed(0)
    ref = eval_bootstrap_pattern(_models(models_nan), brain_nan, method="corr", N=4)
    ours = rsa_evaluate(models_nan, brain_nan, "corr", bootstrap="pattern", bootstrap_indices=draws)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-9)
    allnan = RDMs(np.full_like(vm, np.nan), pattern_descriptors={"stimulus": np.arange(9)})
    with pytest.raises(ValueError, match="entirely NaN"):
        rsa_table(allnan, brain)


# ----------------------------------------------------------------------------- layer RDMs


@pytest.mark.parametrize("method", METHODS)
def test_gram_to_rdm_equals_compute_rdm(method):
    x = torch.randn(7, 13, dtype=torch.float64)
    got = gram_to_rdm(x @ x.T, x.sum(1), x.shape[1], method)
    torch.testing.assert_close(got, compute_rdm(x, method), atol=1e-10, rtol=1e-10)


def test_gram_to_rdm_rejects_constant_pattern():
    x = torch.randn(4, 5, dtype=torch.float64)
    x[2] = 3.0
    with pytest.raises(ValueError, match=r"constant pattern.*rows \[2\]"):
        gram_to_rdm(x @ x.T, x.sum(1), 5, "correlation")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 9), torch.nn.ReLU(), torch.nn.Linear(9, 4))


@pytest.mark.parametrize("max_bytes", [2**30, 1])  # keep earlier batches / recompute them
def test_layer_rdms_equal_direct_rdms(max_bytes):
    net = _net()
    x = torch.randn(11, 3, 2, 2)
    rdms = layer_rdms(net, x, ["1", "3"], "correlation", batch_size=4, progress=False,
                      stimulus_ids=list(range(100, 111)), max_feature_bytes=max_bytes)
    assert list(rdms.rdm_descriptors["layer"]) == ["1", "3"]
    assert list(rdms.pattern_descriptors["stimulus"]) == list(range(100, 111))
    assert rdms.dissimilarity_measure == "correlation"
    with torch.no_grad():
        h1 = net[1](net[0](x)).double()
        h3 = net[3](net[2](net[1](net[0](x)))).double()
    np.testing.assert_allclose(rdms.get_vectors()[0], compute_rdm(h1, "correlation").numpy(), atol=1e-10)
    np.testing.assert_allclose(rdms.get_vectors()[1], compute_rdm(h3, "correlation").numpy(), atol=1e-10)
    assert net.training  # mode restored


def test_layer_rdms_dataset_and_errors():
    from torch.utils.data import DataLoader, TensorDataset

    net = _net()
    x = torch.randn(6, 3, 2, 2)
    ds = TensorDataset(x, torch.zeros(6))
    a = layer_rdms(net, ds, "1", "euclidean", batch_size=4, progress=False)
    b = layer_rdms(net, DataLoader(ds, batch_size=2), "1", "euclidean", progress=False)
    np.testing.assert_allclose(a.get_vectors(), b.get_vectors(), atol=1e-10)
    with pytest.raises(KeyError, match="unknown layer"):
        layer_rdms(net, x, ["nope"], progress=False)
    with pytest.raises(ValueError, match="stimulus ids"):
        layer_rdms(net, x, ["1"], progress=False, stimulus_ids=[1, 2])
    with pytest.raises(TypeError, match="stimuli must be"):
        layer_rdms(net, [1, 2, 3], ["1"], progress=False)


# ----------------------------------------------------------------------------- Kendall pattern bootstrap (weights)


def _tied_data(rng: np.random.Generator, n: int = 11) -> tuple[RDMs, RDMs]:
    """Model and brain RDMs full of ties: a 2-valued and a 3-valued (categorical) model, a coarse
    model with many tied values, one continuous; brain RDMs rounded to a few levels."""
    p = n * (n - 1) // 2
    trend = np.linspace(0, 1, p)
    models = np.stack([rng.integers(0, 2, p), rng.integers(0, 3, p), np.round(rng.random(p) * 8 + 4 * trend),
                       rng.random(p) + trend]).astype(float)
    brain = np.round((rng.random((5, p)) + trend) * 6) / 6
    brain[0] = rng.random(p) + trend  # one subject without ties
    return (RDMs(models, pattern_descriptors={"stimulus": np.arange(n)},
                 rdm_descriptors={"name": [f"m{i}" for i in range(4)]}),
            RDMs(brain, pattern_descriptors={"stimulus": np.arange(n)}))


@pytest.mark.parametrize("method", ["tau-a", "kendall"])
def test_kendall_pattern_bootstrap_with_ties_equals_rsatoolbox(rng, method):
    models, brain = _tied_data(rng)
    n_boot = 8
    draws = _draws("pattern", n_boot, brain.n_cond, brain.n_rdm, seed=7)
    np.random.seed(7)
    ref = eval_bootstrap_pattern(_models(models), brain, method=method, N=n_boot)
    ours = rsa_evaluate(models, brain, method, bootstrap="pattern", bootstrap_indices=draws)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours.p_noise, ref.test_noise(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("method", ["tau-a", "kendall"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("product", [True, False], ids=["tau-a-product", "fenwick-only"])
def test_kendall_weights_path_equals_general_path(rng, method, threads, product, monkeypatch):
    from rdl_neuro.inference import kendall
    from rdl_neuro.rdm.interop import from_rsatoolbox
    from rdl_neuro.inference.bootstrap import bootstrap_general
    from rdl_neuro.inference.kendall import bootstrap_kendall

    if not product:  # tau-a through the Fenwick counts, as for RDMs too large for the product
        monkeypatch.setattr(kendall, "_TAU_A_PRODUCT_MAX_P", 0)

    models, brain = _tied_data(rng, n=12)
    x, _ = from_rsatoolbox(models, "stimulus")
    y, _ = from_rsatoolbox(brain, "stimulus")
    pat = rng.integers(0, 12, size=(40, 12))
    pat[3] = 5  # one stimulus only
    pat[4, :] = np.r_[[1] * 6, [2] * 6]  # two stimuli: fewer than 3, NaN as in rsatoolbox
    pat[5, :] = np.r_[[0] * 10, 1, 2]  # three stimuli, one drawn 10 times
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = bootstrap_kendall(x, y, method, pat, True, chunk=7)
    finally:
        torch.set_num_threads(before)
    slow = bootstrap_general(x, y, method, None, pat, True)
    assert np.isnan(fast[0][[3, 4]]).all() and np.isfinite(fast[0][5]).all()
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-12, rtol=0)
    np.testing.assert_allclose(fast[1], slow[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["tau-a", "kendall"])
def test_kendall_noise_ceiling_without_listed_tie_pairs_equals_general_path(rng, method, monkeypatch):
    """Subjects with too many tied pairs to list count their ties per resample: same numbers."""
    from rdl_neuro.inference import kendall
    from rdl_neuro.rdm.interop import from_rsatoolbox
    from rdl_neuro.inference.bootstrap import bootstrap_general
    from rdl_neuro.inference.kendall import bootstrap_kendall

    monkeypatch.setattr(kendall._Ties, "pairs", lambda self, limit=0: None)
    models, brain = _tied_data(rng, n=10)
    x, _ = from_rsatoolbox(models, "stimulus")
    y, _ = from_rsatoolbox(brain, "stimulus")
    pat = rng.integers(0, 10, size=(9, 10))
    fast = bootstrap_kendall(x, y, method, pat, True)
    slow = bootstrap_general(x, y, method, None, pat, True)
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-12, rtol=0)
    np.testing.assert_allclose(fast[1], slow[1], atol=1e-12, rtol=0)


def test_tau_a_product_without_the_int8_kernel(rng, monkeypatch):
    """A torch build without ``_int_mm`` on the CPU falls back to exact float64 products."""
    from rdl_neuro.rdm.interop import from_rsatoolbox
    from rdl_neuro.inference.bootstrap import bootstrap_general
    from rdl_neuro.inference.kendall import bootstrap_kendall

    def missing(*args):
        raise RuntimeError("no int8 kernel")

    monkeypatch.setattr(torch, "_int_mm", missing)
    models, brain = _tied_data(rng, n=12)
    x, _ = from_rsatoolbox(models, "stimulus")
    y, _ = from_rsatoolbox(brain, "stimulus")
    pat = rng.integers(0, 12, size=(8, 12))
    fast = bootstrap_kendall(x, y, "tau-a", pat, False)
    slow = bootstrap_general(x, y, "tau-a", None, pat, False)
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-12, rtol=0)


def test_tau_a_product_with_heavy_weights_equals_general_path(rng):
    """Entry weights above 127 (two stimuli drawn 12 times) leave int8: the float64 product."""
    from rdl_neuro.rdm.interop import from_rsatoolbox
    from rdl_neuro.inference.bootstrap import bootstrap_general
    from rdl_neuro.inference.kendall import bootstrap_kendall

    n = 26
    models, brain = _tied_data(rng, n=n)
    x, _ = from_rsatoolbox(models, "stimulus")
    y, _ = from_rsatoolbox(brain, "stimulus")
    pat = rng.integers(0, n, size=(6, n))
    pat[0] = np.r_[[0] * 12, [1] * 12, 2, 3]  # weight 144 for the entry (0, 1)
    fast = bootstrap_kendall(x, y, "tau-a", pat, True)
    slow = bootstrap_general(x, y, "tau-a", None, pat, True)
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-12, rtol=0)
    np.testing.assert_allclose(fast[1], slow[1], atol=1e-12, rtol=0)
