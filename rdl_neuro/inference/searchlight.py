"""Searchlight RSA, second half: every sphere's RDM against model RDMs -> brain maps, and tests across subjects.

``evaluate_searchlight`` streams the sphere RDMs of
``rdl_neuro.data.searchlight`` chunk by chunk into
``rdl_neuro.rdm.compare_rdms`` (any of its methods), so only one score per
sphere and model is kept; under ``torchrun`` the centres are split across the
ranks and gathered back. The result turns into NIfTI images (nibabel) in the
subject's space, one per model.

``searchlight_group_test`` tests the maps of several subjects (on one grid)
voxel by voxel: a one-sample t-test on Fisher-z values, or a sign-flip
permutation test whose maximum statistic over voxels gives family-wise
error (FWE) corrected p-values (Nichols & Holmes 2002).
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rdl_neuro._threads import chunk_workers, one_torch_thread, ordered_map
from rdl_neuro.data.ids import check_id_kinds, plain_ids
from rdl_neuro.data.searchlight import (CHUNKS_PER_TASK, SearchlightData, Spheres, ThreadWorkspaces, Workspace,
                                       index_tensor, prepare_searchlight)
from rdl_neuro.rdm.calc import check_method, subset_rdms
from rdl_neuro.rdm.compare import COMPARE_METHODS, compare_rdms
from rdl_neuro.rdm.interop import from_rsatoolbox, rdm_names

__all__ = ["SearchlightResult", "evaluate_searchlight", "model_matrix", "GroupTestResult",
           "searchlight_group_test", "ALTERNATIVES", "GROUP_TESTS", "correlation_rdm_scores", "FUSED_METHODS",
           "SearchlightCheckpoint", "save_nifti", "file_safe"]

#: alternative hypotheses of the group test
ALTERNATIVES = ("greater", "two-sided", "less")
#: tests across subjects: one-sample t, or sign-flip permutations
GROUP_TESTS = ("t", "permutation")


def _nifti(volume: np.ndarray, affine: np.ndarray) -> Any:
    import nibabel as nib

    img = nib.Nifti1Image(volume.astype(np.float64), affine)
    img.header.set_xyzt_units("mm")
    return img


def file_safe(name: str) -> str:
    """``name`` with every character other than letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def save_nifti(image: Any, path: str | os.PathLike[str]) -> Path:
    """Write a NIfTI image as ``.nii.gz`` atomically (``rdl_neuro.io``; the same bytes every time); returns the path."""
    from rdl_neuro.io import atomic_write_bytes

    return atomic_write_bytes(path, gzip.compress(image.to_bytes(), mtime=0))


@dataclass
class SearchlightResult:
    """Scores of every searchlight sphere against every model RDM.

    Attributes
    ----------
    spheres : Spheres
        The centres (``spheres.centers``) and their grid.
    scores : ndarray ``(n_spheres, n_models)``
        ``compare_rdms(sphere RDM, model RDM, method)``; NaN where the sphere's
        RDM is undefined (a pattern constant over the sphere).
    models : list of str
        Model names (``rdm_names``).
    method : str
        The comparison method.
    rdm_method : str
        The sphere RDMs' dissimilarity.
    """

    spheres: Spheres
    scores: np.ndarray
    models: list[str]
    method: str
    rdm_method: str

    def to_nifti(self, model: str | int | None = None) -> Any:
        """The map of one model as a 3D NIfTI image (float64, NaN outside the centres) in the subject's space.

        ``model`` is a name or an index (default: the only model; required when there are several).
        """
        column = self._column(model)
        return _nifti(self.spheres.to_volume(self.scores[:, column]), self.spheres.affine)

    def _column(self, model: str | int | None) -> int:
        if model is None:
            if len(self.models) != 1:
                raise ValueError(f"{len(self.models)} models were evaluated ({self.models}); say which with model=")
            return 0
        if isinstance(model, (int, np.integer)):
            if not 0 <= model < len(self.models):
                raise IndexError(f"model index {model} out of range for {len(self.models)} models")
            return int(model)
        if model not in self.models:
            raise KeyError(f"no model named {model!r}; the models are {self.models}")
        return self.models.index(model)

    def save(self, folder: str | os.PathLike[str], prefix: str = "searchlight") -> list[Path]:
        """Write one ``<prefix>_<model>.nii.gz`` per model into ``folder`` (atomically); returns the paths."""
        return [save_nifti(self.to_nifti(i), Path(folder) / f"{prefix}_{file_safe(name)}.nii.gz")
                for i, name in enumerate(self.models)]

    def peaks(self) -> Any:
        """A DataFrame with each model's best sphere: ``model, value, i, j, k, x, y, z`` (mm)."""
        import pandas as pd

        ijk = self.spheres.ijk
        xyz = ijk @ self.spheres.affine[:3, :3].T + self.spheres.affine[:3, 3]
        rows = []
        for i, name in enumerate(self.models):
            column = self.scores[:, i]
            if np.isnan(column).all():
                continue
            best = int(np.nanargmax(column))
            rows.append({"model": name, "value": float(column[best]), "i": int(ijk[best, 0]),
                         "j": int(ijk[best, 1]), "k": int(ijk[best, 2]), "x": float(xyz[best, 0]),
                         "y": float(xyz[best, 1]), "z": float(xyz[best, 2])})
        return pd.DataFrame(rows, columns=["model", "value", "i", "j", "k", "x", "y", "z"])


def model_matrix(models: Any, conditions: Sequence[Any], descriptor: str | None = None, *,
                 dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, list[str]]:
    """Model RDMs over ``conditions`` (in that order): ``(tensor (n_models, n_pairs), names)``.

    ``models`` is an rsatoolbox ``RDMs`` or a sequence of them; rows and
    columns are matched by ``pattern_descriptors[descriptor]`` (the rule of
    ``rdl_neuro.data.ids``), and model stimuli that are not among the conditions
    are dropped. A condition that a model lacks is a ValueError naming it; ids
    of kinds that can never match (int conditions, str model ids) a TypeError.
    """
    from rsatoolbox.rdm import RDMs

    items = [models] if isinstance(models, RDMs) else list(models)
    if not items or not all(isinstance(m, RDMs) for m in items):
        raise TypeError("models must be an rsatoolbox RDMs or a non-empty sequence of them")
    wanted = plain_ids(conditions)
    vectors, names = [], []
    for item in items:
        values, ids = from_rsatoolbox(item, descriptor, dtype=dtype)
        index = {sid: i for i, sid in enumerate(ids)}
        missing = [c for c in wanted if c not in index]
        label = ", ".join(rdm_names(item))
        check_id_kinds(wanted, ids, "the conditions", f"model RDM {label!r}")
        if missing:
            raise ValueError(f"model RDM {label!r} lacks {len(missing)} of the {len(wanted)} conditions: "
                             f"{missing[:10]}{' ...' if len(missing) > 10 else ''} (its stimulus ids start "
                             f"{ids[:5]}; the conditions start {wanted[:5]})")
        sub = subset_rdms(values, [index[c] for c in wanted])
        if bool(torch.isnan(sub).any()):
            raise ValueError(f"model RDM {label!r} has NaN dissimilarities among the conditions")
        vectors.append(sub)
        names.extend(rdm_names(item))
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # two models of one name would overwrite each other's map
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return torch.cat(vectors), unique


def correlation_rdm_scores(correlations: torch.Tensor, models: torch.Tensor, method: str) -> torch.Tensor:
    """``compare_rdms(1 - r, models, method)`` for ``method`` "corr" or "cosine", from full correlation matrices.

    The RDMs ``1 - r`` are never formed: Pearson's or the cosine of an RDM
    with a model needs only the sums of ``r``, ``r**2`` and ``r * m`` over the
    pairs, which come from the symmetric ``n x n`` matrices directly (a sum
    over the whole matrix, less the diagonal, halved).

    Parameters
    ----------
    correlations : Tensor ``(b, n, n)``
        Symmetric, e.g. ``SearchlightData.correlations_at``; NaN makes the score NaN.
    models : Tensor ``(n_models, n_pairs)``
        Condensed model RDMs over the same conditions.
    method : {"corr", "cosine"}

    Returns
    -------
    Tensor ``(b, n_models)``

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.rdm import compare_rdms
    >>> x = torch.randn(2, 6, 5, dtype=torch.float64)
    >>> r = torch.stack([torch.corrcoef(v.T) for v in x])
    >>> rows, cols = torch.triu_indices(5, 5, 1)
    >>> models = torch.rand(3, 10, dtype=torch.float64)
    >>> fused = correlation_rdm_scores(r, models, "corr")
    >>> bool(torch.allclose(fused, compare_rdms(1 - r[:, rows, cols], models, "corr")))
    True
    """
    # (on a copy: the scores zero the diagonal)
    return _fused_scores(correlations.clone(), _fused_models(models, method, correlations.shape[1]), method)


def _fused_models(models: torch.Tensor, method: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the fused scores need of the models, computed once: ``(squares (n_models, n*n), sums, sums of
    squares)``; for "corr" of the models centred over the pairs (Pearson(1 - r, m) = -Pearson(r, m))."""
    if method not in FUSED_METHODS:
        raise ValueError(f"method must be one of {FUSED_METHODS}, got {method!r}")
    if method == "corr":
        models = models - models.mean(dim=1, keepdim=True)
    rows, cols = torch.triu_indices(n, n, 1, device=models.device)
    square = torch.zeros(len(models), n, n, dtype=models.dtype, device=models.device)
    square[:, rows, cols] = models
    square = square + square.transpose(1, 2)
    return square.reshape(len(models), -1), models.sum(dim=1), (models * models).sum(dim=1)


def _fused_scores(correlations: torch.Tensor, fused: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                  method: str) -> torch.Tensor:
    """Scores ``(b, n_models)`` from symmetric ``correlations (b, n, n)``, whose diagonal it overwrites
    with zeros (the sums over the whole matrix are then twice the sums over the pairs)."""
    squares, sum_m, sum_m2 = fused
    b, n, _ = correlations.shape
    n_pairs = n * (n - 1) // 2
    torch.diagonal(correlations, dim1=1, dim2=2).zero_()
    flat = correlations.view(b, -1)
    # twice the sums over the pairs of r, r^2 and r * m (a plain sum, a norm and matrix-vector products:
    # the fastest reductions of torch on the CPU)
    sum_r = flat.sum(dim=1)
    sum_r2 = torch.linalg.vector_norm(flat, dim=1).square_()
    sum_rm = torch.stack([flat @ m for m in squares], dim=1)  # (b, n_models)
    if method == "corr":
        # 4 x (the sum of squared deviations of r over the pairs)
        spread = torch.addcmul(2 * sum_r2, sum_r, sum_r, value=-1 / n_pairs)
        return -sum_rm / torch.sqrt(spread[:, None] * sum_m2[None, :])
    sum_d2 = n_pairs - sum_r + sum_r2 / 2  # (1 - r)^2 summed over the pairs
    return (sum_m[None, :] - sum_rm / 2) / torch.sqrt(sum_d2[:, None] * sum_m2[None, :])


#: comparisons that ``evaluate_searchlight`` computes from correlation matrices without forming the RDMs
FUSED_METHODS = ("corr", "cosine")


def _chunk_scores(data: SearchlightData, lo: int, hi: int, models: torch.Tensor, method: str,
                  fused: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
                  workspace: Workspace | None = None) -> torch.Tensor:
    """Scores ``(hi - lo, n_models)`` of the spheres ``lo:hi``; NaN where a sphere's RDM is undefined.
    ``fused``: ``_fused_models`` of the models when the scores come from correlation matrices;
    ``workspace``: the calling thread's buffers for the intermediates."""
    if fused is not None:
        correlations, order = data.correlations_at(slice(lo, hi), return_order=True, workspace=workspace)
        scores = _fused_scores(correlations, fused, method)
        # the correlations come in the order they were computed: put the scores (not the matrices) in order
        return scores.index_select(0, index_tensor(np.argsort(order), scores.device))
    rdms = data.rdms_at(slice(lo, hi), workspace)
    out = torch.full((hi - lo, len(models)), float("nan"), dtype=rdms.dtype, device=rdms.device)
    finite = torch.isfinite(rdms.sum(dim=1))  # a NaN anywhere makes the row's sum NaN
    if bool(finite.any()):
        out[finite] = compare_rdms(rdms[finite], models, method)
    return out


def _parts(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """Blocks ``(lo, hi)`` covering ``start:stop`` with edges on multiples of ``size`` (the same blocks
    whichever process or restart asks, so that saved ones are found again)."""
    edges = sorted({start, stop} | set(range((start // size + 1) * size, stop, size)))
    return list(zip(edges[:-1], edges[1:]))


def _fingerprint(data: SearchlightData, models: torch.Tensor, method: str) -> str:
    """A digest of everything a searchlight's scores depend on (inputs, spheres, models, methods, dtype)."""
    digest = hashlib.sha256()
    for array in (data.spheres.centers, data.spheres.offsets, data.spheres.n_voxels, data.rows,
                  data.table.cpu().numpy(), models.cpu().numpy(),
                  None if data.residuals is None else data.residuals.cpu().numpy()):
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    digest.update(repr((data.method, data.precision_method, data.n_runs, str(data.table.dtype), method,
                        data.spheres.shape, data.conditions.tolist())).encode())
    return digest.hexdigest()


class SearchlightCheckpoint:
    """A folder of finished blocks of searchlight scores, so that a stopped searchlight can be resumed.

    ``manifest.json`` holds a digest of the inputs (betas, spheres, models,
    methods, dtype); each block is ``part-<lo>-<hi>.npy`` (scores of the spheres
    ``lo:hi``, float64), written atomically with ``rdl_neuro.io``. A folder
    whose digest differs is refused (ValueError), so a resume never mixes two
    searchlights; an unreadable block is computed again.

    Parameters
    ----------
    folder : path
    fingerprint : str
        The digest of the inputs.
    clean : bool
        Remove temporaries of killed writes first (only when no other process writes into the folder).
    """

    def __init__(self, folder: str | os.PathLike[str], fingerprint: str, *, clean: bool = True) -> None:
        from rdl_neuro.io import atomic_write_text, remove_stale_temporaries

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if clean:
            remove_stale_temporaries(self.folder)
        manifest = self.folder / "manifest.json"
        if manifest.is_file():
            try:
                found = json.loads(manifest.read_text()).get("fingerprint")
            except (json.JSONDecodeError, OSError, AttributeError):
                found = None
            if found != fingerprint:
                raise ValueError(f"checkpoint folder {self.folder} holds another searchlight (other betas, mask, "
                                 "models or options): use a new folder, or delete this one to start over")
        else:
            atomic_write_text(manifest, json.dumps({"fingerprint": fingerprint}))

    def path(self, lo: int, hi: int) -> Path:
        """The file of the block ``lo:hi``."""
        return self.folder / f"part-{lo:09d}-{hi:09d}.npy"

    def load(self, lo: int, hi: int, n_models: int) -> np.ndarray | None:
        """The saved scores ``(hi - lo, n_models)`` of a block, or None when it is missing or unreadable."""
        path = self.path(lo, hi)
        if not path.is_file():
            return None
        try:
            scores = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            warnings.warn(f"checkpoint block {path} is unreadable ({err}); computing it again", stacklevel=3)
            return None
        return scores if scores.shape == (hi - lo, n_models) else None

    def save(self, lo: int, hi: int, scores: np.ndarray) -> None:
        """Write the scores of the block ``lo:hi`` atomically."""
        from rdl_neuro.io import atomic_write

        atomic_write(self.path(lo, hi), lambda f: np.save(f, scores, allow_pickle=False))


def evaluate_searchlight(
    betas: Any,
    conditions: Any,
    models: Any,
    *,
    mask: Any,
    method: str = "corr",
    radius: float = 2,
    threshold: float = 1.0,
    radius_unit: Literal["voxels", "mm"] = "voxels",
    truncate_at_boundary: bool = False,
    runs: Any = None,
    rdm_method: Literal["correlation", "euclidean", "sqeuclidean", "crossnobis"] = "correlation",
    residuals: Any = None,
    precision_method: Literal["shrinkage_diag", "shrinkage_eye", "diag", "full"] = "shrinkage_diag",
    descriptor: str | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
    distributed: bool | Literal["auto"] = "auto",
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 8192,
) -> SearchlightResult:
    """Searchlight RSA of one subject: every sphere's RDM compared with every model RDM.

    The same numbers as rsatoolbox's ``get_volume_searchlight`` +
    ``get_searchlight_RDMs`` + ``evaluate_models_searchlight`` with
    ``eval_fixed`` (for a fixed model, its evaluation is the comparison).

    Parameters
    ----------
    betas, conditions, mask, radius, threshold, radius_unit, truncate_at_boundary, runs, residuals, precision_method
        As ``rdl_neuro.data.searchlight.prepare_searchlight``.
    models : rsatoolbox RDMs or sequence of them
        Matched to the conditions by ``pattern_descriptors[descriptor]``;
        ``None`` reads ``stimulus``, else ``index`` with a warning (``rdl_neuro.rdm.stimulus_ids_of``).
    method : str
        Any ``rdl_neuro.rdm.COMPARE_METHODS`` (rsatoolbox's names).
    rdm_method : {"correlation", "euclidean", "sqeuclidean", "crossnobis"}
        The sphere RDMs' dissimilarity.
    chunk_size : int, optional
        Spheres per batch (default: about 64 MB of intermediates).
    device, dtype
        Where and in which precision the RDMs are computed. float64 (the default) gives rsatoolbox's
        numbers (to 1e-10); float32 is about twice as fast but loses precision where all conditions share a
        large component, such as a voxel's mean response (README: measured errors).
    progress : bool
        Show a progress bar (rank 0 only).
    distributed : bool or "auto"
        Under ``torch.distributed`` (e.g. ``torchrun``) each rank computes a
        contiguous block of centres and every rank receives all scores
        (``"auto"``: whenever a process group with several ranks is initialised).
    checkpoint : path, optional
        A folder where every finished block of ``checkpoint_every`` spheres is
        written (atomically): a searchlight that is stopped (Ctrl-C, a killed
        job) and called again with the same inputs and folder loads those
        blocks and computes only the rest, giving the uninterrupted result. A
        folder made for other inputs is a ValueError (see :class:`SearchlightCheckpoint`).
    checkpoint_every : int
        Spheres per checkpointed block.

    Returns
    -------
    SearchlightResult

    Notes
    -----
    Threads: every torch op runs on one thread during the call (``torch.set_num_threads(1)``, restored
    after: many small parallel ops would wait on each other), and on the CPU as many chunks of spheres as
    torch had threads on entry (``torch.get_num_threads()``) are computed side by side in Python threads;
    the scores are the same, bit for bit, whatever the thread count.

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from rdl_neuro.rdm import to_rsatoolbox
    >>> rng = np.random.default_rng(0)
    >>> betas = nib.Nifti1Image(rng.normal(size=(6, 6, 6, 4)), np.eye(4))
    >>> mask = nib.Nifti1Image(np.ones((6, 6, 6), np.uint8), np.eye(4))
    >>> model = to_rsatoolbox(np.array([1.0, 2, 3, 4, 5, 6]), [1, 2, 3, 4], rdm_descriptors={"name": ["m"]})
    >>> result = evaluate_searchlight(betas, [1, 2, 3, 4], model, mask=mask, threshold=0.5)
    >>> result.scores.shape, result.to_nifti().shape
    ((216, 1), (6, 6, 6))
    """
    from rdl_neuro._progress import progress_bar
    from rdl_neuro.train.distributed import gather_no_grad, world_size_and_rank

    check_method(method, COMPARE_METHODS, "comparison method")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    if distributed not in ("auto", True, False):
        raise ValueError(f"distributed must be 'auto', True or False, got {distributed!r}")
    # many small torch ops: each on one torch thread, the cores used by chunks side by side (rdl_neuro._threads)
    with one_torch_thread() as threads:
        data = prepare_searchlight(betas, conditions, mask=mask, radius=radius, threshold=threshold,
                                   radius_unit=radius_unit, truncate_at_boundary=truncate_at_boundary, runs=runs,
                                   method=rdm_method, residuals=residuals, precision_method=precision_method,
                                   device=device, dtype=dtype)
        model_rdms, names = model_matrix(models, data.conditions, descriptor, dtype=dtype)
        model_rdms = model_rdms.to(data.table.device)
        world, rank = world_size_and_rank() if distributed is not False else (1, 0)
        if distributed is True and world == 1:
            raise ValueError("distributed=True but no torch.distributed process group with several ranks is "
                             "running")
        start, stop = data.spheres.rank_range(world, rank)
        parts = None
        if checkpoint is not None:
            parts = SearchlightCheckpoint(checkpoint, _fingerprint(data, model_rdms, method), clean=world == 1)
        fused = _fused_models(model_rdms, method, data.n_conditions) \
            if data.method == "correlation" and method in FUSED_METHODS else None
        local = torch.full((stop - start, len(names)), float("nan"), dtype=dtype, device=data.table.device)
        bar = progress_bar(total=stop - start, desc="searchlight", unit="sphere",
                           disable=not (progress and rank == 0))
        try:
            todo = {}  # blocks to compute: last sphere -> first (a block is done with its last chunk)
            # one block of all local spheres without a checkpoint; a rank with no centres (more ranks than
            # spheres) has no blocks
            for lo, hi in _parts(start, stop, checkpoint_every if parts is not None else max(1, stop - start)):
                saved = parts.load(lo, hi, len(names)) if parts is not None else None
                if saved is None:
                    todo[hi] = lo
                    continue
                local[lo - start:hi - start] = torch.as_tensor(saved, dtype=dtype, device=local.device)
                bar.update(hi - lo)
            chunks = [chunk for hi, lo in todo.items() for chunk in data.chunks(lo, hi, chunk_size=chunk_size)]
            workspaces = ThreadWorkspaces()
            results = ordered_map(lambda chunk: _chunk_scores(data, *chunk, model_rdms, method, fused,
                                                              workspaces.workspace),
                                  chunks, chunk_workers(threads, data.table.device), per_task=CHUNKS_PER_TASK)
            with contextlib.closing(results):
                block: list[torch.Tensor] = []  # the current block's chunks, joined when it is done (one copy)
                for (a, b), chunk_scores in zip(chunks, results):  # in centre order
                    block.append(chunk_scores)
                    bar.update(b - a)
                    if b in todo:
                        local[todo[b] - start:b - start] = torch.cat(block)
                        block = []
                        if parts is not None:
                            parts.save(todo[b], b, local[todo[b] - start:b - start].cpu().numpy().astype(np.float64))
        finally:
            bar.close()
        scores = gather_no_grad(local) if world > 1 else local
        scores_np = scores.cpu().numpy().astype(np.float64)
    n_undefined = int(np.isnan(scores_np).all(axis=1).sum())
    if n_undefined:
        warnings.warn(f"{n_undefined} of {len(scores_np)} searchlight spheres have undefined {rdm_method} RDMs "
                      "(a condition's pattern is constant over the sphere); their scores are NaN", stacklevel=2)
    return SearchlightResult(spheres=data.spheres, scores=scores_np, models=names, method=method,
                             rdm_method=rdm_method)


# --------------------------------------------------------------------------- #
# across subjects
# --------------------------------------------------------------------------- #
@dataclass
class GroupTestResult:
    """Voxel-wise test of searchlight maps across subjects; images on the maps' grid (NaN where untested).

    Attributes
    ----------
    t : Nifti1Image
        One-sample t statistic (on Fisher-z values when ``fisher_z``).
    p : Nifti1Image
        Uncorrected p-values: parametric (t-test) or from the permutations.
    p_fwe : Nifti1Image or None
        Family-wise error corrected p-values from the maximum statistic over
        voxels (permutation test only).
    fwe_threshold : float or None
        The statistic a voxel must exceed for ``p_fwe < alpha`` (permutation test only): on the scale
        of ``t`` for ``greater``, of ``-t`` for ``less`` and of ``|t|`` for ``two-sided``.
    n_subjects, n_voxels, n_permutations : int
    test, alternative : str
    alpha : float
    """

    t: Any
    p: Any
    p_fwe: Any
    fwe_threshold: float | None
    n_subjects: int
    n_voxels: int
    n_permutations: int
    test: str
    alternative: str
    alpha: float

    def save(self, folder: str | os.PathLike[str], prefix: str = "group") -> list[Path]:
        """Write ``<prefix>_t.nii.gz``, ``_p`` and (permutation test) ``_p_fwe`` into ``folder``; returns the paths."""
        images = {"t": self.t, "p": self.p, "p_fwe": self.p_fwe}
        return [save_nifti(image, Path(folder) / f"{prefix}_{kind}.nii.gz")
                for kind, image in images.items() if image is not None]


def _stack_maps(maps: Any, model: str | int | None) -> tuple[np.ndarray, Any]:
    """``(values (n_subjects, X, Y, Z), Volumes)`` from images, paths or SearchlightResults."""
    from rdl_neuro.data.nifti import Volumes

    items = list(maps)
    if len(items) < 2:
        raise ValueError(f"a test across subjects needs at least 2 subjects' maps, got {len(items)}")
    if all(isinstance(m, SearchlightResult) for m in items):
        items = [m.to_nifti(model) for m in items]
    vols = Volumes(items, "maps")
    if vols.n != len(items):
        raise ValueError(f"maps: expected one 3D map per subject, got {vols.n} volumes in {len(items)} images")
    values = np.stack([np.asarray(img.dataobj, dtype=np.float64).reshape(vols.shape) for img in vols.images])
    return values, vols


def _sign_flips(n: int, n_permutations: int, generator: torch.Generator) -> tuple[torch.Tensor, bool]:
    """Sign vectors ``(n_perm, n)``: every one of the ``2^n`` when that is at most ``n_permutations``
    (an exact test), else the identity followed by random ones. The first row is always the identity."""
    if 2**n <= n_permutations:
        flips = torch.tensor(list(itertools.product((1.0, -1.0), repeat=n)), dtype=torch.float64)
        return flips, True
    flips = torch.randint(0, 2, (n_permutations, n), generator=generator, dtype=torch.int64).double() * 2 - 1
    flips[0] = 1.0
    return flips, False


def _t_values(signs: torch.Tensor, z: torch.Tensor, sq_sum: torch.Tensor) -> torch.Tensor:
    """One-sample t of every sign-flipped sample: ``(n_perm, n_voxels)`` from ``z (n, n_voxels)``."""
    n = z.shape[0]
    mean = signs @ z / n
    var = (sq_sum - n * mean**2) / (n - 1)
    return torch.where(var > 0, mean / torch.sqrt(var.clamp_min(0) / n), torch.nan)


def searchlight_group_test(
    maps: Any,
    *,
    mask: Any = None,
    model: str | int | None = None,
    test: Literal["t", "permutation"] = "t",
    alternative: Literal["greater", "two-sided", "less"] = "greater",
    fisher_z: bool = True,
    n_permutations: int = 5000,
    alpha: float = 0.05,
    seed: int = 0,
) -> GroupTestResult:
    """Test searchlight maps of several subjects against 0, voxel by voxel.

    Parameters
    ----------
    maps : sequence of images, paths or SearchlightResult
        One 3D map per subject, all on one grid (normalised to a common space).
    mask : image, path or bool array, optional
        Voxels to test; always restricted to voxels finite in every map.
    model : str or int, optional
        The model's map to take from SearchlightResults with several models.
    test : {"t", "permutation"}
        ``"t"``: one-sample t-test (scipy's ``ttest_1samp``), p uncorrected.
        ``"permutation"``: sign-flip permutations of the subjects' values
        (every one of the ``2^n`` flips when there are at most
        ``n_permutations``, otherwise random ones with the identity first); p
        uncorrected per voxel and ``p_fwe`` from the maximum t over voxels.
    alternative : {"greater", "two-sided", "less"}
    fisher_z : bool
        Test ``arctanh`` of the values (for correlation-like comparisons; an
        absolute value of 1 or more is then an error).
    n_permutations : int
    alpha : float
        FWE level of ``fwe_threshold``.
    seed : int
        Seed of the random sign flips.

    Returns
    -------
    GroupTestResult
    """
    from scipy import stats

    if test not in GROUP_TESTS:
        raise ValueError(f"test must be one of {GROUP_TESTS}, got {test!r}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    values, vols = _stack_maps(maps, model)
    affine = vols.affine
    n = values.shape[0]
    tested = np.isfinite(values).all(axis=0)
    if mask is not None:
        if isinstance(mask, np.ndarray):
            if mask.shape != tested.shape:
                raise ValueError(f"mask has shape {mask.shape} but the maps have shape {tested.shape}")
            mask_data = mask.astype(bool)
        else:
            from rdl_neuro.data.nifti import read_roi_array

            mask_data = read_roi_array(mask, "mask", vols)[0] != 0
        tested &= mask_data
    if not tested.any():
        raise ValueError("no voxel is finite in every subject's map (and inside the mask): nothing to test")
    z = values[:, tested]
    if fisher_z:
        if np.abs(z).max() >= 1:
            raise ValueError(f"Fisher z needs values in (-1, 1); the maps reach {np.abs(z).max():.3g}: "
                             "pass fisher_z=False for comparisons that are not correlations")
        z = np.arctanh(z)
    zt = torch.from_numpy(z)
    sign = {"greater": 1.0, "less": -1.0, "two-sided": 1.0}[alternative]
    sq_sum = (zt**2).sum(dim=0)
    t_obs = _t_values(torch.ones(1, n, dtype=torch.float64), zt, sq_sum)[0]
    p_fwe_vol, threshold, n_perm = None, None, 0
    if test == "t":
        p = stats.ttest_1samp(z, 0.0, axis=0, alternative=alternative).pvalue
    else:
        generator = torch.Generator().manual_seed(seed)
        flips, _ = _sign_flips(n, n_permutations, generator)
        n_perm = flips.shape[0]
        observed = (t_obs * sign).abs() if alternative == "two-sided" else t_obs * sign
        # sign flips that tie with the data mathematically (e.g. all signs flipped, two-sided) must
        # count however the rounding falls
        reach = observed - 1e-12 * observed.abs().clamp_min(1.0)
        exceed = torch.zeros_like(observed)
        maxima = torch.empty(n_perm, dtype=torch.float64)
        step = max(1, int(2e7 // max(1, zt.shape[1])))  # bound the (perm, voxel) block to ~160 MB
        for lo in range(0, n_perm, step):
            t_perm = _t_values(flips[lo:lo + step], zt, sq_sum) * sign
            if alternative == "two-sided":
                t_perm = t_perm.abs()
            t_perm = torch.nan_to_num(t_perm, nan=-torch.inf)
            exceed += (t_perm >= reach).sum(dim=0)
            maxima[lo:lo + step] = t_perm.max(dim=1).values
        p = (exceed / n_perm).numpy()
        p_fwe = ((maxima[:, None] >= reach[None, :]).sum(dim=0) / n_perm).numpy()
        p_fwe_vol = np.full(tested.shape, np.nan)
        p_fwe_vol[tested] = p_fwe
        # p_fwe < alpha  <=>  fewer than alpha * n_perm maxima reach the statistic  <=>  it exceeds
        # the (ceil(alpha n_perm))-th largest maximum
        threshold = float(torch.sort(maxima, descending=True).values[max(0, math.ceil(alpha * n_perm) - 1)])
    t_vol = np.full(tested.shape, np.nan)
    t_vol[tested] = t_obs.numpy()
    p_vol = np.full(tested.shape, np.nan)
    p_vol[tested] = p
    return GroupTestResult(
        t=_nifti(t_vol, affine), p=_nifti(p_vol, affine),
        p_fwe=None if p_fwe_vol is None else _nifti(p_fwe_vol, affine), fwe_threshold=threshold,
        n_subjects=n, n_voxels=int(tested.sum()), n_permutations=n_perm, test=test, alternative=alternative,
        alpha=alpha)
