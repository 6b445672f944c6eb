"""The searchlight on several cores: chunks side by side in Python threads, each torch op on one thread.

The maps must not depend on the thread count (bit for bit), torch's thread count is restored after a call
(also one that fails), and a stopped multi-threaded searchlight resumes to the same maps.
"""
from __future__ import annotations

import threading
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from rsatoolbox.rdm import RDMs

from rdl_neuro._threads import IN_FLIGHT_PER_WORKER, one_torch_thread, ordered_map, serial_if_small
from rdl_neuro.data.searchlight import SearchlightData, searchlight_rdms
from rdl_neuro.inference.searchlight import evaluate_searchlight

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def img(data: np.ndarray) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data, dtype=np.float64), AFFINE)


def _models(rng: np.random.Generator, n: int) -> RDMs:
    return RDMs(rng.random((2, n * (n - 1) // 2)), pattern_descriptors={"stimulus": np.arange(n)},
                rdm_descriptors={"name": ["a", "b"]})


def on_threads(threads: int, func, *args, **kwargs):
    """``func(*args, **kwargs)`` with torch set to ``threads`` threads; checks that the call restores them."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = func(*args, **kwargs)
        assert torch.get_num_threads() == threads
        return out
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def volume(rng):
    mask = rng.random((9, 8, 9)) < 0.85
    return rng.normal(size=mask.shape + (6,)), nib.Nifti1Image(mask.astype(np.uint8), AFFINE)


@pytest.mark.parametrize("method", ["corr", "spearman"])
def test_correlation_maps_do_not_depend_on_threads(rng, volume, method, monkeypatch):
    data, mask = volume
    models = _models(rng, 6)
    args = dict(mask=mask, radius=2, threshold=0.5, method=method, chunk_size=11)
    one = on_threads(1, evaluate_searchlight, img(data), np.arange(6), models, **args)
    # with 3 threads the chunks run side by side, each with one torch thread
    seen = []
    original = SearchlightData.gram_halves_at

    def record(self, index, *args, **options):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        time.sleep(0.002)  # long enough for the pool's threads to take turns
        return original(self, index, *args, **options)

    monkeypatch.setattr(SearchlightData, "gram_halves_at", record)
    three = on_threads(3, evaluate_searchlight, img(data), np.arange(6), models, **args)
    assert len({ident for ident, _ in seen}) > 1 and {n for _, n in seen} == {1}
    assert torch.equal(torch.from_numpy(three.scores), torch.from_numpy(one.scores))
    rdms_one = on_threads(1, searchlight_rdms, img(data), np.arange(6), mask=mask, radius=2, threshold=0.5,
                          chunk_size=11)
    rdms_two = on_threads(2, searchlight_rdms, img(data), np.arange(6), mask=mask, radius=2, threshold=0.5,
                          chunk_size=11)
    assert torch.equal(torch.from_numpy(rdms_two.dissimilarities), torch.from_numpy(rdms_one.dissimilarities))


def test_crossnobis_maps_do_not_depend_on_threads(rng, volume):
    data, mask = volume
    betas = np.concatenate([data, data + rng.normal(size=data.shape)], axis=3)  # 2 runs of 6 conditions
    residuals = img(rng.normal(size=data.shape[:3] + (12,)))
    args = dict(mask=mask, radius=2, threshold=0.5, rdm_method="crossnobis", runs=np.repeat([1, 2], 6),
                residuals=residuals, chunk_size=9)
    models = _models(rng, 6)
    one = on_threads(1, evaluate_searchlight, img(betas), np.tile(np.arange(6), 2), models, **args)
    two = on_threads(2, evaluate_searchlight, img(betas), np.tile(np.arange(6), 2), models, **args)
    assert np.isfinite(one.scores).all()
    assert torch.equal(torch.from_numpy(two.scores), torch.from_numpy(one.scores))
    del args["rdm_method"]
    rdms = [on_threads(n, searchlight_rdms, img(betas), np.tile(np.arange(6), 2), method="crossnobis", **args)
            for n in (1, 2)]
    assert torch.equal(torch.from_numpy(rdms[1].dissimilarities), torch.from_numpy(rdms[0].dissimilarities))


def test_threads_restored_after_a_failure(rng, volume, monkeypatch):
    data, mask = volume

    def fail(self, index, *args, **options):
        assert torch.get_num_threads() == 1
        raise RuntimeError(f"chunk {index} failed")

    monkeypatch.setattr(SearchlightData, "correlations_at", fail)
    for threads in (1, 2):
        with pytest.raises(RuntimeError, match=r"chunk slice\(0, 7, None\) failed"):  # the first chunk's error
            on_threads(threads, evaluate_searchlight, img(data), np.arange(6), _models(rng, 6), mask=mask,
                       threshold=0.5, chunk_size=7)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="comparison method"):  # fails before any work
            evaluate_searchlight(img(data), np.arange(6), _models(rng, 6), mask=mask, method="nope")
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="lacks 1 of the 6 conditions"):  # fails inside the one-thread block
            evaluate_searchlight(img(data), np.arange(6), _models(rng, 5), mask=mask, threshold=0.5)
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(SearchlightData, "rdms_at", fail)
        with pytest.raises(RuntimeError, match=r"chunk slice\(0, 7, None\) failed"):
            searchlight_rdms(img(data), np.arange(6), mask=mask, threshold=0.5, chunk_size=7)
        assert torch.get_num_threads() == 2
        with pytest.raises(ZeroDivisionError):
            with one_torch_thread() as entry:
                assert entry == 2 and torch.get_num_threads() == 1
                raise ZeroDivisionError
        assert torch.get_num_threads() == 2
        with serial_if_small(10):
            assert torch.get_num_threads() == 1
        with serial_if_small(1 << 30):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_stopped_multithreaded_searchlight_resumes_to_the_same_maps(rng, volume, tmp_path, monkeypatch):
    data, mask = volume
    models = _models(rng, 6)
    args = dict(mask=mask, threshold=0.5, chunk_size=10, checkpoint_every=40)
    whole = on_threads(1, evaluate_searchlight, img(data), np.arange(6), models, **args)
    n = len(whole.scores)
    original = SearchlightData.correlations_at
    stop_at = 130  # the chunk 130:140, inside the block 120:160

    def stop(self, index, **options):
        if index.start == stop_at:
            raise KeyboardInterrupt
        return original(self, index, **options)

    monkeypatch.setattr(SearchlightData, "correlations_at", stop)
    folder = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        on_threads(2, evaluate_searchlight, img(data), np.arange(6), models, checkpoint=folder, **args)
    # the blocks before the failing chunk's were written whole (in centre order; nothing half-written)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "part-000000000-000000040.npy",
                                                        "part-000000040-000000080.npy",
                                                        "part-000000080-000000120.npy"]
    stop_at = None
    resumed = on_threads(2, evaluate_searchlight, img(data), np.arange(6), models, checkpoint=folder, **args)
    assert torch.equal(torch.from_numpy(resumed.scores), torch.from_numpy(whole.scores))
    assert len(list(folder.glob("part-*"))) == -(-n // 40)


def test_ordered_map_keeps_order_and_bounds_the_work_in_flight():
    started, threads = [0], set()
    lock = threading.Lock()

    def work(x):
        with lock:
            started[0] += 1
            threads.add(threading.get_ident())
        time.sleep(0.001 * (x % 3))  # later items finish first now and then
        return x * x

    taken, ahead = [], []
    for value in ordered_map(work, range(40), workers=3):
        taken.append(value)
        time.sleep(0.003)  # a slow consumer: an unbounded pool would run far ahead
        ahead.append(started[0] - len(taken))  # begun and not yet taken, besides the one just taken
    assert taken == [x * x for x in range(40)] and len(threads) > 1
    assert max(ahead) == IN_FLIGHT_PER_WORKER * 3 - 1  # the slow consumer lets the pool fill up, no further

    def fail_at(x):
        if x in (5, 7):
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 5"):  # the first failing item in order, as a loop
        list(ordered_map(fail_at, range(20), workers=4))

    # several items per task: the same order, and the items before a failing one still come first
    assert list(ordered_map(work, range(40), workers=3, per_task=4)) == [x * x for x in range(40)]
    taken = []
    with pytest.raises(ValueError, match="item 5"):
        for value in ordered_map(fail_at, range(20), workers=2, per_task=3):
            taken.append(value)
    assert taken == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="per_task must be at least 1"):
        list(ordered_map(fail_at, range(3), workers=2, per_task=0))
