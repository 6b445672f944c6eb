"""What the Trainer feeds a step: batch samplers over the global batch, unpacking items, dataset stimulus ids.

Every order is derived from ``(seed, epoch)`` (see ``rdl_neuro.train.seeds``),
so a run resumed at an epoch boundary replays the uninterrupted run. Under
torchrun every rank takes an equal contiguous slice of each *global* batch.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from rdl_neuro.data.ids import UNCOVERED, id_tensor
from rdl_neuro.train.seeds import derive_seed

__all__ = ["GlobalBatchSampler", "unpack_batch", "dataset_stimulus_ids", "coverage_sampler", "skip_reason"]


class GlobalBatchSampler:
    """Batch sampler: a permutation seeded by ``(seed, epoch)``, cut into global batches, sliced per rank.

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int
        Global batch size; rank ``r`` of ``world`` gets the ``r``-th of ``world`` equal contiguous
        slices of every global batch, so the samples of a last batch that do not divide evenly
        (at most ``world - 1``) are skipped in that epoch.
    seed : int
    shuffle : bool
        False keeps the dataset order.
    world, rank : int
        ``(1, 0)`` outside torchrun.

    Examples
    --------
    >>> sampler = GlobalBatchSampler(5, 2, seed=0, shuffle=False, world=1, rank=0)
    >>> list(sampler)
    [[0, 1], [2, 3], [4]]
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool, world: int, rank: int) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.world, self.rank, self.epoch = world, rank, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` (from 0) in the next iteration."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, 1, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            local = len(batch) // self.world
            if local == 0:
                continue
            yield batch[self.rank * local:(self.rank + 1) * local]

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.world else 0)


def unpack_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, labels (b,) long, stimulus ids (b,) long)`` of a ``(x, y)`` or ``(x, y, stimulus_id)`` batch;
    ids are ``-1`` (``UNCOVERED``) for ``(x, y)`` batches. Labels and ids follow
    ``rdl_neuro.data.ids.id_tensor``: whole-number floats are integers; strings and
    fractions raise, naming a few of them (never a silent truncation)."""
    if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
        raise TypeError("training data must yield (x, y) or (x, y, stimulus_id) items, "
                        f"got batches of {type(batch).__name__}")
    if len(batch) == 2:
        x, y = batch
        sid = torch.full((len(y),), UNCOVERED, dtype=torch.long)
    else:
        x, y, sid = batch
        sid = id_tensor(sid, "stimulus ids in the training items")
    return x, id_tensor(y, "class labels", "map class names to integers 0..n_classes-1"), sid


def dataset_stimulus_ids(data: Dataset) -> torch.Tensor:
    """Stimulus ids ``(n,)`` of every item of a training Dataset (``-1`` for items without one).

    Reads ``data.stimulus_ids`` (``StimulusDataset``) when present, else the third element of
    each item. Not to be confused with ``rdl_neuro.rdm.interop.stimulus_ids_of``, which reads
    the pattern descriptors of rsatoolbox ``RDMs``.
    """
    ids = getattr(data, "stimulus_ids", None)
    if ids is not None:
        return id_tensor(ids).reshape(-1)
    out = []
    for i in range(len(data)):  # type: ignore[arg-type]
        item = data[i]
        out.append(item[2] if len(item) == 3 else UNCOVERED)
    return id_tensor(out, "stimulus ids in the training items")


def skip_reason(loss: Any, layer: str, data: Dataset) -> str:
    """Why the transfer term of ``layer`` in ``loss`` had no usable pair in any batch of an epoch."""
    teacher = getattr(loss, "pairs", {}).get(layer)
    if not hasattr(teacher, "covers"):
        return "no batch held two samples (batch_size 1?)"
    ids = dataset_stimulus_ids(data)
    n_cov = int(teacher.covers(ids).sum())
    if n_cov == 0:
        known = ids[ids != UNCOVERED].unique()[:5].tolist()
        return (f"the training data's stimulus ids and the teacher's do not overlap (data ids e.g. {known or 'none'}, "
                f"teacher ids e.g. {teacher.ids[:5]})")
    return (f"no batch held two covered stimuli with a usable teacher pair ({n_cov} of {len(ids)} training samples "
            "are covered); mix covered stimuli into every batch with min_covered >= 2 (config data.min_covered)")


def coverage_sampler(data: Dataset, coverage: Any, batch_size: int, min_covered: int, seed: int,
                     world: int, rank: int) -> Any:
    """A ``CoverageBatchSampler`` over ``data`` with at least ``min_covered`` covered samples per global batch.

    ``coverage`` (an ``RDMTeacher`` or None) decides which stimulus ids are covered
    (``coverage.covers``); None counts every id ``!= -1``. ``batch_size`` and ``min_covered``
    are global; the sampler counts per rank (``ceil(min_covered / world)``).
    """
    from rdl_neuro.data.stimulus import CoverageBatchSampler

    ids = dataset_stimulus_ids(data)
    mask = coverage.covers(ids) if coverage is not None else ids >= 0
    mask = torch.as_tensor(mask, dtype=torch.bool).cpu()
    covered = torch.nonzero(mask).flatten().tolist()
    uncovered = torch.nonzero(~mask).flatten().tolist()
    if not covered:
        raise ValueError("min_covered > 0 but no training sample has a stimulus id covered by the teacher")
    return CoverageBatchSampler(covered, uncovered, batch_size // world, -(-min_covered // world), seed=seed,
                                num_replicas=world, rank=rank)
