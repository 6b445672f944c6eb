"""Samples with stimulus ids (``StimulusDataset``) and a batch sampler that mixes teacher-covered stimuli into every batch.

The common case: a large labelled set (MNIST, CIFAR) plus a small set of
stimuli with brain data. ``CoverageBatchSampler`` guarantees at least
``min_covered`` covered samples in every batch while the rest of each batch
walks through the other (uncovered) data.

What an *epoch* is here: one pass over the uncovered samples, each seen
exactly once. Covered samples are drawn from successive random permutations
(reshuffled whenever one is used up) to fill the rest of every batch; every
covered sample is seen at least once per epoch (with ``drop_last=False``).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from rdl_neuro.data.ids import UNCOVERED, id_tensor, plain_id

__all__ = ["UNCOVERED", "StimulusDataset", "CoverageBatchSampler"]


def _as_id(value: Any, where: str) -> int:
    if value is None:
        return UNCOVERED
    try:
        value = plain_id(value)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{err} (at {where})") from None
    if not isinstance(value, int):
        raise TypeError(
            f"stimulus id {value!r} at {where} is not an integer; map names to integer ids "
            "(RDMTeacher ids can be any hashable, but ids inside batches are torch.long)"
        )
    if value < UNCOVERED:
        raise ValueError(f"stimulus id {value} at {where} is negative; use None or UNCOVERED (-1) for 'no stimulus'")
    return value


class StimulusDataset(Dataset):
    """Wrap a map-style dataset of ``(x, y)`` items so that each item carries a stimulus id: ``(x, y, stimulus_id)``.

    Parameters
    ----------
    dataset : map-style Dataset with ``__len__`` and items ``(x, y)``
    stimulus_ids : sequence of int/None of length ``len(dataset)``, or mapping ``index -> id``
        Non-negative integer ids; ``None``/``UNCOVERED`` (or absence from the
        mapping) marks samples without a stimulus id. Two samples may share an
        id (e.g. repeated presentations of one image).

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from rdl_neuro.data import UNCOVERED, StimulusDataset
    >>> images, labels = torch.zeros(3, 2), torch.tensor([0, 1, 1])
    >>> ds = StimulusDataset(TensorDataset(images, labels), [7, 8, None])   # the third has no id
    >>> ds[1]
    (tensor([0., 0.]), tensor(1), 8)
    >>> ds[2][2] == UNCOVERED
    True
    """

    def __init__(self, dataset: Any, stimulus_ids: Sequence[int | None] | Mapping[int, int]):
        n = len(dataset)
        self.dataset = dataset
        ids = torch.full((n,), UNCOVERED, dtype=torch.long)
        if isinstance(stimulus_ids, Mapping):
            for index, value in stimulus_ids.items():
                index = _as_id(index, f"stimulus_ids key {index!r}")  # 2.0 is 2, 2.5 an error
                if not 0 <= index < n:
                    raise IndexError(f"stimulus_ids maps index {index}, outside the dataset of {n} samples")
                ids[index] = _as_id(value, f"index {index}")
        else:
            values = list(stimulus_ids.tolist() if isinstance(stimulus_ids, (np.ndarray, torch.Tensor)) else stimulus_ids)
            if len(values) != n:
                raise ValueError(f"{len(values)} stimulus ids for a dataset of {n} samples")
            ids = torch.tensor([_as_id(v, f"index {k}") for k, v in enumerate(values)], dtype=torch.long)
        self.stimulus_ids: torch.Tensor = ids
        covered = ids != UNCOVERED
        self.covered_indices: list[int] = torch.nonzero(covered).squeeze(1).tolist()
        self.uncovered_indices: list[int] = torch.nonzero(~covered).squeeze(1).tolist()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            got = f"a {len(item)}-tuple" if isinstance(item, (tuple, list)) else type(item).__name__
            raise TypeError(f"StimulusDataset expects the wrapped dataset's items to be (x, y) pairs, got {got}")
        x, y = item
        return x, y, int(self.stimulus_ids[index])

    def batch_sampler(self, batch_size: int, min_covered: int, **kwargs: Any) -> CoverageBatchSampler:
        """A ``CoverageBatchSampler`` over this dataset's covered/uncovered samples."""
        return CoverageBatchSampler(self.covered_indices, self.uncovered_indices, batch_size, min_covered, **kwargs)


class CoverageBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices with at least ``min_covered`` teacher-covered samples each.

    Parameters
    ----------
    covered_indices, uncovered_indices : sequences of int
        Dataset indices of samples with / without a teacher stimulus id
        (``StimulusDataset.covered_indices`` / ``.uncovered_indices``).
    batch_size : int
        Samples per batch *per rank* (as a DataLoader's ``batch_size`` under
        ``DistributedSampler``); the global batch is ``batch_size * num_replicas``.
    min_covered : int
        Covered samples at least in every (per-rank) batch.
    seed : int
        Batches are a deterministic function of ``(seed, epoch)``; call ``set_epoch``.
    drop_last : bool
        False (default): every uncovered sample is seen exactly once per
        epoch; the uncovered samples are spread evenly over the batches and
        covered ones fill the rest, so every batch is full. True: every batch
        holds exactly ``min_covered`` covered samples per rank; the last
        ``n_uncovered mod (uncovered per batch)`` uncovered samples of the
        shuffled order are left out of this epoch, and covered samples are
        seen at least once only if the batches have room for them.
    num_replicas, rank : int
        Sharding for data parallelism: all ranks generate the same global
        batches (seed and epoch shared) and rank ``r`` takes its share of
        each, at least ``min_covered`` covered samples included. The union of
        the ranks' ``i``-th batches is the ``i``-th batch of a single-process
        sampler with ``batch_size * num_replicas`` and ``min_covered * num_replicas``.

    Covered samples are not repeated within a batch while there are at least
    as many covered samples as a batch needs.
    """

    def __init__(
        self,
        covered_indices: Sequence[int],
        uncovered_indices: Sequence[int],
        batch_size: int,
        min_covered: int,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        # id_tensor: 2.0 is index 2, 2.5 an error (as_tensor(..., dtype=long) would truncate silently)
        self.covered = id_tensor(list(covered_indices), "covered_indices").reshape(-1)
        self.uncovered = id_tensor(list(uncovered_indices), "uncovered_indices").reshape(-1)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= min_covered <= batch_size:
            raise ValueError(f"min_covered must be in [0, batch_size={batch_size}], got {min_covered}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas=}, {rank=}")
        overlap = set(self.covered.tolist()) & set(self.uncovered.tolist())
        if overlap:
            raise ValueError(f"indices both covered and uncovered: {sorted(overlap)[:5]}")
        n_c, n_u = len(self.covered), len(self.uncovered)
        if n_c + n_u == 0:
            raise ValueError("no samples: covered_indices and uncovered_indices are both empty")
        global_batch, global_min = batch_size * num_replicas, min_covered * num_replicas
        if global_min > n_c:
            raise ValueError(
                f"min_covered={min_covered} per batch (x {num_replicas} replicas = {global_min}) exceeds the "
                f"{n_c} covered samples; a batch would have to repeat a stimulus"
            )
        if global_min == global_batch and n_u > 0:
            raise ValueError(
                f"min_covered == batch_size leaves no room for the {n_u} uncovered samples; lower min_covered"
            )
        self.batch_size, self.min_covered = batch_size, min_covered
        self.seed, self.drop_last = seed, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._global_batch, self._global_min = global_batch, global_min
        room = global_batch - global_min  # uncovered slots per global batch
        if drop_last:
            # with no uncovered data at all, an epoch is whole batches of covered samples
            self._n_batches = n_u // room if (room and n_u) else n_c // global_batch
        else:
            from_uncovered = math.ceil(n_u / room) if room else 0
            self._n_batches = max(from_uncovered, math.ceil((n_u + n_c) / global_batch))
        if self._n_batches == 0:
            raise ValueError(
                f"not a single batch fits: {n_u} uncovered and {n_c} covered samples with batch_size={batch_size}"
                f" x {num_replicas} replicas and drop_last=True"
            )

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffles of ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._n_batches

    def global_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's global batches as ``(covered indices, uncovered indices)`` pairs."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n_b, n_u, n_c = self._n_batches, len(self.uncovered), len(self.covered)
        uncovered = self.uncovered[torch.randperm(n_u, generator=g)]
        if self.drop_last:
            room = self._global_batch - self._global_min
            u_counts = [room if n_u else 0] * n_b
        else:
            # spread the uncovered samples evenly: counts differ by at most 1, each <= room
            base, extra = divmod(n_u, n_b)
            u_counts = [base + (1 if i < extra else 0) for i in range(n_b)]
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        perm: list[int] = []
        start = 0
        for i in range(n_b):
            need = self._global_batch - u_counts[i]
            chosen: list[int] = []
            while len(chosen) < need:
                if not perm:
                    perm = torch.randperm(n_c, generator=g).tolist()
                    if chosen:
                        # a new cycle mid-batch: stimuli already in this batch go last, so none repeats
                        taken = set(chosen)
                        perm = [p for p in perm if p not in taken] + [p for p in perm if p in taken]
                take = min(need - len(chosen), len(perm))
                chosen += perm[:take]
                perm = perm[take:]
            out.append((self.covered[chosen], uncovered[start : start + u_counts[i]]))
            start += u_counts[i]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        r, world, b = self.rank, self.num_replicas, self.batch_size
        for covered, uncovered in self.global_batches():
            c = len(covered)
            # covered ones split as evenly as possible (each share >= min_covered), uncovered fill up to batch_size
            c_counts = [c // world + (1 if k < c % world else 0) for k in range(world)]
            c_start = sum(c_counts[:r])
            u_start = sum(b - ck for ck in c_counts[:r])
            mine_c = covered[c_start : c_start + c_counts[r]]
            mine_u = uncovered[u_start : u_start + b - c_counts[r]]
            yield torch.cat([mine_c, mine_u]).tolist()
