"""Searchlight RSA, first half: a sphere around every voxel of a mask and an RDM for each sphere.

``searchlight_spheres`` finds the spheres exactly as rsatoolbox's
``get_volume_searchlight`` does (same centres, same voxels in the same order);
``prepare_searchlight`` reads the images once (the same inputs and checks as
``rdms_from_nifti``) and ``SearchlightData.iter_rdms`` yields the spheres'
RDMs chunk by chunk, so memory stays bounded however many spheres there are;
``searchlight_rdms`` collects them into one rsatoolbox ``RDMs`` (what
rsatoolbox's ``get_searchlight_RDMs`` returns). The evaluation against model
RDMs and the brain maps live in ``rdl_neuro.inference.searchlight``.

How it is made fast
-------------------
Every voxel's condition pattern is one row of a table on the device (with a
last column of ones). The grid is padded by the spheres' reach, so a chunk of
spheres gathers its rows with one index without bounds checks (voxels in no
sphere point at a zero row).

``correlation``, ``euclidean`` and ``sqeuclidean`` need each sphere's Gram
matrix ``G = X^T X`` of the table's columns (inner products of the condition
patterns; thanks to the column of ones it holds the pattern sums and the voxel
count too). Sums over a sphere are linear in its voxels, so neighbouring
spheres share work (``SearchlightData.grams_at``): the sphere of the next
centre along the last axis differs from the current one by a cap of voxels
that enter and one that leaves (for radius 3: 25 + 25 of 93 voxels), and its
Gram is the current one plus ``E^T E - L^T L``. A chunk computes the first
sphere of every row of centres in full, all the cap products in one batched
product, and then running sums along the rows, at most ``SLIDE_STEPS`` at a
time (which bounds the rounding the updates add up). The dissimilarities then
follow elementwise:

- ``correlation``: ``r = (G_ij - s_i s_j / p) / sqrt(var_i var_j)`` with the
  sums ``s`` and ``var_i = G_ii - s_i^2 / p`` (rsatoolbox's ``correlation`` is
  ``1 - r``); the table is centred per condition over the volume, so the
  subtraction loses no precision;
- ``sqeuclidean``: ``(G_ii + G_jj - 2 G_ij) / n_voxels`` (rsatoolbox's
  ``euclidean``); ``euclidean`` is its square root times ``sqrt(n_voxels)``;
- ``crossnobis`` (per sphere, no sharing: the noise precision is the
  sphere's own): leave-one-run-out, ``K = sum_f A_f^T P B_f`` with ``A_f``
  the mean of the other runs, ``B_f`` run ``f`` and ``P`` the sphere's noise
  precision (identity, or rsatoolbox's ``prec_from_residuals`` of the sphere's
  residuals, estimated for all spheres of a chunk in one batch and inverted
  through Cholesky factors; the products run fold by fold on views of the
  gathered patterns), then
  ``(K_ii + K_jj - K_ij - K_ji) / (n_runs n_voxels)`` (rsatoolbox's
  ``crossnobis`` with ``cv_descriptor``).

On the CPU, chunks run side by side in Python threads, each torch op on one
thread (``rdl_neuro._threads``), a few chunks per hand-over; every thread keeps
its intermediates in its own reused buffers (:class:`Workspace`), about 10 MB
per thread at the default chunk size, so that they stay in cache.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch

from rdl_neuro._threads import chunk_workers, one_torch_thread, ordered_map
from rdl_neuro.data.nifti import (DISSIMILARITY_MEASURES, METHODS, ImageLike, ImagesLike, Volumes, check_design,
                                  check_same_space, read_roi_array)
from rdl_neuro.devices import check_device

__all__ = ["RADIUS_UNITS", "PRECISION_METHODS", "Spheres", "searchlight_spheres", "SearchlightData", "Workspace",
           "ThreadWorkspaces", "index_tensor", "prepare_searchlight", "searchlight_rdms"]

#: units of the searchlight radius
RADIUS_UNITS = ("voxels", "mm")
#: covariance estimators of the crossnobis noise precision (rsatoolbox's ``prec_from_residuals``)
PRECISION_METHODS = ("shrinkage_diag", "shrinkage_eye", "diag", "full")

# memory for one chunk's intermediates when chunk_size is not given: small enough for the chunk to
# stay in cache between the steps
_CHUNK_BYTES = 64 * 2**20
_GRAM_CHUNK_BYTES = 22 * 2**20
#: centres in a row along the last axis whose Gram matrices are updated from their neighbour's (grams_at)
#: (longer pieces save full spheres but need more, smaller serial products: 64 was slower than 16 in float64)
SLIDE_STEPS = 16
#: the correlation and euclidean tables' width (conditions + a column of ones) is padded with zero columns
#: to a multiple of this: the batched Gram products run faster on whole SIMD registers (AVX-512, float64:
#: 96 columns took 9.5 us per cap product of 25 voxels, 93 columns 11.3 us, 92 columns 10.6 us)
TABLE_WIDTH_MULTIPLE = 8
#: chunks a thread takes at a time when chunks run side by side (``rdl_neuro._threads.ordered_map``)
CHUNKS_PER_TASK = 4


# --------------------------------------------------------------------------- #
# spheres
# --------------------------------------------------------------------------- #
def sphere_offsets(radius: float, voxel_to_mm: np.ndarray | None = None) -> np.ndarray:
    """Integer voxel offsets ``(k, 3)`` closer than ``radius`` to the centre, in rsatoolbox's order.

    rsatoolbox builds a sphere with ``np.meshgrid(x, y, z)`` (``'xy'`` indexing:
    y slowest, then x, then z) and keeps the points at distance ``< radius``;
    the offsets are listed in that order so the voxel lists agree exactly.
    With ``voxel_to_mm`` (the affine's 3x3 part) the distance is measured in mm.
    """
    if voxel_to_mm is None:
        reach = int(math.ceil(radius))
    else:
        smallest_step = float(np.linalg.svd(voxel_to_mm, compute_uv=False).min())
        reach = int(math.ceil(radius / smallest_step))
    steps = np.arange(-reach, reach + 1)
    dx, dy, dz = np.meshgrid(steps, steps, steps)  # 'xy' indexing, as rsatoolbox
    offsets = np.stack([dx.ravel(), dy.ravel(), dz.ravel()], axis=1)
    points = offsets if voxel_to_mm is None else offsets @ np.asarray(voxel_to_mm, dtype=np.float64).T
    distance = np.sqrt((points.astype(np.float64) ** 2).sum(axis=1))
    return offsets[distance < radius].astype(np.int64)


@dataclass(frozen=True)
class Spheres:
    """Searchlight spheres on a voxel grid: centres and the voxels of each sphere.

    Attributes
    ----------
    shape : (int, int, int)
        The grid.
    affine : ndarray ``(4, 4)``
        Voxel -> world (mm) transform of the grid.
    mask : ndarray ``(X, Y, Z)`` bool
        The mask the centres were chosen from.
    centers : ndarray ``(n,)`` int64
        Flat (C-order) voxel index of every centre, ascending (rsatoolbox's ``centers``).
    offsets : ndarray ``(k, 3)`` int64
        Voxel offsets of a full sphere, in rsatoolbox's voxel order.
    n_voxels : ndarray ``(n,)`` int64
        Voxels in each sphere (inside the grid, and inside the mask when truncated).
    truncate_at_boundary : bool
        Whether spheres keep only voxels inside the mask.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    mask: np.ndarray
    centers: np.ndarray
    offsets: np.ndarray
    n_voxels: np.ndarray
    truncate_at_boundary: bool = False

    def __len__(self) -> int:
        return len(self.centers)

    @property
    def ijk(self) -> np.ndarray:
        """Voxel coordinates ``(n, 3)`` of the centres."""
        return np.stack(np.unravel_index(self.centers, self.shape), axis=1)

    def neighbors(self, index: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Flat voxel indices ``(b, k)`` of the spheres ``index``; ``-1`` where an offset is not in the sphere."""
        return self.voxels(index, self.offsets)

    def voxels(self, index: slice | np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Flat indices ``(b, m)`` of the voxels at ``offsets (m, 3)`` from the centres ``index``; ``-1`` where
        such a voxel is outside the grid (or outside the mask, when spheres are truncated) and so in no sphere."""
        ijk = np.stack(np.unravel_index(self.centers[index], self.shape), axis=1)
        coords = ijk[:, None, :] + offsets[None, :, :]  # (b, m, 3)
        inside = np.all((coords >= 0) & (coords < np.asarray(self.shape)), axis=2)
        flat = np.ravel_multi_index(tuple(np.where(inside[..., None], coords, 0).transpose(2, 0, 1)), self.shape)
        if self.truncate_at_boundary:
            inside &= self.mask.reshape(-1)[flat]
        return np.where(inside, flat, -1)

    @cached_property
    def slide_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(enter, leave)``: offsets from a centre of the voxels its sphere has and the sphere of the
        previous voxel along the last axis lacks, and of those the previous sphere has and it lacks."""
        step = np.array([0, 0, 1])
        members = {tuple(o) for o in self.offsets.tolist()}
        enter = [o for o in self.offsets.tolist() if tuple(np.add(o, step)) not in members]
        leave = [list(np.subtract(o, step)) for o in self.offsets.tolist()
                 if tuple(np.subtract(o, step)) not in members]
        return np.array(enter, dtype=np.int64).reshape(-1, 3), np.array(leave, dtype=np.int64).reshape(-1, 3)

    def to_rsatoolbox(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(centers, neighbors)`` as rsatoolbox's ``get_volume_searchlight`` returns them."""
        out = []
        for start in range(0, len(self), 4096):
            out.extend(row[row >= 0] for row in self.neighbors(slice(start, start + 4096)))
        return self.centers.copy(), out

    def rank_range(self, world_size: int, rank: int) -> tuple[int, int]:
        """The contiguous block ``(start, stop)`` of centres that ``rank`` of ``world_size`` processes handles."""
        edges = np.linspace(0, len(self), world_size + 1).round().astype(int)
        return int(edges[rank]), int(edges[rank + 1])

    def to_volume(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Per-centre ``values`` ``(n,)`` or ``(n, m)`` -> a volume ``(X, Y, Z[, m])``, ``fill`` outside the centres."""
        values = np.asarray(values)
        if values.shape[0] != len(self):
            raise ValueError(f"{values.shape[0]} values for {len(self)} searchlight centres")
        out = np.full((int(np.prod(self.shape)),) + values.shape[1:], fill, dtype=np.float64)
        out[self.centers] = values
        return out.reshape(tuple(self.shape) + values.shape[1:])


def _sphere_kernel(offsets: np.ndarray) -> np.ndarray:
    """The offsets as an int32 indicator array centred on the middle voxel (odd size along every axis)."""
    reach = np.abs(offsets).max(axis=0)
    kernel = np.zeros(tuple(2 * reach + 1), dtype=np.int32)
    kernel[tuple((offsets + reach).T)] = 1
    return kernel


def _correlate(volume: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``out[v] = sum_o kernel[o] volume[v + o]`` with zeros beyond the volume (exact, in integers)."""
    from scipy import ndimage

    return ndimage.correlate(volume, kernel, mode="constant", cval=0)


def check_binary_mask(data: np.ndarray, name: str = "mask") -> np.ndarray:
    """``data`` as a 3D bool array; ValueError unless it is 3D, binary (0/1) and selects a voxel."""
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{name} has shape {data.shape}; expected a 3D image")
    if data.dtype != bool:
        values = np.unique(data)
        if not np.all(np.isin(values, (0, 1))):
            extra = values[~np.isin(values, (0, 1))][:5]
            raise ValueError(f"{name} is not binary: it has values other than 0 and 1 (e.g. {extra.tolist()})")
    data = data.astype(bool)
    if not data.any():
        raise ValueError(f"{name} is empty: it selects no voxels")
    return data


def searchlight_spheres(
    mask: np.ndarray,
    radius: float = 2,
    threshold: float = 1.0,
    *,
    affine: np.ndarray | None = None,
    radius_unit: Literal["voxels", "mm"] = "voxels",
    truncate_at_boundary: bool = False,
    min_voxels: int = 2,
) -> Spheres:
    """Searchlight spheres around the voxels of a mask, as rsatoolbox's ``get_volume_searchlight``.

    Parameters
    ----------
    mask : ndarray ``(X, Y, Z)``
        Binary mask; every voxel in it is a candidate centre.
    radius : float
        A voxel belongs to a sphere when its distance to the centre is
        strictly less than ``radius`` (rsatoolbox's rule).
    threshold : float in [0, 1]
        A centre is kept when at least this fraction of its sphere's voxels
        (those inside the grid) are in the mask.
    affine : ndarray ``(4, 4)``, optional
        Voxel -> mm transform; needed for ``radius_unit="mm"`` (anisotropic
        and oblique voxels are measured in mm), recorded otherwise.
    radius_unit : {"voxels", "mm"}
    truncate_at_boundary : bool
        Keep only the sphere voxels inside the mask (rsatoolbox's option of the same name).
    min_voxels : int
        A sphere needs at least this many voxels (an RDM over one voxel is not defined).

    Returns
    -------
    Spheres

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((7, 7, 7), bool); mask[1:6, 1:6, 1:6] = True
    >>> spheres = searchlight_spheres(mask, radius=2)
    >>> len(spheres), spheres.offsets.shape[0]
    (27, 27)
    """
    mask = check_binary_mask(mask)
    if radius_unit not in RADIUS_UNITS:
        raise ValueError(f"radius_unit must be one of {RADIUS_UNITS}, got {radius_unit!r}")
    if not (isinstance(radius, (int, float, np.integer, np.floating)) and math.isfinite(radius)):
        raise ValueError(f"radius must be a finite number, got {radius!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (a fraction of the sphere's voxels), got {threshold}")
    if affine is None:
        if radius_unit == "mm":
            raise ValueError("radius_unit='mm' needs the affine (voxel -> mm) of the mask's image")
        affine = np.eye(4)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be a 4x4 matrix, got shape {affine.shape}")
    voxel_to_mm = affine[:3, :3] if radius_unit == "mm" else None
    offsets = sphere_offsets(float(radius), voxel_to_mm)
    unit = "mm" if radius_unit == "mm" else "voxels"
    if len(offsets) < min_voxels:
        sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        raise ValueError(
            f"radius {radius} {unit} leaves the spheres empty: a sphere holds {len(offsets)} voxel(s) "
            f"(voxel size {np.round(sizes, 3).tolist()} mm; a voxel belongs to a sphere when its distance to the "
            f"centre is < radius) but an RDM needs at least {min_voxels}; use a larger radius")

    shape = mask.shape
    ijk = np.stack(np.nonzero(mask), axis=1)  # C order, as rsatoolbox's list(zip(*np.nonzero(mask)))
    # voxels of every sphere inside the grid and inside the mask: correlations of the grid and the mask
    # with the sphere's indicator (zeros beyond the grid)
    kernel = _sphere_kernel(offsets)
    in_grid = _correlate(np.ones(shape, dtype=np.int32), kernel)[mask]
    in_mask = _correlate(mask.astype(np.int32), kernel)[mask]
    counts = in_mask if truncate_at_boundary else in_grid
    # rsatoolbox: mask[neighbors].mean() >= threshold, over the voxels it keeps
    keep = (in_mask / counts >= threshold) & (counts >= min_voxels)
    if not keep.any():
        raise ValueError(
            f"no searchlight centre is left: none of the {len(ijk)} mask voxels has at least {threshold:.0%} of its "
            f"sphere (radius {radius} {unit}, {len(offsets)} voxels) inside the mask; lower threshold or the radius")
    centers = np.ravel_multi_index(tuple(ijk[keep].T), shape).astype(np.int64)
    return Spheres(shape=tuple(int(s) for s in shape), affine=affine, mask=mask, centers=centers,
                   offsets=offsets, n_voxels=counts[keep].astype(np.int64),
                   truncate_at_boundary=bool(truncate_at_boundary))


# --------------------------------------------------------------------------- #
# the sphere RDMs
# --------------------------------------------------------------------------- #
def _empty(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised 1D tensor of ``n`` elements. On the CPU its memory comes from numpy, which asks
    Linux for huge pages for large arrays (``madvise``): filling a fresh 40 MB table took 3.5 ms instead
    of 15 ms (4 kB pages fault one by one on first touch)."""
    numpy_dtype = {torch.float64: np.float64, torch.float32: np.float32}.get(dtype)
    if device.type == "cpu" and numpy_dtype is not None:
        return torch.from_numpy(np.empty(n, dtype=numpy_dtype))
    return torch.empty(n, dtype=dtype, device=device)


class Workspace:
    """Buffers that one thread reuses from chunk to chunk for a chunk's intermediates.

    A chunk's intermediates (gathered rows, Gram matrices, correlations) take tens of MB. Allocated
    afresh for every chunk, part of them came from new pages each time (measured on a 35k-voxel
    searchlight of 1.3 s: 90k-180k page faults, 0.15-0.3 s of system time); reused, they stay in
    cache. Whatever a method returns to its caller to keep (RDMs, scores) is never a workspace buffer.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._views: dict[tuple[Any, ...], torch.Tensor] = {}  # the views handed out, made once per shape

    def empty(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` in ``like``'s dtype and device: the buffer
        ``name``, grown when too small (its earlier contents are overwritten)."""
        key = (name, tuple(shape), like.dtype, like.device)
        view = self._views.get(key)
        if view is not None:
            return view
        n = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < n or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._buffers[name] = _empty(n, like.dtype, like.device)
            self._views = {k: v for k, v in self._views.items() if k[0] != name}  # views of the old buffer
        view = self._views[key] = buffer[:n].view(shape)
        return view


def index_tensor(index: np.ndarray, device: torch.device) -> torch.Tensor:
    """An int64 numpy index as a tensor on ``device``: shares the array's memory on the CPU (no torch op
    runs, which matters for the many small chunks computed side by side; see ``rdl_neuro._threads``)."""
    index = np.ascontiguousarray(index, dtype=np.int64)
    return torch.from_numpy(index) if device.type == "cpu" else torch.as_tensor(index, device=device)


def _select_rows(source: torch.Tensor, index: torch.Tensor, shape: tuple[int, int], workspace: Workspace,
                 name: str) -> torch.Tensor:
    """The rows ``index (b * m,)`` of ``source (n, width)`` as ``(b, m, width)``, in the workspace buffer ``name``."""
    out = workspace.empty(name, (len(index), source.shape[1]), source)
    return torch.index_select(source, 0, index, out=out).view(*shape, -1)


class ThreadWorkspaces(threading.local):
    """One :class:`Workspace` per thread (``ThreadWorkspaces().workspace``), for chunks computed side by side."""

    def __init__(self) -> None:
        self.workspace = Workspace()


@dataclass
class SearchlightData:
    """Everything the sphere RDMs need, on one device: built by :func:`prepare_searchlight`.

    Attributes
    ----------
    spheres : Spheres
    method : str
        One of ``rdl_neuro.data.nifti.METHODS``.
    conditions : ndarray ``(n_conditions,)``
        The conditions (stimulus ids) in RDM order: sorted, as rsatoolbox's ``calc_rdm``.
    table : Tensor ``(n_rows + 1, width)``
        One row per voxel that some sphere holds (the last row is zeros, for
        offsets outside the sphere): the condition means, a column of ones and zero columns up to
        ``width`` (``n_conditions + 1`` rounded up to a multiple of ``TABLE_WIDTH_MULTIPLE``), or for
        crossnobis the training means of every fold followed by its test means (``width = 2 n_runs
        n_conditions``).
    rows : ndarray ``(X*Y*Z,)`` int64
        Row of ``table`` of every grid voxel (the zero row for voxels no sphere holds).
    residuals : Tensor ``(n_rows + 1, n_residuals)`` or None
        Crossnobis noise model: residuals of the same voxels.
    precision_method : str
    n_runs : int
    """

    spheres: Spheres
    method: str
    conditions: np.ndarray
    table: torch.Tensor
    rows: np.ndarray
    residuals: torch.Tensor | None = None
    precision_method: str = "shrinkage_diag"
    n_runs: int = 1
    noise_model: str = field(default="none")

    @property
    def n_conditions(self) -> int:
        """Number of conditions (rows of each RDM)."""
        return len(self.conditions)

    def default_chunk_size(self) -> int:
        """Spheres per chunk so that a chunk's intermediates take about 64 MB (crossnobis) or 22 MB by this
        estimate (the rest: 63 spheres of 93 voxels and 92 conditions in float64, enough for the shared Gram
        updates; a thread's buffers then hold about 10 MB, so two threads stay in a 32 MB shared cache;
        larger chunks were slower, 96 spheres by ~15% with other processes on the cores)."""
        k, c, w = self.spheres.offsets.shape[0], self.n_conditions, self.table.shape[1]
        if self.method != "crossnobis":
            return int(max(1, min(4096, _GRAM_CHUNK_BYTES // (self.table.element_size() * (2 * k * w + 3 * w * w)))))
        per_sphere = 3 * k * w + 4 * c * c
        if self.residuals is not None:
            per_sphere += 6 * k * k + 3 * k * self.residuals.shape[1]
        return int(max(1, min(4096, _CHUNK_BYTES // (8 * per_sphere))))

    def chunks(self, start: int = 0, stop: int | None = None, *, chunk_size: int | None = None,
               progress: bool = False) -> Iterator[tuple[int, int]]:
        """Yield ``(lo, hi)``: the spheres ``start:stop`` a chunk at a time, with a progress bar when asked."""
        from rdl_neuro._progress import progress_bar

        stop = len(self.spheres) if stop is None else stop
        size = chunk_size or self.default_chunk_size()
        if size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {size}")
        bar = progress_bar(total=stop - start, desc="searchlight", unit="sphere", disable=not progress)
        try:
            for lo in range(start, stop, size):
                hi = min(stop, lo + size)
                yield lo, hi
                bar.update(hi - lo)
        finally:
            bar.close()

    def iter_rdms(self, start: int = 0, stop: int | None = None, *, chunk_size: int | None = None,
                  progress: bool = False, workers: int = 1) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(lo, hi, rdms (hi - lo, n_pairs))`` for the spheres ``start:stop``, a chunk at a time.

        RDMs are condensed (scipy ``squareform`` order over ``conditions``) in
        the table's dtype and device. NaN marks undefined dissimilarities
        (a pattern constant over a sphere under ``correlation``), as in rsatoolbox.
        ``workers`` chunks are computed side by side in Python threads (``rdl_neuro._threads.ordered_map``,
        ``CHUNKS_PER_TASK`` chunks per hand-over, a bounded number in flight), yielded in order; the RDMs do
        not depend on it when torch runs on one thread (as :func:`searchlight_rdms` arranges).
        """
        bounds = list(self.chunks(start, stop, chunk_size=chunk_size))
        workspaces = ThreadWorkspaces()
        with contextlib.closing(ordered_map(lambda chunk: self.rdms_at(slice(*chunk), workspaces.workspace), bounds,
                                            workers, per_task=CHUNKS_PER_TASK)) as rdms:
            for (lo, hi), chunk_rdms in zip(self.chunks(start, stop, chunk_size=chunk_size, progress=progress), rdms):
                yield lo, hi, chunk_rdms

    @cached_property
    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows, columns and flat square positions ``(n_pairs,)`` of the condensed entries, on the device."""
        c = self.n_conditions
        rows, cols = torch.triu_indices(c, c, 1, device=self.table.device)
        return rows, cols, rows * c + cols

    @cached_property
    def _padded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, centres, strides)`` on the grid padded by the spheres' reach: the table row of every padded
        voxel (the zero row outside the grid), the padded flat index of every centre, and the padded strides.
        A sphere's rows are then ``rows[centre + offsets @ strides]``, without bounds checks."""
        spheres = self.spheres
        reach = np.abs(spheres.offsets).max(axis=0)
        shape = np.asarray(spheres.shape) + 2 * reach
        rows = np.full(tuple(shape), self.table.shape[0] - 1, dtype=np.int64)
        inner = tuple(slice(r, r + n) for r, n in zip(reach, spheres.shape))
        rows[inner] = self.rows.reshape(spheres.shape)
        strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
        centres = (spheres.ijk + reach) @ strides
        return rows.reshape(-1), centres, strides

    def _rows_at(self, positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Table rows ``(b, m)`` of the voxels at ``offsets (m, 3)`` from the centres ``positions (b,)``;
        the last (zero) row for a voxel in no sphere (outside the grid, or the mask when spheres are truncated)."""
        rows, centres, strides = self._padded
        return rows[centres[positions][:, None] + (offsets @ strides)[None, :]]

    def _positions(self, index: slice | np.ndarray) -> np.ndarray:
        """The sphere positions ``index`` selects, ``(b,)`` int64."""
        if isinstance(index, slice):
            return np.arange(*index.indices(len(self.spheres)))
        return np.arange(len(self.spheres))[index]

    @cached_property
    def _cap_offsets(self) -> tuple[np.ndarray, int]:
        """The caps' offsets, entering then leaving (``Spheres.slide_offsets``), and the number entering."""
        enter, leave = self.spheres.slide_offsets  # as many voxels enter as leave
        return np.concatenate([enter, leave]), len(enter)

    def _gather(self, positions: np.ndarray, offsets: np.ndarray, workspace: Workspace | None = None,
                name: str = "rows") -> torch.Tensor:
        """Table rows ``(b, m, width)`` of the voxels at ``offsets (m, 3)`` from the centres ``positions (b,)``
        (see ``_rows_at``), in the ``workspace`` buffer ``name`` when given."""
        rows = self._rows_at(positions, offsets)
        return _select_rows(self.table, index_tensor(rows.reshape(-1), self.table.device), rows.shape,
                            workspace or Workspace(), name)

    def grams_at(self, index: slice | np.ndarray, workspace: Workspace | None = None) -> torch.Tensor:
        """Every sphere's Gram matrix of the table's columns, ``(b, width, width)`` (not for crossnobis).

        ``G = X^T X`` over the sphere's voxels ``X (n_voxels, width)``; with the table's last column of
        ones (column ``n = n_conditions``), ``G[:, n, :n]`` are the sums of the condition patterns and
        ``G[:, n, n]`` the voxel count (the columns after it are zeros: ``_condition_table``).
        Computed by :meth:`gram_halves_at` (``G = H + H^T``).
        """
        halves, order = self.gram_halves_at(index, workspace)
        halves = halves.index_select(0, index_tensor(np.argsort(order), halves.device))
        return halves + halves.transpose(1, 2)

    def gram_halves_at(self, index: slice | np.ndarray,
                       workspace: Workspace | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """``(halves (b, width, width), order (b,))``: the Gram matrices as ``G = H + H^T``, in the order
        they were computed; ``order[k]`` is the place in ``index`` of the sphere of ``halves[k]`` (so
        ``halves[np.argsort(order)]`` follow ``index``). With a ``workspace``, ``halves`` is one of its
        buffers (valid until the workspace's next use).

        Callers that reduce each Gram to a few numbers reorder those (which saves a copy of every Gram) and
        fold the sum ``H + H^T`` into their first pass over it (see :meth:`correlations_at`).

        Work is shared between neighbouring spheres: the sphere of the next voxel along the last axis
        differs from the current one by a cap of voxels entering ``E`` and one leaving ``L`` (as many
        of each; about half a sphere together), so its Gram is the current one plus ``E^T E - L^T L``,
        which is the symmetric part of ``(E - L)^T (E + L)`` (the cross terms ``E^T L - L^T E`` are
        antisymmetric): one batched product over a single cap's rows, so ``H`` is a running sum of
        halves of those products. At most ``SLIDE_STEPS`` centres in a row are updated so; then a
        sphere's Gram is computed from all its voxels again, which bounds the rounding the updates add up
        (about ``SLIDE_STEPS`` units in the last place of the Gram's entries).
        """
        if self.method == "crossnobis":
            raise ValueError("Gram matrices are not defined for crossnobis (a cross-validated product)")
        positions = self._positions(index)
        b = len(positions)
        # a centre continues the previous one when it is the next voxel along the last axis; runs of such
        # centres are cut into pieces of at most SLIDE_STEPS, each starting with a full sphere
        centers = self.spheres.centers[positions]
        follows = np.zeros(b, dtype=bool)
        follows[1:] = (np.diff(centers) == 1) & (centers[1:] % self.spheres.shape[2] != 0)
        order = np.arange(b)
        step = (order - np.maximum.accumulate(np.where(follows, 0, order))) % SLIDE_STEPS
        piece = np.cumsum(step == 0) - 1
        length = np.bincount(piece)
        # slots: step by step, pieces longest first, so that the pieces still running at a step are the
        # first ones of the previous step's block and the running sums are sums of contiguous blocks
        rank = np.empty(len(length), dtype=np.int64)
        rank[np.argsort(-length, kind="stable")] = np.arange(len(length))
        alive = np.cumsum(np.bincount(length)[::-1])[::-1][1:]  # alive[s]: pieces longer than s steps
        block = np.concatenate([[0], np.cumsum(alive)])
        slot = block[step] + rank[piece]
        by_slot = np.empty(b, dtype=np.int64)
        by_slot[slot] = positions
        w = self.table.shape[1]
        workspace = workspace or Workspace()
        # halves (alpha=0.5) of X^T X for the first sphere of a piece, then running sums of halves of the cap terms
        out = workspace.empty("halves", (b, w, w), self.table)
        alive = alive.tolist()  # (Python ints: the views below are made once per step, cheaply)
        sums = out.split(alive)  # the spheres of every step
        full = self._gather(by_slot[: alive[0]], self.spheres.offsets, workspace, "spheres")
        torch.baddbmm(sums[0], full.transpose(1, 2), full, beta=0, alpha=0.5, out=sums[0])
        if b > alive[0]:
            cap_offsets, n_enter = self._cap_offsets
            caps = self._gather(by_slot[alive[0]:], cap_offsets, workspace, "caps")
            entering, leaving = caps[:, :n_enter], caps[:, n_enter:]
            # E^T E - L^T L is the symmetric part of (E - L)^T (E + L) (the cross terms E^T L - L^T E are
            # antisymmetric): a product over one cap instead of two, half the work
            difference = torch.sub(entering, leaving, out=workspace.empty("difference", entering.shape, caps))
            total = leaving.add_(entering)  # in place of the leaving rows: a smaller working set (see correlations_at)
            # step by step along the pieces: the previous step's sums (its first alive[s] pieces) + this step's caps
            for s, (d, t) in enumerate(zip(difference.transpose(1, 2).split(alive[1:]), total.split(alive[1:])),
                                       start=1):
                previous = sums[s - 1] if alive[s - 1] == alive[s] else sums[s - 1][: alive[s]]
                torch.baddbmm(previous, d, t, alpha=0.5, out=sums[s])
        return out, np.argsort(slot)

    def correlations_at(self, index: slice | np.ndarray, *, return_order: bool = False,
                        workspace: Workspace | None = None) -> torch.Tensor | tuple[torch.Tensor, np.ndarray]:
        """Pearson correlations ``(b, n, n)`` between the condition patterns over each sphere's voxels
        (``method="correlation"``; ``1 - r`` is the RDM); NaN for a pattern constant over the sphere.
        ``return_order``: ``(correlations, order)`` in the order of computation, as
        :meth:`gram_halves_at` (which saves reordering the matrices). With a ``workspace``, the
        correlations are one of its buffers (valid until its next use)."""
        if self.method != "correlation":
            raise ValueError(f"correlations_at needs method='correlation', not {self.method!r}")
        workspace = workspace or Workspace()
        halves, order = self.gram_halves_at(index, workspace)
        if not return_order:
            halves = halves.index_select(0, index_tensor(np.argsort(order), halves.device))
        c = self.n_conditions
        sums = halves[:, c, :c] + halves[:, :c, c]
        counts = 2 * halves[:, c, c:c + 1]
        # centring through the sums: G - s s^T / p. The table is centred per condition over the whole
        # volume (correlations are blind to that), so the sums stay small next to the spread and the
        # subtraction loses no precision.
        scale = torch.addcmul(2 * torch.diagonal(halves, dim1=1, dim2=2)[:, :c], sums, sums / counts,
                              value=-1).rsqrt_()
        block = halves[:, :c, :c]
        # the Gram's conditions block, G = H + H^T, in the buffer of the caps (done with once the Gram matrices
        # are): with two threads on two cores, a separate buffer made each chunk's 13 MB spill out of the shared
        # cache and the searchlight ~5% slower
        r = torch.add(block, block.transpose(1, 2), out=workspace.empty("caps", block.shape, block))
        r.mul_(scale[:, :, None]).mul_(scale[:, None, :])
        centre = sums.mul_(scale).div_(counts.sqrt_())
        r.addcmul_(centre[:, :, None], centre[:, None, :], value=-1)  # (a batched rank-1 product is slower)
        return (r, order) if return_order else r

    def rdms_at(self, index: slice | np.ndarray, workspace: Workspace | None = None) -> torch.Tensor:
        """RDMs ``(b, n_pairs)`` of the spheres ``index`` (a slice or positions), in one batch; the
        intermediates in ``workspace`` when given (the RDMs are a new tensor)."""
        rows, cols, upper = self._pairs
        if self.method == "correlation":
            r, order = self.correlations_at(index, return_order=True, workspace=workspace)
            rdms = torch.rsub(r.view(len(r), -1).index_select(1, upper), 1)
            return rdms.index_select(0, index_tensor(np.argsort(order), rdms.device))
        if self.method in ("sqeuclidean", "euclidean"):
            gram = self.grams_at(index, workspace)
            c = self.n_conditions
            sq = torch.diagonal(gram, dim1=1, dim2=2)[:, :c]
            dist = sq.index_select(1, rows) + sq.index_select(1, cols) \
                - 2 * gram[:, :c, :c].reshape(len(gram), -1).index_select(1, upper)
            counts = gram[:, c, c:c + 1]
            return dist.clamp_min_(0).sqrt_() if self.method == "euclidean" else dist.div_(counts)
        # crossnobis: the table holds every fold's training means, then its test means; offsets outside a
        # sphere read the zero row and add nothing to the products
        device = self.table.device
        workspace = workspace or Workspace()
        positions = self._positions(index)
        table_rows = self._rows_at(positions, self.spheres.offsets)
        gather = index_tensor(table_rows.reshape(-1), device)
        b, k = table_rows.shape
        patterns = _select_rows(self.table, gather, (b, k), workspace, "patterns")
        counts = torch.as_tensor(self.spheres.n_voxels[index], dtype=self.table.dtype, device=device)
        c = self.n_conditions
        r = self.n_runs
        precision = None
        if self.residuals is not None:
            res = _select_rows(self.residuals, gather, (b, k), workspace, "residuals")
            padded = table_rows == self.table.shape[0] - 1
            valid = None if not padded.any() else torch.as_tensor(~padded, device=device)
            precision = batched_precision(res.transpose(1, 2), valid, self.precision_method, self.spheres.ijk[index])
        # sum over folds of A_f^T P B_f, fold by fold on views of the patterns (no copies)
        kernel = workspace.empty("kernel", (b, c, c), self.table).zero_()
        for f in range(r):
            train = patterns[:, :, f * c:(f + 1) * c]  # (b, k, c)
            if precision is not None:
                train = torch.matmul(precision, train, out=workspace.empty("train", train.shape, train))
            kernel.baddbmm_(train.transpose(1, 2), patterns[:, :, (r + f) * c:(r + f + 1) * c])
        diag = torch.diagonal(kernel, dim1=1, dim2=2)
        flat = kernel.reshape(b, -1)
        dist = diag.index_select(1, rows) + diag.index_select(1, cols) \
            - flat.index_select(1, upper) - flat.index_select(1, cols * c + rows)
        return dist / (counts[:, None] * r)


def batched_precision(residuals: torch.Tensor, valid: torch.Tensor | None, method: str,
                      centres: np.ndarray | None = None) -> torch.Tensor:
    """rsatoolbox's ``prec_from_residuals`` for a batch of spheres at once.

    Parameters
    ----------
    residuals : Tensor ``(b, n_residuals, k)``
        Each sphere's residuals; columns where ``valid`` is False are zeros (padding).
    valid : Tensor ``(b, k)`` bool or None (all valid)
    method : {"shrinkage_diag", "shrinkage_eye", "diag", "full"}
        As ``rsatoolbox.data.noise.cov_from_residuals`` (degrees of freedom ``n_residuals - 1``).
    centres : ndarray ``(b, 3)``, optional
        The spheres' centre voxels, to name one whose covariance is singular.

    Returns
    -------
    Tensor ``(b, k, k)``: the inverse covariances; padded voxels get an identity block (they carry no data).
    """
    x = residuals - residuals.mean(dim=1, keepdim=True)  # padded columns stay zero
    b, n, k = x.shape
    dof = n - 1
    s_sum = x.transpose(1, 2) @ x
    var = torch.diagonal(s_sum, dim1=1, dim2=2) / dof
    padded = None if valid is None else ~valid
    if method == "full":
        cov = s_sum / dof
    elif method == "diag":
        cov = torch.diag_embed(var)
    elif method == "shrinkage_eye":  # Ledoit & Wolf (2004), as rsatoolbox's _covariance_eye
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        pair = torch.ones(b, k, k, dtype=torch.bool, device=x.device) if valid is None \
            else valid[:, :, None] & valid[:, None, :]
        sq = x * x
        s2_sum = sq.transpose(1, 2) @ sq
        s = s_sum / n
        b2 = torch.where(pair, s2_sum / n - s * s, 0).sum(dim=(1, 2)) / n
        count = valid.sum(dim=1) if valid is not None else torch.full((b,), k, device=x.device)
        m = torch.diagonal(s, dim1=1, dim2=2).sum(dim=1) / count
        d2 = torch.where(pair, (s - m[:, None, None] * eye) ** 2, 0).sum(dim=(1, 2))
        b2 = torch.minimum(b2, d2)
        cov = ((b2 / d2 * m)[:, None, None] * eye + ((d2 - b2) / d2)[:, None, None] * s) * (n / dof)
    elif method == "shrinkage_diag":  # Schaefer & Strimmer (2005), as rsatoolbox's _covariance_diag
        cov = s_sum * ((1 - _shrinkage_diag_weight(x, var, padded)) / dof)[:, None, None]
        torch.diagonal(cov, dim1=1, dim2=2).copy_(var)  # the diagonal is not shrunk
    else:
        raise ValueError(f"precision_method must be one of {PRECISION_METHODS}, got {method!r}")
    if padded is not None:  # padded voxels: zero rows and columns; an identity block keeps cov invertible
        cov = cov + torch.diag_embed(padded.to(cov.dtype))
    # the covariances are symmetric positive definite: a Cholesky factor and its inverse (several times
    # fewer operations than a general inverse); a factor that fails names the sphere
    factor, info = torch.linalg.cholesky_ex(cov)
    # (a NaN or inf anywhere makes a matrix's sum non-finite: one reduction instead of an elementwise test)
    failed = (info != 0) | ~torch.isfinite(factor.sum(dim=(1, 2)))
    precision = None if bool(failed.any()) else torch.cholesky_inverse(factor)
    if precision is not None:
        failed = ~torch.isfinite(precision.sum(dim=(1, 2)))
    if bool(failed.any()):
        bad = int(torch.nonzero(failed)[0])
        where = f"centred on voxel {tuple(centres[bad].tolist())}" if centres is not None else f"{bad} of the batch"
        raise ValueError(f"the residuals' covariance of the sphere {where} is singular under "
                         f"precision_method={method!r}: a voxel with constant residuals? try 'shrinkage_diag'")
    return precision


def _shrinkage_diag_weight(x: torch.Tensor, var: torch.Tensor, padded: torch.Tensor | None) -> torch.Tensor:
    """rsatoolbox's shrinkage weight ``lambda (b,)`` of ``_covariance_diag`` from centred residuals ``x (b, n, k)``
    and their variances ``var (b, k)``: ``sum var_hat / sum s_mean^2`` over the off-diagonal pairs, where
    ``s_mean = y^T y / (n - 1)`` and ``s2_mean = (y^2)^T (y^2) / (n - 1)`` for the standardised ``y = x / std``.
    The sums need no ``(k, k)`` matrix: ``sum_ij (y^T y)_ij^2 = |y y^T|^2`` (an ``(n, n)`` product) and
    ``sum_ij ((y^2)^T y^2)_ij = sum_n (sum_i y_ni^2)^2``; padded voxels (zero columns) add nothing."""
    n = x.shape[1]
    scale = var.rsqrt() if padded is None else torch.where(padded, 0, var.rsqrt())
    y = x * scale[:, None, :]
    y2 = y * y
    gram = y @ y.transpose(1, 2)  # (b, n, n)
    diag_s = y2.sum(dim=1)  # (y^T y)_ii
    sum_s2 = gram.square().sum(dim=(1, 2)) - diag_s.square().sum(dim=1)  # off-diagonal sum of (y^T y)_ij^2
    sum_q = y2.sum(dim=2).square().sum(dim=1) - y2.square().sum(dim=(1, 2))  # off-diagonal sum of (y^2)^T y^2
    dof = n - 1
    var_hat = n / dof**2 * (sum_q / dof - sum_s2 / dof**2)
    return (var_hat / (sum_s2 / dof**2)).clamp(0, 1)


def prepare_searchlight(
    betas: ImagesLike,
    conditions: Sequence[int] | Sequence[str] | np.ndarray,
    *,
    mask: ImageLike,
    radius: float = 2,
    threshold: float = 1.0,
    radius_unit: Literal["voxels", "mm"] = "voxels",
    truncate_at_boundary: bool = False,
    runs: Sequence[int] | Sequence[str] | np.ndarray | None = None,
    method: Literal["correlation", "euclidean", "sqeuclidean", "crossnobis"] = "correlation",
    residuals: ImagesLike | None = None,
    precision_method: Literal["shrinkage_diag", "shrinkage_eye", "diag", "full"] = "shrinkage_diag",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> SearchlightData:
    """Read the betas once and build the spheres: the input of every searchlight computation.

    The inputs and their checks are those of ``rdl_neuro.data.nifti.rdms_from_nifti``
    (betas as one 4D image, a list of 3D images or paths; one condition and run per
    volume; crossnobis needs at least 2 runs holding every condition; mask and
    residuals on the betas' grid). The sphere parameters are those of
    :func:`searchlight_spheres`. Voxels that a sphere holds must be finite in
    every volume (rsatoolbox would give NaN RDMs): the error names them.

    Returns
    -------
    SearchlightData
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if residuals is not None and method != "crossnobis":
        raise ValueError(f"residuals are only used by method='crossnobis' (noise precision), "
                         f"not by method={method!r}")
    if precision_method not in PRECISION_METHODS:
        raise ValueError(f"precision_method must be one of {PRECISION_METHODS}, got {precision_method!r}")
    if device is not None:
        device = check_device(device)
    vols = Volumes(betas, "betas")
    cond, run = check_design(vols, conditions, runs, method)
    mask_data, mask_name = read_roi_array(mask, "mask", vols)
    spheres = searchlight_spheres(check_binary_mask(mask_data, mask_name), radius, threshold, affine=vols.affine,
                                  radius_unit=radius_unit, truncate_at_boundary=truncate_at_boundary)

    # the voxels that some sphere holds (a voxel v is in the sphere of c when v - c is an offset, i.e. when
    # c - v is one of the mirrored offsets): read only those
    centres = np.zeros(vols.shape, dtype=np.int32)
    centres.reshape(-1)[spheres.centers] = 1
    union = _correlate(centres, _sphere_kernel(-spheres.offsets)) > 0
    if truncate_at_boundary:
        union &= spheres.mask
    union = union.reshape(-1)
    union_flat = np.flatnonzero(union)
    rows = np.full(union.shape, len(union_flat), dtype=np.int64)
    rows[union_flat] = np.arange(len(union_flat))
    values = vols.extract_by_voxel(union.reshape(vols.shape))  # (n_union, n_volumes)

    unique_cond, cond_index = np.unique(cond, return_inverse=True)
    noise_model = "none"
    res_table = None
    n_runs = 1
    if method == "crossnobis":
        _check_finite(values, union_flat, vols)
        unique_runs, run_index = np.unique(run, return_inverse=True)
        n_runs, n_cond = len(unique_runs), len(unique_cond)
        table = _crossnobis_table(values, run_index * n_cond + cond_index, n_runs, n_cond)
        noise_model = "identity"
        if residuals is not None:
            res_vols = Volumes(residuals, "residuals")
            check_same_space(res_vols.shape, res_vols.affine, res_vols.first, vols.shape, vols.affine, vols.first)
            if res_vols.n < 2:
                raise ValueError(f"residuals: need at least 2 volumes to estimate a noise covariance, got {res_vols.n}")
            res = res_vols.extract_by_voxel(union.reshape(vols.shape))  # (n_union, n_residuals)
            if not np.isfinite(res).all():
                raise ValueError(f"residuals ({res_vols.first}): {int((~np.isfinite(res)).any(axis=1).sum())} voxels "
                                 "inside the searchlight spheres are NaN/inf")
            res_table = _with_zero_row(res, dtype, device)
            noise_model = f"residuals:{precision_method}"
        table = torch.from_numpy(table).to(device=device, dtype=dtype)
    else:
        table = _condition_table(values, cond_index, len(unique_cond), method, union_flat, vols)
        table = table.to(device=device, dtype=dtype)
    return SearchlightData(spheres=spheres, method=method, conditions=unique_cond, table=table, rows=rows,
                           residuals=res_table, precision_method=precision_method, n_runs=n_runs,
                           noise_model=noise_model)


def _crossnobis_table(values: np.ndarray, cell: np.ndarray, n_runs: int, n_cond: int) -> np.ndarray:
    """The crossnobis table of ``SearchlightData``: ``(n_voxels + 1, 2 n_runs n_cond)`` float64, every
    voxel's training means of each fold (the mean of every observation outside run ``f``, as rsatoolbox's
    ``average_dataset_by``), then its test means (run ``f``), then a last row of zeros.

    ``values (n_voxels, n_volumes)``; ``cell (n_volumes,)``: each volume's ``run * n_cond + condition``.
    Written into one buffer (hundreds of MB for a whole brain).
    """
    n, width = values.shape[0], n_runs * n_cond
    sums, counts = _sums_by(values, cell, width)
    sums = sums.reshape(n, n_runs, n_cond)
    counts = counts.reshape(n_runs, n_cond)
    table = np.empty((n + 1, 2 * width))
    train = table[:-1, :width].reshape(n, n_runs, n_cond)
    np.subtract(sums.sum(axis=1, keepdims=True), sums, out=train)
    train /= counts.sum(axis=0) - counts
    np.divide(sums, counts, out=table[:-1, width:].reshape(n, n_runs, n_cond))
    table[-1] = 0.0
    return table


def _sums_by(values: np.ndarray, group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sums (n_voxels, n), counts (n,))``: every voxel's sum of ``values (n_voxels, n_volumes)`` over
    the volumes of each group ``group (n_volumes,)`` in ``0..n-1``. With one volume per group (the common
    design) the sums are the values themselves, reordered, and no product runs."""
    counts = np.bincount(group, minlength=n)
    if (counts == 1).all():
        order = np.argsort(group)
        return (values if (order == np.arange(n)).all() else values[:, order]), counts
    return values @ _one_hot(group, n).T, counts


def _check_finite(values: np.ndarray, union_flat: np.ndarray, vols: Volumes) -> None:
    """Raise a ValueError naming the voxels of ``values (n_voxels, n_volumes)`` that are NaN/inf in some volume."""
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        first = tuple(int(v) for v in np.unravel_index(union_flat[np.flatnonzero(bad)[0]], vols.shape))
        raise ValueError(f"betas ({vols.first}): {int(bad.sum())} voxel(s) inside the searchlight spheres are NaN/inf "
                         f"in some volume (first at voxel {first}); leave them out of the mask, or use threshold=1.0 "
                         "or truncate_at_boundary=True so that spheres stay inside the mask")


def _condition_table(values: np.ndarray, cond_index: np.ndarray, n_cond: int, method: str,
                     union_flat: np.ndarray, vols: Volumes) -> torch.Tensor:
    """The table of ``SearchlightData`` (float64, CPU) for the methods other than crossnobis:
    ``(n_voxels + 1, width)``, every voxel's condition means (shifted, see below), then a column of
    ones (the spheres' Gram matrices then hold the pattern sums and voxel counts too), then zero columns
    up to ``width``, ``n_cond + 1`` rounded up to a multiple of ``TABLE_WIDTH_MULTIPLE``; a last row of
    zeros.

    ``values (n_voxels, n_volumes)``; ``cond_index (n_volumes,)``: each volume's place among the sorted
    conditions. Built in one buffer (a whole-brain table is hundreds of MB: every extra copy costs its
    page faults).
    """
    width = -(-(n_cond + 1) // TABLE_WIDTH_MULTIPLE) * TABLE_WIDTH_MULTIPLE
    table = _empty((values.shape[0] + 1) * width, torch.float64, torch.device("cpu")).view(-1, width)
    means = table[:-1, :n_cond]
    sums, counts = _sums_by(values, cond_index, n_cond)
    # the condition means, as rsatoolbox averages repeats (one volume per condition: its values)
    means.copy_(torch.from_numpy(sums if (counts == 1).all() else sums / counts))
    # shifts that leave the dissimilarities unchanged and keep the sums in rdms_at small (precision):
    # correlation is blind to a constant added to a condition's pattern, distances to one added to a voxel
    shift = means.mean(dim=0 if method == "correlation" else 1, keepdim=True)
    if not bool(torch.isfinite(shift).all()):  # a NaN/inf value spreads into the shifts
        _check_finite(values, union_flat, vols)
        raise ValueError(f"betas ({vols.first}): values too large to average in float64 "
                         f"(largest magnitude {np.abs(values).max():.3g})")
    means.sub_(shift)
    table[:-1, n_cond] = 1.0
    table[:-1, n_cond + 1:] = 0.0
    table[-1] = 0.0
    return table


def _one_hot(index: np.ndarray, n: int) -> np.ndarray:
    """``(n, len(index))`` float64 with a 1 at ``[index[i], i]``: sums over groups as one matrix product."""
    out = np.zeros((n, len(index)))
    out[index, np.arange(len(index))] = 1.0
    return out


def _with_zero_row(array: np.ndarray, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    out = torch.zeros(array.shape[0] + 1, array.shape[1], dtype=dtype, device=device)
    out[:-1] = torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)
    return out


def searchlight_rdms(
    betas: ImagesLike,
    conditions: Sequence[int] | Sequence[str] | np.ndarray,
    *,
    chunk_size: int | None = None,
    progress: bool = False,
    **options: Any,
) -> Any:
    """The RDM of every searchlight sphere, as rsatoolbox's ``get_volume_searchlight`` + ``get_searchlight_RDMs``.

    All RDMs are kept in memory (``n_spheres x n_pairs`` float64): for maps,
    ``rdl_neuro.inference.searchlight.evaluate_searchlight`` streams them instead.

    Threads: every torch op runs on one thread during the call (``torch.set_num_threads(1)``, restored
    after), and on the CPU as many chunks as torch had threads on entry are computed side by side in
    Python threads; the RDMs are the same, bit for bit, whatever the thread count.

    Parameters
    ----------
    betas, conditions
        As :func:`prepare_searchlight`.
    chunk_size : int, optional
        Spheres per batch (default: about 64 MB of intermediates).
    progress : bool
        Show a progress bar.
    **options
        The keyword arguments of :func:`prepare_searchlight` (``mask``, ``radius``,
        ``threshold``, ``radius_unit``, ``truncate_at_boundary``, ``runs``, ``method``,
        ``residuals``, ``precision_method``, ``device``, ``dtype``).

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per sphere over the sorted conditions
        (``pattern_descriptors['stimulus']``); ``rdm_descriptors``
        ``voxel_index`` (the centre's flat index, as rsatoolbox's), ``i``, ``j``,
        ``k`` (its voxel coordinates) and ``n_voxels``.

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> betas = nib.Nifti1Image(rng.normal(size=(6, 6, 6, 4)), np.eye(4))
    >>> mask = nib.Nifti1Image(np.ones((6, 6, 6), np.uint8), np.eye(4))
    >>> rdms = searchlight_rdms(betas, [1, 2, 3, 4], mask=mask, radius=2, threshold=0.5)
    >>> rdms.n_rdm, rdms.n_cond
    (216, 4)
    """
    from rsatoolbox.rdm import RDMs

    # many small torch ops: each on one torch thread, the cores used by chunks side by side (rdl_neuro._threads)
    with one_torch_thread() as threads:
        data = prepare_searchlight(betas, conditions, **options)
        n = data.n_conditions
        out = np.empty((len(data.spheres), n * (n - 1) // 2))
        chunks = data.iter_rdms(chunk_size=chunk_size, progress=progress,
                                workers=chunk_workers(threads, data.table.device))
        with contextlib.closing(chunks):  # (an error stops the chunks' threads before the thread count returns)
            for lo, hi, rdms in chunks:
                out[lo:hi] = rdms.cpu().numpy()
    ijk = data.spheres.ijk
    return RDMs(out, dissimilarity_measure=DISSIMILARITY_MEASURES[data.method],
                descriptors={"noise_model": data.noise_model} if data.method == "crossnobis" else {},
                rdm_descriptors={"voxel_index": data.spheres.centers.copy(), "i": ijk[:, 0], "j": ijk[:, 1],
                                 "k": ijk[:, 2], "n_voxels": data.spheres.n_voxels.copy()},
                pattern_descriptors={"stimulus": data.conditions.copy()})
