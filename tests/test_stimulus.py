"""StimulusDataset and CoverageBatchSampler: ids per sample, coverage per batch, epochs, determinism, sharding."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rdl_neuro.data import UNCOVERED, CoverageBatchSampler, StimulusDataset


def make_dataset(n: int = 50, n_covered: int = 12) -> StimulusDataset:
    x = torch.randn(n, 3)
    y = torch.arange(n) % 4
    ids = [None] * n
    for k in range(n_covered):
        ids[3 * k] = 100 + k
    return StimulusDataset(TensorDataset(x, y), ids)


def test_items_carry_stimulus_ids():
    ds = make_dataset()
    x, y, sid = ds[3]
    assert sid == 101 and y == 3 and x.shape == (3,)
    assert ds[1][2] == UNCOVERED == -1
    assert ds.covered_indices == [3 * k for k in range(12)]
    assert len(ds.uncovered_indices) == 38
    mapped = StimulusDataset(TensorDataset(torch.zeros(5, 1), torch.zeros(5)), {4: 7, 0: 2})
    assert [mapped[i][2] for i in range(5)] == [2, -1, -1, -1, 7]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch[2].dtype == torch.long and batch[2].tolist() == [100, -1, -1, 101]


def test_stimulus_dataset_errors():
    base = TensorDataset(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="2 stimulus ids for a dataset of 3"):
        StimulusDataset(base, [1, 2])
    with pytest.raises(TypeError, match="'cat' at index 1 is not an integer"):
        StimulusDataset(base, [1, "cat", None])
    with pytest.raises(ValueError, match="negative"):
        StimulusDataset(base, [1, -5, None])
    with pytest.raises(IndexError, match="index 9"):
        StimulusDataset(base, {9: 1})
    with pytest.raises(TypeError, match=r"\(x, y\) pairs"):
        StimulusDataset(TensorDataset(torch.zeros(3, 1)), [1, 2, 3])[0]


@pytest.mark.parametrize("n_u,n_c,b,k", [(100, 12, 16, 3), (37, 5, 8, 2), (10, 40, 8, 2), (0, 20, 6, 1), (64, 4, 8, 4)])
def test_every_batch_covered_and_every_sample_seen(n_u, n_c, b, k):
    covered = list(range(1000, 1000 + n_c))
    uncovered = list(range(n_u))
    sampler = CoverageBatchSampler(covered, uncovered, b, k, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    seen = Counter()
    for batch in batches:
        assert len(batch) == b  # no ragged last batch: covered samples fill it
        n_cov = sum(i >= 1000 for i in batch)
        assert n_cov >= k
        assert len(set(batch)) == len(batch)  # no stimulus repeated within a batch
        seen.update(batch)
    assert all(seen[i] == 1 for i in uncovered)  # one pass over the uncovered data
    assert all(seen[i] >= 1 for i in covered)  # every covered sample at least once
    assert set(seen) == set(covered) | set(uncovered)


def test_deterministic_and_set_epoch():
    a = CoverageBatchSampler(range(100, 110), range(60), 8, 2, seed=5)
    b = CoverageBatchSampler(range(100, 110), range(60), 8, 2, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    c = CoverageBatchSampler(range(100, 110), range(60), 8, 2, seed=6)
    assert list(c) != first


def test_sharding_partitions_the_global_batches():
    covered, uncovered = range(1000, 1013), range(90)
    world, b, k = 3, 6, 2
    single = CoverageBatchSampler(covered, uncovered, b * world, k * world, seed=3)
    ranks = [CoverageBatchSampler(covered, uncovered, b, k, seed=3, num_replicas=world, rank=r) for r in range(world)]
    for sampler in [single, *ranks]:
        sampler.set_epoch(2)
    per_rank = [list(s) for s in ranks]
    assert all(len(p) == len(single) for p in per_rank)
    for step, global_batch in enumerate(single):
        shares = [p[step] for p in per_rank]
        assert all(len(s) == b for s in shares)
        assert all(sum(i >= 1000 for i in s) >= k for s in shares)
        assert sorted(sum(shares, [])) == sorted(global_batch)


def test_drop_last_uniform_batches():
    sampler = CoverageBatchSampler(range(100, 120), range(50), 8, 3, drop_last=True)
    batches = list(sampler)
    assert len(batches) == 50 // 5
    assert all(len(bt) == 8 and sum(i >= 100 for i in bt) == 3 for bt in batches)
    assert len({i for bt in batches for i in bt if i < 100}) == 50


def test_sampler_errors():
    with pytest.raises(ValueError, match="exceeds the 3 covered samples"):
        CoverageBatchSampler([1, 2, 3], range(10, 20), 8, 4)
    with pytest.raises(ValueError, match="no room for the 10 uncovered"):
        CoverageBatchSampler(range(100, 120), range(10), 4, 4)
    with pytest.raises(ValueError, match="both covered and uncovered"):
        CoverageBatchSampler([1, 2], [2, 3], 2, 1)
    with pytest.raises(ValueError, match="min_covered"):
        CoverageBatchSampler([1, 2], [3], 2, 3)
    with pytest.raises(ValueError, match="rank"):
        CoverageBatchSampler([1, 2], [3], 2, 1, num_replicas=2, rank=2)


def test_dataloader_with_sampler():
    ds = make_dataset()
    loader = DataLoader(ds, batch_sampler=ds.batch_sampler(8, 2, seed=0))
    for x, y, sid in loader:
        assert (sid != UNCOVERED).sum() >= 2 and x.shape == (8, 3)
