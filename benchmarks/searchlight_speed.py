"""Searchlight RSA speed: rdl_neuro against rsatoolbox, side by side in one run, on a synthetic brain.

The synthetic brain is an ellipsoid mask in a box, with random float64 betas
(one volume per condition). Both libraries run the same searchlight: spheres
(``get_volume_searchlight``), correlation RDMs per sphere
(``get_searchlight_RDMs``) and the evaluation of one fixed model RDM with
Pearson correlation (``evaluate_models_searchlight`` with ``eval_fixed``).
rdl_neuro runs it twice, in float64 and in float32 (``dtype=``); each row
says its precision and its largest difference from rsatoolbox (which computes
in float64). The random betas here have no component shared by all conditions;
float32 loses precision where one is large (a voxel's mean response).

rsatoolbox finds all spheres, but computes RDMs and evaluations only for a
subset of the centres (``--rsatoolbox-centres``, spread evenly over the mask);
its time for all centres is **extrapolated** linearly from that subset (its
cost per centre does not depend on which centres). rdl_neuro runs the whole
searchlight, from the NIfTI images to the map. ``max_abs_diff`` compares
rdl_neuro's RDMs and evaluations with rsatoolbox's on the subset.

The crossnobis row: ``--crossnobis-runs`` runs of every condition and
``--residuals`` residual volumes; rsatoolbox computes each sphere's RDM the
way its users do (a ``Dataset`` per sphere, ``prec_from_residuals`` with
``shrinkage_diag``, ``calc_rdm(..., method="crossnobis", cv_descriptor="run")``;
``get_searchlight_RDMs`` has no cross-validation) on
``--crossnobis-centres`` centres, extrapolated, then the same evaluation;
rdl_neuro runs all spheres (float64).

Peak memory is measured in a fresh subprocess (its maximum resident set size)
running rdl_neuro's whole searchlight on a larger mask (``--memory-voxels``,
default 100,000 voxels, float64) with the same number of conditions; its wall
time is shown too.

    python benchmarks/searchlight_speed.py            # 35k-voxel brain, 92 conditions (a few minutes)
    python benchmarks/searchlight_speed.py --quick    # small brain (seconds; used by the tests)

Threads: the main rows give every library one thread (``--threads``,
default 1: torch and numpy's BLAS), so that the ratios compare the code and not
the core count. The rows marked **defaults** run each library as a new user
gets it on this machine: rdl_neuro in float64 (its default dtype) with torch's
default thread count (all cores: as many chunks of spheres side by side, each
torch op on one thread), rsatoolbox with numpy's default BLAS threads
(its searchlight is a Python loop over the centres, so it stays on one core in
effect); their CPU-seconds columns show what each run cost. Timings measured
while other processes share the cores are unreliable, the multi-threaded ones
most (a row on all cores gains nothing when other processes hold them).

The **floor** row is a lower bound for rdl_neuro's float64 searchlight on one
thread: the multiply-adds of its Gram products (a full sphere at the start of
every row of centres along the last axis, then per centre one product over a
cap of entering voxels; the rest of the work, gathers, normalisation and
scores, is not counted) at the rate of a batched product of the cap's shape
measured in the same run, over the width of rdl_neuro's table (the conditions
and a column of ones, padded with zero columns to a multiple of 8).

The last line is machine-readable:

    RESULT searchlight_speedup=... max_abs_diff=... threads=... cpu_speedup=... speedup_1thread=...
           speedup_float32_1thread=... max_abs_diff_float32=... floor_ratio=...
           crossnobis_speedup=... crossnobis_max_abs_diff=... peak_memory_gb=... memory_voxels=...

``searchlight_speedup``: rsatoolbox's (extrapolated) time for spheres + RDMs +
evaluation over all centres / rdl_neuro's time for the same, **each library at
its defaults on the whole machine** (``threads`` cores; rdl_neuro in float64,
whose largest difference from rsatoolbox is ``max_abs_diff``);
``cpu_speedup``: the same ratio of the processes' CPU seconds (what each run
costs, cores added up); ``speedup_1thread``: one thread per library, float64;
``speedup_float32_1thread`` and ``max_abs_diff_float32``: one thread, rdl_neuro
in float32 (``dtype=torch.float32``); ``floor_ratio``: rdl_neuro's one-thread
float64 time / the floor row; ``crossnobis_speedup``: the crossnobis rows, one
thread per library.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import add_arguments, start_record  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def synthetic_brain(n_voxels: int, n_conditions: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mask (X, Y, Z) bool, betas (X, Y, Z, n_conditions), affine)``: an ellipsoid of about ``n_voxels``."""
    # semi-axes in the proportions of a brain (x : y : z = 0.8 : 1 : 0.75), 2 mm voxels
    scale = (n_voxels / (4 / 3 * np.pi * 0.8 * 0.75)) ** (1 / 3)
    axes = np.array([0.8, 1.0, 0.75]) * scale
    shape = tuple(int(np.ceil(2 * a)) + 4 for a in axes)
    ijk = np.indices(shape).reshape(3, -1).T + 0.5
    centre = np.array(shape) / 2
    mask = (((ijk - centre) / axes) ** 2).sum(axis=1) < 1
    rng = np.random.default_rng(seed)
    betas = rng.normal(size=shape + (n_conditions,))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return mask.reshape(shape), betas, affine


def now() -> np.ndarray:
    """``[wall, cpu]`` seconds: wall-clock time and this process's CPU time (the CPU time is what a run costs
    when other processes share the cores; on a quiet machine the two agree)."""
    return np.array([time.perf_counter(), time.process_time()])


def ours(mask, betas, affine, model, radius, threshold, chunk_size, dtype=torch.float64, conditions=None, **options):
    """rdl_neuro's searchlight from NIfTI images to scores; returns (seconds, result)."""
    import nibabel as nib
    from rsatoolbox.rdm import RDMs

    from rdl_neuro.inference.searchlight import evaluate_searchlight

    n = int(round((1 + np.sqrt(1 + 8 * model.size)) / 2))  # conditions of the condensed model RDM
    conditions = np.arange(betas.shape[-1]) if conditions is None else conditions
    model_rdm = RDMs(model[None], pattern_descriptors={"stimulus": np.arange(n)}, rdm_descriptors={"name": ["m"]})
    start = now()
    result = evaluate_searchlight(nib.Nifti1Image(betas, affine), conditions, model_rdm,
                                  mask=nib.Nifti1Image(mask.astype(np.uint8), affine), radius=radius,
                                  threshold=threshold, chunk_size=chunk_size, dtype=dtype, **options)
    return now() - start, result


def memory_child(n_voxels: int, n_conditions: int, radius: float, threshold: float, seed: int) -> None:
    """In a subprocess: the whole searchlight on a larger brain; prints JSON with time and peak RSS."""
    import resource

    mask, betas, affine = synthetic_brain(n_voxels, n_conditions, seed)
    model = np.random.default_rng(seed + 1).random(n_conditions * (n_conditions - 1) // 2)
    seconds, result = ours(mask, betas, affine, model, radius, threshold, None)
    seconds = float(seconds[0])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_gb": peak_kb / 2**20, "n_voxels": int(mask.sum()),
                      "n_spheres": len(result.spheres), "mean_sphere": float(result.spheres.n_voxels.mean())}))


def product_floor(spheres, width: int, reps: int = 5) -> tuple[float, float]:
    """``(seconds, multiply-adds)`` of the float64 Gram products alone (one thread), a lower bound for the
    searchlight: a full sphere at the start of every row of centres along the last axis, then one product over
    the cap of entering voxels per centre, at the rate of a batched product of the cap's shape measured here."""
    from rdl_neuro.data.searchlight import SLIDE_STEPS

    centres = spheres.centers
    follows = np.r_[False, (np.diff(centres) == 1) & (centres[1:] % spheres.shape[2] != 0)]
    starts = np.flatnonzero(~follows)
    lengths = np.diff(np.r_[starts, len(centres)])
    n_full = int(np.ceil(lengths / SLIDE_STEPS).sum())
    cap = len(spheres.slide_offsets[0])
    madds = float(width * width * (n_full * len(spheres.offsets) + (len(centres) - n_full) * cap))
    batch = 128
    a = torch.randn(batch, width, cap, dtype=torch.float64)
    b = torch.randn(batch, cap, width, dtype=torch.float64)
    out = torch.empty(batch, width, width, dtype=torch.float64)
    best = np.inf
    calls = max(1, int(2e9 // (batch * width * width * cap)))  # ~2 G multiply-adds per try
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(calls):
            torch.bmm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    rate = calls * batch * width * width * cap / best
    return madds / rate, madds


def rsatoolbox_searchlight(mask, model, args, n_centres, sphere_rdms):
    """rsatoolbox's spheres (all centres), then ``sphere_rdms(centers, neighbors)`` -> RDMs and the evaluation
    of the model (eval_fixed, corr) on ``n_centres`` of the centres, spread evenly.

    Returns ``(spheres_s, rdms_s, eval_s, centers, subset, rdms, evaluations)``; times as ``now()``.
    """
    from rsatoolbox.inference import eval_fixed
    from rsatoolbox.model import ModelFixed
    from rsatoolbox.rdm import RDMs
    from rsatoolbox.util.searchlight import evaluate_models_searchlight, get_volume_searchlight

    n_cond = int(round((1 + np.sqrt(1 + 8 * model.size)) / 2))
    quiet = io.StringIO()
    with redirect_stdout(quiet), redirect_stderr(quiet):
        start = now()
        centers, neighbors = get_volume_searchlight(mask, radius=args.radius, threshold=args.threshold)
        spheres_s = now() - start
        subset = np.linspace(0, len(centers) - 1, min(n_centres, len(centers))).round().astype(int)
        start = now()
        sl_rdms = sphere_rdms(centers[subset], [neighbors[i] for i in subset])
        rdms_s = now() - start
        fixed = ModelFixed("m", RDMs(model[None], pattern_descriptors={"stimulus": np.arange(n_cond)}))
        start = now()
        evaluations = evaluate_models_searchlight(sl_rdms, fixed, eval_fixed, method="corr")
        eval_s = now() - start
    theirs = np.array([e.evaluations.ravel()[0] for e in evaluations])
    return spheres_s, rdms_s, eval_s, centers, subset, sl_rdms, theirs


def rsatoolbox_correlation(mask, betas, model, args):
    """rsatoolbox's correlation searchlight: ``get_searchlight_RDMs`` on a subset of the centres."""
    from rsatoolbox.util.searchlight import get_searchlight_RDMs

    n_cond = betas.shape[-1]
    data_2d = betas.reshape(-1, n_cond).T
    return rsatoolbox_searchlight(mask, model, args, args.rsatoolbox_centres, lambda centers, neighbors:
                                  get_searchlight_RDMs(data_2d, centers, neighbors, np.arange(n_cond),
                                                       method="correlation", verbose=False))


def rsatoolbox_crossnobis(mask, betas, conditions, runs, residuals, model, args):
    """rsatoolbox's crossnobis searchlight (a Dataset per sphere, noise precision from its residuals)."""
    from rsatoolbox.data import Dataset
    from rsatoolbox.data.noise import prec_from_residuals
    from rsatoolbox.rdm import calc_rdm, concat

    X = betas.reshape(-1, betas.shape[-1]).T
    R = residuals.reshape(-1, residuals.shape[-1]).T

    def sphere_rdms(centers, neighbors):
        rdms = []
        for nb in neighbors:
            ds = Dataset(X[:, nb], obs_descriptors={"stimulus": conditions, "run": runs})
            noise = prec_from_residuals(R[:, nb], method="shrinkage_diag")
            rdms.append(calc_rdm(ds, method="crossnobis", descriptor="stimulus", cv_descriptor="run", noise=noise))
        return concat(rdms)

    return rsatoolbox_searchlight(mask, model, args, args.crossnobis_centres, sphere_rdms)


def _times(theirs: np.ndarray, ours_: np.ndarray | None = None) -> dict[str, float]:
    """Table cells of ``[wall, cpu]`` times: rsatoolbox's, and rdl_neuro's with the ratios when given."""
    cells = {"rsatoolbox_s": theirs[0], "rsatoolbox_cpu_s": theirs[1]}
    if ours_ is not None:
        cells.update(rdl_neuro_s=ours_[0], rdl_neuro_cpu_s=ours_[1], speedup=theirs[0] / ours_[0],
                     cpu_speedup=theirs[1] / ours_[1])
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small brain (a smoke test of the script)")
    parser.add_argument("--voxels", type=int, default=35_000, help="voxels in the brain mask (default 35,000)")
    parser.add_argument("--conditions", type=int, default=92, help="conditions (default 92)")
    parser.add_argument("--radius", type=float, default=3.0, help="sphere radius in voxels (default 3)")
    parser.add_argument("--threshold", type=float, default=0.5, help="sphere fraction inside the mask (default 0.5)")
    parser.add_argument("--rsatoolbox-centres", type=int, default=2000,
                        help="centres rsatoolbox computes RDMs and evaluations for (default 2,000)")
    parser.add_argument("--crossnobis-runs", type=int, default=3, help="runs of the crossnobis row (default 3)")
    parser.add_argument("--residuals", type=int, default=60, help="residual volumes of the crossnobis row (default 60)")
    parser.add_argument("--crossnobis-centres", type=int, default=300,
                        help="centres rsatoolbox computes crossnobis RDMs for (default 300; 0 skips the row)")
    parser.add_argument("--memory-voxels", type=int, default=100_000,
                        help="mask size of the peak-memory run (default 100,000; 0 skips it)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of torch and of numpy's BLAS, for both libraries (default 1: per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the table and the record (default results/)")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.voxels, args.conditions, args.rsatoolbox_centres, args.memory_voxels = 3000, 20, 200, 5000
        args.crossnobis_centres, args.residuals = min(args.crossnobis_centres, 50), 30
    from threadpoolctl import threadpool_limits

    default_threads = torch.get_num_threads()  # what a new user's torch uses: all cores
    torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads)
    if args.memory_child:
        memory_child(args.memory_voxels, args.conditions, args.radius, args.threshold, args.seed)
        return 0

    import nibabel as nib

    from rdl_neuro.data.searchlight import prepare_searchlight

    rec = start_record("searchlight_speed", args, argv, seeds=args.seed,
                       depends_on=["rdl_neuro/data/searchlight.py", "rdl_neuro/data/nifti.py",
                                   "rdl_neuro/inference/searchlight.py", "rdl_neuro/rdm",
                                   "benchmarks/searchlight_speed.py"])
    mask, betas, affine = synthetic_brain(args.voxels, args.conditions, args.seed)
    n_cond = args.conditions
    model = np.random.default_rng(args.seed + 1).random(n_cond * (n_cond - 1) // 2)
    print(f"synthetic brain: {int(mask.sum())} voxels in a {mask.shape} box, {n_cond} conditions, "
          f"radius {args.radius:g} voxels, threshold {args.threshold:g}; {args.threads} thread(s) for both libraries",
          flush=True)
    # a first call on a tiny volume loads rdl_neuro's lazily imported modules (rsatoolbox's are imported already)
    ours(np.ones((8, 8, 8), bool), betas[:8, :8, :8], affine, model, args.radius, 0.0, None)

    timed = {}
    for dtype in (torch.float64, torch.float32):
        seconds, result = ours(mask, betas, affine, model, args.radius, args.threshold, None, dtype=dtype)
        timed[str(dtype).replace("torch.", "")] = (seconds, result)
        print(f"rdl_neuro ({str(dtype).replace('torch.', '')}): {len(result.spheres)} spheres ({result.spheres.n_voxels.mean():.1f} voxels on "
              f"average) in {seconds[0]:.2f} s ({seconds[1]:.2f} s CPU)", flush=True)
    spheres_s, rdms_s, eval_s, centers, subset, sl_rdms, theirs = rsatoolbox_correlation(mask, betas, model, args)
    n_spheres = len(timed["float64"][1].spheres)
    if len(centers) != n_spheres:
        raise RuntimeError(f"rsatoolbox found {len(centers)} spheres, rdl_neuro {n_spheres}")
    scale = len(centers) / len(subset)
    rsa_total = spheres_s + scale * (rdms_s + eval_s)
    position = np.searchsorted(timed["float64"][1].spheres.centers, centers[subset])
    diffs = {}
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        eval_diff = float(np.abs(timed[name][1].scores[position, 0] - theirs).max())
        data = prepare_searchlight(nib.Nifti1Image(betas, affine), np.arange(n_cond),
                                   mask=nib.Nifti1Image(mask.astype(np.uint8), affine), radius=args.radius,
                                   threshold=args.threshold, dtype=dtype)
        rdm_diff = float(np.abs(data.rdms_at(position).double().numpy() - sl_rdms.dissimilarities).max())
        diffs[name] = (rdm_diff, eval_diff)
    from rdl_neuro.data.searchlight import TABLE_WIDTH_MULTIPLE

    # the products' width: the conditions and a column of ones, padded as rdl_neuro's table is
    width = -(-(n_cond + 1) // TABLE_WIDTH_MULTIPLE) * TABLE_WIDTH_MULTIPLE
    floor_s, floor_madds = product_floor(timed["float64"][1].spheres, width)
    rows = [
        {"step": "spheres (get_volume_searchlight)", **_times(spheres_s), "basis": "all centres"},
        {"step": "RDMs (get_searchlight_RDMs)", **_times(scale * rdms_s),
         "basis": f"{len(subset)} centres x {scale:.1f}"},
        {"step": "evaluation (evaluate_models_searchlight)", **_times(scale * eval_s),
         "basis": f"{len(subset)} centres x {scale:.1f}"},
    ]
    for name in ("float64", "float32"):
        rows.append({"step": f"total, correlation RDMs (rdl_neuro {name}), 1 thread each",
                     **_times(rsa_total, timed[name][0]), "max_abs_diff": max(diffs[name]),
                     "basis": f"{n_spheres} spheres"})
    rows.append({"step": "floor: rdl_neuro float64 Gram products alone, 1 thread", "rdl_neuro_s": floor_s,
                 "basis": f"{floor_madds / 1e9:.2f} G multiply-adds at the measured batched-product rate"})

    cross = None
    if args.crossnobis_centres:
        n_runs = args.crossnobis_runs
        rng = np.random.default_rng(args.seed + 2)
        cv_betas = betas[..., np.tile(np.arange(n_cond), n_runs)] + rng.normal(size=betas.shape[:3] + (n_cond * n_runs,))
        conditions = np.tile(np.arange(n_cond), n_runs)
        runs = np.repeat(np.arange(n_runs), n_cond)
        residuals = rng.normal(size=betas.shape[:3] + (args.residuals,))
        cross_s, cross_result = ours(mask, cv_betas, affine, model, args.radius, args.threshold, None,
                                     conditions=conditions, runs=runs, rdm_method="crossnobis",
                                     residuals=nib.Nifti1Image(residuals, affine))
        print(f"rdl_neuro (crossnobis, float64): {n_spheres} spheres in {cross_s[0]:.2f} s", flush=True)
        c_spheres_s, c_rdms_s, c_eval_s, _, c_subset, c_rdms, c_theirs = rsatoolbox_crossnobis(
            mask, cv_betas, conditions, runs, residuals, model, args)
        c_scale = len(centers) / len(c_subset)
        c_total = c_spheres_s + c_scale * (c_rdms_s + c_eval_s)
        c_position = np.searchsorted(cross_result.spheres.centers, centers[c_subset])
        data = prepare_searchlight(nib.Nifti1Image(cv_betas, affine), conditions,
                                   mask=nib.Nifti1Image(mask.astype(np.uint8), affine), radius=args.radius,
                                   threshold=args.threshold, runs=runs, method="crossnobis",
                                   residuals=nib.Nifti1Image(residuals, affine))
        c_diff = max(float(np.abs(data.rdms_at(c_position).numpy() - c_rdms.dissimilarities).max()),
                     float(np.abs(cross_result.scores[c_position, 0] - c_theirs).max()))
        cross = (c_total[0] / cross_s[0], c_diff)
        rows.append({"step": f"total, crossnobis RDMs ({n_runs} runs, {args.residuals} residuals; rdl_neuro float64), "
                             "1 thread each",
                     **_times(c_total, cross_s), "max_abs_diff": c_diff,
                     "basis": f"rsatoolbox: {len(c_subset)} centres x {c_scale:.1f} (spheres: all)"})

    # each library at its defaults on the whole machine (after the one-thread runs)
    limits.restore_original_limits()
    torch.set_num_threads(default_threads)
    default_s, default_result = ours(mask, betas, affine, model, args.radius, args.threshold, None)
    d_spheres_s, d_rdms_s, d_eval_s, _, _, _, _ = rsatoolbox_correlation(mask, betas, model, args)
    default_total = d_spheres_s + scale * (d_rdms_s + d_eval_s)
    default_diff = max(diffs["float64"][0], float(np.abs(default_result.scores[position, 0] - theirs).max()))
    print(f"rdl_neuro (float64, defaults: {default_threads} threads): {default_s[0]:.2f} s "
          f"({default_s[1]:.2f} s CPU)", flush=True)
    rows.append({"step": f"total, correlation RDMs, defaults: each library as installed on {default_threads} cores "
                         "(rdl_neuro float64)", **_times(default_total, default_s), "max_abs_diff": default_diff,
                 "basis": f"{n_spheres} spheres"})
    torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads)

    memory = None
    if args.memory_voxels:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--memory-voxels",
               str(args.memory_voxels), "--conditions", str(n_cond), "--radius", str(args.radius), "--threshold",
               str(args.threshold), "--seed", str(args.seed), "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"the peak-memory run failed:\n{res.stderr[-3000:]}")
        memory = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append({"step": f"rdl_neuro float64, {memory['n_voxels']}-voxel mask ({memory['n_spheres']} spheres)",
                     "rdl_neuro_s": memory["seconds"], "peak_memory_gb": memory["peak_gb"],
                     "rsatoolbox_s": rsa_total[0] / n_spheres * memory["n_spheres"],
                     "basis": "rsatoolbox: per-sphere rate above"})
        rows[-1]["speedup"] = rows[-1]["rsatoolbox_s"] / memory["seconds"]
    table = pd.DataFrame(rows, columns=["step", "rsatoolbox_s", "rdl_neuro_s", "speedup", "rsatoolbox_cpu_s",
                                        "rdl_neuro_cpu_s", "cpu_speedup", "max_abs_diff", "peak_memory_gb", "basis"])
    shown = table.copy()
    for col, fmt in (("rsatoolbox_s", "{:.2f}"), ("rdl_neuro_s", "{:.2f}"), ("speedup", "{:.1f}"),
                     ("rsatoolbox_cpu_s", "{:.2f}"), ("rdl_neuro_cpu_s", "{:.2f}"), ("cpu_speedup", "{:.1f}"),
                     ("max_abs_diff", "{:.1e}"), ("peak_memory_gb", "{:.2f}")):
        shown[col] = [fmt.format(v) if pd.notna(v) else "" for v in table[col]]
    print(shown.to_string(index=False))
    for name in ("float64", "float32"):
        print(f"max |difference| from rsatoolbox on the {len(subset)} centres, rdl_neuro in {name}: "
              f"RDMs {diffs[name][0]:.1e}, evaluations {diffs[name][1]:.1e}")
    out = Path(args.out) if args.out else Path(__file__).resolve().parents[1] / "results"
    out.mkdir(parents=True, exist_ok=True)
    shown.to_csv(out / "searchlight_speed.csv", index=False)
    line = (f"RESULT searchlight_speedup={default_total[0] / default_s[0]:.1f} max_abs_diff={default_diff:.1e} "
            f"threads={default_threads} cpu_speedup={default_total[1] / default_s[1]:.1f} "
            f"speedup_1thread={rsa_total[0] / timed['float64'][0][0]:.1f} "
            f"speedup_float32_1thread={rsa_total[0] / timed['float32'][0][0]:.1f} "
            f"max_abs_diff_float32={max(diffs['float32']):.1e} floor_ratio={timed['float64'][0][0] / floor_s:.1f} "
            f"crossnobis_speedup={cross[0] if cross else float('nan'):.1f} "
            f"crossnobis_max_abs_diff={cross[1] if cross else float('nan'):.1e} "
            f"peak_memory_gb={memory['peak_gb'] if memory else float('nan'):.2f} "
            f"memory_voxels={memory['n_voxels'] if memory else 0}")
    rec.finish(shown, result_line=line,
               notes=(f"rsatoolbox's RDM and evaluation times are extrapolated from {len(subset)} of the "
                      f"{n_spheres} centres (x{scale:.1f}; crossnobis: from {args.crossnobis_centres}); its sphere "
                      f"search ran on all of them. The headline searchlight_speedup is the defaults row (each "
                      f"library as installed, {default_threads} cores; rdl_neuro in float64, its default); the "
                      "other rows give each library one thread. rsatoolbox computes in float64."),
               title="Searchlight RSA: rdl_neuro vs rsatoolbox")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
