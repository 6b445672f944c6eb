"""Library pieces of crossed (images x subjects) designs: leave-one-out pools and the fold/subject bootstrap."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rsatoolbox.rdm import RDMs
from rsatoolbox.util.inference_util import pool_rdm as rsa_pool_rdm

from rdl_neuro.inference import fold_subject_bootstrap, leave_one_out_rdms, noise_ceiling_bounds
from rdl_neuro.rdm import compare_rdms


@pytest.mark.parametrize("method", ["corr", "cosine", "spearman"])
def test_leave_one_out_rdms_equal_rsatoolbox_pools_of_the_others(method: str) -> None:
    rng = np.random.default_rng(7)
    brain = rng.random((5, 45))
    ours = leave_one_out_rdms(torch.from_numpy(brain), method).numpy()
    for k in range(5):
        others = RDMs(np.delete(brain, k, axis=0))
        np.testing.assert_allclose(ours[k], rsa_pool_rdm(others, method).dissimilarities[0], atol=1e-12)


def test_leave_one_out_rdms_average_to_the_lower_noise_ceiling() -> None:
    brain = torch.from_numpy(np.random.default_rng(3).random((6, 36)))
    lower = leave_one_out_rdms(brain, "corr")
    per_subject = torch.stack([compare_rdms(lower[k], brain[k], "corr").reshape(()) for k in range(6)])
    assert float(per_subject.mean()) == pytest.approx(noise_ceiling_bounds(brain, np.arange(6), "corr")[0], abs=1e-12)


def test_leave_one_out_rdms_need_two_subjects() -> None:
    with pytest.raises(ValueError, match=r"shape \(r >= 2, P\), got \(1, 10\)"):
        leave_one_out_rdms(torch.zeros(1, 10), "corr")


def test_fold_subject_bootstrap_resamples_subjects_not_folds() -> None:
    """Each sample averages the folds' values over one draw of subjects (the same people in every fold)."""
    n_boot, h = 200, 4
    per_subject = np.arange(h, dtype=float)  # a value that identifies the subject
    folds = [np.tile(per_subject + 10 * f, (n_boot, 1)) for f in range(3)]
    pooled = fold_subject_bootstrap(folds, h, seed=0)
    subj = np.random.default_rng(0).integers(0, h, (n_boot, h))
    np.testing.assert_allclose(pooled, subj.mean(1) + 10.0)  # fold offsets 0, 10, 20 average to 10
    assert pooled.std() > 0


def test_fold_subject_bootstrap_names_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"n_subjects=4.*\(10, 3\)"):
        fold_subject_bootstrap([np.zeros((10, 4)), np.zeros((10, 3))], 4, seed=0)
