"""The notebooks in notebooks/ run top to bottom in a real Jupyter kernel and are committed clean.

Each notebook is executed with nbclient from the ``notebooks/`` folder as the
working directory, with ``RDL_NEURO_NOTEBOOK_QUICK=1`` (read by the notebooks'
first code cell: fewer epochs and bootstrap samples, the same code path) and
``RDL_NEURO_NOTEBOOK_OUT`` pointing at a temporary folder for the files they
write. The kernel is a kernelspec written to a temporary folder that launches
*this* interpreter (``sys.executable -m ipykernel_launcher``), so the notebooks
see the same installed rdl_neuro as the tests, whatever ``python`` is on PATH.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = (
    "01_train_against_brain_rdms.ipynb",
    "02_model_brain_similarity.ipynb",
    "03_export_figures.ipynb",
)
KERNEL_NAME = "python3"
# generous: a whole notebook takes well under a minute in quick mode on 2 cores
CELL_TIMEOUT_S = 600

# inline figures each notebook shows (at least): a viz Figure that is not displayed is a bug
N_FIGURES = {
    "01_train_against_brain_rdms.ipynb": 4,
    "02_model_brain_similarity.ipynb": 4,
    "03_export_figures.ipynb": 4,
}

# files each notebook must write into $RDL_NEURO_NOTEBOOK_OUT (relative paths)
EXPECTED_FILES = {
    "03_export_figures.ipynb": [
        f"03_export_figures/{stem}.{ext}"
        for stem in ("rdm_comparison", "layer_profile", "training_curves")
        for ext in ("png", "svg", "pdf")
    ],
}


def _read(name: str):
    path = NOTEBOOK_DIR / name
    assert path.is_file(), f"notebook missing: {path}"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data dir whose ``kernels/python3`` launches the interpreter running the tests."""
    root = tmp_path_factory.mktemp("jupyter_data")
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (rdl_neuro tests)",
        "language": "python",
    }))
    return root


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_committed_without_outputs(name: str) -> None:
    nb = _read(name)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{name}: code cells {dirty} carry outputs or execution counts; strip them "
                       f"(e.g. jupyter nbconvert --clear-output --inplace notebooks/{name})")
    assert "widgets" not in nb.metadata, f"{name}: notebook metadata carries widget state"
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL_NAME, \
        f"{name}: kernelspec should be {KERNEL_NAME!r}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_a_tutorial(name: str) -> None:
    """Markdown explains the steps, and the first code cell reads the quick-mode switch."""
    nb = _read(name)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown", f"{name}: should open with a markdown introduction"
    assert kinds.count("markdown") >= 4, f"{name}: too little explanation ({kinds.count('markdown')} markdown cells)"
    first_code = next(c.source for c in nb.cells if c.cell_type == "code")
    assert "RDL_NEURO_NOTEBOOK_QUICK" in first_code, \
        f"{name}: the first code cell must read RDL_NEURO_NOTEBOOK_QUICK"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "McClure" in text or "Kriegeskorte" in text, f"{name}: cite the method's papers"


def _execute(nb, kernel_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``nb`` in place, from notebooks/ as cwd, in quick mode; raises CellExecutionError on any error."""
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        [str(kernel_dir)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("RDL_NEURO_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("RDL_NEURO_NOTEBOOK_OUT", str(out_dir))
    # a CI-wide MPLBACKEND=Agg would stop figures from showing inline
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the notebooks' networks are tiny: extra threads only spin against the other test workers
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME, allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()


def test_harness_runs_in_notebooks_dir_and_catches_errors(kernel_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor sees quick mode and notebooks/ as cwd, and a raising cell fails the run."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os, sys\nprint(os.getcwd(), os.environ['RDL_NEURO_NOTEBOOK_QUICK'], "
                                  "sys.executable)"),
        nbformat.v4.new_code_cell("raise RuntimeError('boom from a notebook cell')"),
    ])
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="boom from a notebook cell"):
        _execute(nb, kernel_dir, tmp_path, monkeypatch)
    cwd, quick, executable = nb.cells[0].outputs[0]["text"].split()
    assert Path(cwd).resolve() == NOTEBOOK_DIR.resolve()
    assert quick == "1"
    assert Path(executable).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name: str, kernel_dir: Path, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _read(name)
    out_dir = tmp_path / "outputs"
    try:
        _execute(nb, kernel_dir, out_dir, monkeypatch)
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{name} failed:\n{err}", pytrace=False)

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, f"{name}: error outputs {errors}"
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
    assert len(images) >= N_FIGURES[name], \
        f"{name}: shows {len(images)} inline figures, expected at least {N_FIGURES[name]}"
    for rel in EXPECTED_FILES.get(name, []):
        path = out_dir / rel
        assert path.is_file() and path.stat().st_size > 0, f"{name} did not write {path}"
