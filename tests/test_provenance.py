"""Result records (rdl_neuro.provenance, benchmarks/_provenance.py): what they store and how they read back."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rdl_neuro.provenance import (dependency_files, environment, frame_digest, git_state, markdown_table,
                                  read_record, write_record)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def _table() -> pd.DataFrame:
    return pd.DataFrame({"student": ["784-30-30-10", "784-800-800-10"], "labels": [500, 1000],
                         "RDL": ["11.64 ± 0.64", "6.66 ± 0.50"], "note": ["", "a|b"]})


def test_record_round_trip_keeps_cells_and_provenance(tmp_path: Path) -> None:
    git = {"commit": "a" * 40, "clean": True, "modified": []}
    path = write_record(tmp_path, "demo", title="Demo", command="rdl-neuro demo --out x", table=_table(),
                        result_line="RESULT x=1", values={"r": 0.99, "gap": "1.9–4.6"}, seeds=[0, 1, 2],
                        wall_s=12.34, git=git, depends_on=["rdl_neuro/train"],
                        dependency_digests={"rdl_neuro/train/losses.py": "0123"})
    assert path == tmp_path / "demo.md" and (tmp_path / "demo.csv").is_file()
    rec = read_record(path)
    # cells come back as the exact strings shown: "500" stays "500", an empty cell stays empty
    assert rec["table"].to_dict("list") == {"student": ["784-30-30-10", "784-800-800-10"], "labels": ["500", "1000"],
                                            "RDL": ["11.64 ± 0.64", "6.66 ± 0.50"], "note": ["", "a|b"]}
    assert rec["command"] == "rdl-neuro demo --out x" and rec["commit"] == "a" * 40 and rec["clean"] is True
    assert rec["values"] == {"r": "0.99", "gap": "1.9–4.6"}
    assert rec["seeds"] == [0, 1, 2] and rec["wall_s"] == 12.3 and rec["result_line"] == "RESULT x=1"
    assert rec["versions"]["torch"] and rec["versions"]["rsatoolbox"] and rec["machine"]["cpus"]
    assert rec["digest"] == frame_digest(_table())
    text = path.read_text()
    assert markdown_table(rec["table"]) in text and "RESULT x=1" in text and "a\\|b" in text
    assert "`aaaaaaaaaa` (clean tree)" in text


def test_read_record_names_a_file_that_is_not_a_record(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# just notes\n")
    with pytest.raises(ValueError, match="notes.md.*not a result record"):
        read_record(tmp_path / "notes.md")


def test_frame_digest_sees_the_last_bit() -> None:
    a = pd.DataFrame({"x": [0.1, 0.2], "m": ["a", "b"]})
    b = a.copy()
    b.loc[1, "x"] = np.nextafter(0.2, 1.0)
    assert frame_digest(a) == frame_digest(a.copy())
    assert frame_digest(a) != frame_digest(b)


def test_git_state_and_dependency_digests_follow_the_files(tmp_path: Path) -> None:
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("config", "user.email", "t@t")
    run("config", "user.name", "t")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "loss.py").write_text("W = 1\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r.md").write_text("old\n")
    run("add", ".")
    run("commit", "-qm", "init")
    state = git_state(tmp_path, ignore=["out"])
    assert len(state["commit"]) == 40 and state["clean"] is True
    before = dependency_files(tmp_path, ["pkg"])
    assert list(before) == ["pkg/loss.py"]

    (tmp_path / "out" / "r.md").write_text("new\n")  # the records folder itself does not make a tree dirty
    assert git_state(tmp_path, ignore=["out"])["clean"] is True
    (tmp_path / "pkg" / "loss.py").write_text("W = 2\n")
    state = git_state(tmp_path, ignore=["out"])
    assert state["clean"] is False and state["modified"] == ["pkg/loss.py"]
    assert dependency_files(tmp_path, ["pkg"])["pkg/loss.py"] != before["pkg/loss.py"]
    assert git_state(tmp_path / "nope")["commit"] is None


def test_environment_lists_versions_and_machine() -> None:
    env = environment()
    assert env["versions"]["python"].count(".") == 2
    assert {"torch", "numpy", "rsatoolbox", "pandas"} <= set(env["versions"])
    assert env["machine"]["cpus"] >= 1


def test_start_record_writes_to_out_records_or_the_published_folder(tmp_path: Path) -> None:
    import _provenance as prov

    args = argparse.Namespace(out=tmp_path, publish=False, quick=False)
    rec = prov.start_record("paper_x", args, ["--seeds", "3", "--publish"], seeds=[0, 1, 2],
                            depends_on=["rdl_neuro/train/losses.py"], quick_args=["--quick"])
    assert rec.folder == tmp_path / "records"
    assert rec.command == "python benchmarks/paper_x.py --seeds 3"  # --publish does not change the numbers
    assert list(rec.dependency_digests) == ["rdl_neuro/train/losses.py"]
    path = rec.finish(_table(), result_line="RESULT a=1")
    meta = read_record(path)
    assert meta["quick_command"] == ["python", "benchmarks/paper_x.py", "--quick", "--out", "{out}"]
    assert meta["fingerprint"] is None  # only published full runs pay for the quick rerun
    assert meta["dependency_files"] == rec.dependency_digests
    pub = prov.start_record("paper_x", argparse.Namespace(out=tmp_path, publish=True), [])
    assert pub.folder == prov.PUBLISHED_DIR
    quick = prov.start_record("paper_x", argparse.Namespace(out=tmp_path, quick=True), [], quick_args=["--quick"])
    assert quick.quick_args is None  # a quick run has no quick run of its own
