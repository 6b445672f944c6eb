"""Published numbers come from committed result records and stay true when the code changes.

- every generated part of the README, docs pages and notebooks equals what
  ``benchmarks/update_readme.py`` makes from ``benchmarks/results/`` (a hand-edited
  number fails);
- every committed record carries its provenance;
- no record is older than code that changes its numbers: a record whose code
  changed is rerun in its quick mode and must give the fingerprint it recorded
  (a refactor passes, a change to the RDL term fails: tested on a copy of the repository).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import _provenance as prov  # noqa: E402
import update_readme as upd  # noqa: E402

from rdl_neuro.provenance import dependency_files, markdown_table, write_record  # noqa: E402


def _records() -> dict[str, dict]:
    return prov.published_records()


def _fake_record(tmp_path: Path) -> dict:
    table = pd.DataFrame({"student": ["784-800-800-10", "784-30-30-10"], "labels": [500, 500],
                          "RDL": ["8.93 ± 0.39", "11.64 ± 0.64"]})
    path = write_record(tmp_path, "exp", title="exp", command="python benchmarks/exp.py", table=table,
                        result_line="RESULT rdl_minus_kd_err=1.08 best_method=SP",
                        values={"gain": "1.9–4.6", "printed": "a  1.0\nb  2.0"}, seeds=[0, 1], wall_s=700.0,
                        git={"commit": "b" * 40, "clean": True, "modified": []})
    from rdl_neuro.provenance import read_record

    return read_record(path)


DOC = """# Results

<!-- result exp:table -->
| student | labels | RDL |
| --- | --- | --- |
| 784-800-800-10 | 500 | 8.93 ± 0.39 |
| 784-30-30-10 | 500 | 11.64 ± 0.64 |
<!-- /result -->

<!-- result exp:result_line -->
```
RESULT rdl_minus_kd_err=1.08 best_method=SP
```
<!-- /result -->

RDL beats the baseline by <!-- result exp:gain -->1.9–4.6<!-- /result --> points.
"""


# --------------------------------------------------------------------------- #
# the documents and the records agree
# --------------------------------------------------------------------------- #
def test_documents_match_the_committed_records() -> None:
    updates = upd.regenerate_all()
    assert not updates, ("generated parts differ from benchmarks/results/ (run python benchmarks/update_readme.py):\n"
                         + "\n".join(c for u in updates for c in u.changes))


def test_every_committed_record_is_quoted_somewhere() -> None:
    quoted = {m.group("name") for doc in upd.documents() for m in upd.MARKER.finditer(doc.read_text())}
    assert set(_records()) <= quoted, f"records nobody quotes: {sorted(set(_records()) - quoted)}"


def test_a_hand_edited_number_fails_and_is_put_back(tmp_path: Path) -> None:
    records = {"exp": _fake_record(tmp_path)}
    same, changes = upd.regenerate_text(DOC, records, "README.md")
    assert same == DOC and changes == []

    edited = DOC.replace("| 500 | 8.93 ± 0.39 |", "| 500 | 8.06 ± 0.39 |")  # a number from an older run
    fixed, changes = upd.regenerate_text(edited, records, "README.md")
    assert len(changes) == 1
    assert changes[0].startswith("README.md:3: exp:table differs") and "8.06 ± 0.39" in changes[0] \
        and "8.93 ± 0.39" in changes[0]
    assert fixed == DOC

    prose = DOC.replace(">1.9–4.6<", ">1.9–4.7<")
    fixed, changes = upd.regenerate_text(prose, records, "README.md")
    assert len(changes) == 1 and "exp:gain" in changes[0] and fixed == DOC
    line = DOC.replace("best_method=SP", "best_method=RDL+KD")
    assert len(upd.regenerate_text(line, records)[1]) == 1


def test_the_check_command_fails_on_a_hand_edited_readme(tmp_path: Path) -> None:
    """``update_readme.py --check`` on a copy of the repository whose README has one number changed."""
    if not _records():
        pytest.skip("no committed records yet")
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "benchmarks", copy / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    readme = (REPO / "README.md").read_text()
    bodies = [m for m in upd.MARKER.finditer(readme) if re.search(r"\d", m.group("body"))]
    assert bodies, "the README quotes no numbers through markers"
    m = bodies[0]
    body = m.group("body")
    digit = re.search(r"\d", body)
    new_digit = "7" if digit.group() != "7" else "3"
    edited = readme[:m.start("body")] + body[:digit.start()] + new_digit + body[digit.end():] + readme[m.end("body"):]
    (copy / "README.md").write_text(edited)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, str(REPO / "benchmarks" / "update_readme.py"), "--check"], cwd=REPO,
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, str(copy / "benchmarks" / "update_readme.py"), "--check"], cwd=copy,
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"README.md:{upd._line(readme, m.start())}: {m.group('name')}:{m.group('key')} differs" in bad.stdout


def test_marker_errors_name_file_line_and_what_is_missing(tmp_path: Path) -> None:
    records = {"exp": _fake_record(tmp_path)}
    with pytest.raises(upd.MarkerError, match=r"docs/a.md:2: no record 'nope'.*records: exp"):
        upd.regenerate_text("x\n<!-- result nope:table --><!-- /result -->\n", records, "docs/a.md")
    with pytest.raises(upd.MarkerError, match=r"docs/a.md:1: record 'exp' has no 'gian' \(keys: .*gain"):
        upd.regenerate_text("<!-- result exp:gian -->1<!-- /result -->", records, "docs/a.md")
    with pytest.raises(upd.MarkerError, match=r"docs/a.md:16: .*without its '<!-- /result -->'"):
        upd.regenerate_text(DOC.replace("1.9–4.6<!-- /result -->", "1.9–4.6"), records, "docs/a.md")
    unclosed_table = DOC.replace("| 784-30-30-10 | 500 | 11.64 ± 0.64 |\n<!-- /result -->", "")
    with pytest.raises(upd.MarkerError, match=r"docs/a.md:3: .*without its '<!-- /result -->' before the next"):
        upd.regenerate_text(unclosed_table, records, "docs/a.md")


def test_values_with_line_breaks_become_code_blocks_and_source_links(tmp_path: Path) -> None:
    records = {"exp": _fake_record(tmp_path)}
    text, _ = upd.regenerate_text("<!-- result exp:printed -->\n<!-- /result -->", records)
    assert text == "<!-- result exp:printed -->\n```\na  1.0\nb  2.0\n```\n<!-- /result -->"
    doc = tmp_path / "docs" / "page.md"
    src = upd.render(records["exp"], "source", doc)
    assert src.startswith(f"record [`{tmp_path / 'exp.md'}`](../exp.md): commit `bbbbbbb` (clean tree), ")
    load = records["exp"]["machine"]["loadavg_1m"]
    assert src.endswith(f", 12 min, load {load:.0f} on {records['exp']['machine']['cpus']} CPUs")
    assert upd.render(records["exp"], "command", doc) == "`python benchmarks/exp.py`"


def test_notebook_markdown_cells_are_regenerated_code_cells_left_alone(tmp_path: Path) -> None:
    records = {"exp": _fake_record(tmp_path)}
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["RDL gains <!-- result exp:gain -->2.0–3.0",
                                                              "<!-- /result --> points\n"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["# <!-- result exp:gain -->9<!-- /result -->\n"]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    update = upd.regenerate_file(path, records, tmp_path)
    assert len(update.changes) == 1 and "n.ipynb (cell 0)" in update.changes[0]
    new = json.loads(update.new)
    assert "".join(new["cells"][0]["source"]) == "RDL gains <!-- result exp:gain -->1.9–4.6<!-- /result --> points\n"
    assert new["cells"][1] == nb["cells"][1]


# --------------------------------------------------------------------------- #
# the records carry their provenance
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", sorted(_records()))
def test_committed_record_has_its_provenance(name: str) -> None:
    rec = _records()[name]
    assert re.fullmatch(r"(python benchmarks/\S+\.py|rdl-neuro \w+)( .*)?", rec["command"]), rec["command"]
    assert re.fullmatch(r"[0-9a-f]{40}", rec["commit"] or ""), f"{name}: no commit recorded"
    assert isinstance(rec["clean"], bool)
    assert rec["versions"]["torch"] and rec["versions"]["rsatoolbox"] and rec["versions"]["python"]
    assert rec["machine"]["cpus"] and rec["machine"]["cpu"]
    assert rec["seeds"] is not None and rec["wall_s"] > 0
    assert rec["depends_on"] and rec["dependency_files"], f"{name}: records no code it depends on"
    assert markdown_table(rec["table"]) in Path(rec["path"]).read_text()
    if rec["quick_command"]:
        assert rec["fingerprint"], f"{name}: a deterministic record without its quick fingerprint"


# --------------------------------------------------------------------------- #
# stale records
# --------------------------------------------------------------------------- #
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_records()))
def test_committed_record_is_not_older_than_code_that_changes_its_numbers(name: str) -> None:
    check = prov.check_record(_records()[name])
    print(check)
    if check.fails:
        pytest.fail(str(check))
    if check.reasons:  # stale but harmless (a refactor) or not checkable (timings): reported, not failed
        warnings.warn(f"stale result record: {check}", UserWarning, stacklevel=1)


def _copy_repo(dst: Path) -> Path:
    shutil.copytree(REPO / "rdl_neuro", dst / "rdl_neuro", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "benchmarks", dst / "benchmarks", ignore=shutil.ignore_patterns("__pycache__", "results"))
    git = lambda *a: subprocess.run(["git", "-C", str(dst), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")
    return dst


@pytest.mark.slow
def test_rerun_hint_names_the_commands_that_refresh_a_record() -> None:
    """A benchmark script publishes itself; the package's demo writes into its --out folder, whose
    record update_readme.py --publish copies (the demo command has no --publish)."""
    script = {"name": "paper_mnist", "command": "python benchmarks/paper_mnist.py"}
    assert prov.rerun_hint(script) == ("`python benchmarks/paper_mnist.py --publish` and "
                                       "`python benchmarks/update_readme.py`")
    demo = {"name": "demo", "command": "rdl-neuro demo --seeds 3 --out demo_out"}
    assert prov.rerun_hint(demo) == ("`rdl-neuro demo --seeds 3 --out demo_out` and "
                                     "`python benchmarks/update_readme.py --publish demo_out/demo.md`")
    published = prov.published_records()
    assert "--publish" not in prov.rerun_hint(published["demo"]).split("` and `")[0]


def test_quick_fingerprint_passes_a_refactor_and_fails_a_change_to_the_rdl_term(tmp_path: Path) -> None:
    root = _copy_repo(tmp_path / "repo")
    quick = ["python", "benchmarks/paper_mnist.py", "--quick", "--out", "{out}"]
    depends = prov.TRANSFER_DEPENDS + ["benchmarks/paper_mnist.py"]
    record = {"name": "paper_mnist", "command": "python benchmarks/paper_mnist.py", "commit": "c" * 40,
              "depends_on": depends, "dependency_files": dependency_files(root, depends), "quick_command": quick,
              "fingerprint": prov.run_quick(quick, "paper_mnist", root=root)}
    assert prov.check_record(record, root=root).status == "current"
    losses = root / "rdl_neuro" / "train" / "losses.py"
    original = losses.read_text()

    # a refactor: the code changes, the numbers cannot
    losses.write_text(original + "\n\ndef _unused_helper() -> None:\n    \"\"\"Nothing.\"\"\"\n")
    check = prov.check_record(record, root=root)
    assert check.status == "refactored" and not check.fails, str(check)
    assert check.reasons == ["rdl_neuro/train/losses.py changed since the record's run (commit cccccccccc); "
                             "last commit " + check.reasons[0].split("last commit ")[1]]

    # the RDL term changes by 0.1 %: the quick run's numbers move, the check fails and says what to rerun
    losses.write_text(original + "\n\n_rdl_forward = RDLLoss.forward\n\n\n"
                      "def _scaled(self, *args, **kwargs):\n    total, terms = _rdl_forward(self, *args, **kwargs)\n"
                      "    return total * 1.001, terms\n\n\nRDLLoss.forward = _scaled\n")
    check = prov.check_record(record, root=root)
    assert check.status == "changed" and check.fails
    assert "rdl_neuro/train/losses.py changed" in str(check)
    assert "rerun `python benchmarks/paper_mnist.py --publish`" in str(check)
