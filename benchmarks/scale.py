"""RSA at the scale of today's data sets: 1,000 to 10,000 stimuli, wall time and peak memory.

For each number of stimuli ``n`` (features 4,096 wide) and each dtype (float32, float64) one
evaluation runs in its own subprocess, so that peak memory (``ru_maxrss``) belongs to that case
alone:

1. ``rdm``: the correlation RDM of random features ``(n, 4096)`` (``compute_rdm``);
2. ``corr``, ``spearman``: 8 model RDMs against 8 brain RDMs (``compare_rdms``), where the 16
   RDMs are the RDM of step 1 plus independent noise of varied strength;
3. ``boot``: ``rsa_table`` of those 16 RDMs, ``corr``, pattern bootstrap with N = 100 resamples and
   its bootstrapped noise ceiling (the weighted-moment engine, memory-bounded by
   ``rdl_neuro.inference.resampling.MOMENT_BUDGET_BYTES``).

``total`` is the sum of the four: the whole evaluation (wall seconds); ``cpu_s`` the process CPU
seconds of the four (all threads): on a machine shared with other jobs the wall time measures
their load too, the CPU time only this work. Data are made in float32 (the float64
case upcasts the same numbers), so ``f32 diff`` is the largest difference between the float32
and float64 results (comparisons, table means, SEMs, p-values, noise ceilings) of the same data.

rsatoolbox (``calc_rdm``, ``compare``, ``eval_bootstrap_pattern``; float64) runs the same steps
side by side while its estimated time stays under ``--rsatoolbox-budget`` seconds; beyond, its
time is extrapolated from the largest size it ran (RDM as n^2, comparisons and bootstrap as the
number of pairs, n^2) and marked ``*``.

    python benchmarks/scale.py [--quick] [--sizes 1000 2500 5000 10000] [--n-boot 100]
                               [--rsatoolbox-budget 180] [--publish]

Last line: ``RESULT n10k_seconds=... n10k_peak_gb=... f32_max_diff=...`` (the float32
evaluation at the largest size; the largest float32-float64 difference over all sizes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see rdm_speed.py: spinning threads on a shared machine

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import add_arguments, start_record  # noqa: E402

FEATURES = 4096
K_MODELS = M_BRAIN = 8
STEPS = ("rdm", "corr", "spearman", "boot")


def make_data(n: int, p: int, seed: int):
    """Features ``(n, p)`` and the noise scales of the 16 RDMs, float32 (the same numbers for both dtypes)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    # a few latent categories, so the RDMs have structure to find
    centers = torch.randn(10, p, generator=g)
    features = centers[torch.randint(0, 10, (n,), generator=g)] + 2 * torch.randn(n, p, generator=g)
    return features, g


def rsatoolbox_draws(n_boot: int, n_stim: int, seed: int) -> np.ndarray:
    """The stimulus draws ``eval_bootstrap_pattern`` makes after ``np.random.seed(seed)``: both
    libraries bootstrap the same resamples, so their results are compared number by number."""
    np.random.seed(seed)
    return np.stack([np.random.randint(0, n_stim, size=n_stim) for _ in range(n_boot)])


def run_case(lib: str, n: int, dtype_name: str, n_boot: int, p: int, seed: int, out: str) -> dict:
    """One case in this process: times per step (s), peak memory (GB), and results saved to ``out``."""
    import torch

    dtype = {"float32": torch.float32, "float64": torch.float64}[dtype_name]
    features, g = make_data(n, p, seed)
    features = features.to(dtype)
    times, cpu, results = {}, {}, {}  # wall and process CPU seconds (all threads) per step
    ids = {"stimulus": [f"s{i}" for i in range(n)]}
    if lib == "rdl_neuro":
        from rsatoolbox.rdm import RDMs

        from rdl_neuro.inference import rsa_evaluate
        from rdl_neuro.rdm import compare_rdms, compute_rdm

        t0, c0 = time.perf_counter(), time.process_time()
        rdm = compute_rdm(features, "correlation")
        times["rdm"] = time.perf_counter() - t0
        cpu["rdm"] = time.process_time() - c0
        del features
        z = torch.empty(K_MODELS + M_BRAIN, rdm.numel(), dtype=dtype)
        for i in range(z.shape[0]):  # the 16 RDMs, made in place: no (16, P) temporaries
            noise = torch.rand(rdm.numel(), generator=g)  # float32, the same for both dtypes
            z[i] = noise.mul_(0.05 * (1 + i % 8)).to(dtype).add_(rdm)
            del noise
        del rdm
        models, brain = z[:K_MODELS], z[K_MODELS:]
        for method in ("corr", "spearman"):
            t0, c0 = time.perf_counter(), time.process_time()
            results[method] = compare_rdms(models, brain, method).double().numpy()
            times[method] = time.perf_counter() - t0
            cpu[method] = time.process_time() - c0
        # rsatoolbox RDMs hold the arrays without a copy (float32 stays float32)
        model_rdms = RDMs(models.numpy(), pattern_descriptors=ids,
                          rdm_descriptors={"name": [f"model{i}" for i in range(K_MODELS)]})
        brain_rdms = RDMs(brain.numpy(), pattern_descriptors=ids)
        draws = rsatoolbox_draws(n_boot, n, seed)
        t0, c0 = time.perf_counter(), time.process_time()
        res = rsa_evaluate(model_rdms, brain_rdms, "corr", bootstrap="pattern", bootstrap_indices=draws,
                           dtype=dtype)
        times["boot"] = time.perf_counter() - t0
        cpu["boot"] = time.process_time() - c0
        for name in ("mean", "sem", "p_zero", "p_noise", "fixed"):
            results[name] = np.asarray(getattr(res, name), dtype=np.float64)
        results["nc"] = np.array([res.nc_lower, res.nc_upper])
    else:
        import rsatoolbox
        from rsatoolbox.inference import eval_bootstrap_pattern
        from rsatoolbox.model import ModelFixed

        x = features.double().numpy()
        del features
        t0, c0 = time.perf_counter(), time.process_time()
        rdm = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(x), method="correlation").get_vectors()[0]
        times["rdm"] = time.perf_counter() - t0
        cpu["rdm"] = time.process_time() - c0
        del x
        z = np.empty((K_MODELS + M_BRAIN, rdm.size))
        for i in range(z.shape[0]):
            z[i] = torch.rand(rdm.size, generator=g).mul_(0.05 * (1 + i % 8)).double().numpy() + rdm
        models = rsatoolbox.rdm.RDMs(z[:K_MODELS], pattern_descriptors=ids)
        brain = rsatoolbox.rdm.RDMs(z[K_MODELS:], pattern_descriptors=ids)
        for method in ("corr", "spearman"):
            t0, c0 = time.perf_counter(), time.process_time()
            results[method] = rsatoolbox.rdm.compare(models, brain, method=method)
            times[method] = time.perf_counter() - t0
            cpu[method] = time.process_time() - c0
        fixed = [ModelFixed(f"model{i}", models[i]) for i in range(K_MODELS)]
        np.random.seed(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            res = eval_bootstrap_pattern(fixed, brain, method="corr", N=n_boot)
        times["boot"] = time.perf_counter() - t0
        cpu["boot"] = time.process_time() - c0
        results["mean"] = res.get_means()
    np.savez(out, **results)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss: kB on Linux
    return {"times": times, "cpu_s": sum(cpu.values()), "peak_gb": peak_gb}


def subprocess_case(lib: str, n: int, dtype: str, args, out: str) -> dict:
    """``run_case`` in a fresh interpreter: its peak memory is its own."""
    cmd = [sys.executable, __file__, "--case", lib, str(n), dtype, "--n-boot", str(args.n_boot),
           "--features", str(args.features), "--seed", str(args.seed), "--case-out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"case {lib} n={n} {dtype} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, seconds)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of stimuli")
    parser.add_argument("--features", type=int, default=None, help=f"feature width (default {FEATURES})")
    parser.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default 100)")
    parser.add_argument("--rsatoolbox-budget", type=float, default=180.0,
                        help="run rsatoolbox where its estimated time is below this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the result record (default results/records)")
    parser.add_argument("--case", nargs=3, metavar=("LIB", "N", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--case-out", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.features = args.features or (64 if args.quick else FEATURES)
    args.n_boot = args.n_boot or (10 if args.quick else 100)
    if args.case:
        lib, n, dtype = args.case
        print(json.dumps(run_case(lib, int(n), dtype, args.n_boot, args.features, args.seed, args.case_out)))
        return 0
    sizes = args.sizes or ([100, 200] if args.quick else [1000, 2500, 5000, 10000])
    rec = start_record("scale", args, argv, seeds=args.seed,
                       depends_on=["rdl_neuro/rdm", "rdl_neuro/inference", "benchmarks/scale.py"])
    import pandas as pd
    import torch

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}); features {args.features} wide; {K_MODELS} model x {M_BRAIN} brain "
          f"RDMs; pattern bootstrap N = {args.n_boot} (corr) with noise ceiling; one subprocess per case",
          flush=True)
    rows, f32_diff, last_ref = [], 0.0, None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            outs = {}
            for dtype in ("float32", "float64"):
                path = os.path.join(tmp, f"ours_{n}_{dtype}.npz")
                case = subprocess_case("rdl_neuro", n, dtype, args, path)
                outs[dtype] = dict(np.load(path))
                rows.append({"n": n, "library": "rdl_neuro", "dtype": dtype, **case["times"],
                             "total": sum(case["times"].values()), "cpu_s": case["cpu_s"], "peak_gb": case["peak_gb"],
                             "note": ""})
                print(rows[-1], flush=True)
            diff = max(float(np.nanmax(np.abs(outs["float32"][k] - outs["float64"][k]))) for k in outs["float64"])
            f32_diff = max(f32_diff, diff)
            rows[-1]["f32_diff"] = rows[-2]["f32_diff"] = diff
            # rsatoolbox: run while the estimate (scaled from its last run by the number of pairs) fits
            scale = (n / last_ref[0]) ** 2 if last_ref else None
            estimate = sum(last_ref[1].values()) * scale if last_ref else 0.0
            if last_ref is None or estimate < args.rsatoolbox_budget:
                path = os.path.join(tmp, f"rsatoolbox_{n}.npz")
                case = subprocess_case("rsatoolbox", n, "float64", args, path)
                theirs = dict(np.load(path))
                ref_diff = max(float(np.nanmax(np.abs(outs["float64"][k] - theirs[k]))) for k in theirs)
                last_ref = (n, case["times"])
                rows.append({"n": n, "library": "rsatoolbox", "dtype": "float64", **case["times"],
                             "total": sum(case["times"].values()), "cpu_s": case["cpu_s"],
                             "peak_gb": case["peak_gb"], "f32_diff": np.nan, "note": f"max |diff| vs rdl_neuro float64 {ref_diff:.1e}"})
            else:
                times = {k: v * scale for k, v in last_ref[1].items()}
                rows.append({"n": n, "library": "rsatoolbox", "dtype": "float64", **times,
                             "total": sum(times.values()), "cpu_s": np.nan, "peak_gb": np.nan, "f32_diff": np.nan,
                             "note": f"* extrapolated from n={last_ref[0]} (x (n/{last_ref[0]})^2)"})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    theirs = frame[frame.library == "rsatoolbox"].set_index("n")["total"]
    frame["speedup"] = [theirs[r.n] / r.total if r.library == "rdl_neuro" else np.nan for r in frame.itertuples()]
    shown = frame.copy()
    for col in (*STEPS, "total"):
        shown[col] = [f"{v:.2f}{'*' if lib == 'rsatoolbox' and note.startswith('*') else ''}"
                      for v, lib, note in zip(frame[col], frame.library, frame.note)]
    shown["peak_gb"] = [f"{v:.2f}" if np.isfinite(v) else "-" for v in frame.peak_gb]
    shown["cpu_s"] = [f"{v:.1f}" if np.isfinite(v) else "-" for v in frame.cpu_s]
    shown["f32_diff"] = [f"{v:.1e}" if np.isfinite(v) else "" for v in frame.f32_diff]
    shown["speedup"] = [f"{v:.1f}" if np.isfinite(v) else "" for v in frame.speedup]
    shown = shown[["n", "library", "dtype", *STEPS, "total", "cpu_s", "peak_gb", "speedup", "f32_diff", "note"]]
    print()
    print(shown.to_string(index=False))
    print("(wall seconds; cpu_s: process CPU seconds of the four steps, all threads (what an idle machine "
          "spends; the wall time counts the load of others on a shared one); peak_gb: the case's subprocess maxrss; speedup: rsatoolbox total / this row's total; "
          "* extrapolated, not run)")
    largest = frame[(frame.library == "rdl_neuro") & (frame.dtype == "float32")].iloc[-1]
    line = (f"RESULT n10k_seconds={largest.total:.1f} n10k_peak_gb={largest.peak_gb:.2f} "
            f"f32_max_diff={f32_diff:.1e} n10k_cpu_seconds={largest.cpu_s:.1f}")
    if int(largest.n) != 10000:
        line += f" largest_n={int(largest.n)}"
    print(line)
    rec.finish(shown, result_line=line, title="RSA at scale: wall time and peak memory per case")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
