"""Trainer checkpoints: the format, finding and reading them safely, and the RNG state they carry.

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)``
reads (no pickled code runs): see ``CHECKPOINT_KEYS``. It is the only way
rdl_neuro reads a checkpoint, the command line included.
"""
from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a trainer checkpoint; raises :class:`CheckpointError` naming the file if it is unreadable or incomplete."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors... for damaged files
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a trainer checkpoint dict")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}")
    return ckpt
