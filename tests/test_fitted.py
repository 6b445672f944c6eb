"""Weighted models: fitted weights equal rsatoolbox's fit_regress / fit_regress_nn."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rsatoolbox.model import ModelWeighted
from rsatoolbox.model.fitter import fit_regress, fit_regress_nn
from rsatoolbox.rdm import RDMs, compare

from rdl_neuro.inference import pool_rdm
from rdl_neuro.model import fit_weighted_model, fit_weights, predict_weighted
from rsa_helpers import random_rdms


@pytest.mark.parametrize("method", ["corr", "cosine"])
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_weights_equal_rsatoolbox(rng, method, nonneg, ridge):
    for _ in range(5):
        comps, brain = random_rdms(rng, n=12, k=4, m=5)
        model = ModelWeighted("w", comps)
        ref = (fit_regress_nn if nonneg else fit_regress)(model, brain, method=method, ridge_weight=ridge)
        theta, pred = fit_weighted_model(comps, brain, method, nonneg=nonneg, ridge_weight=ridge)
        np.testing.assert_allclose(theta, ref, atol=1e-6, rtol=0)
        np.testing.assert_allclose(pred.get_vectors()[0], model.predict(ref), atol=1e-6)


@pytest.mark.parametrize("method", ["corr", "cosine"])
@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_nonneg_weights_with_active_constraints_equal_scipy_nnls(rng, method, ridge):
    """Components that relate negatively to the brain: some weights are held at 0. (rsatoolbox's own active-set
    loop never ends on some of these inputs, so the reference is scipy's NNLS on the same least-squares problem.)"""
    from scipy.optimize import nnls

    for _ in range(6):
        comps, brain = random_rdms(rng, n=12, k=4, m=5)
        vectors = comps.get_vectors() * np.array([[1.0], [-1.0], [1.0], [-0.5]]) + 2
        comps = RDMs(vectors, pattern_descriptors=dict(comps.pattern_descriptors))
        theta, _ = fit_weighted_model(comps, brain, method, nonneg=True, ridge_weight=ridge, normalize=False)
        a = vectors - vectors.mean(1, keepdims=True) if method == "corr" else vectors
        y = pool_rdm(torch.as_tensor(brain.get_vectors()), method)[0].numpy()
        a_aug = np.concatenate([a.T, np.sqrt(ridge) * np.eye(4)])
        y_aug = np.concatenate([y - (y.mean() if method == "corr" else 0), np.zeros(4)])
        ref, _ = nnls(a_aug, y_aug)
        np.testing.assert_allclose(theta, ref, atol=1e-6, rtol=1e-6)
        assert (theta >= 0).all() and (theta == 0).any()


def test_weights_on_the_92_images_and_batched(kriegeskorte_dir):
    from rdl_neuro.data.loaders import load_kriegeskorte92

    k92 = load_kriegeskorte92(kriegeskorte_dir)
    names = list(k92.models.rdm_descriptors["name"])
    comps = k92.models.subset("name", [n for n in names if n != "monkeyIT"])
    from scipy.optimize import nnls

    vectors = comps.get_vectors()
    a = (vectors - vectors.mean(1, keepdims=True)).T
    y = pool_rdm(torch.as_tensor(k92.human_it.get_vectors()), "corr")[0].numpy()
    nn_ref, _ = nnls(a, y - y.mean())
    # rsatoolbox's fit_regress_nn never returns on these data (its active-set loop cycles), so scipy's NNLS
    for nonneg, ref in ((False, fit_regress(ModelWeighted("w", comps), k92.human_it, method="corr")),
                        (True, nn_ref / np.linalg.norm(nn_ref))):
        theta, pred = fit_weighted_model(comps, k92.human_it, "corr", nonneg=nonneg)
        np.testing.assert_allclose(theta, ref, atol=1e-6, rtol=0)
        # the fit beats every component on the pooled brain RDM it was fitted to
        pooled = RDMs(pool_rdm(torch.as_tensor(k92.human_it.get_vectors()), "corr").numpy())
        assert compare(pred, pooled, "corr")[0, 0] >= compare(comps, pooled, "corr").max() - 1e-12
    # batched over folds: the same as one fit each
    c = torch.as_tensor(comps.get_vectors())
    targets = torch.stack([pool_rdm(torch.as_tensor(k92.human_it.get_vectors()[s]), "corr")[0]
                           for s in ([0, 1, 2], [3, 4, 5, 6], [1, 7])])
    batched = fit_weights(c.expand(3, -1, -1), targets, "corr")
    for b in range(3):
        torch.testing.assert_close(batched[b], fit_weights(c, targets[b], "corr"), atol=1e-12, rtol=0)
    assert predict_weighted(c, batched).shape == (3, c.shape[1])


def test_weighted_model_errors(rng):
    comps, brain = random_rdms(rng, n=8, k=1, m=3)
    with pytest.raises(ValueError, match="a weighted model needs at least 2 component RDMs, got 1"):
        fit_weighted_model(comps, brain)
    comps, brain = random_rdms(rng, n=8, k=2, m=3)
    with pytest.raises(ValueError, match="weights are fitted for the comparisons \\('corr', 'cosine'\\), not 'spearman'"):
        fit_weighted_model(comps, brain, "spearman")
    other = RDMs(brain.get_vectors(), pattern_descriptors={"stimulus": np.arange(8)[::-1]})
    with pytest.raises(ValueError, match="cover other stimuli \\(or another order\\)"):
        fit_weighted_model(comps, other)
