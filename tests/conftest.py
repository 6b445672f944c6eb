"""Shared test fixtures: paths to the shared data and reproducible seeding."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# $RDL_NEURO_KRIEGESKORTE92 (as the loader) points elsewhere, e.g. from a git worktree
KRIEGESKORTE_DIR = Path(os.environ.get("RDL_NEURO_KRIEGESKORTE92", SHARED_DATA / "kriegeskorte2008"))

# Under pytest-xdist each worker gets one thread so two workers share 2 cores fairly.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded numpy generator per test."""
    return np.random.default_rng(12345)


@pytest.fixture
def kriegeskorte_dir() -> Path:
    """The 92-image data set beside the repository (../shared/data/kriegeskorte2008)."""
    if not KRIEGESKORTE_DIR.is_dir():
        pytest.fail(f"shared data folder missing: {KRIEGESKORTE_DIR}")
    return KRIEGESKORTE_DIR
