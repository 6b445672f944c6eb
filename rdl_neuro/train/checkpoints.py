"""Trainer checkpoints: the format, finding and reading them safely, and the RNG state they carry.

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)``
reads (no pickled code runs): see ``CHECKPOINT_KEYS``. It is the only way
rdl_neuro reads a checkpoint, the command line included.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rdl_neuro.io import atomic_torch_save, atomic_write_csv, remove_stale_temporaries

CHECKPOINT_FORMAT = 1
#: the entries of every checkpoint the trainer writes
CHECKPOINT_KEYS = ("model_state", "model_config", "optimizer_state", "scheduler_state", "rng_state",
                   "history", "epoch")
_CKPT_RE = re.compile(r"^epoch-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or lacks what a resume needs."""


class CorruptCheckpointWarning(UserWarning):
    """The newest checkpoint was unreadable; training resumed from an older one."""


# --------------------------------------------------------------------------- #
# RNG state (kept to plain types so torch.load(weights_only=True) reads it)
# --------------------------------------------------------------------------- #
def rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's and torch's random generators, for a checkpoint."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators from a :func:`rng_state` dict (keys it lacks are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- #
# checkpoints
# --------------------------------------------------------------------------- #
def find_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``epoch-XXXX.pt`` files of ``folder``, oldest epoch first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any]:
    """Read a trainer checkpoint; raises :class:`CheckpointError` naming the file if it is unreadable or incomplete.

    ``weights_only=True``: only tensors and plain containers are unpickled, so reading a file runs no
    code from it. ``required`` are the entries it must hold (default: everything a resume needs;
    ``rdl-neuro evaluate`` asks for none and checks ``model_state`` itself).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors... for damaged files
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a trainer checkpoint dict")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}")
    return ckpt


def load_newest_checkpoint(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The newest readable ``epoch-*.pt`` of ``folder``, or None when there is none.

    An unreadable newest file gives a :class:`CorruptCheckpointWarning` naming it, and the
    previous one is tried; only when no file can be read does this raise
    :class:`CheckpointError`, naming every file tried.
    """
    found = find_checkpoints(folder)
    if not found:
        return None
    errors = []
    for path in reversed(found):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            warnings.warn(f"{err}; trying an older checkpoint", CorruptCheckpointWarning, stacklevel=4)
    raise CheckpointError("no readable checkpoint to resume from:\n  " + "\n  ".join(errors))


class RunFiles:
    """The files of one training run in ``out_dir`` (see ``rdl_neuro.train.trainer``): history and checkpoints.

    ``history.csv``, ``checkpoints/epoch-XXXX.pt`` (the newest ``keep`` kept) and ``final.pt``, each
    written atomically (``rdl_neuro.io``). Only the writing process (rank 0) calls ``prepare``,
    ``save_epoch`` and ``save_final``.
    """

    def __init__(self, out_dir: str | os.PathLike[str], keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {keep}")
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.keep = keep

    def prepare(self, resume: bool) -> None:
        """Create the folders and remove half-written temporaries; without ``resume`` remove (with a
        warning) the checkpoints of an earlier run."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir.mkdir(exist_ok=True)
        remove_stale_temporaries(self.out_dir)
        remove_stale_temporaries(self.checkpoint_dir)
        if not resume:
            old = find_checkpoints(self.checkpoint_dir)
            if old:
                warnings.warn(f"resume=False: removing {len(old)} earlier checkpoint(s) in {self.checkpoint_dir}",
                              stacklevel=4)
                for p in old:
                    p.unlink()

    def save_epoch(self, state: Mapping[str, Any], history: pd.DataFrame) -> None:
        """Write ``epoch-<state['epoch']>.pt`` and ``history.csv``, then prune to the newest ``keep``."""
        atomic_torch_save(state, self.checkpoint_dir / f"epoch-{state['epoch']:04d}.pt")
        # prune only after the new file is complete, so a good checkpoint always exists
        for old in find_checkpoints(self.checkpoint_dir)[:-self.keep]:
            old.unlink(missing_ok=True)
        atomic_write_csv(history, self.out_dir / "history.csv")

    def save_final(self, state: Mapping[str, Any], history: pd.DataFrame) -> None:
        """Write ``final.pt`` and ``history.csv`` after the last epoch."""
        atomic_torch_save(state, self.out_dir / "final.pt")
        atomic_write_csv(history, self.out_dir / "history.csv")

    def load_newest(self) -> dict[str, Any] | None:
        """``load_newest_checkpoint`` of the checkpoint folder."""
        return load_newest_checkpoint(self.checkpoint_dir)
