"""Speed of rdl_neuro's RDMs and RDM comparisons against rsatoolbox, side by side in one run.

Fresh random float64 data every run. For each case both libraries run on the
same data, alternating call by call (the machine may be shared: both see the same
load; a call of milliseconds is timed as a loop of calls lasting ``MIN_TIMING_S``); the table gives the median time of each, the median of the per-repeat ratios
(rsatoolbox time / torch time) with their range, and the largest absolute difference
between the results. Each RDM size also times the floor of any RDM, numpy's
``X @ X.T`` (a symmetric rank-k product, syrk: half the work of a general product),
and gives our RDMs' cost against it (``vs syrk``) and rsatoolbox's (``bound``: rsatoolbox's time
over the floor, the largest speed-up any RDM that needs ``X @ X.T`` can have over it). rsatoolbox's
euclidean RDM is the same syrk plus a few passes over the ``n x n`` result, so where the syrk
dominates (92 x 4096, 2000 x 2048) no implementation can be much faster than it: the squared-euclidean
rows measure how close to the floor we are, not a speed-up to be had.

``OMP_WAIT_POLICY`` is set to PASSIVE unless given: torch's OpenMP threads otherwise spin
while they wait, and on a machine shared with other processes a spinning thread measures
its neighbours (rsatoolbox's OpenBLAS threads do not spin). The header prints the setting.

    python benchmarks/rdm_speed.py            # full sizes, 3 repeats (a few minutes)
    python benchmarks/rdm_speed.py --quick    # small sizes, 1 repeat (seconds; used by the tests)

The last line is machine-readable:

    RESULT corr_rdm_speedup=... corr_rdm_vs_matmul=... rank_compare_min_speedup=... max_abs_diff=... min_speedup=...

``corr_rdm_speedup``: rsatoolbox calc_rdm time / ours, correlation, largest size.
``corr_rdm_vs_matmul``: our correlation RDM time / numpy's ``X @ X.T`` (syrk) of the same size.
``rank_compare_min_speedup``: the smallest speedup over spearman, rho-a and tau-a at the largest n.
``min_speedup``: the smallest ratio over every row of the table.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from importlib.metadata import version

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP threads

import numpy as np
import pandas as pd
import rsatoolbox
import torch

from rdl_neuro.rdm.compare import compare_rdms
from rdl_neuro.rdm import compute_rdm

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _provenance import add_arguments, start_record  # noqa: E402

from rdl_neuro.provenance import markdown_table  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

COMPARE_METHODS = ("cosine", "corr", "spearman", "rho-a", "kendall", "tau-a", "corr_cov", "cosine_cov")
RANK_METHODS = ("spearman", "rho-a", "tau-a")
RSATOOLBOX_BUDGET_S = 60.0  # skip an rsatoolbox case whose estimated time exceeds this


def timed(func, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


# each timing runs a call enough times to take at least this long: a single call of a millisecond
# measures the scheduler of a shared machine more than the call
MIN_TIMING_S = 0.05


def calls_per_timing(warm_s: float) -> int:
    """How many calls one timing of a call that took ``warm_s`` runs (``MIN_TIMING_S`` in all)."""
    return max(1, min(1000, math.ceil(MIN_TIMING_S / max(warm_s, 1e-6))))


def per_call(func, number: int) -> float:
    """Wall time of ``number`` calls of ``func``, divided by ``number``."""
    start = time.perf_counter()
    for _ in range(number):
        func()
    return (time.perf_counter() - start) / number


def side_by_side(ours, theirs, repeats: int) -> tuple[float, float, list[float], object, object]:
    """Alternate ``ours()`` and ``theirs()`` ``repeats`` times (after one warm-up call each; each
    timing averages enough calls to last ``MIN_TIMING_S``): ``(median ours s, median theirs s,
    per-repeat ratios theirs / ours, ours' result, theirs')``."""
    warm_ours, ours_result = timed(ours, 1)
    warm_theirs, theirs_result = timed(theirs, 1)
    n_ours, n_theirs = calls_per_timing(warm_ours), calls_per_timing(warm_theirs)
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours.append(per_call(ours, n_ours))
        t_theirs.append(per_call(theirs, n_theirs))
    ratios = [b / a for a, b in zip(t_ours, t_theirs)]
    return statistics.median(t_ours), statistics.median(t_theirs), ratios, ours_result, theirs_result


def ratio_text(ratios: list[float]) -> str:
    """``median (min-max)`` of the per-repeat ratios."""
    med = statistics.median(ratios)
    return f"{med:>6.1f} ({min(ratios):.1f}-{max(ratios):.1f})" if len(ratios) > 1 else f"{med:>6.1f}"


def max_abs_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    ours = ours.detach().numpy()
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        return float("inf")
    return float(np.nanmax(np.abs(ours - theirs))) if ours.size else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 1 repeat (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per case (default 7, 1 with --quick)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: fresh data)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    rec = start_record("rdm_speed", args, argv, seeds=args.seed,
                       depends_on=["rdl_neuro/rdm", "benchmarks/rdm_speed.py"])
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 7)
    rdm_sizes = [(20, 64), (60, 256)] if args.quick else [(92, 4096), (1000, 512), (2000, 2048)]
    compare_sizes = [(12, 3), (40, 3)] if args.quick else [(92, 8), (1000, 8)]
    rng = np.random.default_rng(args.seed)

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}), rsatoolbox {version('rsatoolbox')}, float64, "
          f"median of {repeats} alternating repeat(s); ratio: median (range) over repeats")
    header = (f"{'case':<38}{'torch s':>10}{'rsatoolbox s':>14}{'ratio (range)':>19}{'max |diff|':>12}{'vs syrk':>9}"
              f"{'bound':>7}")
    print(header)
    print("-" * len(header))
    worst_diff = 0.0
    corr_speedup = corr_vs_matmul = float("nan")
    rank_speedups: dict[str, float] = {}
    rows: list[dict] = []  # every case, for the result record
    all_speedups: list[float] = []

    for n, p in rdm_sizes:
        x = rng.standard_normal((n, p))
        features = torch.from_numpy(x)
        dataset = rsatoolbox.data.Dataset(x)
        # the floor: numpy's X @ X.T of the transposed view is a syrk (half a general product)
        syrk_s, _ = timed(lambda: x @ x.T, repeats)
        print(f"{f'floor: numpy X @ X.T (syrk) {n}x{p}':<38}{syrk_s:>10.4f}")
        rows.append({"case": f"floor: numpy X @ X.T (syrk) {n}×{p}", "rdl_neuro s": f"{syrk_s:.3g}"})
        for ours_name, rsa_name in (("correlation", "correlation"), ("sqeuclidean", "euclidean")):
            ours_s, rsa_s, ratios, ours, theirs = side_by_side(
                lambda: compute_rdm(features, ours_name),
                lambda: rsatoolbox.rdm.calc_rdm(dataset, method=rsa_name), repeats)
            diff = max_abs_diff(ours, theirs.get_vectors()[0])
            worst_diff = max(worst_diff, diff)
            all_speedups.append(statistics.median(ratios))
            print(f"{f'calc_rdm {ours_name} {n}x{p}':<38}{ours_s:>10.4f}{rsa_s:>14.4f}{ratio_text(ratios):>19}"
                  f"{diff:>12.1e}{ours_s / syrk_s:>9.2f}{rsa_s / syrk_s:>7.2f}")
            rows.append({"case": f"{ours_name} RDM {n}×{p}", "rdl_neuro s": f"{ours_s:.3g}",
                         "rsatoolbox s": f"{rsa_s:.3g}", "speed-up": f"{statistics.median(ratios):.1f}×",
                         "range": f"{min(ratios):.1f}-{max(ratios):.1f}", "max abs diff": f"{diff:.0e}",
                         "vs syrk": f"{ours_s / syrk_s:.2f}", "bound": f"{rsa_s / syrk_s:.2f}×"})
            if ours_name == "correlation":
                corr_speedup, corr_vs_matmul = statistics.median(ratios), ours_s / syrk_s

    for n, k in compare_sizes:
        n_pairs = n * (n - 1) // 2
        a, b = rng.random((k, n_pairs)), rng.random((k, n_pairs))
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        rdms_a, rdms_b = rsatoolbox.rdm.RDMs(a), rsatoolbox.rdm.RDMs(b)
        for method in COMPARE_METHODS:
            case = f"compare {method} {k}x{k} n={n}"
            # estimate rsatoolbox's time from one pair before committing to all of them
            one_s, _ = timed(lambda: rsatoolbox.rdm.compare(rdms_a[0], rdms_b[0], method=method), 1)
            if method in ("kendall", "tau-a") and one_s * k * k * repeats > RSATOOLBOX_BUDGET_S:
                ours_s, ours = timed(lambda: compare_rdms(ta, tb, method), repeats)
                print(f"{case:<38}{ours_s:>10.4f}{'skipped':>14}  (estimated {one_s * k * k:.0f} s per call)")
                rows.append({"case": f"compare {method} {k}×{k}, n = {n}", "rdl_neuro s": f"{ours_s:.3g}",
                             "rsatoolbox s": "skipped"})
                continue
            ours_s, rsa_s, ratios, ours, theirs = side_by_side(
                lambda: compare_rdms(ta, tb, method),
                lambda: rsatoolbox.rdm.compare(rdms_a, rdms_b, method=method), repeats)
            diff = max_abs_diff(ours, theirs)
            worst_diff = max(worst_diff, diff)
            all_speedups.append(statistics.median(ratios))
            print(f"{case:<38}{ours_s:>10.4f}{rsa_s:>14.4f}{ratio_text(ratios):>19}{diff:>12.1e}")
            rows.append({"case": f"compare {method} {k}×{k}, n = {n}", "rdl_neuro s": f"{ours_s:.3g}",
                         "rsatoolbox s": f"{rsa_s:.3g}", "speed-up": f"{statistics.median(ratios):.1f}×",
                         "range": f"{min(ratios):.1f}-{max(ratios):.1f}", "max abs diff": f"{diff:.0e}"})
            if n == compare_sizes[-1][0] and method in RANK_METHODS:
                rank_speedups[method] = statistics.median(ratios)

    floor_note = ("bound = rsatoolbox s / syrk s: the largest speed-up over rsatoolbox possible for an RDM "
                  "that computes X @ X.T (rsatoolbox's euclidean RDM is that syrk plus passes over the n x n "
                  "result; vs syrk says how close to the floor ours is)")
    print(f"note: {floor_note}")
    missing = [m for m in RANK_METHODS if m not in rank_speedups]
    if missing:
        print(f"note: rank_compare_min_speedup leaves out {', '.join(missing)} (rsatoolbox skipped)")
    rank_min = min(rank_speedups.values()) if rank_speedups else float("nan")
    result = (f"RESULT corr_rdm_speedup={corr_speedup:.3g} corr_rdm_vs_matmul={corr_vs_matmul:.3f} "
              f"rank_compare_min_speedup={rank_min:.3g} max_abs_diff={worst_diff:.3e} "
              f"min_speedup={min(all_speedups):.3g}")
    # the record's table: correlation RDMs and the comparisons at the largest n; every case in its notes
    full = pd.DataFrame(rows).fillna("")
    big_n = f"n = {compare_sizes[-1][0]}"
    headline = full[full["case"].str.startswith("correlation RDM") | full["case"].str.endswith(big_n)]
    rec.finish(headline, result_line=result,
               notes=f"Note: {floor_note}.\n\nEvery case of the run:\n\n" + markdown_table(full),
               values={"threads": torch.get_num_threads(), "repeats": repeats, "max_abs_diff": f"{worst_diff:.0e}",
                       "corr_rdm_vs_matmul": f"{corr_vs_matmul:.2f}×"},
               title=f"RDMs and RDM comparisons: rdl_neuro vs rsatoolbox {version('rsatoolbox')} "
                     f"(float64, {torch.get_num_threads()} torch threads, median of {repeats})")
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
