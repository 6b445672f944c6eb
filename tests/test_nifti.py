"""Tests of rdl_neuro.data.nifti.rdms_from_nifti: NIfTI betas + mask/atlas -> rsatoolbox RDMs.

Every number is checked against rsatoolbox's own calc_rdm / prec_from_residuals
(or scipy) on the same masked array; the images are written with nibabel.
"""
from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
from rsatoolbox.data import Dataset
from rsatoolbox.data.noise import prec_from_residuals
from rsatoolbox.rdm import calc_rdm
from scipy.spatial.distance import pdist, squareform

from rdl_neuro.data.nifti import DroppedVoxelsWarning, rdms_from_nifti

# rsatoolbox's calc_rdm, called directly below as the reference, warns when it averages
# observations whose int descriptors (run) differ, and when np.nan * np.empty(...) meets
# uninitialised inf; both harmless for the reference values
pytestmark = [
    pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning:rsatoolbox"),
]

SHAPE = (6, 6, 6)
AFFINE = np.array([[2.0, 0, 0, -6], [0, 2.0, 0, -8], [0, 0, 2.5, 4], [0, 0, 0, 1]])
N_COND = 8
CATEGORY = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # conditions 0-3 vs 4-7


def roi_mask() -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[1:4, 1:4, 1:4] = True  # 27 voxels
    return m


def noise_region() -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[:, :, 5] = True  # 36 voxels, disjoint from the ROI
    return m


def img(data: np.ndarray, affine: np.ndarray = AFFINE) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data), affine)


def mask_img(mask: np.ndarray, affine: np.ndarray = AFFINE) -> nib.Nifti1Image:
    return nib.Nifti1Image(mask.astype(np.uint8), affine)


@pytest.fixture
def planted(rng: np.random.Generator) -> np.ndarray:
    """(6, 6, 6, 8) betas: two categories with distinct ROI patterns, noise elsewhere."""
    data = rng.normal(size=SHAPE + (N_COND,))
    roi = roi_mask()
    protos = rng.normal(size=(2, roi.sum())) * 2.0
    for c in range(N_COND):
        data[roi, c] = protos[CATEGORY[c]] + 0.3 * rng.normal(size=roi.sum())
    return data


def rsa_rdm(measurements: np.ndarray, conditions, method: str, **kw) -> np.ndarray:
    """rsatoolbox's own RDM (condensed) for a (n_obs, n_channel) array."""
    obs = {"stimulus": np.asarray(conditions)}
    if "runs" in kw:
        obs["run"] = np.asarray(kw.pop("runs"))
    ds = Dataset(measurements, obs_descriptors=obs)
    return calc_rdm(ds, method=method, descriptor="stimulus", **kw).dissimilarities[0]


def within_between(vec: np.ndarray, category: np.ndarray) -> tuple[float, float]:
    sq = squareform(vec)
    same = category[:, None] == category[None, :]
    off = ~np.eye(len(category), dtype=bool)
    return float(sq[same & off].mean()), float(sq[~same].mean())


# --------------------------------------------------------------------------- #
# recovering planted structure, equality with rsatoolbox
# --------------------------------------------------------------------------- #
def test_planted_categories_recovered_and_equal_rsatoolbox(planted):
    conds = np.arange(N_COND)
    rdms = rdms_from_nifti(img(planted), conds, mask=mask_img(roi_mask()), roi_name="IT")
    assert rdms.n_rdm == 1 and rdms.n_cond == N_COND
    assert rdms.dissimilarity_measure == "correlation"
    assert list(rdms.pattern_descriptors["stimulus"]) == list(conds)
    assert rdms.rdm_descriptors["roi"] == ["IT"]
    assert rdms.rdm_descriptors["n_voxels"] == [27]
    assert rdms.rdm_descriptors["n_dropped_voxels"] == [0]

    within, between = within_between(rdms.dissimilarities[0], CATEGORY)
    assert between > 0.8 and within < 0.2 and between > 5 * within

    expected = rsa_rdm(planted[roi_mask()].T, conds, "correlation")
    np.testing.assert_allclose(rdms.dissimilarities[0], expected, rtol=1e-12, atol=1e-12)


def test_atlas_one_rdm_per_label(planted):
    atlas = np.zeros(SHAPE, dtype=np.int16)
    atlas[roi_mask()] = 3
    atlas[noise_region()] = 7
    rdms, datasets = rdms_from_nifti(img(planted), np.arange(N_COND), atlas=img(atlas),
                                     labels={3: "IT", 7: "noise"}, return_dataset=True)
    assert rdms.n_rdm == 2 and len(datasets) == 2
    assert rdms.rdm_descriptors["roi"] == ["IT", "noise"]
    assert rdms.rdm_descriptors["label"] == [3, 7]
    assert rdms.rdm_descriptors["n_voxels"] == [27, 36]
    for r, region in enumerate((roi_mask(), noise_region())):
        np.testing.assert_allclose(rdms.dissimilarities[r],
                                   rsa_rdm(planted[region].T, np.arange(N_COND), "correlation"), atol=1e-12)
        assert datasets[r].descriptors["roi"] == rdms.rdm_descriptors["roi"][r]
    w_roi, b_roi = within_between(rdms.dissimilarities[0], CATEGORY)
    w_noise, b_noise = within_between(rdms.dissimilarities[1], CATEGORY)
    assert b_roi - w_roi > 0.5  # structure where it was planted ...
    assert abs(b_noise - w_noise) < 0.25  # ... and none in pure noise

    # default: every non-zero label, named by its number (prefixed with roi_name)
    default = rdms_from_nifti(img(planted), np.arange(N_COND), atlas=img(atlas), roi_name="aal")
    assert default.rdm_descriptors["roi"] == ["aal-3", "aal-7"]
    only7 = rdms_from_nifti(img(planted), np.arange(N_COND), atlas=img(atlas), labels=[7])
    assert only7.rdm_descriptors["roi"] == ["7"]
    np.testing.assert_allclose(only7.dissimilarities[0], rdms.dissimilarities[1])


def test_stimulus_ids_sorted_and_rows_follow_ids(planted):
    names = np.array(["h", "c", "f", "a", "g", "b", "e", "d"])
    rdms = rdms_from_nifti(img(planted), names, mask=mask_img(roi_mask()))
    order = np.argsort(names)
    assert list(rdms.pattern_descriptors["stimulus"]) == sorted(names)
    # row k of the RDM is the volume whose condition is the k-th sorted id
    expected = pdist(planted[roi_mask()].T[order], metric="correlation")
    np.testing.assert_allclose(rdms.dissimilarities[0], expected, atol=1e-12)


def test_euclidean_and_sqeuclidean(planted):
    conds = np.arange(N_COND)
    X = planted[roi_mask()].T
    sq = rdms_from_nifti(img(planted), conds, mask=mask_img(roi_mask()), method="sqeuclidean")
    eu = rdms_from_nifti(img(planted), conds, mask=mask_img(roi_mask()), method="euclidean")
    np.testing.assert_allclose(sq.dissimilarities[0], rsa_rdm(X, conds, "euclidean"), rtol=1e-12)
    assert sq.dissimilarity_measure == "squared euclidean"
    # true Euclidean distance (the project's naming), checked against scipy
    np.testing.assert_allclose(eu.dissimilarities[0], pdist(X, "euclidean"), rtol=1e-10)
    assert eu.dissimilarity_measure == "euclidean"


def test_input_forms_agree(planted, tmp_path):
    conds = np.arange(N_COND)
    mask = roi_mask()
    ref = rdms_from_nifti(img(planted), conds, mask=mask_img(mask)).dissimilarities

    vols = [img(planted[..., c]) for c in range(N_COND)]
    from_list = rdms_from_nifti(vols, conds, mask=mask_img(mask)).dissimilarities
    paths = []
    for c, v in enumerate(vols):
        paths.append(tmp_path / f"beta_{c:04d}.nii.gz")
        nib.save(v, paths[-1])
    nib.save(img(planted.astype(np.float32)), tmp_path / "betas4d.nii")
    nib.save(mask_img(mask), tmp_path / "roi_V1.nii.gz")
    from_paths = rdms_from_nifti([str(p) for p in paths], conds, mask=tmp_path / "roi_V1.nii.gz")
    from_4d_path = rdms_from_nifti(tmp_path / "betas4d.nii", conds, mask=tmp_path / "roi_V1.nii.gz")
    mixed = rdms_from_nifti([img(planted[..., :3]), *vols[3:]], conds, mask=mask_img(mask))

    np.testing.assert_allclose(from_list, ref, atol=1e-12)
    np.testing.assert_allclose(from_paths.dissimilarities, ref, atol=1e-12)
    np.testing.assert_allclose(mixed.dissimilarities, ref, atol=1e-12)
    np.testing.assert_allclose(from_4d_path.dissimilarities, ref, atol=1e-5)  # saved as float32
    assert from_paths.rdm_descriptors["roi"] == ["roi_V1"]  # default name: the mask file's stem


def test_dataset_descriptors(planted):
    mask = roi_mask()
    runs = np.repeat([1, 2], 4)
    conds = np.tile([10, 11, 12, 13], 2)
    rdms, ds = rdms_from_nifti(img(planted), conds, mask=mask_img(mask), runs=runs,
                               return_dataset=True)
    assert isinstance(ds, Dataset)
    assert ds.measurements.shape == (N_COND, 27)
    np.testing.assert_array_equal(ds.measurements, planted[mask].T)
    ijk = np.argwhere(mask)  # C order, as mask-indexing flattens
    np.testing.assert_array_equal(np.stack([ds.channel_descriptors[k] for k in "ijk"], 1), ijk)
    xyz = nib.affines.apply_affine(AFFINE, ijk)
    np.testing.assert_allclose(np.stack([ds.channel_descriptors[k] for k in "xyz"], 1), xyz)
    np.testing.assert_array_equal(ds.obs_descriptors["stimulus"], conds)
    np.testing.assert_array_equal(ds.obs_descriptors["run"], runs)
    np.testing.assert_array_equal(ds.obs_descriptors["volume"], np.arange(N_COND))
    assert ds.descriptors["n_voxels"] == 27
    assert list(rdms.pattern_descriptors["stimulus"]) == [10, 11, 12, 13]


def test_runs_are_averaged_per_condition_first(rng):
    n_runs, n_cond = 3, 5
    data = rng.normal(size=SHAPE + (n_runs * n_cond,))
    conds = np.tile(np.arange(n_cond), n_runs)
    runs = np.repeat(np.arange(n_runs), n_cond)
    X = data[roi_mask()].T
    mean_patterns = np.stack([X[conds == c].mean(0) for c in range(n_cond)])
    for method, rsa_method in (("correlation", "correlation"), ("sqeuclidean", "euclidean")):
        rdms = rdms_from_nifti(img(data), conds, mask=mask_img(roi_mask()), runs=runs, method=method)
        np.testing.assert_allclose(rdms.dissimilarities[0],
                                   rsa_rdm(mean_patterns, np.arange(n_cond), rsa_method), atol=1e-12)
        np.testing.assert_allclose(rdms.dissimilarities[0], rsa_rdm(X, conds, rsa_method), atol=1e-12)


# --------------------------------------------------------------------------- #
# crossnobis
# --------------------------------------------------------------------------- #
def crossnobis_data(rng: np.random.Generator, n_runs: int = 8):
    """Conditions 0 and 1 share one true pattern; 2 and 3 are distinct; noise per run."""
    shape = (10, 10, 10)
    mask = np.zeros(shape, dtype=bool)
    mask[1:9, 1:9, 1:9] = True  # 512 voxels
    true = rng.normal(size=(3, mask.sum()))
    patterns = true[[0, 0, 1, 2]]
    data = rng.normal(size=shape + (n_runs * 4,))
    conds = np.tile(np.arange(4), n_runs)
    runs = np.repeat(np.arange(n_runs) + 1, 4)
    data[mask] = (patterns[conds] + rng.normal(size=(n_runs * 4, mask.sum()))).T
    return data, mask, conds, runs, patterns


def test_crossnobis_unbiased_for_identical_conditions(rng):
    data, mask, conds, runs, patterns = crossnobis_data(rng)
    cn = rdms_from_nifti(img(data), conds, mask=mask_img(mask), runs=runs, method="crossnobis")
    sq = rdms_from_nifti(img(data), conds, mask=mask_img(mask), runs=runs, method="sqeuclidean")
    assert cn.dissimilarity_measure == "crossnobis"
    assert cn.rdm_descriptors["noise_model"] == ["identity"]
    d_cn, d_sq = squareform(cn.dissimilarities[0]), squareform(sq.dissimilarities[0])
    # identical conditions: the cross-validated estimate is ~0 (its sd here is ~0.03), while
    # the plain one is biased up by 2 * sigma^2 / n_runs = 0.25
    assert abs(d_cn[0, 1]) < 0.1
    assert d_sq[0, 1] > 0.18
    # distinct conditions: the true squared distance per voxel (~2; estimate's sd ~0.08)
    d_true = squareform(pdist(patterns, "sqeuclidean")) / patterns.shape[1]
    assert abs(d_cn[0, 2] - d_true[0, 2]) < 0.35 and abs(d_cn[2, 3] - d_true[2, 3]) < 0.35
    X = data[mask].T
    np.testing.assert_allclose(cn.dissimilarities[0], rsa_rdm(X, conds, "crossnobis", runs=runs,
                                                               cv_descriptor="run"), atol=1e-12)


def test_crossnobis_with_residual_precision(rng, tmp_path):
    data, mask, conds, runs, _ = crossnobis_data(rng, n_runs=4)
    residuals = rng.normal(size=mask.shape + (30,)) * rng.uniform(0.5, 2.0, size=mask.shape)[..., None]
    nib.save(img(residuals), tmp_path / "res4d.nii.gz")
    cn = rdms_from_nifti(img(data), conds, mask=mask_img(mask), runs=runs, method="crossnobis",
                         residuals=tmp_path / "res4d.nii.gz")
    assert cn.rdm_descriptors["noise_model"] == ["residuals:shrinkage_diag"]
    R = nib.load(tmp_path / "res4d.nii.gz").get_fdata()[mask].T
    prec = prec_from_residuals(R, method="shrinkage_diag")
    expected = rsa_rdm(data[mask].T, conds, "crossnobis", runs=runs, cv_descriptor="run", noise=prec)
    np.testing.assert_allclose(cn.dissimilarities[0], expected, rtol=1e-9, atol=1e-12)
    # a different precision gives a different RDM: the residuals were used
    plain = rdms_from_nifti(img(data), conds, mask=mask_img(mask), runs=runs, method="crossnobis")
    assert not np.allclose(plain.dissimilarities, cn.dissimilarities)


# --------------------------------------------------------------------------- #
# checks: each with its message
# --------------------------------------------------------------------------- #
def test_mask_shape_mismatch_names_both(planted):
    small = np.ones((5, 6, 6), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"differ in shape.*\(5, 6, 6\).*\(6, 6, 6\)"):
        rdms_from_nifti(img(planted), np.arange(N_COND), mask=mask_img(small))


def test_mask_affine_mismatch_names_both(planted):
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    with pytest.raises(ValueError, match=r"differ in affine(.|\n)*-4\.(.|\n)*-6\."):
        rdms_from_nifti(img(planted), np.arange(N_COND), mask=mask_img(roi_mask(), shifted))


def test_betas_list_on_different_grids(planted):
    shifted = AFFINE.copy()
    shifted[1, 1] = 3.0
    vols = [img(planted[..., 0]), img(planted[..., 1], shifted)]
    with pytest.raises(ValueError, match=r"betas\[0\].*betas\[1\].*differ in affine"):
        rdms_from_nifti(vols, [0, 1], mask=mask_img(roi_mask()))


def test_residuals_grid_mismatch(rng):
    data, mask, conds, runs, _ = crossnobis_data(rng, n_runs=2)
    res = img(rng.normal(size=(10, 10, 7, 5)))
    with pytest.raises(ValueError, match=r"residuals.*differ in shape.*\(10, 10, 7\).*\(10, 10, 10\)"):
        rdms_from_nifti(img(data), conds, mask=mask_img(mask), runs=runs, method="crossnobis", residuals=res)


def test_empty_mask(planted):
    with pytest.raises(ValueError, match="mask .* is empty"):
        rdms_from_nifti(img(planted), np.arange(N_COND), mask=mask_img(np.zeros(SHAPE, bool)))


def test_empty_atlas_label(planted):
    atlas = roi_mask().astype(np.int16) * 3
    with pytest.raises(ValueError, match=r"label 7 .* is empty"):
        rdms_from_nifti(img(planted), np.arange(N_COND), atlas=img(atlas), labels=[3, 7])
    with pytest.raises(ValueError, match="no non-zero labels"):
        rdms_from_nifti(img(planted), np.arange(N_COND), atlas=img(np.zeros(SHAPE, np.int16)))


def test_nan_and_constant_voxels_dropped_with_warning(planted):
    mask = roi_mask()
    data = planted.copy()
    data[1, 1, 1, 4] = np.nan
    data[1, 1, 2, :] = np.inf
    data[2, 2, 2, :] = 0.0
    data[3, 3, 3, :] = 5.0
    data[1, 2, 3, :] = -1.5
    with pytest.warns(DroppedVoxelsWarning, match=r"dropped 5 of 27 voxels \(2 NaN/inf, 3 constant"):
        rdms, ds = rdms_from_nifti(img(data), np.arange(N_COND), mask=mask_img(mask), return_dataset=True)
    assert rdms.rdm_descriptors["n_dropped_voxels"] == [5]
    assert rdms.rdm_descriptors["n_voxels"] == [22]
    assert ds.n_channel == 22 and np.isfinite(ds.measurements).all()
    X = data[mask].T
    good = np.isfinite(X).all(0) & (np.ptp(np.nan_to_num(X), axis=0) > 0)
    np.testing.assert_allclose(rdms.dissimilarities[0], rsa_rdm(X[:, good], np.arange(N_COND), "correlation"))


def test_no_usable_voxels(planted):
    data = planted.copy()
    data[roi_mask()] = 1.0
    with pytest.raises(ValueError, match=r"no usable voxels: all 27 voxels .* constant across volumes \(27\)"):
        rdms_from_nifti(img(data), np.arange(N_COND), mask=mask_img(roi_mask()))


def test_condition_count_mismatch(planted):
    with pytest.raises(ValueError, match="conditions has 7 entries but the betas have 8 volumes"):
        rdms_from_nifti(img(planted), np.arange(7), mask=mask_img(roi_mask()))
    with pytest.raises(ValueError, match="runs has 3 entries but the betas have 8 volumes"):
        rdms_from_nifti(img(planted), np.arange(8), runs=[1, 2, 3], mask=mask_img(roi_mask()))


def test_crossnobis_single_run(planted):
    with pytest.raises(ValueError, match=r"crossnobis needs at least 2 runs.*single run \[1\]"):
        rdms_from_nifti(img(planted), np.arange(N_COND) % 4, runs=np.ones(N_COND, int),
                        mask=mask_img(roi_mask()), method="crossnobis")
    with pytest.raises(ValueError, match=r"crossnobis needs runs="):
        rdms_from_nifti(img(planted), np.arange(N_COND) % 4, mask=mask_img(roi_mask()), method="crossnobis")


def test_crossnobis_condition_missing_from_run(planted):
    conds = [0, 1, 2, 3, 0, 1, 2, 2]
    with pytest.raises(ValueError, match=r"run 2 lacks condition\(s\) \[3\]"):
        rdms_from_nifti(img(planted), conds, runs=np.repeat([1, 2], 4), mask=mask_img(roi_mask()),
                        method="crossnobis")


def test_other_input_errors(planted, tmp_path):
    conds = np.arange(N_COND)
    m = mask_img(roi_mask())
    with pytest.raises(ValueError, match="method must be one of"):
        rdms_from_nifti(img(planted), conds, mask=m, method="cosine")
    with pytest.raises(ValueError, match="only used by method='crossnobis'"):
        rdms_from_nifti(img(planted), conds, mask=m, residuals=img(planted))
    with pytest.raises(ValueError, match="exactly one of mask= .* or atlas="):
        rdms_from_nifti(img(planted), conds)
    with pytest.raises(ValueError, match="both were given"):
        rdms_from_nifti(img(planted), conds, mask=m, atlas=m)
    with pytest.raises(ValueError, match=r"not binary.*\[2\].*atlas="):
        rdms_from_nifti(img(planted), conds, mask=img(roi_mask().astype(np.int16) * 2))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.nii.gz"))):
        rdms_from_nifti(tmp_path / "nope.nii.gz", conds, mask=m)
    with pytest.raises(TypeError, match="nibabel image or a path"):
        rdms_from_nifti(planted, conds, mask=m)
    # floats follow the one id rule: whole numbers are integers (see test_identity), fractions raise
    with pytest.raises(ValueError, match="not a whole number"):
        rdms_from_nifti(img(planted), conds.astype(float) + 0.5, mask=m)
    with pytest.raises(TypeError, match="integers or all strings"):
        rdms_from_nifti(img(planted), conds.astype(complex), mask=m)
    with pytest.raises(ValueError, match="at least 2 distinct conditions"):
        rdms_from_nifti(img(planted), np.zeros(N_COND, int), mask=m)


def test_flat_pattern_correlation_is_an_error_not_nan(planted):
    one = np.zeros(SHAPE, bool)
    one[2, 2, 2] = True  # correlation over a single voxel is undefined
    with pytest.raises(ValueError, match="NaN for condition.*constant across the ROI's 1 voxels"):
        rdms_from_nifti(img(planted), np.arange(N_COND), mask=mask_img(one))


def test_pandas_conditions_accepted(planted):
    pd = pytest.importorskip("pandas")
    conds = pd.Series([f"s{c}" for c in range(N_COND)])
    rdms = rdms_from_nifti(img(planted), conds, mask=mask_img(roi_mask()))
    assert list(rdms.pattern_descriptors["stimulus"]) == sorted(conds)
