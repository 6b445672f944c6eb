"""``rdl-neuro demo --quick``: the printed table, results CSV, histories and valid, non-blank PNG figures."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

METHODS = ["baseline", "KD", "RDL", "RDL+KD"]


def demo_command() -> list[str]:
    exe = shutil.which("rdl-neuro")
    return [exe] if exe else [sys.executable, "-m", "rdl_neuro"]


def test_demo_quick_writes_table_histories_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = subprocess.run([*demo_command(), "demo", "--out", str(out), "--seeds", "2", "--quick"],
                         env=dict(os.environ, MPLBACKEND="Agg"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr

    # the printed table: one line per method with "mean ± sd %"
    for method in METHODS:
        assert re.search(rf"^{re.escape(method)}\s+\d+\.\d ± \d+\.\d %\s+[+-]\d+\.\d\s+2$", res.stdout, re.M), \
            res.stdout
    assert "teacher" in res.stdout

    table = pd.read_csv(out / "results.csv")
    assert list(table["method"][:4]) == METHODS
    assert {"mean", "sd", "n", "vs_baseline"} <= set(table.columns)
    assert (table["n"][:4] == 2).all() and table["mean"].between(0, 1).all()
    per_seed = pd.read_csv(out / "results_per_seed.csv")
    assert len(per_seed) == 8
    hist = pd.read_csv(out / "histories.csv")
    assert set(hist["method"]) == set(METHODS) and set(hist["seed"]) == {0, 1}
    assert {"epoch", "loss_ce", "val_acc", "train_acc"} <= set(hist.columns)
    assert hist.loc[hist["method"] == "RDL", "loss_rdl"].notna().all()
    assert hist.loc[hist["method"] == "KD", "loss_kd"].notna().all()

    import matplotlib.image as mpimg

    for name in ("rdms.png", "accuracy.png", "training_curves.png"):
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        img = mpimg.imread(path)
        assert img.shape[0] > 100 and img.shape[1] > 100, name
        assert float(np.std(img[..., :3])) > 0.05, f"{name} looks blank"
