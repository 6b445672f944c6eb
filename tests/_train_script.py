"""Helper for the subprocess tests: a short, fully seeded RDL training on 8x8 digits.

Run directly (``python tests/_train_script.py --out DIR ...``) or under
``torchrun``. Prints ``STEP <epoch> <batch>`` after every optimiser step
(flushed) so a test can SIGKILL it at a known point mid-epoch.

Options
    --out DIR            trainer out_dir
    --epochs N           default 3
    --batch-size B       global batch size, default 32
    --n-samples N        training samples (first N training digits), default 256
    --dropout P          student dropout, default 0.2
    --resume             resume from the newest checkpoint
    --sleep S            seconds to sleep after each step (gives a killer time)
    --kill-in-write K    SIGKILL this process halfway through its K-th atomic file write
    --weights PATH       save the final student weights here ({rank} is replaced)
    --cka W              add a CKALoss term (student hidden2 vs teacher hidden2) with weight W
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import time

import torch
from torch.utils.data import TensorDataset

torch.set_num_threads(1)

import rdl_neuro.io as rio  # noqa: E402
from rdl_neuro.data.loaders import load_digits  # noqa: E402
from rdl_neuro.data.stimulus import StimulusDataset  # noqa: E402
from rdl_neuro.train.losses import CELoss, CKALoss, RDLLoss  # noqa: E402
from rdl_neuro.model.networks import build_model  # noqa: E402
from rdl_neuro.train.teachers import NetworkTeacher  # noqa: E402
from rdl_neuro.train import Trainer, linear_warmup, seed_everything  # noqa: E402


class PrintingTrainer(Trainer):
    def __init__(self, *args, sleep: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.sleep = sleep

    def _after_step(self, epoch: int, batch_index: int) -> None:
        print(f"STEP {epoch} {batch_index}", flush=True)
        if self.sleep:
            time.sleep(self.sleep)


def install_write_killer(k: int) -> None:
    """Make the k-th atomic write die (SIGKILL) after writing half of its bytes to the temporary file."""
    original = rio.atomic_write
    count = {"n": 0}

    def dying_write(path, write):
        count["n"] += 1
        if count["n"] < k:
            return original(path, write)

        def half(fh):
            import io

            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            print(f"KILLING in write of {path}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        return original(path, half)

    rio.atomic_write = dying_write


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-samples", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--kill-in-write", type=int, default=0)
    p.add_argument("--weights", default=None)
    p.add_argument("--cka", type=float, default=0.0)
    a = p.parse_args(argv)
    if os.environ.get("RDL_TEST_DUMP_AFTER"):  # a hang prints every thread's stack and ends (tests/test_torchrun.py)
        faulthandler.dump_traceback_later(int(os.environ["RDL_TEST_DUMP_AFTER"]), exit=True)
    if a.kill_in_write:
        install_write_killer(a.kill_in_write)

    digits = load_digits(split="train")
    images, labels, ids = digits.images[: a.n_samples], digits.labels[: a.n_samples], digits.stimulus[: a.n_samples]
    data = StimulusDataset(TensorDataset(images, labels), ids.tolist())
    val = TensorDataset(digits.images[a.n_samples : a.n_samples + 128], digits.labels[a.n_samples : a.n_samples + 128])

    seed_everything(123)  # teacher and student initial weights
    teacher_net = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [48, 48]})
    teacher = NetworkTeacher(teacher_net, ["hidden1", "hidden2"])
    student = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [32, 32],
                           "dropout": a.dropout})
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    losses = {
        "ce": CELoss(),
        "rdl": (RDLLoss({"hidden1": "hidden1", "hidden2": "hidden2"}), linear_warmup(0.05, 2)),
    }
    if a.cka:
        losses["cka"] = (CKALoss("hidden2", "hidden2"), a.cka)
    trainer = PrintingTrainer(student, data, losses=losses, optimizer=optimizer, scheduler=scheduler,
                              val_data=val, teacher=teacher, batch_size=a.batch_size, epochs=a.epochs,
                              seed=7, out_dir=a.out, resume=a.resume, quiet=True, device="cpu",
                              sleep=a.sleep)
    rank = trainer.rank
    trainer.fit()
    if a.weights:
        torch.save(student.state_dict(), a.weights.replace("{rank}", str(rank)))
    print(f"DONE rank {rank}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
