"""Shared machinery of the experiment scripts (``paper_mnist.py``, ``paper_cifar100.py``, ``brain92.py``).

What lives here:

- seeding and thread set-up, deterministic stratified subsets and splits;
- ``train_model``: one training run through ``rdl_neuro.train.Trainer`` (loss
  terms from ``rdl_neuro.train.losses``, teachers from ``rdl_neuro.train.teachers``);
- ``run_jobs``: a list of independent jobs run in order or on a process pool
  (every job seeds itself from its own keys, so the results do not depend on
  the number of workers);
- the *transfer benchmark* of the paper (teacher network -> students trained on
  a small labelled subset with baseline / KD / RDL / RDL+KD / RKD / SP), with
  its validation-split hyperparameter search, used by ``paper_mnist.py`` and
  ``paper_cifar100.py``;
- paired tests (scipy.stats), markdown tables and the per-method error figure.

RDMs, comparisons, loss terms, teachers, the training loop (gradient clipping
included: ``TrainSpec.clip_grad_norm`` is the Trainer's ``max_grad_norm``) and
the stratified splits come from the library (``rdl_neuro.rdm``,
``rdl_neuro.train``, ``rdl_neuro.data.loaders.stratified_split``). What is
implemented here is the experiments' own bookkeeping: job scheduling, the
hyperparameter search, paired tests over seeds (``scipy.stats``) and the
reports.
"""
from __future__ import annotations

import argparse
import shlex
import concurrent.futures as cf
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, TensorDataset

from rdl_neuro.data.loaders import stratified_split
from rdl_neuro.data.stimulus import StimulusDataset
from rdl_neuro.io import atomic_write_csv, atomic_write_text
from rdl_neuro.train.losses import CELoss, KDLoss, RDLLoss, RKDLoss, SPLoss
from rdl_neuro.model.networks import build_model
from rdl_neuro.train.teachers import NetworkTeacher
from rdl_neuro.train import Trainer, derive_seed, seed_everything
from rdl_neuro.vis import save_figure

from _provenance import TRANSFER_DEPENDS, add_arguments, start_record

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "results"


# --------------------------------------------------------------------------- #
# environment, seeds, subsets
# --------------------------------------------------------------------------- #
def configure_threads(n: int | None) -> int:
    """Use ``n`` intra-op threads (default: all cores); returns the number set."""
    n = int(n) if n else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def seed_of(*keys: int | str) -> int:
    """A stable 63-bit seed from integer or string keys (strings hashed deterministically)."""
    ints = [k if isinstance(k, int) else int.from_bytes(str(k).encode()[:8].ljust(8, b"\0"), "little") ^ len(str(k))
            for k in keys]
    return derive_seed(ints[0], *ints[1:]) if ints else 0


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions of ``n`` samples drawn without replacement, class proportions kept (sorted)."""
    return stratified_split(labels, train_size=n, seed=seed)[0]


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..len(labels)-1`` into (fit, held out), ``fraction`` held out, stratified."""
    return stratified_split(labels, test_size=fraction, seed=seed)


def machine_info() -> dict[str, Any]:
    """Facts that make a timing interpretable."""
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = (float("nan"),) * 3
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "loadavg_1m": round(load[0], 2),
            "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


# --------------------------------------------------------------------------- #
# training through the toolkit's Trainer
# --------------------------------------------------------------------------- #
@dataclass
class TrainSpec:
    """Optimiser and schedule of one training run (logged with every result)."""

    epochs: int = 50
    batch_size: int = 50
    lr: float = 0.05
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    weight_decay: float = 0.0
    cosine: bool = True  # cosine learning-rate decay over the epochs (stepped per epoch)
    clip_grad_norm: float | None = None  # clip the global gradient norm before every step (all methods alike)

    def make(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """The optimiser over ``model.parameters()`` and the learning-rate scheduler (or None)."""
        if self.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9,
                                                         weight_decay=self.weight_decay)
        elif self.optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {self.optimizer!r} (sgd or adam)")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs)) if self.cosine else None
        return opt, sched


def stimulus_dataset(images: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> StimulusDataset:
    """``(x, y, stimulus id)`` items over in-memory tensors."""
    return StimulusDataset(TensorDataset(images, labels), ids)


def train_model(model: torch.nn.Module, data: Dataset, losses: Mapping[str, Any], spec: TrainSpec, seed: int,
                teacher: NetworkTeacher | None = None) -> pd.DataFrame:
    """Train ``model`` in place with ``rdl_neuro.train.Trainer``; returns its per-epoch history."""
    opt, sched = spec.make(model)
    trainer = Trainer(model, data, losses=dict(losses), optimizer=opt, scheduler=sched, teacher=teacher,
                      batch_size=spec.batch_size, epochs=spec.epochs, seed=seed, quiet=True, device="cpu",
                      distributed=False, max_grad_norm=spec.clip_grad_norm or None)
    return trainer.fit()


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Logits ``(n, n_classes)`` in eval mode."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def error_rate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(error in %, mean cross-entropy) of ``model`` on a labelled set."""
    logits = predict(model, images)
    err = float((logits.argmax(1) != labels).float().mean()) * 100.0
    ce = float(torch.nn.functional.cross_entropy(logits, labels))
    return err, ce


# --------------------------------------------------------------------------- #
# running many independent jobs
# --------------------------------------------------------------------------- #
_WORKER_STATE: dict[str, Any] = {}


def _init_worker(threads: int, init: Callable[..., None] | None, init_args: tuple) -> None:
    configure_threads(threads)
    if init is not None:
        init(*init_args)


def run_jobs(fn: Callable[[Any], dict], jobs: Sequence[Any], workers: int = 1, *,
             init: Callable[..., None] | None = None, init_args: tuple = (), label: str = "jobs",
             log: Callable[[str], None] = print) -> list[dict]:
    """Run ``fn(job)`` for every job, in order or on ``workers`` spawned processes; results in job order.

    ``init(*init_args)`` prepares per-process state (data, teacher weights) in
    every worker; with one worker it runs here. Each worker uses
    ``cpu_count // workers`` threads.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    t0 = time.perf_counter()
    step = max(1, len(jobs) // 10)

    def progress(done: int) -> None:
        if done % step == 0 or done == len(jobs):
            log(f"  {label}: {done}/{len(jobs)} done ({time.perf_counter() - t0:.0f} s)")

    if workers <= 1:
        if init is not None:
            init(*init_args)
        out = []
        for k, job in enumerate(jobs, 1):
            out.append(fn(job))
            progress(k)
        return out
    threads = max(1, (os.cpu_count() or 1) // workers)
    results: list[dict | None] = [None] * len(jobs)
    ctx = mp.get_context("spawn")  # fork after torch has started its thread pools can deadlock
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(threads, init, init_args)) as pool:
        futures = {pool.submit(fn, job): k for k, job in enumerate(jobs)}
        for done, fut in enumerate(cf.as_completed(futures), 1):
            results[futures[fut]] = fut.result()
            progress(done)
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------- #
# statistics and tables
# --------------------------------------------------------------------------- #
def paired_tests(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired comparison of ``a`` and ``b`` (same units): mean difference a-b, t-test and Wilcoxon p."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    out = {"n": int(len(d)), "mean_diff": float(d.mean()) if len(d) else float("nan"),
           "t": float("nan"), "p_t": float("nan"), "p_wilcoxon": float("nan")}
    if len(d) >= 2 and np.any(d != 0):
        if np.std(d) > 0:
            res = stats.ttest_rel(a, b)
            out["t"], out["p_t"] = float(res.statistic), float(res.pvalue)
        else:  # every difference equal and non-zero: the t statistic is infinite
            out["t"], out["p_t"] = math.copysign(math.inf, d[0]), 0.0
        try:
            out["p_wilcoxon"] = float(stats.wilcoxon(a, b).pvalue)
        except ValueError:
            pass
    elif len(d) >= 2:
        out["t"], out["p_t"], out["p_wilcoxon"] = 0.0, 1.0, 1.0
    return out


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table (p-values in scientific notation below 0.001)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if x != 0 and abs(x) < 10 ** -digits:
            return f"{x:.1e}"
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(df: pd.DataFrame, digits: int | Mapping[str, int] = 3) -> str:
    """GitHub markdown table of ``df`` (no extra dependency)."""
    cols = list(df.columns)

    def cell(col: str, v: Any) -> str:
        d = digits.get(col, 3) if isinstance(digits, Mapping) else digits
        return fmt(v, d).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, cols)) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in cols) + " |")
    return "\n".join(lines)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically (no half-written table if the run is killed)."""
    return atomic_write_text(path, text)


def result_line(**values: Any) -> str:
    """``RESULT key=value ...`` with floats to 4 significant digits."""
    parts = []
    for k, v in values.items():
        if isinstance(v, (float, np.floating)):
            v = "nan" if math.isnan(v) else f"{v:.4g}"
        parts.append(f"{k}={v}")
    return "RESULT " + " ".join(parts)


def base_parser(description: str, default_out: Path = DEFAULT_OUT) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=default_out, help="folder for the CSV, markdown and figures")
    p.add_argument("--quick", action="store_true", help="tiny settings for the test suite (checks plumbing, not effects)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the script's)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel worker processes (default: 2 on >= 2 cores, 1 with --quick)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the main process (default: all cores); workers get cores // workers")
    return add_arguments(p)


def transfer_parser(description: str, *, subsets: list[int], epochs: int, teacher_epochs: int) -> argparse.ArgumentParser:
    """``base_parser`` with the options of the paper's transfer benchmark (its defaults per dataset)."""
    p = base_parser(description)
    p.add_argument("--subsets", type=int, nargs="+", default=subsets, help="labelled subset sizes")
    p.add_argument("--epochs", type=int, default=epochs, help="student epochs")
    p.add_argument("--teacher-epochs", type=int, default=teacher_epochs)
    p.add_argument("--search-seeds", type=int, default=2)
    return p


def start_run(args: argparse.Namespace, threads: int | None) -> tuple[int, float]:
    """Line-buffered stdout, torch threads, worker count: ``(workers, start time)``."""
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in logs as it happens
    configure_threads(threads)
    return default_workers(args), time.perf_counter()


def default_workers(args: argparse.Namespace) -> int:
    if args.workers is not None:
        return max(1, int(args.workers))
    return 1 if args.quick else min(2, os.cpu_count() or 1)


# --------------------------------------------------------------------------- #
# the transfer benchmark of the paper (MNIST, CIFAR-100)
# --------------------------------------------------------------------------- #
#: training methods of the transfer benchmark (which loss terms a student trains with)
TRANSFER_METHODS = ("baseline", "KD", "RDL", "RDL+KD", "RKD", "SP")


@dataclass
class TransferConfig:
    """Everything that defines a run of the transfer benchmark (written to the markdown report).

    ``rdl_pairs`` map student layer -> teacher layer (the paper: both hidden
    layers). ``peer_pair`` is the (student, teacher) layer pair of RKD and SP.
    ``grids`` hold the search grid of every method; ``RDL+KD`` reuses the KD
    values chosen on validation and searches its RDL weight over ``grids['RDL']``.
    """

    name: str
    teacher_model: dict
    students: dict[str, dict]  # label -> build_model config
    subsets: list[int]
    teacher_train: TrainSpec
    student_train: TrainSpec
    rdl_pairs: dict[str, dict[str, str]]  # student label -> {student layer: teacher layer}
    peer_pair: dict[str, tuple[str, str]]  # student label -> (student layer, teacher layer)
    grids: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seeds: int = 10
    search_seeds: int = 2
    val_fraction: float = 0.2
    primary: tuple[str, int] = ("", 0)  # (student label, subset size) of the RESULT line
    rdl_method: str = "euclidean"
    rdl_criterion: str = "mse"
    teacher_seed: int = 0


def default_grids() -> dict[str, dict[str, list[float]]]:
    """Fixed search grids (chosen from the loss magnitudes at initialisation, before any run).

    At initialisation, on MNIST batches of 50: CE ~2.3, RDL (euclidean, mse, both
    hidden layers) ~50, KD (T=4) ~27, RKD ~0.05, SP ~0.001. The grids put the
    weighted transfer term between ~0.1x and ~10x the cross-entropy.
    """
    return {
        "KD": {"temperature": [2.0, 4.0, 8.0], "weight": [1.0, 4.0]},
        "RDL": {"weight": [0.003, 0.01, 0.03, 0.1]},
        "RKD": {"weight": [5.0, 25.0, 100.0]},
        "SP": {"weight": [300.0, 3000.0, 30000.0]},
    }


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in product(*(grid[k] for k in keys))]


def transfer_losses(method: str, hp: Mapping[str, float], rdl_pairs: Mapping[str, str],
                    peer_pair: tuple[str, str], rdl_method: str = "euclidean",
                    rdl_criterion: str = "mse") -> dict[str, Any]:
    """Loss terms ``{name: (TransferLoss, weight)}`` of one method with hyperparameters ``hp``."""
    terms: dict[str, Any] = {"ce": (CELoss(), 1.0)}
    if method in ("KD", "RDL+KD"):
        terms["kd"] = (KDLoss(hp["kd_temperature"]), hp["kd_weight"])
    if method in ("RDL", "RDL+KD"):
        terms["rdl"] = (RDLLoss(dict(rdl_pairs), method=rdl_method, criterion=rdl_criterion), hp["rdl_weight"])
    if method == "RKD":
        terms["rkd"] = (RKDLoss(*peer_pair), hp["rkd_weight"])
    if method == "SP":
        terms["sp"] = (SPLoss(*peer_pair), hp["sp_weight"])
    if method not in TRANSFER_METHODS:
        raise ValueError(f"unknown method {method!r}; methods: {TRANSFER_METHODS}")
    return terms


def teacher_layers_needed(cfg: TransferConfig) -> list[str]:
    layers: list[str] = []
    for label in cfg.students:
        layers += list(cfg.rdl_pairs[label].values()) + [cfg.peer_pair[label][1]]
    return list(dict.fromkeys(layers))


def _transfer_init(payload: dict) -> None:
    """Per-process state of the transfer jobs: data tensors, config and the trained teacher."""
    _WORKER_STATE.clear()
    _WORKER_STATE.update(payload)
    cfg: TransferConfig = payload["cfg"]
    teacher = build_model(cfg.teacher_model)
    teacher.load_state_dict(payload["teacher_state"])
    _WORKER_STATE["teacher"] = teacher


def _transfer_job(job: dict) -> dict:
    """One student run: ``job`` = phase, student, n, method, hp, seed."""
    st = _WORKER_STATE
    cfg: TransferConfig = st["cfg"]
    X, y, ids = st["train_x"], st["train_y"], st["train_ids"]
    label, n, method, hp, seed = job["student"], job["n"], job["method"], job["hp"], job["seed"]
    subset = stratified_subset(y.numpy(), n, seed_of(cfg.name, "subset", n, seed))
    if job["phase"] == "search":
        fit, held = stratified_holdout(y[subset].numpy(), cfg.val_fraction, seed_of(cfg.name, "val", n, seed))
        train_idx, eval_x, eval_y = subset[fit], X[subset[held]], y[subset[held]]
    else:
        train_idx, eval_x, eval_y = subset, st["test_x"], st["test_y"]
    t_idx = torch.as_tensor(train_idx)
    data = stimulus_dataset(X[t_idx], y[t_idx], ids[t_idx])
    # same initial weights and batch order for every method of a (student, seed): a paired design
    seed_everything(seed_of(cfg.name, "init", label, seed))
    model = build_model(cfg.students[label])
    terms = transfer_losses(method, hp, cfg.rdl_pairs[label], cfg.peer_pair[label], cfg.rdl_method,
                            cfg.rdl_criterion)
    needs_teacher = method != "baseline"
    teacher = NetworkTeacher(st["teacher"], teacher_layers_needed(cfg), cache=True) if needs_teacher else None
    t0 = time.perf_counter()
    try:
        hist = train_model(model, data, terms, cfg.student_train, seed_of(cfg.name, "batches", label, n, seed),
                           teacher)
        diverged = False
    except FloatingPointError:  # the Trainer stops on a NaN/inf loss: this setting diverged
        hist, diverged = pd.DataFrame([{"train_acc": float("nan"), "loss": float("nan")}]), True
    seconds = time.perf_counter() - t0
    if teacher is not None:
        teacher.recorder.close()  # the teacher model is shared by the jobs of this process: drop this job's hooks
    err, ce = error_rate(model, eval_x, eval_y)
    if diverged and job["phase"] == "search":
        err, ce = 100.0, float("inf")  # a diverging grid point must never be chosen
    last = hist.iloc[-1]
    rec = {"phase": job["phase"], "student": label, "n_labelled": n, "n_train": len(train_idx),
           "n_eval": len(eval_y), "method": method, "seed": seed,
           "eval_set": "validation" if job["phase"] == "search" else "test",
           "error_pct": err, "eval_ce": ce, "diverged": diverged, "train_acc": float(last["train_acc"]),
           "final_loss": float(last["loss"]), "train_s": seconds}
    for key in ("rdl_weight", "kd_temperature", "kd_weight", "rkd_weight", "sp_weight"):
        rec[key] = hp.get(key, float("nan"))
    for col in hist.columns:
        if col.startswith("loss_") and col != "loss_ce":
            rec[f"final_{col}"] = float(last[col])
    return rec


def _hp_key(method: str, point: Mapping[str, float]) -> dict[str, float]:
    """Grid point -> the job's hp dict (prefixed names)."""
    if method == "KD":
        return {"kd_temperature": point["temperature"], "kd_weight": point["weight"]}
    if method == "RDL":
        return {"rdl_weight": point["weight"]}
    if method == "RKD":
        return {"rkd_weight": point["weight"]}
    if method == "SP":
        return {"sp_weight": point["weight"]}
    return {}


HP_COLUMNS = ("rdl_weight", "kd_temperature", "kd_weight", "rkd_weight", "sp_weight")


def hp_string(hp: Mapping[str, Any]) -> str:
    """'kd_temperature=4, kd_weight=1' from a dict or a result row (NaN entries left out)."""
    parts = [f"{k}={float(hp[k]):g}" for k in HP_COLUMNS if k in hp and not pd.isna(hp[k])]
    return ", ".join(parts) or "(none)"


def select_hyperparameters(search: pd.DataFrame) -> dict[tuple[str, int, str], dict[str, float]]:
    """Per (student, n, method): the grid point with the lowest mean validation error over search seeds.

    Ties go to the lower mean validation cross-entropy. Only validation rows
    (``phase == 'search'``) enter; the test set is never looked at.
    """
    assert set(search["eval_set"]) <= {"validation"}
    chosen: dict[tuple[str, int, str], dict[str, float]] = {}
    for (label, n, method), g in search.groupby(["student", "n_labelled", "method"], sort=False):
        cols = [c for c in HP_COLUMNS if g[c].notna().any()]
        if not cols:
            chosen[(label, int(n), method)] = {}
            continue
        agg = g.groupby(cols, dropna=False)[["error_pct", "eval_ce"]].mean().reset_index()
        best = agg.sort_values(["error_pct", "eval_ce"], kind="mergesort").iloc[0]
        chosen[(label, int(n), method)] = {c: float(best[c]) for c in cols}
    return chosen


def train_teacher(cfg: TransferConfig, train_x: torch.Tensor, train_y: torch.Tensor, train_ids: torch.Tensor,
                  test_x: torch.Tensor, test_y: torch.Tensor) -> tuple[dict, dict]:
    seed_everything(seed_of(cfg.name, "teacher-init", cfg.teacher_seed))
    teacher = build_model(cfg.teacher_model)
    t0 = time.perf_counter()
    train_model(teacher, stimulus_dataset(train_x, train_y, train_ids), {"ce": (CELoss(), 1.0)},
                cfg.teacher_train, seed_of(cfg.name, "teacher", cfg.teacher_seed))
    seconds = time.perf_counter() - t0
    err, ce = error_rate(teacher, test_x, test_y)
    train_err, _ = error_rate(teacher, train_x, train_y)
    info = {"test_error_pct": err, "test_ce": ce, "train_error_pct": train_err, "train_s": seconds,
            "n_train": len(train_y)}
    return {k: v.detach().clone() for k, v in teacher.state_dict().items()}, info


def summarise_transfer(final: pd.DataFrame) -> pd.DataFrame:
    """Per (student, n, method): test error mean ± sd over seeds and paired tests vs baseline and vs KD."""
    rows = []
    for (label, n), g in final.groupby(["student", "n_labelled"], sort=False):
        piv = g.pivot_table(index="seed", columns="method", values="error_pct")
        for method in [m for m in TRANSFER_METHODS if m in piv.columns]:
            vals = piv[method].dropna()
            row = {"student": label, "n_labelled": int(n), "method": method, "seeds": int(len(vals)),
                   "test_err_mean": float(vals.mean()), "test_err_sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")}
            for ref in ("baseline", "KD"):
                if ref in piv.columns and method != ref:
                    both = piv[[method, ref]].dropna()
                    t = paired_tests(both[method], both[ref])
                    row[f"diff_vs_{ref}"] = t["mean_diff"]
                    row[f"p_t_vs_{ref}"] = t["p_t"]
                    row[f"p_wilcoxon_vs_{ref}"] = t["p_wilcoxon"]
                else:
                    row[f"diff_vs_{ref}"] = row[f"p_t_vs_{ref}"] = row[f"p_wilcoxon_vs_{ref}"] = float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def plot_method_errors(final: pd.DataFrame, path: Path, title: str) -> Path:
    """Test error per method (mean ± sd bar, one point per seed, seeds joined across methods), a panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(final.groupby(["student", "n_labelled"], sort=False).groups)
    fig, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (label, n) in zip(axes[0], settings):
        g = final[(final["student"] == label) & (final["n_labelled"] == n)]
        methods = [m for m in TRANSFER_METHODS if m in set(g["method"])]
        piv = g.pivot_table(index="seed", columns="method", values="error_pct")[methods]
        xs = np.arange(len(methods))
        for _, seed_row in piv.iterrows():
            ax.plot(xs, seed_row.to_numpy(), color="0.8", lw=0.6, zorder=1)
        for k, m in enumerate(methods):
            vals = piv[m].dropna().to_numpy()
            jitter = (np.random.default_rng(k).random(len(vals)) - 0.5) * 0.25
            ax.scatter(np.full(len(vals), k) + jitter, vals, s=12, color=colors[k % len(colors)], zorder=3)
            sd = vals.std(ddof=1) if len(vals) > 1 else 0.0
            ax.errorbar(k + 0.3, vals.mean(), yerr=sd, fmt="o", color="k", ms=4, capsize=3, zorder=4)
        ax.set_xticks(xs, methods, rotation=45, ha="right")
        ax.set_title(f"{label}, n={n}", fontsize=9)
        ax.set_ylabel("test error (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)
    return path


def run_paper_script(cfg: TransferConfig, train: Any, test: Any, standardise: Callable[[torch.Tensor], torch.Tensor], *,
                     stem: str, argv: list[str] | None, out_dir: Path, workers: int, data_note: str, t0: float,
                     args: argparse.Namespace | None = None) -> int:
    """The paper scripts' last step: ``run_transfer_benchmark`` on the standardised splits (datasets
    with ``images``, ``labels``, ``stimulus``), the result record (``benchmarks/_provenance.py``; in
    ``benchmarks/results/`` with ``--publish``), then the wall time and the RESULT line."""
    argv = list(argv if argv is not None else sys.argv[1:])
    command = f"python benchmarks/{stem}.py " + " ".join(shlex.quote(a) for a in argv)
    rec = start_record(stem, args if args is not None else argparse.Namespace(out=out_dir), argv,
                       seeds=list(range(cfg.seeds)), depends_on=TRANSFER_DEPENDS + [f"benchmarks/{stem}.py"],
                       quick_args=["--quick"])
    rec.t0 = t0
    out = run_transfer_benchmark(cfg, standardise(train.images), train.labels, train.stimulus, standardise(test.images),
                                 test.labels, out_dir=out_dir, stem=stem, workers=workers, command=command.strip(),
                                 data_note=data_note)
    table, values = transfer_publication(out["summary"], out["teacher"])
    rec.finish(table, result_line=out["result_line"], values=values, exact=out["runs"].drop(columns="train_s"),
               title=f"{cfg.name}: test error % (mean ± sd over {cfg.seeds} seeds)",
               notes=f"{data_note}. Full tables, chosen hyperparameters and search grids: `{stem}.md` in the "
                     f"script's --out folder.")
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    print(out["result_line"])
    return 0


def _p(p: float) -> str:
    """A p-value as quoted in prose: 2 decimals' worth of precision, scientific below 0.001."""
    return "nan" if p != p else (f"{p:.0e}" if p < 1e-3 else f"{p:.3f}")


def _signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}".replace("-", "\u2212")


def transfer_publication(summary: pd.DataFrame, teacher: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The README's table of a transfer benchmark and the values its text quotes.

    Table: one row per (student, labelled subset), test error ``mean ± sd`` per
    method and the best method. Values (strings, ``\u2212`` for minus): for every
    setting ``<cmp>.<student>.<n>`` = "difference in points (p = paired t-test)" for
    ``rdl_vs_base``, ``rdl_vs_kd``, ``rdlkd_vs_kd`` and ``best.<student>.<n>``;
    over the settings ``rdl_gain_range`` (points RDL is better than the baseline,
    min–max), ``rdl_vs_base_max_p``, ``rdl_beats_base`` ("k of n"),
    ``rdl_vs_kd_range``, ``best_counts``; and ``teacher_error``.
    """
    rows, values = [], {}
    gains, p_base, vs_kd, best = [], [], [], []
    for (label, n), g in summary.groupby(["student", "n_labelled"], sort=False):
        g = g.set_index("method")
        student = str(label).removeprefix("MLP ").removeprefix("CNN ")
        row = {"student": student, "labels": int(n)}
        for m in TRANSFER_METHODS:
            if m in g.index:
                row[m] = f"{g.loc[m, 'test_err_mean']:.2f} ± {g.loc[m, 'test_err_sd']:.2f}"
        row["best"] = str(g["test_err_mean"].idxmin())
        rows.append(row)
        key = f"{student}.{int(n)}"
        for name, method, ref in (("rdl_vs_base", "RDL", "baseline"), ("rdl_vs_kd", "RDL", "KD"),
                                  ("rdlkd_vs_kd", "RDL+KD", "KD")):
            if method in g.index and ref in g.index:
                values[f"{name}.{key}"] = (f"{_signed(g.loc[method, f'diff_vs_{ref}'])} points "
                                           f"(p = {_p(g.loc[method, f'p_t_vs_{ref}'])})")
        values[f"best.{key}"] = row["best"]
        if "RDL" in g.index:
            gains.append(-g.loc["RDL", "diff_vs_baseline"])
            p_base.append(g.loc["RDL", "p_t_vs_baseline"])
            if "KD" in g.index:
                vs_kd.append(g.loc["RDL", "diff_vs_KD"])
        best.append(row["best"])
    if gains:
        values["rdl_gain_range"] = f"{min(gains):.1f}\u2013{max(gains):.1f}"
        values["rdl_vs_base_max_p"] = _p(max(p_base))
        values["rdl_beats_base"] = f"{sum(x > 0 for x in gains)} of {len(gains)}"
    if vs_kd:
        values["rdl_vs_kd_range"] = f"{_signed(min(vs_kd), 1)} to {_signed(max(vs_kd), 1)}"
    counts = pd.Series(best).value_counts()
    values["best_counts"] = ", ".join(f"{m} in {k}" for m, k in counts.items()) + f" of {len(best)}"
    values["teacher_error"] = f"{teacher['test_error_pct']:.1f}%"
    return pd.DataFrame(rows), values


def run_transfer_benchmark(cfg: TransferConfig, train_x: torch.Tensor, train_y: torch.Tensor,
                           train_ids: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                           out_dir: Path, stem: str, workers: int, command: str, data_note: str,
                           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Teacher, validation search, final runs over seeds, statistics, CSV/markdown/figure; returns the RESULT values."""
    t_start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"[{cfg.name}] {data_note}")
    log(f"[{cfg.name}] training the teacher {cfg.teacher_model.get('hidden')} on {len(train_y)} images ...")
    teacher_state, teacher_info = train_teacher(cfg, train_x, train_y, train_ids, test_x, test_y)
    log(f"[{cfg.name}] teacher test error {teacher_info['test_error_pct']:.2f}% ({teacher_info['train_s']:.0f} s)")
    payload = {"cfg": cfg, "train_x": train_x, "train_y": train_y, "train_ids": train_ids,
               "test_x": test_x, "test_y": test_y, "teacher_state": teacher_state}
    settings = [(label, n) for label in cfg.students for n in cfg.subsets]

    def run(jobs: list[dict], label: str) -> list[dict]:
        return run_jobs(_transfer_job, jobs, workers, init=_transfer_init, init_args=(payload,), label=label, log=log)

    search_df, chosen = _search_hyperparameters(cfg, settings, run, workers, log)
    jobs = [{"phase": "final", "student": label, "n": n, "method": m, "hp": chosen[(label, n, m)], "seed": s}
            for (label, n) in settings for s in range(cfg.seeds) for m in TRANSFER_METHODS]
    log(f"[{cfg.name}] final: {len(jobs)} runs ({cfg.seeds} seeds x {len(TRANSFER_METHODS)} methods x "
        f"{len(settings)} settings)")
    final_df = pd.DataFrame(run(jobs, "final"))
    summary = summarise_transfer(final_df)
    wall = time.perf_counter() - t_start
    for df in (search_df, final_df):
        df.insert(df.columns.get_loc("seed") + 1, "hp", [hp_string(r) for _, r in df.iterrows()])
    return _transfer_report(cfg, settings, search_df, final_df, summary, chosen, teacher_info, wall,
                            out_dir=out_dir, stem=stem, workers=workers, command=command, data_note=data_note, log=log)


def _search_hyperparameters(cfg: TransferConfig, settings: list[tuple[str, int]],
                            run: Callable[[list[dict], str], list[dict]], workers: int,
                            log: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    """Both search stages on validation splits; returns every search run and the chosen values."""
    search_seeds = list(range(cfg.search_seeds))
    # stage 1: every method's own grid on the validation split of the labelled subset
    jobs = []
    for (label, n), seed in product(settings, search_seeds):
        jobs.append({"phase": "search", "student": label, "n": n, "method": "baseline", "hp": {}, "seed": seed})
        for method in ("KD", "RDL", "RKD", "SP"):
            for point in grid_points(cfg.grids[method]):
                jobs.append({"phase": "search", "student": label, "n": n, "method": method,
                             "hp": _hp_key(method, point), "seed": seed})
    log(f"[{cfg.name}] search stage 1: {len(jobs)} runs on validation splits ({workers} worker(s))")
    search = run(jobs, "search 1")
    chosen = select_hyperparameters(pd.DataFrame(search))
    # stage 2: RDL+KD keeps the KD values chosen above and searches its RDL weight
    jobs = []
    for (label, n), seed in product(settings, search_seeds):
        kd = chosen[(label, n, "KD")]
        for point in grid_points(cfg.grids["RDL"]):
            jobs.append({"phase": "search", "student": label, "n": n, "method": "RDL+KD",
                         "hp": {**kd, "rdl_weight": point["weight"]}, "seed": seed})
    log(f"[{cfg.name}] search stage 2 (RDL+KD): {len(jobs)} runs")
    search += run(jobs, "search 2")
    search_df = pd.DataFrame(search)
    return search_df, select_hyperparameters(search_df)


def _transfer_report(cfg: TransferConfig, settings: list[tuple[str, int]], search_df: pd.DataFrame,
                     final_df: pd.DataFrame, summary: pd.DataFrame, chosen: dict, teacher_info: dict, wall: float, *,
                     out_dir: Path, stem: str, workers: int, command: str, data_note: str,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """The run's files (every run as CSV, the summary, the figure, the markdown report), the log lines and
    the RESULT values of the primary setting."""
    # ---- files
    all_runs = pd.concat([search_df, final_df], ignore_index=True)
    csv_path = out_dir / f"{stem}.csv"
    atomic_write_csv(all_runs, csv_path)
    atomic_write_csv(summary, out_dir / f"{stem}_summary.csv")
    fig_path = plot_method_errors(final_df, out_dir / f"{stem}.png",
                                  f"{cfg.name}: test error ({cfg.seeds} seeds, grey lines join a seed)")

    label0, n0 = cfg.primary if cfg.primary[0] else settings[0]
    prim = summary[(summary["student"] == label0) & (summary["n_labelled"] == n0)].set_index("method")
    values = {
        "rdl_vs_base_p": float(prim.loc["RDL", "p_t_vs_baseline"]),
        "rdl_minus_kd_err": float(prim.loc["RDL", "test_err_mean"] - prim.loc["KD", "test_err_mean"]),
        "best_method": str(prim["test_err_mean"].idxmin()),
    }

    grid_view = (search_df.groupby(["student", "n_labelled", "method", "hp"], sort=False)["error_pct"]
                 .agg(["mean", "count"]).reset_index()
                 .rename(columns={"mean": "val_err_mean", "count": "runs"}))
    chosen_df = pd.DataFrame([{"student": label, "n_labelled": n, "method": m,
                               "chosen": hp_string(hp)} for (label, n, m), hp in chosen.items()])
    chosen_df = chosen_df.merge(grid_view.rename(columns={"hp": "chosen"}),
                                on=["student", "n_labelled", "method", "chosen"], how="left")

    table = summary.copy()
    table["test error % (mean ± sd)"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(table["test_err_mean"], table["test_err_sd"])]
    table = table[["student", "n_labelled", "method", "seeds", "test error % (mean ± sd)", "diff_vs_baseline",
                   "p_t_vs_baseline", "p_wilcoxon_vs_baseline", "diff_vs_KD", "p_t_vs_KD", "p_wilcoxon_vs_KD"]]
    res = result_line(**values)
    md = [f"# {cfg.name}: RDL vs baseline, KD, RKD and SP", "",
          f"Command: `{command}`", "",
          f"Data: {data_note}", "",
          f"Teacher: {cfg.teacher_model} trained on all {teacher_info['n_train']} training images: "
          f"test error {teacher_info['test_error_pct']:.2f}% (train error {teacher_info['train_error_pct']:.2f}%).", "",
          "Protocol: per seed, a stratified labelled subset of the training split; the teacher's outputs and "
          "hidden-layer RDMs over the same images are the transfer signal. Hyperparameters are chosen per "
          f"(student, subset size) on a stratified {cfg.val_fraction:.0%} validation split carved from the "
          f"labelled subset ({cfg.search_seeds} search seeds; lowest mean validation error, ties by validation "
          "cross-entropy), then every method is retrained on the whole subset with the chosen values and "
          f"tested once on the test split, {cfg.seeds} seeds, same initial weights and batch order for every "
          "method of a seed. RDL+KD keeps KD's chosen (T, weight) and searches its RDL weight.", "",
          f"Student training: {asdict(cfg.student_train)}; teacher training: {asdict(cfg.teacher_train)}. "
          f"RDL: Euclidean RDMs ({cfg.rdl_method}), criterion {cfg.rdl_criterion}, pairs {cfg.rdl_pairs}; "
          f"RKD/SP pair {cfg.peer_pair}.", "",
          f"Diverged runs (NaN loss; a diverged grid point counts as 100% validation error, a diverged final run "
          f"is scored as the broken model it is): search {int(search_df['diverged'].sum())}, "
          f"final {int(final_df['diverged'].sum())}.", "",
          "Differences are test-error percentage points (method minus reference; negative = method better); "
          "p-values from paired t-tests and Wilcoxon signed-rank tests over seeds.", "",
          "## Test error", "", markdown_table(table, {"n_labelled": 0, "seeds": 0, "diff_vs_baseline": 2, "diff_vs_KD": 2}),
          "", "## Chosen hyperparameters (validation only)", "", markdown_table(chosen_df, {"val_err_mean": 2}),
          "", "## Search grid: mean validation error (%) per grid point", "", f"Grids: {cfg.grids}", "",
          markdown_table(grid_view, {"val_err_mean": 2}), "",
          f"Primary setting for the RESULT line (fixed before running): student {label0}, n={n0}.", "",
          f"Wall time: {wall:.0f} s with {workers} worker(s); machine: {machine_info()}.", "",
          f"Files: `{csv_path.name}` (every run, search and final), `{stem}_summary.csv`, `{fig_path.name}`.", "",
          "```", res, "```", ""]
    write_text(out_dir / f"{stem}.md", "\n".join(md))
    log("")
    log(markdown_table(table, {"n_labelled": 0, "seeds": 0, "diff_vs_baseline": 2, "diff_vs_KD": 2}))
    log("")
    log(markdown_table(chosen_df, {"val_err_mean": 2}))
    log(f"teacher test error {teacher_info['test_error_pct']:.2f}%; wall time {wall:.0f} s; outputs in {out_dir}")
    return {**values, "wall_s": wall, "result_line": res, "summary": summary, "teacher": teacher_info,
            "runs": all_runs}
