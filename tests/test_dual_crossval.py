"""The dual bootstrap with crossvalidation inside (k_pattern, k_rdm > 1, fitted models) against rsatoolbox."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
from rsatoolbox.inference import eval_dual_bootstrap
from rsatoolbox.model import ModelFixed, ModelSelect, ModelWeighted
from rsatoolbox.model.fitter import fit_regress

from rdl_neuro.inference import rsa_dual_bootstrap
from rsa_helpers import assert_dual_equal, random_rdms

TOL = dict(atol=1e-9, rtol=0)


def _reference(models, brain, method, seed, **kwargs):
    np.random.seed(seed)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return eval_dual_bootstrap(models, brain, method=method, **kwargs)


@pytest.mark.parametrize("method,k_pattern,k_rdm", [("corr", 2, 2), ("cosine", 2, 1), ("spearman", 1, 2),
                                                    ("corr", 1, 1)])
def test_dual_bootstrap_with_crossvalidation_equals_rsatoolbox(rng, method, k_pattern, k_rdm):
    comps, brain = random_rdms(rng, n=20, k=3, m=5)
    models = [ModelFixed("fixed", comps[0]), ModelSelect("select", comps)]
    fitters = [None, None]
    if method != "spearman":
        models.append(ModelWeighted("weighted", comps))
        fitters.append(fit_regress)
    ref = _reference(models, brain, method, 7, fitter=fitters, k_pattern=k_pattern, k_rdm=k_rdm, N=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = rsa_dual_bootstrap(models, brain, method, fitter=fitters, k_pattern=k_pattern, k_rdm=k_rdm,
                                  n_bootstrap=6, random_state=7)
    assert ours.evaluations.shape == ref.evaluations.shape
    np.testing.assert_array_equal(np.isnan(ours.evaluations), np.isnan(ref.evaluations))
    assert_dual_equal(ours, ref)
    # the fitted parameters of every resample, repetition, resampled factor and fold
    n_cv = 1 if k_pattern == k_rdm == 1 else 2
    assert ours.params["select"].shape == (6, n_cv, 3, k_pattern * k_rdm)


def test_dual_bootstrap_without_correction_equals_rsatoolbox(rng):
    comps, brain = random_rdms(rng, n=12, k=2, m=4)
    models = [ModelFixed("a", comps[0]), ModelWeighted("w", comps)]
    ref = _reference(models, brain, "corr", 3, fitter=[None, fit_regress], k_pattern=2, k_rdm=2, N=5, n_cv=3,
                     use_correction=False)
    ours = rsa_dual_bootstrap(models, brain, "corr", fitter=[None, fit_regress], k_pattern=2, k_rdm=2, n_bootstrap=5,
                              n_cv=3, use_correction=False, random_state=3)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, **TOL)
    np.testing.assert_allclose(ours.variances, ref.variances, **TOL)


def test_dual_bootstrap_crossvalidation_bad_input(rng):
    comps, brain = random_rdms(rng, n=12, k=2, m=4)
    with pytest.raises(ValueError, match=r"k_rdm=5 folds over brain RDMs need at least 5 subjects \(brain RDMs\), got 4"):
        rsa_dual_bootstrap(comps, brain, k_rdm=5, k_pattern=2)
    with pytest.raises(ValueError, match="k_pattern=5 folds need at least 3 stimuli per fold"):
        rsa_dual_bootstrap(comps, brain, k_rdm=2, k_pattern=5)
    with pytest.raises(ValueError, match="use_correction needs n_cv >= 2"):
        rsa_dual_bootstrap(comps, brain, k_rdm=2, k_pattern=2, n_cv=1)


def test_dual_bootstrap_with_crossvalidation_on_the_92_images(kriegeskorte_dir):
    from rdl_neuro.data.loaders import load_kriegeskorte92

    k92 = load_kriegeskorte92(kriegeskorte_dir)
    comps = k92.models
    names = list(comps.rdm_descriptors["name"])
    models = [ModelFixed(name, comps[i]) for i, name in enumerate(names)] + [ModelWeighted("weighted", comps)]
    fitters = [None] * len(names) + [fit_regress]
    ref = _reference(models, k92.human_it, "corr", 2, fitter=fitters, k_pattern=3, k_rdm=2, N=2)
    ours = rsa_dual_bootstrap(models, k92.human_it, "corr", fitter=fitters, k_pattern=3, k_rdm=2, n_bootstrap=2,
                              random_state=2)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations, **TOL)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, **TOL)
    np.testing.assert_allclose(ours.variances, ref.variances, **TOL)
