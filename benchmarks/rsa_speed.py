"""rsa_table vs rsatoolbox on the 92-image set: fixed evaluation, pattern and dual bootstrap, pairwise tests.

8 classic model RDMs against the 8 human-IT subject-session RDMs (92 stimuli), with the
bootstrapped noise ceiling. Both libraries run in one process on the same bootstrap draws
(rsatoolbox's own ``np.random`` draws are replayed into ``rsa_table`` through
``bootstrap_indices``), so the per-resample numbers are compared too.

tau-a: rdl_neuro runs all ``--n-tau`` resamples (default 1000); rsatoolbox (about 0.1 s per
resample) runs only the first ``--n-ref`` of the same draws (default 50) and its time is
extrapolated linearly to ``--n-tau`` (its cost per resample is constant). The two timings
alternate ``--repeats`` times and the fastest of each is reported (the machine is shared); the
fixed evaluations and the pairwise tests (milliseconds) alternate 7 timings, each a loop of calls
lasting 50 ms, and report medians.

Dual bootstrap (corr, ``--n`` resamples): rsatoolbox's ``eval_dual_bootstrap`` runs ``--n-dual-ref``
resamples (default 20; about 40 ms each) and its time is extrapolated linearly to ``--n``; the draws it
made are recorded and replayed into ``rsa_dual_bootstrap`` to compare the per-resample evaluations,
noise ceilings and corrected variances. Pairwise tests: t-tests of every pair of models from the
dual-bootstrap variances (rsatoolbox ``Result.test_pairwise`` vs ``pairwise_tests`` with FDR).
``bootstrap_crossval`` (corr, ``--n`` resamples): the 8 fixed models and one weighted model of all 8
(least squares, ``fit_regress``), rsatoolbox's default folds (5 over stimuli, 2 over subjects, 2
repetitions); rsatoolbox runs ``--n-cv-ref`` resamples (default 5; about 0.1 s each) and its time is
extrapolated linearly to ``--n``; ours replays its draws and folds (``random_state``) to compare the
per-resample evaluations and noise ceilings.

Threads: rsatoolbox's bootstrap is a Python loop on one core; rdl_neuro runs on torch's thread
count (by default one per core, as a user gets it). ``--threads 1`` compares single cores.

    python benchmarks/rsa_speed.py [--quick] [--n N] [--n-tau N] [--n-ref N] [--threads T]
                                   [--repeats R] [--data PATH]

Prints a table, ``max_abs_diff_boot=...`` and, last, ``RESULT boot_corr_speedup=...
boot_tau_a_speedup=... max_abs_diff_fixed=... dual_boot_speedup=... crossval_speedup=... min_speedup=...``
(``min_speedup``: the smallest ratio over every row). ``--quick`` uses few resamples (a smoke test).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP threads (see rdm_speed.py)

import numpy as np  # noqa: E402

from _provenance import add_arguments, start_record  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kriegeskorte2008"


def rsatoolbox_draws(n_boot: int, n_stim: int, seed: int) -> np.ndarray:
    """The stimulus draws eval_bootstrap_pattern makes after ``np.random.seed(seed)`` (the first
    ``N`` of them are those of a run with ``N`` resamples)."""
    np.random.seed(seed)
    return np.stack([np.random.randint(0, n_stim, size=n_stim) for _ in range(n_boot)])


def alternate_medians(theirs, ours, timed, repeats: int = 7, min_s: float = 0.05) -> tuple[float, float, object, object]:
    """Per-call medians ``(theirs s, ours s, theirs' result, ours')`` of ``repeats`` alternating timings
    (after a warm-up call each); a timing loops a call of milliseconds until ``min_s`` has passed, so that
    it measures the call rather than the scheduler of a shared machine."""
    (warm_ref, ref_result), (warm_ours, ours_result) = timed(theirs), timed(ours)
    numbers = [max(1, math.ceil(min_s / max(t, 1e-6))) for t in (warm_ref, warm_ours)]
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for side, (func, number) in enumerate(zip((theirs, ours), numbers)):
            start = time.perf_counter()
            for _ in range(number):
                func()
            times[side].append((time.perf_counter() - start) / number)
    return float(np.median(times[0])), float(np.median(times[1])), ref_result, ours_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few resamples (smoke test)")
    parser.add_argument("--n", type=int, default=None, help="resamples for corr, both libraries (default 1000, quick 20)")
    parser.add_argument("--n-tau", type=int, default=None, help="tau-a resamples for rdl_neuro (default 1000, quick 20)")
    parser.add_argument("--n-ref", type=int, default=None,
                        help="tau-a resamples run by rsatoolbox, extrapolated to --n-tau (default 50, quick 3)")
    parser.add_argument("--n-dual-ref", type=int, default=None,
                        help="dual-bootstrap resamples run by rsatoolbox, extrapolated to --n (default 20, quick 2)")
    parser.add_argument("--n-cv-ref", type=int, default=None,
                        help="bootstrap_crossval resamples run by rsatoolbox, extrapolated to --n (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for rdl_neuro (default: torch's default, one per core)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating timing repeats, fastest kept")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seed", type=int, default=0)
    add_arguments(parser)
    args = parser.parse_args(argv)
    rec = start_record("rsa_speed", args, argv, seeds=args.seed,
                       depends_on=["rdl_neuro/inference", "rdl_neuro/rdm", "benchmarks/rsa_speed.py"])
    n_corr = args.n or (20 if args.quick else 1000)
    n_tau = args.n_tau or (20 if args.quick else 1000)
    n_ref = min(args.n_ref or (3 if args.quick else 50), n_tau)
    n_dual_ref = min(args.n_dual_ref or (2 if args.quick else 20), n_corr)
    n_cv_ref = min(args.n_cv_ref or (2 if args.quick else 5), n_corr)

    warnings.filterwarnings("ignore")
    import torch

    # rsatoolbox's bootstrap is a Python loop on one core; rdl_neuro's uses torch's thread count
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    from rsatoolbox.inference import eval_bootstrap_pattern, eval_fixed
    from rsatoolbox.model import ModelFixed

    from rdl_neuro.data.loaders import load_kriegeskorte92
    from rdl_neuro.inference import rsa_evaluate

    k92 = load_kriegeskorte92(args.data)
    brain, models_rdms = k92.human_it, k92.models
    models = [ModelFixed(str(name), models_rdms[i]) for i, name in enumerate(models_rdms.rdm_descriptors["name"])]

    def timed(func):
        t0 = time.perf_counter()
        out = func()
        return time.perf_counter() - t0, out

    def reference(method: str, n_boot: int):
        np.random.seed(args.seed)
        with contextlib.redirect_stderr(io.StringIO()):  # rsatoolbox's tqdm bar
            return eval_bootstrap_pattern(models, brain, method=method, N=n_boot)

    rows = []
    max_fixed = max_boot = 0.0
    speedups = {}
    for method in ("corr", "tau-a"):
        # milliseconds each: alternate 7 timings of each (after a warm-up) and keep the medians
        t_ref, t_ours, ref, ours = alternate_medians(lambda: eval_fixed(models, brain, method=method),
                                                     lambda: rsa_evaluate(models_rdms, brain, method), timed)
        diff = float(max(np.abs(ours.fixed - ref.get_means()).max(),
                         np.abs(np.array(ref.noise_ceiling) - [ours.nc_lower, ours.nc_upper]).max()))
        max_fixed = max(max_fixed, diff)
        rows.append((f"fixed {method}", 1, 1, t_ref, t_ours, diff))

        n_ours = n_corr if method == "corr" else n_tau
        n_theirs = n_corr if method == "corr" else n_ref
        draws = rsatoolbox_draws(n_ours, brain.n_cond, args.seed)
        times_ref, times_ours = [], []
        for _ in range(args.repeats):  # alternate, so both see the same load
            t, ref = timed(lambda: reference(method, n_theirs))
            times_ref.append(t)
            t, ours = timed(lambda: rsa_evaluate(models_rdms, brain, method, bootstrap="pattern",
                                                 bootstrap_indices=draws))
            times_ours.append(t)
        t_ref = min(times_ref) * n_ours / n_theirs
        t_ours = min(times_ours)
        # every resample rsatoolbox ran, and the statistics on those resamples
        same = rsa_evaluate(models_rdms, brain, method, bootstrap="pattern", bootstrap_indices=draws[:n_theirs])
        diff = float(max(np.nanmax(np.abs(ours.evaluations[:n_theirs] - ref.evaluations)),
                         np.nanmax(np.abs(ours.noise_ceiling[:, :n_theirs] - ref.noise_ceiling)),
                         np.abs(same.p_zero - ref.test_zero()).max(),
                         np.abs(same.p_noise - ref.test_noise()).max()))
        max_boot = max(max_boot, diff)
        rows.append((f"bootstrap_pattern {method}", n_ours, n_theirs, t_ref, t_ours, diff))
        speedups[method] = t_ref / t_ours

    dual_row, pair_row = dual_bootstrap_rows(models, models_rdms, brain, n_corr, n_dual_ref, args, timed)
    rows += [dual_row, pair_row]
    speedups["dual"] = dual_row[3] / dual_row[4]
    rows.append(crossval_row(models, models_rdms, brain, n_corr, n_cv_ref, args, timed))
    speedups["crossval"] = rows[-1][3] / rows[-1][4]

    print(f"{'task':<26} {'N':>5} {'N rsatb':>7} {'rsatoolbox s':>13} {'rdl_neuro s':>12} {'speedup':>8} "
          f"{'max |diff|':>11}")
    for task, n, n_theirs, t_ref, t_ours, diff in rows:
        mark = "*" if n_theirs != n else " "
        print(f"{task:<26} {n:>5} {n_theirs:>7} {t_ref:>12.3f}{mark} {t_ours:>12.3f} {t_ref / t_ours:>8.1f} "
              f"{diff:>11.2e}")
    print(f"(* rsatoolbox ran {n_ref} of the {n_tau} tau-a resamples, {n_dual_ref} of the {n_corr} dual-bootstrap "
          f"and {n_cv_ref} of the {n_corr} bootstrap_crossval resamples; its time is extrapolated linearly per resample. rdl_neuro threads: {threads}; fastest of {args.repeats} alternating repeats; "
          f"max |diff| over every resample rsatoolbox ran, with the noise ceilings and p-values)")
    print(f"max_abs_diff_boot={max_boot:.2e}")
    min_speedup = min(t_ref / t_ours for _, _, _, t_ref, t_ours, _ in rows)  # over every row of the table
    result = (f"RESULT boot_corr_speedup={speedups['corr']:.1f} boot_tau_a_speedup={speedups['tau-a']:.1f} "
              f"max_abs_diff_fixed={max_fixed:.2e} dual_boot_speedup={speedups['dual']:.1f} "
              f"crossval_speedup={speedups['crossval']:.1f} min_speedup={min_speedup:.2f}")
    import pandas as pd

    table = pd.DataFrame([{"task": task.replace("bootstrap_pattern", "bootstrap,").replace("fixed", "fixed,")
                           + (f" N = {n}" if n > 1 else ""),
                           "rdl_neuro s": f"{t_ours:.3g}",
                           "rsatoolbox s": f"{t_ref:.3g}" + (f" (extrapolated from {n_theirs})" if n_theirs != n else ""),
                           "speed-up": f"{t_ref / t_ours:.1f}×", "max abs diff": f"{diff:.0e}"}
                          for task, n, n_theirs, t_ref, t_ours, diff in rows])
    rec.finish(table, result_line=result, values={"threads": threads, "max_abs_diff": f"{max(max_boot, max_fixed):.0e}"},
               title=f"rsa_evaluate vs rsatoolbox on the 92 images: 8 model RDMs x {brain.n_rdm} human-IT RDMs "
                     f"(rdl_neuro threads: {threads}; fastest of {args.repeats})")
    print(result)
    return 0


def dual_bootstrap_rows(models, models_rdms, brain, n_boot: int, n_ref: int, args, timed) -> tuple[tuple, tuple]:
    """Table rows for the dual bootstrap (corr) and the pairwise t-tests on its result."""
    import rsatoolbox.inference.evaluate as rs_evaluate

    from rdl_neuro.inference import pairwise_tests, rsa_dual_bootstrap

    drawn = []
    original = rs_evaluate.bootstrap_sample

    def recording(*a, **kw):  # rsatoolbox's own draws, replayed into ours below
        sample, rdm_idx, pattern_idx = original(*a, **kw)
        drawn.append((np.asarray(rdm_idx).copy(), np.asarray(pattern_idx).copy()))
        return sample, rdm_idx, pattern_idx

    rs_evaluate.bootstrap_sample = recording
    times_ref, times_ours = [], []
    try:
        for _ in range(args.repeats):
            drawn.clear()
            np.random.seed(args.seed)
            with contextlib.redirect_stderr(io.StringIO()):
                t, ref = timed(lambda: rs_evaluate.eval_dual_bootstrap(models, brain, method="corr", N=n_ref))
            times_ref.append(t)
            t, _ = timed(lambda: rsa_dual_bootstrap(models_rdms, brain, "corr", n_bootstrap=n_boot, seed=args.seed))
            times_ours.append(t)
    finally:
        rs_evaluate.bootstrap_sample = original
    replay = (np.array([r for r, _ in drawn]), np.array([p for _, p in drawn]))
    same = rsa_dual_bootstrap(models_rdms, brain, "corr", bootstrap_indices=replay)
    diff = float(max(np.nanmax(np.abs(same.evaluations - ref.evaluations)),
                     np.nanmax(np.abs(same.noise_ceiling - ref.noise_ceiling)),
                     np.abs(same.model_var - ref.model_var).max(), np.abs(same.diff_var - ref.diff_var).max()))
    dual_row = ("dual_bootstrap corr", n_boot, n_ref, min(times_ref) * n_boot / n_ref, min(times_ours), diff)
    k = len(same.names)
    i, j = np.triu_indices(k, 1)
    t_ref, t_ours, p_ref, table = alternate_medians(lambda: ref.test_pairwise("t-test"),
                                                    lambda: pairwise_tests(same, "t-test", "fdr"), timed)
    pair_row = ("pairwise t-tests (dual)", 1, 1, t_ref, t_ours, float(np.abs(table["p"].to_numpy() - p_ref[i, j]).max()))
    return dual_row, pair_row


def crossval_row(models, models_rdms, brain, n_boot: int, n_ref: int, args, timed) -> tuple:
    """Table row for ``bootstrap_crossval`` (corr): the 8 fixed models and one weighted model of all 8 (least squares).

    rsatoolbox runs ``n_ref`` resamples (its time extrapolated linearly to ``n_boot``); ours replays its draws and
    folds (``random_state``) for the per-resample comparison and runs all ``n_boot`` for the time.
    """
    from rsatoolbox.inference import bootstrap_crossval as rs_bootstrap_crossval
    from rsatoolbox.model import ModelWeighted
    from rsatoolbox.model.fitter import fit_regress

    from rdl_neuro.inference import bootstrap_crossval

    all_models = list(models) + [ModelWeighted("weighted", models_rdms)]
    fitters = [None] * len(models) + [fit_regress]
    times_ref, times_ours = [], []
    for _ in range(args.repeats):  # alternate, so both see the same load
        np.random.seed(args.seed)
        with contextlib.redirect_stderr(io.StringIO()):
            t, ref = timed(lambda: rs_bootstrap_crossval(all_models, brain, method="corr", fitter=fitters, N=n_ref))
        times_ref.append(t)
        t, _ = timed(lambda: bootstrap_crossval(all_models, brain, "corr", fitter=fitters, n_bootstrap=n_boot,
                                                random_state=args.seed))
        times_ours.append(t)
    same = bootstrap_crossval(all_models, brain, "corr", fitter=fitters, n_bootstrap=n_ref, random_state=args.seed)
    diff = float(max(np.nanmax(np.abs(same.evaluations - ref.evaluations)),
                     np.nanmax(np.abs(same.noise_ceiling - ref.noise_ceiling))))
    return ("bootstrap_crossval corr", n_boot, n_ref, min(times_ref) * n_boot / n_ref, min(times_ours), diff)


if __name__ == "__main__":
    raise SystemExit(main())
