"""The paper's CIFAR-100 recipe: RDL vs baseline, KD, RDL+KD, RKD and SP with a small CNN teacher/student pair.

McClure & Kriegeskorte (2016) also report RDL on CIFAR-100. This script runs
the same protocol as ``paper_mnist.py`` (see ``_experiments.run_transfer_benchmark``)
on the CIFAR-100 python pickles:

- teacher: CNN (``build_model`` cnn: 3x3 conv blocks 64-128-256, a 512-unit
  hidden layer, dropout 0.3) trained on all 50,000 training images;
- student: CNN 16-32-64 with a 128-unit hidden layer, trained on a labelled
  subset (default 5,000 and 10,000 images), the teacher's outputs and RDMs over
  the same images being the transfer signal;
- RDL: Euclidean RDMs of the student's last conv block (``pool3``) and hidden
  layer (``hidden1``) against the teacher's same layers, squared error; RKD/SP on
  ``hidden1``; hyperparameters from fixed grids on a validation split carved from
  the labelled subset; 10 seeds; paired tests vs baseline and KD.

It needs the data (``--cifar100 PATH``: the ``cifar-100-python`` folder, its
parent or the ``.tar.gz``) and, at its default size, a GPU-class budget: the
teacher alone is ~30 epochs over 50,000 images. The test suite runs it with
``--quick`` on a tiny fake data set written in the CIFAR-100 pickle format.

Outputs (``--out``): ``paper_cifar100.csv``, ``paper_cifar100_summary.csv``,
``paper_cifar100.md``, ``paper_cifar100.png``; last line
``RESULT rdl_vs_base_p=... rdl_minus_kd_err=... best_method=...`` (primary
setting: the student at the smallest subset).

Usage::

    python benchmarks/paper_cifar100.py --cifar100 ~/data/cifar-100-python
    python benchmarks/paper_cifar100.py --cifar100 FAKE_DIR --quick
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _experiments import (TrainSpec, TransferConfig, default_grids, run_paper_script, start_run,  # noqa: E402
                          transfer_parser)

from rdl_neuro.data import load_cifar100  # noqa: E402

PAIRS = {"pool3": "pool3", "hidden1": "hidden1"}
PEER = ("hidden1", "hidden1")


def make_config(args, n_classes: int) -> TransferConfig:
    grids = default_grids()
    # CNN feature scales differ from the MNIST MLPs': a wider RDL grid (still fixed before any run)
    grids["RDL"] = {"weight": [0.001, 0.003, 0.01, 0.03, 0.1]}
    if args.quick:
        teacher = {"type": "cnn", "input_shape": [3, 32, 32], "n_classes": n_classes, "channels": [8, 8, 8],
                   "hidden": [32], "dropout": 0.3}
        student = {"type": "cnn", "input_shape": [3, 32, 32], "n_classes": n_classes, "channels": [4, 4, 4], "hidden": [16]}
        grids = {"KD": {"temperature": [4.0], "weight": [1.0]}, "RDL": {"weight": [0.01, 0.1]},
                 "RKD": {"weight": [25.0]}, "SP": {"weight": [3000.0]}}
        return TransferConfig(
            name="paper_cifar100 (quick)", teacher_model=teacher, students={"CNN 4-4-4/16": student},
            subsets=[min(args.subsets)], teacher_train=TrainSpec(epochs=1, batch_size=50, lr=0.05),
            student_train=TrainSpec(epochs=2, batch_size=25, lr=0.05, clip_grad_norm=5.0),
            rdl_pairs={"CNN 4-4-4/16": PAIRS}, peer_pair={"CNN 4-4-4/16": PEER}, grids=grids,
            seeds=args.seeds or 2, search_seeds=1, primary=("CNN 4-4-4/16", min(args.subsets)))
    teacher = {"type": "cnn", "input_shape": [3, 32, 32], "n_classes": n_classes, "channels": [64, 128, 256],
               "hidden": [512], "dropout": 0.3}
    student = {"type": "cnn", "input_shape": [3, 32, 32], "n_classes": n_classes, "channels": [16, 32, 64],
               "hidden": [128]}
    label = "CNN 16-32-64/128"
    return TransferConfig(
        name="paper_cifar100", teacher_model=teacher, students={label: student}, subsets=list(args.subsets),
        teacher_train=TrainSpec(epochs=args.teacher_epochs, batch_size=128, lr=0.05),
        student_train=TrainSpec(epochs=args.epochs, batch_size=128, lr=0.05, clip_grad_norm=5.0),
        rdl_pairs={label: PAIRS}, peer_pair={label: PEER}, grids=grids, seeds=args.seeds or 10,
        search_seeds=args.search_seeds, primary=(label, min(args.subsets)))


def main(argv: list[str] | None = None) -> int:
    p = transfer_parser(__doc__.splitlines()[0], subsets=[5000, 10000], epochs=40, teacher_epochs=30)
    p.add_argument("--cifar100", type=Path, required=True,
                   help="the cifar-100-python folder (train, test, meta), its parent, or cifar-100-python.tar.gz")
    p.add_argument("--label", choices=["fine", "coarse"], default="fine", help="100 fine classes or 20 superclasses")
    args = p.parse_args(argv)
    workers, t0 = start_run(args, args.threads or (1 if args.quick else None))

    data = load_cifar100(args.cifar100, label=args.label)
    train, test = data.train, data.test
    mean = train.images.mean(dim=(0, 2, 3), keepdim=True)
    std = train.images.std(dim=(0, 2, 3), keepdim=True)
    norm = lambda x: (x - mean) / std  # noqa: E731 - per-channel standardisation from the training split
    note = (f"{data.name}: {len(train)} training and {len(test)} test images from {args.cifar100}, "
            f"{len(data.classes)} classes, channels standardised with the training mean and sd")
    cfg = make_config(args, len(data.classes))
    return run_paper_script(cfg, train, test, norm, stem="paper_cifar100", argv=argv, out_dir=args.out, workers=workers,
                            data_note=note, t0=t0, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
