"""On a CUDA device: RDMs, comparisons, the bootstrap and the RDL step equal the CPU's (float64), timed.

Each check runs the same float64 inputs on the CPU and on the device, reports both times
(median of ``--repeats``, after a warm-up; the device synchronised) and the largest absolute
difference of the results, which must stay within ``--tol`` (default 1e-10):

* ``compute_rdm``: correlation, sqeuclidean, euclidean, cosine RDMs of ``(n, 512)`` features;
* ``compare_rdms``: cosine, corr, corr_cov, cosine_cov (on the device) and spearman (ranked on
  the CPU, returned on the device) of 8 x 8 RDMs of ``n`` stimuli;
* the pattern bootstrap (``corr``, weighted moments, N resamples, with the noise ceiling);
* one RDL training step (MLP 784-800-800-10, batch 128, RDL euclidean/mse on both hidden
  layers against a fixed teacher RDM): the loss and every parameter gradient.

Nothing in the tests needs a GPU. Without CUDA the script says so and exits 0 with
``RESULT gpu_check=skipped``; ``--device cpu`` runs every check against the CPU itself (the
code path, where no GPU is).

    python benchmarks/gpu_check.py [--device cuda] [--n 2000] [--n-boot 100] [--repeats 5] [--tol 1e-10]

Last line: ``RESULT gpu_check=pass|fail max_abs_diff=... min_speedup=...`` (speedup: CPU time /
device time, over the checks).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from rdl_neuro.inference.bootstrap import bootstrap_moments
from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.rdm import compare_rdms, compute_rdm
from rdl_neuro.train.losses import RDLLoss
from rdl_neuro.train.teachers import RDMTeacher

HIDDEN = ("relu1", "relu2")


def timed(func: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls after one warm-up (synchronising CUDA), and the last result."""
    result = func()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = func()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def max_diff(a, b) -> float:
    """Largest absolute difference of two (nested tuples of) tensors or arrays, NaN where both are NaN."""
    if isinstance(a, (tuple, list)):
        return max(max_diff(x, y) for x, y in zip(a, b))
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    return float(np.nanmax(np.abs(a - b))) if a.size else 0.0


def rdl_step(device: torch.device, seed: int) -> Callable[[], tuple]:
    """One RDL training step's loss and parameter gradients on ``device`` (same weights and data everywhere)."""
    from collections import OrderedDict

    from torch import nn

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the same initial weights on every device
    sizes = (784, 800, 800, 10)
    layers: list[tuple[str, nn.Module]] = []
    for k, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1]), start=1):
        layers += [(f"fc{k}", nn.Linear(a, b)), (f"relu{k}", nn.ReLU())]
    layers.append(("out", nn.Linear(sizes[-2], sizes[-1])))
    model = nn.Sequential(OrderedDict(layers)).double().to(device)
    n, batch = 500, 128
    images = torch.rand(n, 784, generator=g, dtype=torch.float64)
    labels = torch.randint(10, (n,), generator=g)
    teacher_features = torch.randn(n, 64, generator=g, dtype=torch.float64)
    ids = list(range(n))
    teacher = RDMTeacher.from_array(compute_rdm(teacher_features, "euclidean", square=True), ids, method="euclidean")
    rdl = RDLLoss({layer: teacher for layer in HIDDEN})
    recorder = LayerRecorder(model, HIDDEN)
    idx = torch.randperm(n, generator=g)[:batch]
    x, y, sid = images[idx].to(device), labels[idx].to(device), torch.as_tensor(idx)

    def step() -> tuple:
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y) + rdl(recorder.features, sid)[0]
        loss.backward()
        return (loss.detach(), *[p.grad for p in model.parameters()])

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="device to check against the CPU (default cuda)")
    parser.add_argument("--n", type=int, default=2000, help="stimuli of the RDMs and comparisons")
    parser.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-10, help="largest allowed |device - CPU| (float64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False): nothing to check; "
              "run this on a machine with a GPU, or pass --device cpu to exercise the checks on the CPU")
        print("RESULT gpu_check=skipped")
        return 0
    cpu = torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (self-check)"
    print(f"torch {torch.__version__}; device {device} ({name}) against the CPU ({torch.get_num_threads()} threads); "
          f"float64; median of {args.repeats}; tolerance {args.tol:g}")

    rng = np.random.default_rng(args.seed)
    n, n_pairs = args.n, args.n * (args.n - 1) // 2
    features = torch.from_numpy(rng.standard_normal((n, 512)))
    a = torch.from_numpy(rng.random((8, n_pairs)))
    b = a + torch.from_numpy(rng.random((8, n_pairs)))
    draws = rng.integers(0, n, (args.n_boot, n))
    checks: list[tuple[str, Callable[[torch.device], Callable[[], object]]]] = []
    for method in ("correlation", "sqeuclidean", "euclidean", "cosine"):
        checks.append((f"compute_rdm {method} {n}x512",
                       lambda d, m=method: (lambda f=features.to(d): compute_rdm(f, m))))
    for method in ("cosine", "corr", "corr_cov", "cosine_cov", "spearman"):
        checks.append((f"compare_rdms {method} 8x8 n={n}",
                       lambda d, m=method: (lambda x=a.to(d), y=b.to(d): compare_rdms(x, y, m))))
    checks.append((f"bootstrap corr N={args.n_boot} n={n} +nc",
                   lambda d: (lambda x=a.to(d), y=b.to(d): bootstrap_moments(x, y, "corr", None, draws, True))))
    checks.append(("RDL step (loss, gradients)", lambda d: rdl_step(d, args.seed)))

    print(f"{'check':<40}{'cpu s':>10}{'device s':>10}{'speedup':>9}{'max |diff|':>12}  ok")
    worst, speedups, ok_all = 0.0, [], True
    for label, make in checks:
        t_cpu, ref = timed(make(cpu), cpu, args.repeats)
        t_dev, got = timed(make(device), device, args.repeats)
        diff = max_diff(got, ref)
        ok = diff <= args.tol
        ok_all &= ok
        worst = max(worst, diff)
        speedups.append(t_cpu / t_dev)
        print(f"{label:<40}{t_cpu:>10.4f}{t_dev:>10.4f}{t_cpu / t_dev:>9.1f}{diff:>12.1e}  {'yes' if ok else 'NO'}")
    print(f"RESULT gpu_check={'pass' if ok_all else 'fail'} max_abs_diff={worst:.1e} min_speedup={min(speedups):.2f}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
