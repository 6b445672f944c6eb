"""The bootstrap at scale: memory-bounded weighted moments, the float32 path, and resamples split
across torch.distributed ranks (2 gloo processes) equal to one process."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rsatoolbox.rdm import RDMs

from rdl_neuro.inference import rsa_evaluate
from rdl_neuro.inference.bootstrap import bootstrap_moments
from rdl_neuro.inference.resampling import draw_counts, pair_weights, weighted_moments


@pytest.mark.parametrize("budget", [1, 3000, 10**9])  # one row per block, a few rows, everything at once
@pytest.mark.parametrize("n, n_boot", [(5, 3), (41, 9), (92, 300)])
def test_weighted_moments_equal_the_weight_matrix(rng, budget, n, n_boot):
    z = torch.from_numpy(rng.standard_normal((4, n * (n - 1) // 2)))
    idx = rng.integers(0, n, (n_boot, n))
    iu, ju = torch.tensor([0, 1, 2, 0, 3]), torch.tensor([1, 1, 3, 3, 3])
    shift = z.mean(1, keepdim=True)
    total, first, second = weighted_moments(z, draw_counts(idx, n), (iu, ju), shift, budget)
    w = pair_weights(idx, n)  # (N, P): what the blocks avoid holding
    zs = z - shift
    np.testing.assert_allclose(total, w.sum(1), rtol=1e-15)
    np.testing.assert_allclose(first, w @ zs.T, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(second, w @ (zs[iu] * zs[ju]).T, rtol=1e-12, atol=1e-9)


def test_bootstrap_moments_same_under_any_budget(rng):
    n = 30
    models = torch.from_numpy(rng.random((3, n * (n - 1) // 2)))
    brain = models[:1] + torch.from_numpy(rng.random((4, n * (n - 1) // 2)))
    idx = rng.integers(0, n, (25, n))
    for method in ("corr", "cosine"):
        big = bootstrap_moments(models, brain, method, None, idx, True)
        small = bootstrap_moments(models, brain, method, None, idx, True, budget_bytes=1)
        np.testing.assert_allclose(small[0], big[0], rtol=0, atol=1e-13)
        np.testing.assert_allclose(small[1], big[1], rtol=0, atol=1e-13)


def _rdms(rng, n: int, dtype) -> tuple[RDMs, RDMs]:
    base = rng.random(n * (n - 1) // 2)
    models = base + rng.random((3, base.size)) * np.array([[0.5], [1.0], [3.0]])
    brain = base + rng.random((4, base.size))
    ids = {"stimulus": [f"s{i}" for i in range(n)]}
    return (RDMs(models.astype(dtype), pattern_descriptors=ids, rdm_descriptors={"name": ["a", "b", "c"]}),
            RDMs(brain.astype(dtype), pattern_descriptors=ids))


def test_float32_path_within_1e5_of_float64(rng):
    models, brain = _rdms(rng, 60, np.float64)
    full = rsa_evaluate(models, brain, "corr", bootstrap="pattern", n_bootstrap=40)
    half = rsa_evaluate(models, brain, "corr", bootstrap="pattern", n_bootstrap=40, dtype=torch.float32)
    for name in ("evaluations", "noise_ceiling", "fixed", "mean", "sem", "p_zero", "p_noise"):
        a, b = getattr(full, name), getattr(half, name)
        assert np.abs(a - b).max() < 1e-5, name
    assert np.abs(full.evaluations - half.evaluations).max() > 0  # it did run in float32
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        rsa_evaluate(models, brain, "corr", dtype=torch.float16)


# ----------------------------------------------------------------------------- torchrun split

WORLD = 2
CASES = [("corr", "pattern"), ("tau-a", "pattern"), ("corr", "both"), ("spearman", "rdm")]


def _evaluate_all(rng_seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(rng_seed)
    models, brain = _rdms(rng, 24, np.float64)
    out = []
    for method, bootstrap in CASES:
        result = rsa_evaluate(models, brain, method, bootstrap=bootstrap, n_bootstrap=7, seed=3)
        out += [result.evaluations, np.atleast_2d(result.noise_ceiling), result.mean, result.p_noise]
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), *_evaluate_all(0))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_torchrun_split_bootstrap_equals_single_process():
    single = _evaluate_all(0)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        for rank in range(WORLD):
            with np.load(os.path.join(tmp, f"rank{rank}.npz")) as got:
                arrays = [got[f"arr_{i}"] for i in range(len(single))]
            for i, (a, b) in enumerate(zip(arrays, single)):
                case = CASES[i // 4]
                assert a.shape == b.shape, (rank, case)
                # every rank holds every resample's result (7 resamples: 4 on rank 0, 3 on rank 1)
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, equal_nan=True, err_msg=f"rank {rank} {case}")
