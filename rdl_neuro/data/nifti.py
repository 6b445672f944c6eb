"""fMRI to RDMs: NIfTI beta images + ROI mask or atlas -> rsatoolbox Dataset -> rsatoolbox RDMs.

Owns :func:`rdms_from_nifti` (also importable from ``rdl_neuro`` and ``rdl_neuro.data``). Images
are read with nibabel; the RDMs are computed by rsatoolbox's ``calc_rdm``
(and noise precisions by ``rsatoolbox.data.noise.prec_from_residuals``), so
the numbers are rsatoolbox's own.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from rdl_neuro.data.ids import plain_ids
from rdl_neuro.io import reading
from rdl_neuro.rdm.calc import RSATOOLBOX_MEASURE

if TYPE_CHECKING:
    import nibabel as nib
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import RDMs

__all__ = ["rdms_from_nifti", "DroppedVoxelsWarning", "METHODS", "DISSIMILARITY_MEASURES", "Volumes", "as_ids",
           "check_design", "check_same_space", "read_roi_array"]

#: dissimilarity methods accepted by :func:`rdms_from_nifti`
METHODS = ("correlation", "euclidean", "sqeuclidean", "crossnobis")
#: rsatoolbox's ``dissimilarity_measure`` of each of :data:`METHODS`: the library's names
#: (``rdl_neuro.rdm.calc.RSATOOLBOX_MEASURE``) plus crossnobis
DISSIMILARITY_MEASURES = {m: RSATOOLBOX_MEASURE.get(m, m) for m in METHODS}

ImageLike = Union[str, os.PathLike, "nib.spatialimages.SpatialImage"]
ImagesLike = Union[ImageLike, Sequence[ImageLike]]

# affines written by different tools agree to float32 precision, not exactly
_AFFINE_ATOL = 1e-4


class DroppedVoxelsWarning(UserWarning):
    """Voxels were dropped from an ROI because they are NaN/inf or constant across volumes."""


# --------------------------------------------------------------------------- #
# reading images
# --------------------------------------------------------------------------- #
_NIFTI_EXPECTED = "a NIfTI image (.nii or .nii.gz)"


def _describe(obj: Any) -> str:
    if isinstance(obj, (str, os.PathLike)):
        return str(obj)
    fname = getattr(obj, "get_filename", lambda: None)()
    return str(fname) if fname else f"in-memory {type(obj).__name__} of shape {getattr(obj, 'shape', '?')}"


def _load_image(obj: Any, what: str) -> nib.spatialimages.SpatialImage:
    import nibabel as nib

    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
        with reading(path, _NIFTI_EXPECTED, also=(nib.filebasedimages.ImageFileError,)):
            return nib.load(path)
    if isinstance(obj, nib.spatialimages.SpatialImage):
        return obj
    raise TypeError(f"{what} must be a nibabel image or a path to one, got {type(obj).__name__}")


def _image_data(img: Any, name: str) -> np.ndarray:
    """The image's array (native dtype, scaling applied); a truncated or corrupt file is named."""
    import nibabel as nib

    with reading(img.get_filename() or name, _NIFTI_EXPECTED, also=(nib.filebasedimages.ImageFileError,)):
        return np.asanyarray(img.dataobj)


def _affine(img: Any) -> np.ndarray:
    # in-memory images built with affine=None still carry a header affine
    aff = img.affine if img.affine is not None else img.header.get_best_affine()
    return np.asarray(aff, dtype=np.float64)


def check_same_space(shape_a: tuple, affine_a: np.ndarray, name_a: str,
                     shape_b: tuple, affine_b: np.ndarray, name_b: str) -> None:
    """Raise a ValueError naming both images unless they share one grid (shape and affine)."""
    if tuple(shape_a) != tuple(shape_b):
        raise ValueError(f"{name_a} and {name_b} differ in shape: {name_a} {tuple(shape_a)} vs "
                         f"{name_b} {tuple(shape_b)}; resample one onto the other's grid")
    if not np.allclose(affine_a, affine_b, rtol=0.0, atol=_AFFINE_ATOL):
        raise ValueError(f"{name_a} and {name_b} differ in affine (voxel-to-world transform):\n"
                         f"{name_a} affine:\n{np.array2string(np.asarray(affine_a), precision=4)}\n"
                         f"{name_b} affine:\n{np.array2string(np.asarray(affine_b), precision=4)}\n"
                         "resample one onto the other's grid")


class Volumes:
    """A stack of 3D volumes on one grid, read lazily: only the requested voxels are kept."""

    def __init__(self, images: ImagesLike, what: str) -> None:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError(f"{what}: no images given")
        self.what = what
        self.images = []
        self.sources: list[str] = []
        self.counts: list[int] = []
        for i, item in enumerate(items):
            name = f"{what}[{i}] ({_describe(item)})" if len(items) > 1 else f"{what} ({_describe(item)})"
            img = _load_image(item, name)
            shape = tuple(img.shape)
            if len(shape) == 3:
                count = 1
            elif len(shape) == 4:
                count = shape[3]
            else:
                raise ValueError(f"{name} has shape {shape}; expected 3D volumes or a 4D series")
            if not self.images:
                self.shape, self.affine, self.first = shape[:3], _affine(img), name
            else:
                check_same_space(self.shape, self.affine, self.first, shape[:3], _affine(img), name)
            self.images.append(img)
            self.sources.append(name)
            self.counts.append(count)
        self.n = int(sum(self.counts))

    def extract(self, voxels: np.ndarray) -> np.ndarray:
        """``(n_volumes, n_voxels)`` float64 values at a boolean 3D mask."""
        return np.ascontiguousarray(self.extract_by_voxel(voxels).T)

    def extract_by_voxel(self, voxels: np.ndarray) -> np.ndarray:
        """``(n_voxels, n_volumes)`` float64 values at a boolean 3D mask: a voxel's volumes side by side (the
        layout of a 4D image, read without a transposing copy)."""
        # native dtype with scaling applied; no float64 copy of the whole image
        blocks = [_image_data(img, self.first)[voxels].reshape(-1, count)
                  for img, count in zip(self.images, self.counts)]
        if len(blocks) == 1:
            return blocks[0].astype(np.float64, copy=False)
        return np.concatenate(blocks, axis=1, dtype=np.float64)


def read_roi_array(obj: ImageLike, what: str, betas: Volumes) -> tuple[np.ndarray, str]:
    """The 3D array of a mask/atlas image on the betas' grid (checked, finite) and its name for messages."""
    img = _load_image(obj, what)
    name = f"{what} ({_describe(obj)})"
    data = _image_data(img, name)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{name} has shape {data.shape}; expected a 3D image")
    check_same_space(data.shape, _affine(img), name, betas.shape, betas.affine, betas.first)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} contains {int((~np.isfinite(data)).sum())} NaN/inf voxels")
    return data, name


# --------------------------------------------------------------------------- #
# the public function
# --------------------------------------------------------------------------- #
def as_ids(values: Any, what: str, n_volumes: int, volumes_desc: str) -> np.ndarray:
    """``values`` as a 1-D int or str array with one entry per volume (``what`` names it in errors)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "O":  # e.g. a pandas Series of str: accept if homogeneous
        if all(isinstance(v, str) for v in arr):
            arr = arr.astype(str)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr):
            arr = arr.astype(np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional (one entry per volume), got shape {arr.shape}")
    if len(arr) != n_volumes:
        raise ValueError(f"{what} has {len(arr)} entries but the betas have {n_volumes} volumes "
                         f"({volumes_desc}); give exactly one {what[:-1] if what.endswith('s') else what} "
                         "per volume")
    if arr.dtype.kind == "f":
        # the one id rule (rdl_neuro.data.ids): whole numbers read as floats (np.loadtxt) are integers
        try:
            arr = np.asarray(plain_ids(arr), dtype=np.int64)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
    if arr.dtype.kind not in "iuU":
        raise TypeError(f"{what} must be all integers or all strings, got dtype {arr.dtype}")
    return arr


def check_design(vols: Volumes, conditions: Any, runs: Any, method: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The conditions and runs of ``vols``' volumes, checked: ``(conditions (n,), runs (n,) or None)``.

    One condition (and run) per volume, at least 2 distinct conditions; for
    ``crossnobis`` at least 2 runs, each holding every condition.
    """
    if len(vols.sources) == 1:
        vol_desc = vols.sources[0]
    elif len(vols.sources) <= 4:
        vol_desc = ", ".join(f"{s}: {c}" for s, c in zip(vols.sources, vols.counts))
    else:  # long lists of 3D files: keep the message readable
        vol_desc = f"{len(vols.sources)} images, first {vols.sources[0]}, last {vols.sources[-1]}"
    cond = as_ids(conditions, "conditions", vols.n, vol_desc)
    unique_cond = np.unique(cond)
    if len(unique_cond) < 2:
        raise ValueError(f"an RDM needs at least 2 distinct conditions, got {unique_cond.tolist()}")
    run = None if runs is None else as_ids(runs, "runs", vols.n, vol_desc)
    if method == "crossnobis":
        if run is None:
            raise ValueError("crossnobis needs runs= (one run/session label per volume) "
                             "to cross-validate over")
        unique_runs = np.unique(run)
        if len(unique_runs) < 2:
            raise ValueError(f"crossnobis needs at least 2 runs to cross-validate, got a single run "
                             f"{unique_runs.tolist()}; use method='sqeuclidean' for one run")
        for r in unique_runs:
            missing = np.setdiff1d(unique_cond, cond[run == r])
            if len(missing):
                raise ValueError(f"crossnobis needs every condition in every run: run {r.item()!r} lacks "
                                 f"condition(s) {missing[:10].tolist()}")
    return cond, run


def _roi_list(mask: ImageLike | None, atlas: ImageLike | None,
              labels: Sequence[int] | Mapping[int, str] | None, roi_name: str | None,
              betas: Volumes) -> list[dict[str, Any]]:
    """[{'roi': name, 'label': int|None, 'voxels': bool (X, Y, Z)}] in output order."""
    if (mask is None) == (atlas is None):
        raise ValueError("give exactly one of mask= (a binary ROI image) or atlas= (an integer label "
                         f"image){' - both were given' if mask is not None else ''}")
    if mask is not None:
        if labels is not None:
            raise ValueError("labels= selects atlas labels; it cannot be used with mask=")
        data, name = read_roi_array(mask, "mask", betas)
        values = np.unique(data)
        if not np.all(np.isin(values, (0, 1))):
            extra = values[~np.isin(values, (0, 1))][:5]
            raise ValueError(f"{name} is not binary: it has values other than 0 and 1 (e.g. {extra.tolist()}); "
                             "pass an integer label image as atlas= instead")
        voxels = data.astype(bool)
        if not voxels.any():
            raise ValueError(f"{name} is empty: it selects no voxels")
        default = Path(_describe(mask)).name.split(".")[0] if isinstance(mask, (str, os.PathLike)) else "mask"
        return [{"roi": roi_name or default, "label": None, "voxels": voxels, "source": name}]

    data, name = read_roi_array(atlas, "atlas", betas)
    if not np.all(np.equal(np.mod(data, 1), 0)):
        raise ValueError(f"{name} is not an integer label image (it has non-integer values)")
    data = data.astype(np.int64)
    if labels is None:
        wanted = {int(v): str(int(v)) for v in np.unique(data) if v != 0}
        if not wanted:
            raise ValueError(f"{name} is empty: it has no non-zero labels")
    elif isinstance(labels, Mapping):
        wanted = {int(k): str(v) for k, v in labels.items()}
    else:
        wanted = {int(k): str(int(k)) for k in labels}
    if not wanted:
        raise ValueError("labels= is empty: request at least one atlas label")
    if roi_name is not None and not isinstance(labels, Mapping):
        wanted = {k: f"{roi_name}-{v}" for k, v in wanted.items()}
    rois = []
    for lab, roi in wanted.items():
        voxels = data == lab
        if not voxels.any():
            raise ValueError(f"{name}: label {lab} ({roi!r}) is empty: no voxel has that label")
        rois.append({"roi": roi, "label": lab, "voxels": voxels, "source": f"{name} label {lab}"})
    return rois


def rdms_from_nifti(
    betas: ImagesLike,
    conditions: Sequence[int] | Sequence[str] | np.ndarray,
    *,
    mask: ImageLike | None = None,
    atlas: ImageLike | None = None,
    labels: Sequence[int] | Mapping[int, str] | None = None,
    runs: Sequence[int] | Sequence[str] | np.ndarray | None = None,
    method: Literal["correlation", "euclidean", "sqeuclidean", "crossnobis"] = "correlation",
    residuals: ImagesLike | None = None,
    precision_method: Literal["shrinkage_diag", "shrinkage_eye", "diag", "full"] = "shrinkage_diag",
    roi_name: str | None = None,
    return_dataset: bool = False,
) -> RDMs | tuple[RDMs, Dataset | list[Dataset]]:
    """RDMs of fMRI activity patterns in a region of interest (or one per atlas label).

    Parameters
    ----------
    betas : image, path, or sequence of them
        Beta (or t) images: one 4D image/path with one volume per condition
        estimate, or a list of 3D (or 4D) images/paths, concatenated in order.
        All must share one grid (shape and affine).
    conditions : sequence of int or str, length n_volumes
        The condition (stimulus id) of each volume. Repeated ids (e.g. across
        runs) are averaged for ``correlation``/``euclidean``/``sqeuclidean``.
    mask : image or path, optional
        Binary ROI (0/1) on the betas' grid. Give ``mask`` or ``atlas``.
    atlas : image or path, optional
        Integer label image on the betas' grid; one RDM per label.
    labels : sequence of int or mapping int -> name, optional
        Atlas labels to use (default: every non-zero label). A mapping also
        names them (``rdm_descriptors['roi']``); otherwise the roi is the label
        as a string (prefixed ``"{roi_name}-"`` when ``roi_name`` is given).
    runs : sequence, length n_volumes, optional
        Run (or session) of each volume: the cross-validation folds of
        ``crossnobis``. Required for ``crossnobis``.
    method : {"correlation", "euclidean", "sqeuclidean", "crossnobis"}
        ``correlation``: 1 - Pearson r (rsatoolbox ``correlation``).
        ``sqeuclidean``: squared Euclidean distance / n_voxels, exactly rsatoolbox's
        ``euclidean`` (dissimilarity_measure ``'squared euclidean'``).
        ``euclidean``: the true Euclidean distance, ``sqrt(n_voxels * sqeuclidean)``
        (the project's naming; dissimilarity_measure ``'euclidean'``).
        ``crossnobis``: rsatoolbox's leave-one-run-out cross-validated squared
        Mahalanobis distance / n_voxels, unbiased (0 in expectation for
        identical conditions); every condition must occur in every run.
    residuals : image, path, or sequence of them, optional
        Only for ``crossnobis``: GLM residual volumes on the betas' grid. The
        noise precision is ``rsatoolbox.data.noise.prec_from_residuals`` of the
        ROI's residuals (one matrix per ROI) with ``precision_method``;
        without residuals the precision is the identity (cross-validated Euclidean).
    precision_method : str
        Covariance estimator passed to ``prec_from_residuals``.
    roi_name : str, optional
        Name of the mask ROI (default: the mask file's stem, or ``"mask"``).
    return_dataset : bool
        Also return the rsatoolbox Dataset(s) the RDMs were computed from.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per ROI over the unique conditions in **sorted** order
        (rsatoolbox's ``calc_rdm`` sorts by the descriptor):
        ``pattern_descriptors['stimulus']``; ``rdm_descriptors`` ``roi``,
        ``label`` (atlas only), ``n_voxels`` (used), ``n_dropped_voxels``
        (NaN/inf or constant across volumes) and ``noise_model`` (``'identity'``
        or ``'residuals:<precision_method>'``, crossnobis only). Ready for
        ``RDMTeacher.from_rsatoolbox``.
    Dataset or list of Dataset
        With ``return_dataset=True``: the Dataset for a mask, a list (one per
        RDM) for an atlas. ``measurements`` ``(n_volumes, n_voxels)``;
        ``obs_descriptors`` ``stimulus``, ``volume`` (and ``run``);
        ``channel_descriptors`` voxel indices ``i``, ``j``, ``k`` and world
        coordinates ``x``, ``y``, ``z`` (mm); ``descriptors`` as the rdm_descriptors.

    Raises
    ------
    ValueError
        Mask/atlas/residuals and betas differ in shape or affine; empty mask or
        label; no usable voxels left; conditions or runs not one per volume;
        crossnobis without runs, with a single run or with a condition missing
        from a run; unknown method.
    FileNotFoundError
        A path does not exist.

    Warns
    -----
    DroppedVoxelsWarning
        Voxels that are NaN/inf in any volume or constant across all volumes
        are dropped; the count per ROI is in the warning and in ``n_dropped_voxels``.

    Examples
    --------
    Images in memory work as well as paths; here 4 conditions in a 3x3x3 volume,
    first the whole volume as one ROI, then an atlas with two labelled regions:

    >>> import numpy as np, nibabel as nib
    >>> from rdl_neuro.data import rdms_from_nifti
    >>> rng = np.random.default_rng(0)
    >>> betas = nib.Nifti1Image(rng.standard_normal((3, 3, 3, 4)), affine=np.eye(4))
    >>> mask = nib.Nifti1Image(np.ones((3, 3, 3), dtype=np.uint8), affine=np.eye(4))
    >>> rdms = rdms_from_nifti(betas, ["face", "house", "cat", "car"], mask=mask)
    >>> rdms.n_rdm, rdms.n_cond, rdms.dissimilarity_measure
    (1, 4, 'correlation')
    >>> atlas = nib.Nifti1Image(np.repeat([1, 2, 2], 9).reshape(3, 3, 3).astype(np.int16), affine=np.eye(4))
    >>> rdms = rdms_from_nifti(betas, ["face", "house", "cat", "car"], atlas=atlas, labels={1: "left", 2: "right"})
    >>> rdms.rdm_descriptors["roi"], rdms.rdm_descriptors["n_voxels"]
    (['left', 'right'], [9, 18])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if residuals is not None and method != "crossnobis":
        raise ValueError(f"residuals are only used by method='crossnobis' (noise precision), "
                         f"not by method={method!r}")
    vols = Volumes(betas, "betas")
    cond, run = check_design(vols, conditions, runs, method)
    res_vols = _residual_volumes(residuals, vols)
    rois = _roi_list(mask, atlas, labels, roi_name, vols)
    # read every image once for all ROIs: columns follow the union's C-order flat indices
    union = np.zeros(vols.shape, dtype=bool)
    for roi in rois:
        union |= roi["voxels"]
    union_flat = np.flatnonzero(union)
    X_union = vols.extract(union)  # (n_volumes, n_union_voxels)
    R_union = res_vols.extract(union) if res_vols is not None else None

    rdm_list, datasets = [], []
    for roi in rois:
        roi_flat = np.flatnonzero(roi["voxels"])
        cols = np.searchsorted(union_flat, roi_flat)
        X = X_union[:, cols]  # (n_volumes, n_voxels_in_roi)
        keep = _usable_voxels(X, roi["source"])
        noise, noise_model = None, None
        if method == "crossnobis":
            noise, noise_model = _noise_precision(R_union, cols[keep], res_vols, roi["source"], precision_method)
        ds = _roi_dataset(X[:, keep], roi, np.flatnonzero(keep), roi_flat, vols, cond, run, noise_model)
        rdm_list.append(_calc_rdm(ds, method, noise))
        datasets.append(ds)
    out = _assemble(rdm_list, datasets, rois, method)
    if not return_dataset:
        return out
    return out, (datasets[0] if atlas is None else datasets)


def _residual_volumes(residuals: ImagesLike | None, vols: Volumes) -> Volumes | None:
    if residuals is None:
        return None
    res_vols = Volumes(residuals, "residuals")
    check_same_space(res_vols.shape, res_vols.affine, res_vols.first, vols.shape, vols.affine, vols.first)
    if res_vols.n < 2:
        raise ValueError(f"residuals: need at least 2 volumes to estimate a noise covariance, got {res_vols.n}")
    return res_vols


def _usable_voxels(X: np.ndarray, source: str) -> np.ndarray:
    """Bool ``(n_voxels,)``: finite in every volume and not constant across them (a constant voxel
    carries no condition information, e.g. outside the brain); warns with the counts of the rest."""
    finite = np.isfinite(X).all(axis=0)
    constant = np.zeros_like(finite)
    constant[finite] = np.ptp(X[:, finite], axis=0) == 0
    keep = finite & ~constant
    n_dropped = int((~keep).sum())
    if not keep.any():
        raise ValueError(f"{source}: no usable voxels: all {len(keep)} voxels are NaN/inf "
                         f"({int((~finite).sum())}) or constant across volumes ({int(constant.sum())})")
    if n_dropped:
        warnings.warn(
            f"{source}: dropped {n_dropped} of {len(keep)} voxels "
            f"({int((~finite).sum())} NaN/inf, {int(constant.sum())} constant across volumes); "
            f"n_dropped_voxels={n_dropped} is recorded in rdm_descriptors",
            DroppedVoxelsWarning, stacklevel=3)
    return keep


def _noise_precision(R_union: np.ndarray | None, cols: np.ndarray, res_vols: Volumes | None, source: str,
                     precision_method: str) -> tuple[np.ndarray | None, str]:
    """crossnobis noise precision of the ROI's kept voxels (None: the identity) and its ``noise_model``."""
    if res_vols is None or R_union is None:
        return None, "identity"
    from rsatoolbox.data.noise import prec_from_residuals

    R = R_union[:, cols]
    if not np.isfinite(R).all():
        raise ValueError(f"residuals ({res_vols.first}): {int((~np.isfinite(R)).any(axis=0).sum())} "
                         f"voxels of {source} are NaN/inf in the residuals")
    return prec_from_residuals(R, method=precision_method), f"residuals:{precision_method}"


def _roi_dataset(X: np.ndarray, roi: dict[str, Any], kept: np.ndarray, roi_flat: np.ndarray, vols: Volumes,
                 cond: np.ndarray, run: np.ndarray | None, noise_model: str | None) -> Dataset:
    """The rsatoolbox Dataset of an ROI's kept voxels ``X (n_volumes, n_kept)``: voxel indices and world
    coordinates as channel descriptors, stimulus/volume/run as observation descriptors."""
    from rsatoolbox.data import Dataset

    ijk = np.stack(np.unravel_index(roi_flat[kept], vols.shape), axis=1)
    xyz = ijk @ vols.affine[:3, :3].T + vols.affine[:3, 3]
    descriptors: dict[str, Any] = {"roi": roi["roi"]}
    if roi["label"] is not None:
        descriptors["label"] = roi["label"]
    descriptors["n_voxels"] = len(kept)
    descriptors["n_dropped_voxels"] = len(roi_flat) - len(kept)
    if noise_model is not None:
        descriptors["noise_model"] = noise_model
    obs = {"stimulus": cond.copy(), "volume": np.arange(vols.n)}
    if run is not None:
        obs["run"] = run.copy()
    return Dataset(
        X, descriptors=descriptors, obs_descriptors=obs,
        channel_descriptors={"i": ijk[:, 0], "j": ijk[:, 1], "k": ijk[:, 2],
                             "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]},
    )


def _calc_rdm(ds: Dataset, method: str, noise: np.ndarray | None) -> RDMs:
    """rsatoolbox's ``calc_rdm`` of one ROI (``euclidean`` is computed as rsatoolbox's squared one and
    converted in ``_assemble``), averaging repeated conditions."""
    from rsatoolbox.rdm import calc_rdm

    with warnings.catch_warnings():
        # rsatoolbox tries to carry int descriptors that vary within a condition (volume, run)
        # into a NaN-filled int array and numpy warns; we keep only `stimulus` anyway
        warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        # average_dataset_by starts from np.nan * np.empty(...), which warns when the
        # uninitialised memory happens to hold inf; the values are overwritten
        warnings.filterwarnings("ignore", "invalid value encountered in multiply", RuntimeWarning)
        # a pattern flat across voxels gives NaN correlations: reported as an error in _assemble
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        if method == "crossnobis":
            return calc_rdm(ds, method="crossnobis", descriptor="stimulus", cv_descriptor="run", noise=noise)
        return calc_rdm(ds, method="correlation" if method == "correlation" else "euclidean", descriptor="stimulus")


def _assemble(rdm_list: list[RDMs], datasets: list[Dataset], rois: list[dict[str, Any]], method: str) -> RDMs:
    """One ``RDMs`` of every ROI's RDM, with the ROI descriptors; NaN dissimilarities are an error naming
    the conditions, and ``euclidean`` is the square root of ``n_voxels`` times rsatoolbox's squared one."""
    from rsatoolbox.rdm import RDMs

    stimulus = np.asarray(rdm_list[0].pattern_descriptors["stimulus"])
    for rdm, roi in zip(rdm_list[1:], rois[1:]):
        # calc_rdm sorts every RDM by stimulus; a mismatch would mean rows not matching by id
        if not np.array_equal(np.asarray(rdm.pattern_descriptors["stimulus"]), stimulus):
            raise RuntimeError(f"internal error: stimulus order differs for {roi['source']}")
    dissimilarities = np.concatenate([r.dissimilarities for r in rdm_list])
    if np.isnan(dissimilarities).any():
        _raise_nan_conditions(dissimilarities, stimulus, datasets, rois, method)
    if method == "euclidean":
        n_vox = np.array([ds.n_channel for ds in datasets], dtype=np.float64)[:, None]
        # rsatoolbox's euclidean is sum of squares / n_channels; clip rounding below 0 before sqrt
        dissimilarities = np.sqrt(np.clip(dissimilarities * n_vox, 0.0, None))
    keys = list(datasets[0].descriptors)
    return RDMs(
        dissimilarities,
        dissimilarity_measure=DISSIMILARITY_MEASURES[method],
        descriptors={"cv_descriptor": "run"} if method == "crossnobis" else {},
        rdm_descriptors={k: [ds.descriptors[k] for ds in datasets] for k in keys},
        pattern_descriptors={"stimulus": stimulus.copy()},
    )


def _raise_nan_conditions(dissimilarities: np.ndarray, stimulus: np.ndarray, datasets: list[Dataset],
                          rois: list[dict[str, Any]], method: str) -> None:
    """Correlation is undefined for a pattern that is flat across voxels (e.g. a 1-voxel ROI): name the
    first ROI with NaN dissimilarities and its conditions."""
    from scipy.spatial.distance import squareform

    bad_roi = int(np.flatnonzero(np.isnan(dissimilarities).any(axis=1))[0])
    sq = squareform(dissimilarities[bad_roi], checks=False)
    n_nan = np.isnan(sq).sum(axis=1)
    # a flat pattern makes its whole row NaN; fall back to any NaN row
    bad = stimulus[n_nan == len(stimulus) - 1] if (n_nan == len(stimulus) - 1).any() else stimulus[n_nan > 0]
    raise ValueError(f"{rois[bad_roi]['source']}: {method} dissimilarities are NaN for condition(s) "
                     f"{bad[:10].tolist()}: their patterns are constant across the ROI's "
                     f"{datasets[bad_roi].n_channel} voxels")
