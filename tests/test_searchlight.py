"""Searchlight RSA: spheres, sphere RDMs and evaluations equal rsatoolbox's; maps, group tests, bad input.

Every number is checked against rsatoolbox itself (``get_volume_searchlight``,
``get_searchlight_RDMs``, ``evaluate_models_searchlight``, ``calc_rdm`` with
``prec_from_residuals`` for crossnobis) or scipy on small random volumes.
"""
from __future__ import annotations

import copy

import nibabel as nib
import numpy as np
import pytest
import torch
from rsatoolbox.data import Dataset
from rsatoolbox.data.noise import prec_from_residuals
from rsatoolbox.inference import eval_fixed
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs, calc_rdm
from rsatoolbox.util.searchlight import evaluate_models_searchlight, get_searchlight_RDMs, get_volume_searchlight
from scipy import stats
from scipy.spatial.distance import pdist

from rdl_neuro.data.searchlight import searchlight_rdms, searchlight_spheres
from rdl_neuro.inference.searchlight import evaluate_searchlight, searchlight_group_test

pytestmark = [
    # rsatoolbox's reference calls warn when averaging int descriptors and on its own progress output
    pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning:rsatoolbox"),
]

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def img(data: np.ndarray, affine: np.ndarray = AFFINE) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data, dtype=np.float64), affine)


def mask_img(mask: np.ndarray, affine: np.ndarray = AFFINE) -> nib.Nifti1Image:
    return nib.Nifti1Image(mask.astype(np.uint8), affine)


@pytest.mark.parametrize("radius, threshold, truncate", [(2, 1.0, False), (3, 0.5, False), (2.5, 0.3, True),
                                                         (1.5, 0.0, False)])
def test_spheres_equal_rsatoolbox(rng, radius, threshold, truncate, capsys):
    mask = rng.random((8, 9, 7)) < 0.7
    mask[1:7, 2:8, 1:6] = True  # a solid part, so that some full spheres pass threshold 1
    centers, neighbors = get_volume_searchlight(mask.astype(int), radius=radius, threshold=threshold,
                                                truncate_at_boundary=truncate)
    spheres = searchlight_spheres(mask, radius, threshold, truncate_at_boundary=truncate, min_voxels=1)
    ours_centers, ours_neighbors = spheres.to_rsatoolbox()
    np.testing.assert_array_equal(ours_centers, centers)
    assert len(ours_neighbors) == len(neighbors) > 0
    for ours, ref in zip(ours_neighbors, neighbors):
        np.testing.assert_array_equal(ours, ref)  # same voxels in the same order
    np.testing.assert_array_equal(spheres.n_voxels, [len(n) for n in neighbors])


def test_radius_in_mm_follows_the_affine(rng):
    mask = rng.random((7, 7, 7)) < 0.8
    in_voxels = searchlight_spheres(mask, 2, 0.5)
    in_mm = searchlight_spheres(mask, 4.0, 0.5, affine=AFFINE, radius_unit="mm")  # 2 mm voxels
    np.testing.assert_array_equal(in_mm.offsets, in_voxels.offsets)
    np.testing.assert_array_equal(in_mm.centers, in_voxels.centers)
    # anisotropic voxels: 2 x 2 x 4 mm, radius 4.5 mm reaches 2 voxels in x, y and 1 in z
    aniso = searchlight_spheres(mask, 4.5, 0.0, affine=np.diag([2.0, 2.0, 4.0, 1.0]), radius_unit="mm")
    assert np.abs(aniso.offsets).max(axis=0).tolist() == [2, 2, 1]
    mm = aniso.offsets * np.array([2.0, 2.0, 4.0])
    assert np.sqrt((mm**2).sum(axis=1)).max() < 4.5


@pytest.mark.parametrize("method, reference", [("correlation", "correlation"), ("sqeuclidean", "euclidean"),
                                               ("euclidean", "euclidean")])
def test_sphere_rdms_equal_rsatoolbox(rng, method, reference, capsys):
    shape, n_cond = (8, 9, 7), 6
    mask = rng.random(shape) < 0.7
    data = rng.normal(size=shape + (2 * n_cond,))
    conditions = np.r_[np.arange(n_cond), np.arange(n_cond)][::-1]  # repeats are averaged, as rsatoolbox does
    centers, neighbors = get_volume_searchlight(mask, radius=2, threshold=0.5)
    ref = get_searchlight_RDMs(data.reshape(-1, 2 * n_cond).T, centers, neighbors, conditions, method=reference,
                               verbose=False)
    ours = searchlight_rdms(img(data), conditions, mask=mask_img(mask), radius=2, threshold=0.5, method=method,
                            chunk_size=7)
    expected = ref.dissimilarities
    if method == "euclidean":  # the true distance: sqrt(n_voxels * rsatoolbox's euclidean)
        expected = np.sqrt(expected * np.array([len(n) for n in neighbors])[:, None])
    np.testing.assert_allclose(ours.dissimilarities, expected, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(ours.rdm_descriptors["voxel_index"], ref.rdm_descriptors["voxel_index"])
    np.testing.assert_array_equal(ours.pattern_descriptors["stimulus"], np.arange(n_cond))


@pytest.mark.parametrize("as_list", [False, True], ids=["4D", "3D-list"])
def test_one_volume_per_condition_in_any_order_equals_rsatoolbox(rng, as_list):
    """Conditions named in a shuffled order (one volume each, the common case: the table takes the values as
    they are, reordered), from one 4D image or a list of 3D images."""
    shape, n_cond = (7, 8, 6), 7
    mask = rng.random(shape) < 0.7
    data = rng.normal(size=shape + (n_cond,))
    conditions = np.array([f"s{i}" for i in rng.permutation(n_cond)])
    centers, neighbors = get_volume_searchlight(mask, radius=2, threshold=0.5)
    ref = get_searchlight_RDMs(data.reshape(-1, n_cond).T, centers, neighbors, conditions, method="correlation",
                               verbose=False)
    betas = [img(data[..., i]) for i in range(n_cond)] if as_list else img(data)
    ours = searchlight_rdms(betas, conditions, mask=mask_img(mask), radius=2, threshold=0.5, chunk_size=9)
    np.testing.assert_array_equal(ours.pattern_descriptors["stimulus"], np.sort(conditions))
    np.testing.assert_allclose(ours.dissimilarities, ref.dissimilarities, rtol=0, atol=1e-10)


@pytest.mark.parametrize("precision_method, truncate", [(None, False), ("shrinkage_diag", True),
                                                        ("shrinkage_eye", False), ("diag", True), ("full", False)])
def test_crossnobis_equals_rsatoolbox(rng, precision_method, truncate):
    shape, n_cond, n_runs = (5, 5, 4), 5, 3
    mask = rng.random(shape) < 0.8
    # run 1 holds two repeats of every condition: training means weight observations as rsatoolbox's do
    conditions = np.tile(np.arange(n_cond), n_runs + 1)
    runs = np.r_[np.repeat(np.arange(n_runs), n_cond), np.full(n_cond, 1)]
    data = rng.normal(size=shape + (len(conditions),))
    residuals = rng.normal(size=shape + (40,))
    spheres = searchlight_spheres(mask, 2, 0.4, truncate_at_boundary=truncate)
    _, neighbors = spheres.to_rsatoolbox()
    assert spheres.n_voxels.min() < spheres.offsets.shape[0]  # partial spheres are covered
    ours = searchlight_rdms(img(data), conditions, mask=mask_img(mask), radius=2, threshold=0.4,
                            truncate_at_boundary=truncate, method="crossnobis", runs=runs,
                            residuals=None if precision_method is None else img(residuals),
                            precision_method=precision_method or "shrinkage_diag", chunk_size=11)
    X, R = data.reshape(-1, len(conditions)).T, residuals.reshape(-1, 40).T
    expected = []
    for nb in neighbors:
        ds = Dataset(X[:, nb], obs_descriptors={"stimulus": conditions, "run": runs})
        noise = None if precision_method is None else prec_from_residuals(R[:, nb], method=precision_method)
        expected.append(calc_rdm(ds, method="crossnobis", descriptor="stimulus", cv_descriptor="run",
                                 noise=noise).dissimilarities[0])
    expected = np.array(expected)
    # "full" inverts an unshrunk covariance of 40 residuals: large entries, so 1e-10 relative
    np.testing.assert_allclose(ours.dissimilarities, expected, rtol=1e-10, atol=1e-10)
    assert ours.descriptors["noise_model"] == ("identity" if precision_method is None
                                               else f"residuals:{precision_method}")


def test_large_offsets_keep_precision(rng, capsys):
    """Raw betas: a large baseline per voxel and per condition; the sums-based centring stays exact."""
    shape, n_cond = (8, 9, 7), 6
    mask = rng.random(shape) < 0.8
    data = (rng.normal(size=shape + (n_cond,)) + 1000 + rng.normal(0, 50, size=shape)[..., None]
            + rng.normal(0, 100, size=n_cond))
    centers, neighbors = get_volume_searchlight(mask, radius=2, threshold=0.5)
    X = data.reshape(-1, n_cond).T
    ref = get_searchlight_RDMs(X, centers, neighbors, np.arange(n_cond), method="correlation", verbose=False)
    ours = searchlight_rdms(img(data), np.arange(n_cond), mask=mask_img(mask), radius=2, threshold=0.5)
    np.testing.assert_allclose(ours.dissimilarities, ref.dissimilarities, rtol=0, atol=1e-10)
    # squared distances: against differences taken directly (rsatoolbox's |x|^2 + |y|^2 - 2 x.y loses
    # ~1e-10 of the result to cancellation at these magnitudes; the voxel-centred table does not)
    ours = searchlight_rdms(img(data), np.arange(n_cond), mask=mask_img(mask), radius=2, threshold=0.5,
                            method="sqeuclidean")
    direct = np.array([pdist(X[:, nb], "sqeuclidean") / len(nb) for nb in neighbors])
    np.testing.assert_allclose(ours.dissimilarities, direct, rtol=1e-13, atol=1e-10)


def _models(rng, ids):
    n = len(ids)
    return RDMs(rng.random((2, n * (n - 1) // 2)), pattern_descriptors={"stimulus": np.array(ids)},
                rdm_descriptors={"name": ["a", "b"]})


@pytest.mark.parametrize("method", ["corr", "cosine", "spearman", "tau-a", "cosine_cov"])
def test_evaluation_equals_rsatoolbox(rng, method, capsys):
    shape, n_cond = (7, 8, 6), 7
    mask = rng.random(shape) < 0.8
    data = rng.normal(size=shape + (n_cond,))
    conditions = np.array([5, 3, 1, 0, 2, 4, 6])
    models = _models(rng, np.arange(n_cond)[::-1])  # stimulus order differs from the conditions': matched by id
    centers, neighbors = get_volume_searchlight(mask, radius=2, threshold=0.5)
    ref_rdms = get_searchlight_RDMs(data.reshape(-1, n_cond).T, centers, neighbors, conditions,
                                    method="correlation", verbose=False)
    ref_models = []
    for name in ("a", "b"):
        rdm = copy.deepcopy(models.subset("name", name))
        rdm.reorder(np.argsort(rdm.pattern_descriptors["stimulus"]))
        ref_models.append(ModelFixed(name, rdm))
    ref = np.array([e.evaluations.ravel() for e in
                    evaluate_models_searchlight(ref_rdms, ref_models, eval_fixed, method=method)])
    result = evaluate_searchlight(img(data), conditions, models, mask=mask_img(mask), radius=2, threshold=0.5,
                                  method=method, chunk_size=13)
    assert result.models == ["a", "b"]
    np.testing.assert_allclose(result.scores, ref, rtol=0, atol=1e-10)
    volume = result.to_nifti("b")
    assert volume.shape == shape and np.allclose(volume.affine, AFFINE)
    values = np.asarray(volume.dataobj)
    np.testing.assert_allclose(values.reshape(-1)[centers], ref[:, 1], rtol=0, atol=1e-10)
    outside = np.ones(values.size, bool)
    outside[centers] = False
    assert np.isnan(values.reshape(-1)[outside]).all()


@pytest.mark.parametrize("method, reference, truncate", [("correlation", "correlation", False),
                                                          ("sqeuclidean", "euclidean", True)])
def test_rows_of_centres_longer_than_the_shared_steps(rng, method, reference, truncate, capsys):
    """Grams updated along rows of centres (SLIDE_STEPS at a time), rows cut by holes, by chunks and by the
    order of the positions asked for: every RDM still equals rsatoolbox's."""
    from rdl_neuro.data.searchlight import SLIDE_STEPS, prepare_searchlight

    steps = SLIDE_STEPS
    shape, n_cond = (1, 3, 2 * steps + 5), 5
    mask = rng.random(shape) < 0.9
    mask[0, 1] = True  # one row without holes: longer than the steps
    data = rng.normal(size=shape + (n_cond,)) + 3.0
    centers, neighbors = get_volume_searchlight(mask, radius=2, threshold=0.3, truncate_at_boundary=truncate)
    ref = get_searchlight_RDMs(data.reshape(-1, n_cond).T, centers, neighbors, np.arange(n_cond), method=reference,
                               verbose=False).dissimilarities
    prepared = prepare_searchlight(img(data), np.arange(n_cond), mask=mask_img(mask), radius=2, threshold=0.3,
                                   truncate_at_boundary=truncate, method=method)
    runs = np.split(prepared.spheres.centers, np.flatnonzero(np.diff(prepared.spheres.centers) != 1) + 1)
    assert max(len(run) for run in runs) > 2 * steps and len(runs) > 3  # long rows, and rows cut by holes
    for chunk_size in (7, None):
        ours = np.concatenate([rdms.numpy() for _, _, rdms in prepared.iter_rdms(chunk_size=chunk_size)])
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
    shuffled = rng.permutation(len(centers))
    np.testing.assert_allclose(prepared.rdms_at(shuffled).numpy(), ref[shuffled], rtol=0, atol=1e-10)


def test_stopped_searchlight_resumes_to_the_same_maps(rng, tmp_path, monkeypatch):
    from rdl_neuro.data.searchlight import SearchlightData

    data, mask = rng.normal(size=(6, 6, 6, 5)), np.ones((6, 6, 6), bool)
    models = _models(rng, np.arange(5))
    args = dict(mask=mask_img(mask), threshold=0.5, chunk_size=10)
    whole = evaluate_searchlight(img(data), np.arange(5), models, **args)
    calls = []
    original = SearchlightData.correlations_at

    def stop_at_the_seventh_chunk(self, index, **options):  # (chunks may run side by side: by position)
        calls.append(index)
        if index.start == 60 and stopping:
            raise KeyboardInterrupt
        return original(self, index, **options)

    monkeypatch.setattr(SearchlightData, "correlations_at", stop_at_the_seventh_chunk)
    folder = tmp_path / "checkpoint"
    stopping = True
    with pytest.raises(KeyboardInterrupt):
        evaluate_searchlight(img(data), np.arange(5), models, checkpoint=folder, checkpoint_every=30, **args)
    # chunks 1-6 finished blocks 0:30 and 30:60 (the 7th chunk was the first of block 60:90)
    assert sorted(p.name for p in folder.glob("part-*")) == ["part-000000000-000000030.npy",
                                                            "part-000000030-000000060.npy"]
    calls.clear()
    stopping = False
    resumed = evaluate_searchlight(img(data), np.arange(5), models, checkpoint=folder, checkpoint_every=30, **args)
    assert sorted(c.start for c in calls) == list(range(60, 216, 10))  # only the unfinished spheres
    np.testing.assert_array_equal(resumed.scores, whole.scores)
    # a damaged block is computed again; a folder of another searchlight is refused
    (folder / "part-000000030-000000060.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(UserWarning, match="part-000000030-000000060.npy is unreadable"):
        again = evaluate_searchlight(img(data), np.arange(5), models, checkpoint=folder, checkpoint_every=30, **args)
    np.testing.assert_array_equal(again.scores, whole.scores)
    with pytest.raises(ValueError, match="holds another searchlight"):
        evaluate_searchlight(img(data + 1e-3), np.arange(5), models, checkpoint=folder, checkpoint_every=30, **args)


def test_float32_and_chunking_agree(rng):
    data, mask = rng.normal(size=(6, 6, 6, 5)), np.ones((6, 6, 6), bool)
    models = _models(rng, np.arange(5))
    a = evaluate_searchlight(img(data), np.arange(5), models, mask=mask_img(mask), threshold=0.5, chunk_size=1)
    b = evaluate_searchlight(img(data), np.arange(5), models, mask=mask_img(mask), threshold=0.5, chunk_size=500)
    c = evaluate_searchlight(img(data), np.arange(5), models, mask=mask_img(mask), threshold=0.5,
                             dtype=torch.float32)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.scores, a.scores, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- planted effect, group tests

SHAPE = (11, 11, 11)
CENTRE = np.array([5, 5, 5])


def _planted_subject(rng: np.random.Generator, n_cond: int = 12, amplitude: float = 1.0) -> np.ndarray:
    """Noise everywhere; inside a ball of radius 2 around CENTRE the patterns follow two categories."""
    data = rng.normal(size=SHAPE + (n_cond,))
    ijk = np.stack(np.indices(SHAPE), axis=-1)
    region = ((ijk - CENTRE) ** 2).sum(axis=-1) < 4
    prototypes = rng.normal(size=(2, int(region.sum())))
    category = np.arange(n_cond) % 2
    data[region] += amplitude * prototypes[category].T
    return data


def category_model(n_cond: int = 12) -> RDMs:
    category = np.arange(n_cond) % 2
    square = (category[:, None] != category[None, :]).astype(float)
    return RDMs(square[np.triu_indices(n_cond, 1)][None], pattern_descriptors={"stimulus": np.arange(n_cond)},
                rdm_descriptors={"name": ["category"]})


def test_planted_effect_is_found_there_and_nowhere_else(rng):
    mask = mask_img(np.ones(SHAPE, bool))
    results = [evaluate_searchlight(img(_planted_subject(rng)), np.arange(12), category_model(), mask=mask,
                                    radius=2, threshold=0.0) for _ in range(8)]
    group = searchlight_group_test(results, test="permutation", n_permutations=10_000)
    assert group.n_permutations == 256 and group.n_subjects == 8  # all 2^8 sign flips: an exact test
    p_fwe = np.asarray(group.p_fwe.dataobj)
    significant = p_fwe < 0.05
    ijk = np.stack(np.indices(SHAPE), axis=-1)
    # a sphere (radius 2) sees the region (radius 2) only when its centre is closer than 4 voxels
    reach = np.sqrt(((ijk - CENTRE) ** 2).sum(axis=-1)) < 4
    assert significant[tuple(CENTRE)]
    assert significant.sum() >= 7
    assert not (significant & ~reach).any()
    t = np.asarray(group.t.dataobj)
    assert (t[significant] > group.fwe_threshold).all() and (t[~significant] <= group.fwe_threshold).all()
    # uncorrected permutation p <= FWE p everywhere
    assert (np.asarray(group.p.dataobj) <= p_fwe + 1e-12).all()


def test_t_test_equals_scipy(rng):
    maps = [img(np.tanh(rng.normal(0.1, 0.2, size=(5, 5, 5)))) for _ in range(6)]
    values = np.arctanh(np.stack([np.asarray(m.dataobj) for m in maps]))
    for alternative in ("greater", "two-sided", "less"):
        group = searchlight_group_test(maps, test="t", alternative=alternative)
        ref = stats.ttest_1samp(values, 0.0, axis=0, alternative=alternative)
        np.testing.assert_allclose(np.asarray(group.t.dataobj), ref.statistic, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(group.p.dataobj), ref.pvalue, rtol=1e-10)
        assert group.p_fwe is None


def test_permutation_p_values_by_hand(rng):
    n_sub = 5
    values = rng.normal(0.3, 1.0, size=(n_sub, 3, 3, 2))
    maps = [img(v) for v in values]
    group = searchlight_group_test(maps, test="permutation", fisher_z=False, alternative="two-sided")
    flat = values.reshape(n_sub, -1)
    signs = np.array(np.meshgrid(*[[1, -1]] * n_sub, indexing="ij")).reshape(n_sub, -1).T  # all 32 flips
    t_perm = np.abs(np.array([stats.ttest_1samp(s[:, None] * flat, 0.0, axis=0).statistic for s in signs]))
    t_obs = np.abs(stats.ttest_1samp(flat, 0.0, axis=0).statistic)
    np.testing.assert_allclose(np.asarray(group.p.dataobj).ravel(), (t_perm >= t_obs - 1e-12).mean(axis=0))
    np.testing.assert_allclose(np.asarray(group.p_fwe.dataobj).ravel(),
                               (t_perm.max(axis=1)[:, None] >= t_obs[None] - 1e-12).mean(axis=0))


def test_group_test_only_where_every_subject_has_a_value(rng):
    maps = [rng.uniform(-0.5, 0.5, size=(4, 4, 4)) for _ in range(4)]
    maps[2][0, 0, 0] = np.nan
    group = searchlight_group_test([img(m) for m in maps], mask=np.ones((4, 4, 4), bool))
    assert np.isnan(np.asarray(group.t.dataobj)[0, 0, 0]) and group.n_voxels == 63
    with pytest.raises(ValueError, match="Fisher z needs values in"):
        searchlight_group_test([img(m * 4) for m in maps])
    with pytest.raises(ValueError, match="at least 2 subjects"):
        searchlight_group_test([img(maps[0])])


# --------------------------------------------------------------------------- bad input


def test_mask_and_betas_in_different_spaces(rng):
    data = img(rng.normal(size=(6, 6, 6, 4)))
    with pytest.raises(ValueError, match=r"differ in shape.*\(6, 6, 5\)"):
        searchlight_rdms(data, np.arange(4), mask=mask_img(np.ones((6, 6, 5), bool)))
    with pytest.raises(ValueError, match="differ in affine"):
        searchlight_rdms(data, np.arange(4), mask=mask_img(np.ones((6, 6, 6), bool), affine=np.eye(4)))


def test_radius_that_leaves_spheres_empty(rng):
    data = img(rng.normal(size=(6, 6, 6, 4)))
    mask = mask_img(np.ones((6, 6, 6), bool))
    with pytest.raises(ValueError, match=r"radius 1\.5 mm leaves the spheres empty: a sphere holds 1 voxel"):
        searchlight_rdms(data, np.arange(4), mask=mask, radius=1.5, radius_unit="mm")  # 2 mm voxels
    with pytest.raises(ValueError, match="radius 0 voxels leaves the spheres empty: a sphere holds 0 voxel"):
        searchlight_rdms(data, np.arange(4), mask=mask, radius=0)
    small = np.zeros((6, 6, 6), bool)
    small[2:4, 2:4, 2:4] = True
    with pytest.raises(ValueError, match="no searchlight centre is left"):
        searchlight_rdms(data, np.arange(4), mask=mask_img(small), radius=2, threshold=1.0)


def test_conditions_that_do_not_match_the_volumes(rng):
    data = img(rng.normal(size=(6, 6, 6, 4)))
    mask = mask_img(np.ones((6, 6, 6), bool))
    with pytest.raises(ValueError, match="conditions has 5 entries but the betas have 4 volumes"):
        searchlight_rdms(data, np.arange(5), mask=mask, threshold=0.5)
    models = RDMs(np.ones((1, 6)), pattern_descriptors={"stimulus": np.array([0, 1, 2, 7])})
    with pytest.raises(ValueError, match=r"lacks 1 of the 4 conditions: \[3\]"):
        evaluate_searchlight(data, np.arange(4), models, mask=mask, threshold=0.5)


def test_model_ids_of_another_kind_and_unknown_devices(rng):
    data = img(rng.normal(size=(6, 6, 6, 4)))
    mask = mask_img(np.ones((6, 6, 6), bool))
    models = RDMs(np.ones((1, 6)), pattern_descriptors={"stimulus": np.array(["0", "1", "2", "3"])})
    with pytest.raises(TypeError, match="the conditions has int ids .* but model RDM 'RDM 0' has str ids"):
        evaluate_searchlight(data, np.arange(4), models, mask=mask, threshold=0.5)
    with pytest.raises(ValueError, match="'gpu0' is not a device name"):
        searchlight_rdms(data, np.arange(4), mask=mask, threshold=0.5, device="gpu0")


def test_crossnobis_needs_two_runs(rng):
    data = img(rng.normal(size=(6, 6, 6, 4)))
    mask = mask_img(np.ones((6, 6, 6), bool))
    with pytest.raises(ValueError, match=r"crossnobis needs at least 2 runs to cross-validate, got a single run \[1\]"):
        searchlight_rdms(data, [0, 1, 0, 1], mask=mask, method="crossnobis", runs=[1, 1, 1, 1], threshold=0.5)
    with pytest.raises(ValueError, match="crossnobis needs runs="):
        searchlight_rdms(data, [0, 1, 0, 1], mask=mask, method="crossnobis", threshold=0.5)


@pytest.mark.parametrize("precision_method", ["diag", "full", "shrinkage_diag", "shrinkage_eye"])
def test_singular_noise_covariance_names_the_sphere(rng, precision_method):
    """A voxel whose residuals are constant has no noise variance: its spheres' covariances cannot be
    inverted and the error names a sphere holding it (``shrinkage_eye`` shrinks towards a positive multiple
    of the identity, so its covariances stay invertible)."""
    conditions, runs = np.tile(np.arange(3), 2), np.repeat([0, 1], 3)
    residuals = rng.normal(size=(5, 5, 5, 10))
    residuals[2, 2, 2] = 1.0  # constant over the residuals
    args = dict(mask=mask_img(np.ones((5, 5, 5), bool)), radius=1.5, threshold=0.5, method="crossnobis", runs=runs,
                residuals=img(residuals), precision_method=precision_method)
    data = img(rng.normal(size=(5, 5, 5, 6)))
    if precision_method == "shrinkage_eye":
        assert np.isfinite(searchlight_rdms(data, conditions, **args).dissimilarities).all()
        return
    with pytest.raises(ValueError, match=r"covariance of the sphere centred on voxel \(\d, \d, \d\) is singular "
                                         rf"under precision_method='{precision_method}'"):
        searchlight_rdms(data, conditions, **args)


@pytest.mark.parametrize("method", ["correlation", "euclidean", "crossnobis"])
def test_nan_voxels_inside_spheres_are_named(rng, method):
    values = rng.normal(size=(6, 6, 6, 4))
    values[0, 1, 1, 2] = np.nan
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    design = dict(runs=[0, 0, 1, 1], method=method) if method == "crossnobis" else dict(method=method)
    conditions = [0, 1, 0, 1] if method == "crossnobis" else np.arange(4)
    with pytest.raises(ValueError, match=r"1 voxel\(s\) inside the searchlight spheres are NaN/inf .*\(0, 1, 1\)"):
        searchlight_rdms(img(values), conditions, mask=mask_img(mask), radius=2, threshold=0.3, **design)
    # spheres kept inside the mask never touch it
    rdms = searchlight_rdms(img(values), conditions, mask=mask_img(mask), radius=2, threshold=0.3,
                            truncate_at_boundary=True, **design)
    assert np.isfinite(rdms.dissimilarities).all()
