"""``rdl-neuro demo``: RDL vs. a no-transfer baseline and knowledge distillation on scikit-learn's digits.

The experiment (McClure & Kriegeskorte 2016, in miniature):

1. The 1,797 8x8 digits are split into train (80 %) and test (20 %); 300
   training digits are held out for validation (hyperparameters were chosen
   on them, never on test).
2. A teacher MLP 64-256-256-10 is trained on the remaining training digits.
3. Students (same architecture) learn from a small labelled subset
   (``N_LABELLED`` digits per seed), for ``--seeds`` seeds (the labelled
   subset and the initialisation change with the seed), with

   - ``baseline``: cross-entropy only,
   - ``KD``: CE + soft targets of the teacher (Hinton et al. 2015),
   - ``RDL``: CE + lambda * squared error between the student's and the
     teacher's Euclidean RDMs of both hidden layers on each batch (the paper's form),
   - ``RDL+KD``: both.

4. Test accuracy mean +- sd per method is printed and written to
   ``DIR/results.csv``; the per-epoch histories to ``DIR/histories.csv``; and
   figures to ``DIR/rdms.png`` (teacher vs. student RDMs of hidden layer 2 on
   the same test digits), ``DIR/accuracy.png`` and ``DIR/training_curves.png``.

Besides the labelled digits, every student's batches hold ``N_UNLABELLED``
unlabelled training digits (label -100, ignored by cross-entropy) that feed
only the transfer losses (RDL and KD alike); a ``CoverageBatchSampler`` puts
at least ``min_labelled`` labelled digits into every batch. All methods see
the same batches for a given seed.

Hyperparameters (``DemoSettings``) were picked by mean validation accuracy
(seeds 100-102, never the reported seeds 0..N-1, never the test set): the RDL
weight from {0.003, 0.01, 0.03, 0.1, 0.3, 1} (0.3 best: 94.0 % vs. 90.9 %
for the baseline); the KD weight 1 (0.3, 1 and 3 were within 0.3 %).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from rdl_neuro.data.loaders import stratified_split

__all__ = ["register", "run", "DemoSettings", "run_demo", "TRAINING_METHODS"]

#: the training methods of the demo's students (which loss terms each trains with), in table order
TRAINING_METHODS = ("baseline", "KD", "RDL", "RDL+KD")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and hyperparameters of the demo (see the module docstring for how they were chosen)."""

    n_labelled: int = 100
    n_unlabelled: int = 500  # extra training digits without labels: they feed RDL/KD only
    min_labelled: int = 10   # labelled digits per batch (CoverageBatchSampler)
    n_validation: int = 300
    teacher_hidden: tuple[int, ...] = (256, 256)
    student_hidden: tuple[int, ...] = (256, 256)
    teacher_epochs: int = 20
    student_epochs: int = 20
    batch_size: int = 50
    lr: float = 1e-3
    rdl_weight: float = 0.3
    rdl_warmup: int = 5
    kd_weight: float = 1.0
    kd_temperature: float = 4.0
    rdm_stimuli: int = 100  # test digits shown in the RDM figure

    def quick(self) -> DemoSettings:
        """Tiny sizes for tests (seconds, not a real result)."""
        return replace(self, teacher_hidden=(64, 64), student_hidden=(64, 64), teacher_epochs=3,
                       student_epochs=4, n_validation=100, rdm_stimuli=30)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo", help="RDL vs. baseline and KD on scikit-learn's digits (about a minute on 2 cores)",
        description="Train a teacher MLP on scikit-learn's digits, then students on 100 labelled digits with "
                    "cross-entropy only, KD, RDL and RDL+KD over several seeds; print test accuracy mean +- sd "
                    "and write the table, the histories and figures.")
    p.add_argument("--out", default="rdl_demo", help="output folder (default: ./rdl_demo)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds per method (default 3)")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # tiny sizes for the tests
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``rdl-neuro demo``."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    settings = DemoSettings().quick() if args.quick else DemoSettings()
    command = f"rdl-neuro demo{' --quick' if args.quick else ''} --seeds {args.seeds} --out {args.out}"
    run_demo(args.out, seeds=args.seeds, settings=settings, verbose=True, command=command)
    return 0


# --------------------------------------------------------------------------- #
# the experiment
# --------------------------------------------------------------------------- #
def _model(hidden: tuple[int, ...]) -> torch.nn.Module:
    from rdl_neuro.model.networks import build_model

    return build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": list(hidden)})


@torch.no_grad()
def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return float((model(images).argmax(1) == labels).float().mean())


def _splits(settings: DemoSettings) -> dict[str, Any]:
    from rdl_neuro.data.loaders import load_digits

    digits = load_digits(test_size=0.2, seed=0)
    train, test = digits.train, digits.test
    val_pos, rest_pos = stratified_split(train.labels.numpy(), train_size=settings.n_validation, seed=0)
    return {"pool": train.subset(rest_pos), "val": train.subset(val_pos), "test": test}


def _train_teacher(pool: Any, val: Any, settings: DemoSettings) -> torch.nn.Module:
    from rdl_neuro.train.losses import CELoss
    from rdl_neuro.train import Trainer, seed_everything

    seed_everything(0)
    model = _model(settings.teacher_hidden)
    Trainer(model, TensorDataset(pool.images, pool.labels), losses={"ce": CELoss()},
            optimizer=torch.optim.Adam(model.parameters(), lr=settings.lr), val_data=None,
            batch_size=64, epochs=settings.teacher_epochs, seed=0, quiet=True, device="cpu",
            distributed=False).fit()
    return model


def train_student(method: str, seed: int, data: dict[str, Any], teacher_model: torch.nn.Module,
                  settings: DemoSettings, eval_on: str = "val") -> tuple[torch.nn.Module, pd.DataFrame]:
    """One student of ``method`` on the seed's labelled subset; history with val (or test) accuracy per epoch."""
    from rdl_neuro.data.stimulus import StimulusDataset
    from rdl_neuro.train.losses import CELoss, KDLoss, RDLLoss
    from rdl_neuro.train.teachers import NetworkTeacher
    from rdl_neuro.train import Trainer, linear_warmup, seed_everything

    pool = data["pool"]
    chosen, rest = stratified_split(pool.labels.numpy(), train_size=settings.n_labelled, seed=seed)
    labelled = pool.subset(chosen)
    if settings.n_unlabelled:
        rng = np.random.default_rng(seed)
        extra = pool.subset(np.sort(rng.choice(rest, settings.n_unlabelled, replace=False)))
        images = torch.cat([labelled.images, extra.images])
        # -100 is cross-entropy's ignore_index: unlabelled digits reach only the transfer losses
        labels = torch.cat([labelled.labels, torch.full_like(extra.labels, -100)])
        # "covered" = labelled here: the sampler puts min_labelled labelled digits into every batch
        ids = labelled.stimulus.tolist() + [-1] * len(extra)
    else:
        images, labels, ids = labelled.images, labelled.labels, labelled.stimulus.tolist()
    train = StimulusDataset(TensorDataset(images, labels), ids)
    layers = [f"hidden{k}" for k in range(1, len(settings.student_hidden) + 1)]
    losses: dict[str, Any] = {"ce": CELoss()}
    if "RDL" in method:
        # the paper's RDL: both hidden layers, true Euclidean RDMs, squared error, one lambda
        losses["rdl"] = (RDLLoss({l: l for l in layers}, method="euclidean", criterion="mse"),
                         linear_warmup(settings.rdl_weight, settings.rdl_warmup))
    if "KD" in method:
        losses["kd"] = (KDLoss(temperature=settings.kd_temperature), settings.kd_weight)
    teacher = NetworkTeacher(teacher_model, layers) if len(losses) > 1 else None
    seed_everything(seed)
    student = _model(settings.student_hidden)
    evaluation = data[eval_on]
    trainer = Trainer(student, train, losses=losses, teacher=teacher,
                      optimizer=torch.optim.Adam(student.parameters(), lr=settings.lr),
                      val_data=TensorDataset(evaluation.images, evaluation.labels),
                      batch_size=settings.batch_size, epochs=settings.student_epochs, seed=seed, quiet=True,
                      device="cpu", distributed=False,
                      min_covered=settings.min_labelled if settings.n_unlabelled else 0)
    history = trainer.fit()
    return student, history


def _table(results: pd.DataFrame, teacher_acc: float) -> pd.DataFrame:
    table = (results.groupby("method", sort=False)["test_acc"]
             .agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else 0.0, n="count").reset_index())
    base = float(table.loc[table["method"] == "baseline", "mean"].iloc[0])
    table["vs_baseline"] = table["mean"] - base
    teacher_row = pd.DataFrame([{"method": "teacher (all training digits)", "mean": teacher_acc, "sd": 0.0,
                                 "n": 1, "vs_baseline": teacher_acc - base}])
    return pd.concat([table, teacher_row], ignore_index=True)


def _format_table(table: pd.DataFrame, settings: DemoSettings) -> str:
    lines = [f"Test accuracy on {settings.n_labelled} labelled digits (360 test digits), mean ± sd over seeds",
             f"{'method':<30}{'accuracy':>18}{'vs baseline':>14}{'seeds':>7}"]
    for _, r in table.iterrows():
        acc = f"{100 * r['mean']:.1f} ± {100 * r['sd']:.1f} %"
        lines.append(f"{r['method']:<30}{acc:>18}{100 * r['vs_baseline']:>+13.1f}{int(r['n']):>7}")
    return "\n".join(lines)


#: the code the demo's numbers depend on (paths relative to the repository), for its result record
DEPENDS_ON = ["rdl_neuro/cli/demo.py", "rdl_neuro/train", "rdl_neuro/rdm", "rdl_neuro/model", "rdl_neuro/data"]


def run_demo(out: str | os.PathLike[str], seeds: int = 3, settings: DemoSettings | None = None,
             verbose: bool = True, command: str | None = None) -> pd.DataFrame:
    """Run the whole demo; returns the results table (also written to ``out/results.csv``).

    Also writes the result record ``out/demo.md`` + ``out/demo.csv`` (see
    :mod:`rdl_neuro.provenance`): the printed table with the command (``command``,
    default the equivalent ``rdl-neuro demo`` call), commit, versions and machine.
    """
    from rdl_neuro.io import atomic_write_csv
    from rdl_neuro.provenance import dependency_files, git_state

    settings = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    started_utc = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    root = Path(__file__).resolve().parents[2]  # the checkout, when the package runs from one
    git, digests = git_state(root, ignore=["benchmarks/results"]), dependency_files(root, DEPENDS_ON)
    threads = torch.get_num_threads()
    # these models are tiny: one thread avoids the synchronisation that dominates small matmuls
    torch.set_num_threads(1)
    try:
        data = _splits(settings)
        teacher = _train_teacher(data["pool"], data["val"], settings)
        teacher_acc = _accuracy(teacher, data["test"].images, data["test"].labels)
        if verbose:
            print(f"teacher: test accuracy {100 * teacher_acc:.1f} % "
                  f"({len(data['pool'])} training digits, {time.perf_counter() - start:.0f} s)", flush=True)
        rows, histories, students = [], [], {}
        for seed in range(seeds):
            for method in TRAINING_METHODS:
                student, history = train_student(method, seed, data, teacher, settings, eval_on="val")
                acc = _accuracy(student, data["test"].images, data["test"].labels)
                rows.append({"method": method, "seed": seed, "test_acc": acc,
                             "val_acc": float(history["val_acc"].iloc[-1])})
                histories.append(history.assign(method=method, seed=seed))
                if seed == 0:
                    students[method] = student
            if verbose:
                done = ", ".join(f"{r['method']} {100 * r['test_acc']:.1f}" for r in rows[-len(TRAINING_METHODS):])
                print(f"seed {seed}: {done}  ({time.perf_counter() - start:.0f} s)", flush=True)
        results = pd.DataFrame(rows)
        table = _table(results, teacher_acc)
        atomic_write_csv(table, out / "results.csv")
        atomic_write_csv(results, out / "results_per_seed.csv")
        atomic_write_csv(pd.concat(histories, ignore_index=True), out / "histories.csv")
        train_s = time.perf_counter() - start
        r = _figures(out, data["test"], teacher, students, table, pd.concat(histories, ignore_index=True), settings)
    finally:
        torch.set_num_threads(threads)
    _record(out, table, settings, seeds, command, train_s=train_s, wall_s=time.perf_counter() - start, r=r,
            exact=pd.concat([results, *histories], ignore_index=True).drop(columns="time_s"),  # timings vary
            git=git, digests=digests,
            started_utc=started_utc)
    if verbose:
        print()
        print(_format_table(table, settings))
        print(f"\nwrote {out / 'results.csv'}, histories.csv, rdms.png, accuracy.png, training_curves.png "
              f"({time.perf_counter() - start:.0f} s)")
    return table


def _record(out: Path, table: pd.DataFrame, settings: DemoSettings, seeds: int, command: str | None, *,
            train_s: float, wall_s: float, r: dict[str, float], exact: pd.DataFrame, git: dict[str, Any],
            digests: dict[str, str], started_utc: str) -> Path:
    """The demo's result record ``out/demo.md`` + ``out/demo.csv``; ``exact``: every number behind the
    table (per-seed accuracies, per-epoch histories without their timings) for the record's digest."""
    from rdl_neuro.provenance import write_record

    quick = settings == DemoSettings().quick()
    shown = pd.DataFrame({
        "method": table["method"],
        "accuracy": [f"{100 * m:.1f} ± {100 * s:.1f} %" for m, s in zip(table["mean"], table["sd"])],
        "vs baseline": [f"{100 * v:+.1f}" for v in table["vs_baseline"]],
        "seeds": table["n"].astype(int)})
    return write_record(
        out, "demo", title="rdl-neuro demo: test accuracy on scikit-learn's digits", table=shown,
        command=command or f"rdl-neuro demo{' --quick' if quick else ''} --seeds {seeds} --out {out}",
        result_line=None, seeds=list(range(seeds)), wall_s=wall_s, exact=exact,
        values={"printed": _format_table(table, settings), "train_s": f"{train_s:.0f} s",
                "r_rdl": f"{r['student: RDL']:.2f}", "r_baseline": f"{r['student: baseline']:.2f}"},
        notes=f"Settings: {settings}.", git=git, depends_on=DEPENDS_ON, dependency_digests=digests,
        quick_command=None if quick else ["rdl-neuro", "demo", "--quick", "--seeds", "2", "--out", "{out}"],
        started_utc=started_utc)


# --------------------------------------------------------------------------- #
# figures
# --------------------------------------------------------------------------- #
def _figures(out: Path, test: Any, teacher: torch.nn.Module, students: dict[str, torch.nn.Module],
             table: pd.DataFrame, histories: pd.DataFrame, settings: DemoSettings) -> dict[str, float]:
    """Write the three figures; returns each student's RDM correlation with the teacher's (``{name: r}``)."""
    from matplotlib.figure import Figure

    from rdl_neuro.rdm.compare import compare_rdms
    from rdl_neuro.model import layer_rdms
    from rdl_neuro.vis import plot_rdm_comparison, save_figure

    # RDMs of the same test digits; sorted by class so the block structure shows
    chosen, _ = stratified_split(test.labels.numpy(), train_size=settings.rdm_stimuli, seed=0)
    order = torch.as_tensor(chosen[np.argsort(test.labels.numpy()[chosen], kind="stable")])
    layer = f"hidden{len(settings.student_hidden)}"
    names = {"teacher": teacher, "student: baseline": students["baseline"], "student: RDL": students["RDL"]}
    rdms = [
        layer_rdms(model.eval(), test.images[order], [layer], method="euclidean",
                   stimulus_ids=order.tolist(), pattern_descriptors={"digit": test.labels[order].tolist()},
                   progress=False)
        for model in names.values()
    ]
    teacher_vec = torch.as_tensor(rdms[0].get_vectors())
    r = [float(compare_rdms(torch.as_tensor(x.get_vectors()), teacher_vec, "corr")[0, 0]) for x in rdms]
    titles = ["teacher"] + [f"{name}\nr with teacher = {ri:.2f}" for name, ri in list(zip(names, r))[1:]]
    fig = plot_rdm_comparison(rdms, sort_by="digit", titles=titles, shared_scale=False)
    fig.suptitle(f"Euclidean RDMs of layer {layer} on {len(order)} test digits (seed 0)")
    save_figure(fig, out / "rdms.png", dpi=110)

    students_only = table[table["method"].isin(TRAINING_METHODS)]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(students_only))
    ax.bar(x, 100 * students_only["mean"], yerr=100 * students_only["sd"], capsize=4,
           color=["#999999", "#4c72b0", "#dd8452", "#55a868"][: len(x)])
    teacher_acc = float(table.iloc[-1]["mean"])
    ax.axhline(100 * teacher_acc, color="k", ls="--", lw=1, label="teacher")
    ax.set_xticks(x, students_only["method"])
    ax.set_ylabel("test accuracy (%)")
    low = 100 * float((students_only["mean"] - students_only["sd"]).min())
    ax.set_ylim(max(0.0, low - 5), 100)
    ax.set_title(f"{settings.n_labelled} labelled digits, {int(students_only['n'].iloc[0])} seeds")
    ax.legend(loc="lower right")
    save_figure(fig, out / "accuracy.png", dpi=110)

    fig = Figure(figsize=(11, 4))
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for method in TRAINING_METHODS:
        h = histories[histories["method"] == method].groupby("epoch")
        axes[0].plot(h["val_acc"].mean().index, 100 * h["val_acc"].mean(), label=method)
        axes[1].plot(h["loss_ce"].mean().index, h["loss_ce"].mean(), label=method)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[1].set_ylabel("training cross-entropy")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle("Training curves (mean over seeds)")
    save_figure(fig, out / "training_curves.png", dpi=110)
    return dict(zip(list(names)[1:], r[1:]))


if __name__ == "__main__":  # pragma: no cover
    from rdl_neuro.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
