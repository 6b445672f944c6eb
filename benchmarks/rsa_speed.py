"""rsa_table vs rsatoolbox on the 92-image set: fixed evaluation and pattern bootstrap, corr and tau-a.

8 classic model RDMs against the 8 human-IT subject-session RDMs (92 stimuli).
Both libraries run side by side in one process on the same bootstrap draws
(rsatoolbox's own ``np.random`` draws are replayed into ``rsa_table`` through
``bootstrap_indices``), so the per-resample numbers can be compared too.

    python benchmarks/rsa_speed.py [--quick] [--n N] [--n-tau N] [--data PATH]

Prints a table and, last, ``RESULT boot_corr_speedup=... boot_tau_a_speedup=...
max_abs_diff_fixed=...``. ``--quick`` uses few resamples (a smoke test).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kriegeskorte2008"


def rsatoolbox_draws(n_boot: int, n_stim: int, seed: int) -> np.ndarray:
    """The stimulus draws eval_bootstrap_pattern makes after ``np.random.seed(seed)``."""
    np.random.seed(seed)
    return np.stack([np.random.randint(0, n_stim, size=n_stim) for _ in range(n_boot)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few resamples (smoke test)")
    parser.add_argument("--n", type=int, default=None, help="resamples for corr (default 1000, quick 20)")
    parser.add_argument("--n-tau", type=int, default=None,
                        help="resamples for tau-a (default 20, quick 3): tau-a's bootstrap takes the general "
                             "per-resample path, which is not faster than rsatoolbox's yet")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_corr = args.n or (20 if args.quick else 1000)
    n_tau = args.n_tau or (3 if args.quick else 20)

    warnings.filterwarnings("ignore")
    import torch

    # Small tensors: one thread avoids oversubscription when the 2 cores are shared (rsatoolbox runs
    # single-threaded numpy here too).
    torch.set_num_threads(1)
    from rsatoolbox.inference import eval_bootstrap_pattern, eval_fixed
    from rsatoolbox.model import ModelFixed

    from rdl_neuro.datasets.loaders import load_kriegeskorte92
    from rdl_neuro.evaluate import rsa_evaluate

    k92 = load_kriegeskorte92(args.data)
    brain, models_rdms = k92.human_it, k92.models
    models = [ModelFixed(str(name), models_rdms[i]) for i, name in enumerate(models_rdms.rdm_descriptors["name"])]
    rows = []
    max_fixed = 0.0
    speedups = {}
    for method in ("corr", "tau-a"):
        t0 = time.perf_counter()
        ref = eval_fixed(models, brain, method=method)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = rsa_evaluate(models_rdms, brain, method)
        t_ours = time.perf_counter() - t0
        diff = float(max(np.abs(ours.fixed - ref.get_means()).max(),
                         np.abs(np.array(ref.noise_ceiling) - [ours.nc_lower, ours.nc_upper]).max()))
        max_fixed = max(max_fixed, diff)
        rows.append((f"fixed {method}", 1, t_ref, t_ours, diff))

        n_boot = n_corr if method == "corr" else n_tau
        draws = rsatoolbox_draws(n_boot, brain.n_cond, args.seed)
        np.random.seed(args.seed)
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # rsatoolbox's tqdm bar
            ref = eval_bootstrap_pattern(models, brain, method=method, N=n_boot)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = rsa_evaluate(models_rdms, brain, method, bootstrap="pattern", bootstrap_indices=draws)
        t_ours = time.perf_counter() - t0
        diff = float(max(np.nanmax(np.abs(ours.evaluations - ref.evaluations)),
                         np.nanmax(np.abs(ours.noise_ceiling - ref.noise_ceiling)),
                         np.abs(ours.p_zero - ref.test_zero()).max(),
                         np.abs(ours.p_noise - ref.test_noise()).max()))
        rows.append((f"bootstrap_pattern {method}", n_boot, t_ref, t_ours, diff))
        speedups[method] = t_ref / t_ours

    print(f"{'task':<26} {'N':>5} {'rsatoolbox s':>13} {'rdl_neuro s':>12} {'speedup':>8} {'max |diff|':>11}")
    for task, n, t_ref, t_ours, diff in rows:
        print(f"{task:<26} {n:>5} {t_ref:>13.3f} {t_ours:>12.3f} {t_ref / t_ours:>8.1f} {diff:>11.2e}")
    print(f"(threads: torch 1; tau-a timed on {n_tau} resamples, corr on {n_corr})")
    print(f"RESULT boot_corr_speedup={speedups['corr']:.1f} boot_tau_a_speedup={speedups['tau-a']:.1f} "
          f"max_abs_diff_fixed={max_fixed:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
