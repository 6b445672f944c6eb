"""Teacher targets for RDL: a fixed RDM over stimulus ids (``RDMTeacher``) and a frozen network (``NetworkTeacher``).

``RDMTeacher`` holds one or several RDMs (subjects, sessions) over a fixed set
of stimuli, e.g. brain RDMs measured once. For a batch of stimulus ids it
returns the ``(b, b)`` sub-RDM and the mask of usable pairs. A pair is
unusable when

- either sample's stimulus is not covered by the teacher (``UNCOVERED = -1``
  or an id the teacher does not know),
- the teacher's entry is NaN (a missing dissimilarity), or
- both samples show the same stimulus (two augmentations of one image, and
  the diagonal): the teacher says 0 there, which would ask the student to
  collapse two different inputs.

``NetworkTeacher`` wraps a frozen model; its layer features are computed on
the batch (RDMs are then built by the loss), optionally cached per stimulus.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rdl_neuro.data.ids import UNCOVERED, check_id_kinds, duplicate_ids, id_kind, id_tensor, plain_ids
from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.rdm.calc import RSATOOLBOX_MEASURE, n_stimuli_from_length, to_condensed, to_square

__all__ = ["RDMTeacher", "NetworkTeacher", "UNCOVERED"]

COMBINE = ("mean", "per_rdm")
#: integer ids below this get a direct id -> row table (at most 8 MB); larger ids are searched
ROW_TABLE_LIMIT = 1 << 20
_MEASURE_TO_METHOD = {v: k for k, v in RSATOOLBOX_MEASURE.items()}


class RDMTeacher:
    """A fixed teacher RDM (or several) over stimulus ids.

    Parameters
    ----------
    rdms : Tensor or array ``(n, n)`` or ``(n_rdm, n, n)``
        Square RDMs: symmetric, zero diagonal, non-negative; NaN marks missing
        entries (symmetrically). Stored as float64 on the CPU; per-device
        copies are made on first use.
    ids : sequence of hashable, length ``n``
        The stimulus id of each row/column (ints, strings, ...), unique;
        normalised by ``rdl_neuro.data.ids.plain_id`` (``3.0`` is ``3``).
    method : str
        The dissimilarity measure, informational (written by ``to_rsatoolbox``).
    combine : {"mean", "per_rdm"}
        ``mean`` averages the RDMs entry by entry (ignoring NaN; an entry is
        missing only when it is missing in all RDMs). ``per_rdm`` keeps them
        and draws one (uniformly, from ``generator``) per ``batch_target`` call.
    seed : int
        Seed of the per-RDM draws. Under data parallelism every rank must draw
        the same RDM each step: use the same seed on every rank.
    atol : float
        Tolerance of the symmetry and zero-diagonal checks, relative to the
        largest dissimilarity.

    Stimulus ids in batches are integers (``torch.long``); ``batch_target``
    also accepts a sequence of arbitrary ids. Ids the teacher does not know
    (and ``UNCOVERED = -1``) are uncovered; ids of a kind the teacher has
    none of (integer batch ids for a teacher with string ids) raise a
    TypeError naming both, as no batch could ever be covered.

    Examples
    --------
    A teacher RDM over three stimuli with ids 10, 11, 12; a batch holding stimuli 12, 10
    and an uncovered one (id 99) gets the matching sub-RDM and a mask of usable pairs:

    >>> import numpy as np
    >>> from rdl_neuro.train import RDMTeacher
    >>> teacher = RDMTeacher.from_array(np.array([1., 2., 3.]), ids=[10, 11, 12])
    >>> teacher
    RDMTeacher(n_stimuli=3, n_rdms=1, method='unknown', combine='mean')
    >>> target, mask = teacher.batch_target([12, 10, 99])
    >>> target
    tensor([[0., 2., 0.],
            [2., 0., 0.],
            [0., 0., 0.]], dtype=torch.float64)
    >>> mask
    tensor([[False,  True, False],
            [ True, False, False],
            [False, False, False]])
    """

    def __init__(
        self,
        rdms: torch.Tensor | np.ndarray,
        ids: Sequence[Hashable],
        *,
        method: str = "unknown",
        combine: str = "mean",
        seed: int = 0,
        atol: float = 1e-8,
    ):
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
        rdms_t = torch.as_tensor(np.asarray(rdms) if not isinstance(rdms, torch.Tensor) else rdms)
        rdms_t = rdms_t.detach().to(device="cpu", dtype=torch.float64)
        if rdms_t.ndim == 2:
            rdms_t = rdms_t.unsqueeze(0)
        if rdms_t.ndim != 3 or rdms_t.shape[-1] != rdms_t.shape[-2]:
            raise ValueError(
                f"teacher RDMs must be square, of shape (n, n) or (n_rdm, n, n); got shape {tuple(rdms_t.shape)}"
            )
        if rdms_t.shape[0] == 0:
            raise ValueError("no teacher RDMs given (n_rdm = 0)")
        ids = plain_ids(ids)
        n = rdms_t.shape[-1]
        if len(ids) != n:
            raise ValueError(f"{len(ids)} stimulus ids given for teacher RDMs over {n} stimuli")
        if n < 2:
            raise ValueError(f"a teacher RDM needs at least 2 stimuli, got {n}")
        self._check_ids(ids)
        self._check_values(rdms_t, ids, atol)
        # symmetric within tolerance: make it exact, so (i, j) and (j, i) targets agree bit for bit
        rdms_t = (rdms_t + rdms_t.transpose(-1, -2)) / 2
        rdms_t.diagonal(dim1=-2, dim2=-1).zero_()
        self.ids: list[Hashable] = ids
        self.rdms: torch.Tensor = rdms_t
        self.method = method
        self.combine = combine
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        if combine == "mean":
            # nanmean, but an entry missing in every RDM stays NaN (not 0/0 warnings)
            valid = ~torch.isnan(rdms_t)
            total = torch.where(valid, rdms_t, torch.zeros_like(rdms_t)).sum(0)
            count = valid.sum(0)
            mean = total / count.clamp_min(1)
            self._targets = torch.where(count > 0, mean, torch.full_like(mean, float("nan"))).unsqueeze(0)
        else:
            self._targets = rdms_t
        self._has_nan = bool(torch.isnan(self._targets).any())
        self._index = {i: k for k, i in enumerate(ids)}
        # vectorised lookup of integer ids: sorted id values and their rows, searched with searchsorted
        int_rows = [(i, k) for k, i in enumerate(ids) if id_kind(i) == "int"]
        if int_rows:
            values = torch.tensor([v for v, _ in int_rows], dtype=torch.long)
            rows = torch.tensor([k for _, k in int_rows], dtype=torch.long)
            order = torch.argsort(values)
            self._int_values, self._int_rows = values[order], rows[order]
        else:
            self._int_values = torch.empty(0, dtype=torch.long)
            self._int_rows = torch.empty(0, dtype=torch.long)
        self._row_table = self._direct_row_table(self._int_values, self._int_rows)
        self._device_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _direct_row_table(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """``table[id] = row`` (-1 for ids the teacher lacks) when the integer ids are non-negative
        and below ``ROW_TABLE_LIMIT``, else None: a batch's rows are then one ``index_select``
        (a training step's lookup, in place of a search and its checks)."""
        if values.numel() == 0 or int(values[0]) < 0 or int(values[-1]) >= ROW_TABLE_LIMIT:
            return None
        table = torch.full((int(values[-1]) + 1,), -1, dtype=torch.long)
        table[values] = rows
        return table

    def _table_rows(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Rows of the integer ids ``(b,)`` from the direct table (-1 for ids the teacher lacks), or None
        when there is no table, the ids are not on the CPU or the batch is empty, or an id is outside the
        table (UNCOVERED, say): ``index_select`` checks the range itself and raises an IndexError."""
        if self._row_table is None or ids.device.type != "cpu" or ids.numel() == 0:
            return None
        try:
            return self._row_table.index_select(0, ids)
        except IndexError:
            return None

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _check_ids(ids: list[Hashable]) -> None:
        try:
            unique = set(ids)
        except TypeError as err:
            raise TypeError(f"stimulus ids must be hashable: {err}") from None
        if len(unique) != len(ids):
            raise ValueError(f"duplicate stimulus ids in the teacher: {duplicate_ids(ids)[:5]}")
        if UNCOVERED in unique:
            raise ValueError(f"stimulus id {UNCOVERED} is reserved for uncovered samples (UNCOVERED)")

    @staticmethod
    def _check_values(rdms: torch.Tensor, ids: list[Hashable], atol: float) -> None:
        if torch.isinf(rdms).any():
            k, i, j = torch.nonzero(torch.isinf(rdms))[0].tolist()
            raise ValueError(f"teacher RDM {k} has an infinite dissimilarity between stimuli {ids[i]!r} and {ids[j]!r}")
        nan = torch.isnan(rdms)
        finite = torch.where(nan, torch.zeros_like(rdms), rdms)
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        tol = atol * max(scale, 1.0)
        if (finite < -tol).any():
            k, i, j = torch.nonzero(finite < -tol)[0].tolist()
            raise ValueError(
                f"teacher RDM {k} has a negative dissimilarity {float(rdms[k, i, j]):.4g} between stimuli "
                f"{ids[i]!r} and {ids[j]!r}; dissimilarities must be >= 0"
            )
        diag = torch.diagonal(rdms, dim1=-2, dim2=-1)
        bad_diag = torch.isnan(diag) | (diag.abs() > tol)
        if bad_diag.any():
            k, i = torch.nonzero(bad_diag)[0].tolist()
            raise ValueError(
                f"teacher RDM {k} has a non-zero diagonal: entry ({ids[i]!r}, {ids[i]!r}) is {float(diag[k, i]):.4g}; "
                "a stimulus has zero dissimilarity to itself"
            )
        asym = (nan != nan.transpose(-1, -2)) | ((finite - finite.transpose(-1, -2)).abs() > tol)
        if asym.any():
            k, i, j = torch.nonzero(asym)[0].tolist()
            raise ValueError(
                f"teacher RDM {k} is not symmetric: entry ({ids[i]!r}, {ids[j]!r}) = {float(rdms[k, i, j]):.4g} "
                f"but ({ids[j]!r}, {ids[i]!r}) = {float(rdms[k, j, i]):.4g}"
            )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_array(
        cls,
        rdm: torch.Tensor | np.ndarray,
        ids: Sequence[Hashable],
        *,
        method: str = "unknown",
        combine: str = "mean",
        seed: int = 0,
        atol: float = 1e-8,
    ) -> RDMTeacher:
        """From square ``(n, n)`` / ``(n_rdm, n, n)`` or condensed ``(n_pairs,)`` / ``(n_rdm, n_pairs)`` RDMs.

        A 2-D array is square when it is ``(len(ids), len(ids))``, else it is
        read as a stack of condensed RDMs (scipy ``squareform`` order).
        """
        ids = list(ids)
        t = torch.as_tensor(np.asarray(rdm) if not isinstance(rdm, torch.Tensor) else rdm).detach()
        t = t.to(device="cpu", dtype=torch.float64)
        n = len(ids)
        condensed_len = n * (n - 1) // 2
        if t.ndim == 1 or (t.ndim == 2 and t.shape != (n, n) and t.shape[1] == condensed_len):
            if t.shape[-1] != condensed_len:
                try:
                    hint = f"an RDM over {n_stimuli_from_length(t.shape[-1])} stimuli"
                except ValueError:
                    hint = "not a condensed RDM for any number of stimuli"
                raise ValueError(
                    f"RDM/ids length mismatch: condensed RDM of length {t.shape[-1]} ({hint}) "
                    f"but {n} stimulus ids (expecting length {condensed_len})"
                )
            t = to_square(t)
        elif t.ndim == 2 and t.shape[0] != t.shape[1]:
            raise ValueError(
                f"teacher RDM of shape {tuple(t.shape)} is not square (n, n), nor a stack of condensed RDMs "
                f"(n_rdm, {condensed_len}) for the {n} ids given"
            )
        elif t.ndim >= 2 and t.shape[-1] == t.shape[-2] and t.shape[-1] != n:
            raise ValueError(f"RDM/ids length mismatch: square RDM of shape {tuple(t.shape)} but {n} stimulus ids")
        return cls(t, ids, method=method, combine=combine, seed=seed, atol=atol)

    @classmethod
    def from_rsatoolbox(
        cls,
        rdms: Any,
        stimulus_descriptor: str | None = None,
        combine: str = "mean",
        *,
        seed: int = 0,
        atol: float = 1e-8,
    ) -> RDMTeacher:
        """From rsatoolbox ``RDMs`` (one or several subjects/sessions); ids from ``pattern_descriptors``.

        ``stimulus_descriptor`` names the pattern descriptor holding the ids; it
        must exist. The default (None) reads ``stimulus``, else falls back to
        ``index`` with a warning (see ``rdl_neuro.rdm.interop.stimulus_ids_of``).
        """
        from rdl_neuro.rdm.interop import from_rsatoolbox

        vectors, ids = from_rsatoolbox(rdms, descriptor=stimulus_descriptor)
        # rsatoolbox stores NaN for missing pairs; to_square keeps them (symmetrically)
        measure = getattr(rdms, "dissimilarity_measure", None) or "unknown"
        method = _MEASURE_TO_METHOD.get(measure, measure)
        return cls(to_square(vectors), ids, method=method, combine=combine, seed=seed, atol=atol)

    @classmethod
    def from_dataframe(
        cls,
        df: Any,
        stimulus_a: str = "stimulus_a",
        stimulus_b: str = "stimulus_b",
        dissimilarity: str = "dissimilarity",
        *,
        rdm: str | None = None,
        ids: Sequence[Hashable] | None = None,
        method: str = "unknown",
        combine: str = "mean",
        seed: int = 0,
        atol: float = 1e-8,
    ) -> RDMTeacher:
        """From a long pandas DataFrame with one row per pair ``(stimulus_a, stimulus_b, dissimilarity)``.

        Each unordered pair may appear once (either order); pairs that do not
        appear are missing (NaN). Rows with ``stimulus_a == stimulus_b`` must
        hold 0. ``rdm`` names an optional column (subject, session) that
        splits the rows into several RDMs. ``ids`` fixes the stimulus order
        (default: order of first appearance).
        """
        for col in (stimulus_a, stimulus_b, dissimilarity) + ((rdm,) if rdm else ()):
            if col not in df.columns:
                raise KeyError(f"column {col!r} not in the DataFrame (columns: {list(df.columns)})")
        a = plain_ids(df[stimulus_a].tolist())
        b = plain_ids(df[stimulus_b].tolist())
        values = torch.from_numpy(df[dissimilarity].to_numpy(dtype=np.float64, copy=True))
        if ids is None:
            ids = list(dict.fromkeys(a + b))
        else:
            ids = plain_ids(ids)
            cls._check_ids(ids)
            in_table = list(dict.fromkeys(a + b))
            check_id_kinds(in_table, ids, f"the DataFrame's {stimulus_a!r}/{stimulus_b!r} columns", "ids=")
            known = set(ids)
            unknown = [i for i in in_table if i not in known]
            if unknown:
                raise ValueError(f"stimulus ids in the DataFrame but not in ids: {unknown[:5]}")
        index = {i: k for k, i in enumerate(ids)}
        groups = df[rdm].tolist() if rdm else [0] * len(a)
        group_ids = list(dict.fromkeys(groups))
        group_index = {g: k for k, g in enumerate(group_ids)}
        n = len(ids)
        ia = torch.tensor([index[v] for v in a], dtype=torch.long)
        ib = torch.tensor([index[v] for v in b], dtype=torch.long)
        ig = torch.tensor([group_index[g] for g in groups], dtype=torch.long)
        same = ia == ib
        if same.any() and (values[same].abs() > atol).any():
            k = int(torch.nonzero(same & (values.abs() > atol))[0])
            raise ValueError(
                f"non-zero diagonal: DataFrame row {k} gives dissimilarity {float(values[k]):.4g} "
                f"between stimulus {a[k]!r} and itself"
            )
        lo, hi = torch.minimum(ia, ib), torch.maximum(ia, ib)
        key = (ig * n + lo) * n + hi
        if len(torch.unique(key[~same])) != int((~same).sum()):
            uniq, counts = torch.unique(key[~same], return_counts=True)
            dup = int(uniq[counts > 1][0])
            i, j = (dup // n) % n, dup % n
            raise ValueError(f"the pair ({ids[i]!r}, {ids[j]!r}) appears more than once in the DataFrame")
        rdms_t = torch.full((len(group_ids), n, n), float("nan"), dtype=torch.float64)
        rdms_t[ig, ia, ib] = values
        rdms_t[ig, ib, ia] = values
        diag = torch.arange(n)
        rdms_t[:, diag, diag] = 0.0
        return cls(rdms_t, ids, method=method, combine=combine, seed=seed, atol=atol)

    # ------------------------------------------------------------------ lookups

    @property
    def n_stimuli(self) -> int:
        """Number of stimuli the teacher RDMs cover."""
        return len(self.ids)

    @property
    def n_rdms(self) -> int:
        """Number of teacher RDMs (1 after ``combine="mean"``)."""
        return self.rdms.shape[0]

    def _on(
        self, device: torch.device, dtype: torch.dtype = torch.float64
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets (in ``dtype``), sorted int ids and their rows on ``device`` (cached per device and dtype)."""
        key = (device, dtype)
        if key not in self._device_cache:
            self._device_cache[key] = (
                self._targets.to(device=device, dtype=dtype),
                self._int_values.to(device),
                self._int_rows.to(device),
            )
        return self._device_cache[key]

    def rows_of(self, stimulus_ids: torch.Tensor | Sequence[Hashable]) -> torch.Tensor:
        """Teacher row of every sample, ``(b,)`` long, ``-1`` where the stimulus is not covered.

        A tensor of integer ids (float tensors of whole numbers too) is mapped
        with one ``index_select`` of a direct id -> row table on the CPU when the
        teacher's ids are non-negative and below ``ROW_TABLE_LIMIT``, else with
        ``searchsorted`` (both vectorised); a sequence of arbitrary ids with one
        dict lookup per sample. Ids follow ``rdl_neuro.data.ids``: ``3.0`` is
        ``3``; ids of a kind the teacher has none of raise a TypeError.
        """
        return self._rows_and_coverage(stimulus_ids)[0]

    def _rows_and_coverage(self, stimulus_ids: torch.Tensor | Sequence[Hashable]) -> tuple[torch.Tensor, bool]:
        """``rows_of(stimulus_ids)`` and whether every sample is covered (the common training case,
        found with fewer ops than a separate check of the rows)."""
        if isinstance(stimulus_ids, torch.Tensor):
            if stimulus_ids.ndim != 1:
                raise ValueError(f"stimulus_ids must be 1-D (b,), got shape {tuple(stimulus_ids.shape)}")
            ids = id_tensor(stimulus_ids, "stimulus_ids")
            rows = self._table_rows(ids)
            if rows is not None:
                return rows, int(rows.min()) >= 0
            _, values, rows = self._on(ids.device)
            if values.numel() == 0:
                # a teacher without integer ids covers no integer id: say so unless all are UNCOVERED
                check_id_kinds(ids[ids != UNCOVERED].tolist(), self.ids, "the batch", "the teacher")
                return torch.full_like(ids, -1), ids.numel() == 0
            pos = torch.searchsorted(values, ids).clamp_max_(values.numel() - 1)
            found = values[pos] == ids
            if bool(found.all()):
                return rows[pos], True
            return torch.where(found, rows[pos], -1), False
        query = plain_ids(stimulus_ids)
        check_id_kinds(query, self.ids, "the batch", "the teacher")
        rows = torch.tensor([self._index.get(i, -1) for i in query], dtype=torch.long)
        return rows, bool((rows >= 0).all())

    def covers(self, stimulus_ids: torch.Tensor | Sequence[Hashable]) -> torch.Tensor:
        """Boolean ``(b,)``: which samples show a stimulus the teacher has an RDM row for."""
        return self.rows_of(stimulus_ids) >= 0

    def draw(self) -> int:
        """Index of the RDM used by the next ``batch_target`` call (0 with ``combine="mean"``); advances the draw."""
        if self._targets.shape[0] == 1:
            return 0
        return int(torch.randint(self._targets.shape[0], (1,), generator=self.generator))

    def batch_target(
        self,
        stimulus_ids: torch.Tensor | Sequence[Hashable],
        *,
        rdm_index: int | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target sub-RDM of a batch and the mask of usable pairs.

        Parameters
        ----------
        stimulus_ids : Tensor ``(b,)`` long, or sequence of ids
        rdm_index : int, optional
            Which RDM to use with ``combine="per_rdm"``; default draws one.
        dtype : torch.dtype
            Floating dtype of the target (a copy per dtype is cached, so a
            float32 student does not convert the teacher every step).

        Returns
        -------
        target : Tensor ``(b, b)`` in ``dtype``, on the ids' device; 0 where unusable
        mask : Tensor ``(b, b)`` bool; True for usable pairs (symmetric, False on the diagonal)
        """
        rows, all_covered = self._rows_and_coverage(stimulus_ids)
        device = rows.device
        targets, _, _ = self._on(device, dtype)
        k = self.draw() if rdm_index is None else int(rdm_index)
        if not 0 <= k < targets.shape[0]:
            raise IndexError(f"rdm_index {k} out of range for {targets.shape[0]} teacher RDM(s)")
        distinct = rows[:, None] != rows[None, :]
        if not self._has_nan and all_covered:
            # the common training case, in fewer ops: the target is already 0 off the mask (the
            # diagonal and repeated stimuli, as a teacher RDM's diagonal is 0)
            return targets[k].index_select(0, rows).index_select(1, rows), distinct
        covered = rows >= 0
        safe = rows.clamp_min(0)
        # two contiguous row/column selections are much cheaper than one 2-D fancy index
        target = targets[k].index_select(0, safe).index_select(1, safe)
        mask = covered[:, None] & covered[None, :] & distinct & ~torch.isnan(target)
        return torch.where(mask, target, torch.zeros_like(target)), mask

    # ------------------------------------------------------------------ export

    def to_rsatoolbox(self, descriptor: str = "stimulus") -> Any:
        """All stored RDMs as rsatoolbox ``RDMs`` (ids in ``pattern_descriptors[descriptor]``)."""
        from rdl_neuro.rdm.interop import to_rsatoolbox

        return to_rsatoolbox(to_condensed(self.rdms), self.ids, method=self.method, descriptor=descriptor)

    def __repr__(self) -> str:
        return (
            f"RDMTeacher(n_stimuli={self.n_stimuli}, n_rdms={self.n_rdms}, method={self.method!r}, "
            f"combine={self.combine!r})"
        )


class NetworkTeacher:
    """A frozen teacher network whose named layers' features are computed on the batch.

    The model is put in eval mode with ``requires_grad_(False)`` and is run
    under ``torch.no_grad()``. It is deliberately not an ``nn.Module``, so
    placing it on a loss or trainer never adds its parameters to an optimiser
    or a ``state_dict``.

    Parameters
    ----------
    model : nn.Module
    layers : iterable of str
        Names as in ``model.named_modules()``; unknown names raise a KeyError
        listing close matches.
    cache : bool
        Cache logits and features per stimulus id (samples with
        ``UNCOVERED`` ids are never cached). Only valid when a stimulus id
        always shows the same input (no random augmentation): the teacher
        then runs once per stimulus.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str] | str, cache: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model.eval().requires_grad_(False)
        self.recorder = LayerRecorder(model, layers, detach=True)
        self.layers: tuple[str, ...] = self.recorder.layers
        self.cache = cache
        self._cache: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self.cache_hits = 0
        self.cache_misses = 0

    def to(self, *args: Any, **kwargs: Any) -> NetworkTeacher:
        """Move the model (like ``nn.Module.to``); clears the cache."""
        self.model.to(*args, **kwargs)
        self._cache.clear()
        return self

    def clear_cache(self) -> None:
        """Forget the cached teacher features (see ``cache=True``)."""
        self._cache.clear()

    def close(self) -> None:
        """Remove the recording hooks from the model and drop the cache (the model is left as it is,
        frozen); a closed teacher cannot be run. Also on leaving a ``with`` block."""
        self.recorder.close()
        self._cache.clear()

    def __enter__(self) -> NetworkTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.recorder.active:
            raise RuntimeError("this NetworkTeacher was closed (its hooks are removed); make a new one")
        self.model.eval()  # a trainer's model.train() elsewhere must not switch the teacher back
        logits = self.model(x)
        return logits, self.recorder.features

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, stimulus_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the teacher on ``x (b, ...)``.

        Returns ``(logits (b, n_classes), {layer: features (b, f)})``, detached.
        """
        if not (self.cache and stimulus_ids is not None):
            return self._run(x)
        ids = stimulus_ids.tolist()
        if len(ids) != x.shape[0]:
            raise ValueError(f"{len(ids)} stimulus ids for a batch of {x.shape[0]} inputs")
        miss = [k for k, i in enumerate(ids) if i == UNCOVERED or i not in self._cache]
        self.cache_misses += len(miss)
        self.cache_hits += len(ids) - len(miss)
        if miss:
            logits_m, feats_m = self._run(x[miss])
            fresh = {k: (logits_m[j], tuple(feats_m[n][j] for n in self.layers)) for j, k in enumerate(miss)}
            for k, entry in fresh.items():
                if ids[k] != UNCOVERED:
                    self._cache[ids[k]] = entry
        else:
            fresh = {}
        rows = [fresh[k] if k in fresh else self._cache[i] for k, i in enumerate(ids)]
        logits = torch.stack([r[0] for r in rows])
        feats = {n: torch.stack([r[1][m] for r in rows]) for m, n in enumerate(self.layers)}
        return logits, feats

    def __repr__(self) -> str:
        return f"NetworkTeacher({type(self.model).__name__}, layers={list(self.layers)}, cache={self.cache})"
