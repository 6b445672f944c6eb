"""Checkpoints under SIGKILL: resuming after a kill mid-epoch gives the uninterrupted run's weights,
and a kill in the middle of a file write leaves no partial checkpoint or CSV behind.

Every run is a subprocess of ``tests/_train_script.py`` (one thread each, so the
interrupted and the uninterrupted run do exactly the same arithmetic).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rdl_neuro.io import TMP_INFIX
from rdl_neuro.train import find_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("_train_script.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=ENV, capture_output=True, text=True,
                          timeout=120)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = torch.load(a), torch.load(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: its folder, with the final weights in w.pt."""
    out = tmp_path_factory.mktemp("reference")
    res = run_script("--out", str(out), "--weights", str(out / "w.pt"))
    assert res.returncode == 0, res.stderr
    return out


def history_without_time(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["time_s"])


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(out), "--sleep", "0.02"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "STEP 1 3":  # epoch 2 (0-based 1), fourth batch: mid-epoch
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # only the first epoch's checkpoint exists; the run was killed mid-epoch 2
    ckpts = find_checkpoints(out / "checkpoints")
    assert [p.name for p in ckpts] == ["epoch-0001.pt"]
    assert len(pd.read_csv(out / "history.csv")) == 1

    res = run_script("--out", str(out), "--resume", "--weights", str(out / "w.pt"))
    assert res.returncode == 0, res.stderr
    assert "STEP 0 " not in res.stdout  # epoch 1 was not redone
    assert_same_weights(out / "w.pt", reference / "w.pt")
    pd.testing.assert_frame_equal(history_without_time(out / "history.csv"),
                                  history_without_time(reference / "history.csv"))
    # the last two checkpoints are kept
    assert [p.name for p in find_checkpoints(out / "checkpoints")] == ["epoch-0002.pt", "epoch-0003.pt"]


def test_sigkill_during_a_write_leaves_no_partial_file(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # writes per epoch: checkpoint, history.csv -> the 3rd write is epoch 2's checkpoint, the 4th its CSV
    for k, n_ok in ((3, 1), (4, 2)):
        if out.exists():
            import shutil

            shutil.rmtree(out)
        res = run_script("--out", str(out), "--kill-in-write", str(k))
        assert res.returncode == -signal.SIGKILL, res.stderr
        assert "KILLING in write" in res.stdout
        # a half-written temporary file was left behind, hidden, never under a real name
        leftovers = [p.name for p in out.rglob("*") if TMP_INFIX in p.name]
        assert len(leftovers) == 1 and leftovers[0].startswith(".")
        for ckpt in find_checkpoints(out / "checkpoints"):
            load_checkpoint(ckpt)  # complete and readable
        history = pd.read_csv(out / "history.csv")
        newest = load_checkpoint(find_checkpoints(out / "checkpoints")[-1])
        assert newest["epoch"] == n_ok
        assert len(history) == (1 if k == 3 else 1)  # the CSV of epoch 2 never landed in either case
        assert not (out / "final.pt").exists()

    # resuming cleans up the temporary file and still reproduces the uninterrupted run
    res = run_script("--out", str(out), "--resume", "--weights", str(out / "w.pt"))
    assert res.returncode == 0, res.stderr
    assert not [p for p in out.rglob("*") if TMP_INFIX in p.name]
    assert_same_weights(out / "w.pt", reference / "w.pt")
    assert len(pd.read_csv(out / "history.csv")) == 3
