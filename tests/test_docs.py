"""The documentation builds without a warning and its API reference covers every public name.

One Sphinx build (fresh environment, ``-W --keep-going``: any warning fails, and
nitpicky mode makes a broken reference to one of our names a warning) feeds the
tests below. The build fetches nothing: intersphinx reads ``docs/inventories/``.
"""
from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("myst_nb")

from sphinx.util.inventory import InventoryFile  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS / "inventories"))
import apigen  # noqa: E402
import make_inventories  # noqa: E402

BUILD_TIMEOUT_S = 600


def _build_docs(out: Path) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-b", "html",
           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    return proc, time.perf_counter() - start


def _inventory(html: Path) -> dict:
    with open(html / "objects.inv", "rb") as f:
        return InventoryFile.load(f, "", lambda base, uri: uri)


def _missing_public_names(html: Path) -> list[str]:
    """Public names that resolve to no object the built reference documents."""
    inventory = _inventory(html)
    documented_paths = {name for domain, objs in inventory.items() if domain.startswith("py:") for name in objs}
    assert "rdl_neuro.rdm.compute_rdm" in documented_paths  # the inventory is the one we think it is
    # objects the documented paths reach (functions and classes by identity; data by name and identity)
    documented = set()
    for path in documented_paths:
        module, _, name = path.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            continue
        documented.add(apigen.object_key(name, obj))
    missing = []
    for modname in apigen.public_modules():
        if modname not in documented_paths:
            missing.append(f"module {modname}")
        module = importlib.import_module(modname)
        for name in apigen.public_names(module):
            obj = getattr(module, name, None)
            if inspect.ismodule(obj):
                continue
            if f"{modname}.{name}" not in documented_paths and apigen.object_key(name, obj) not in documented:
                missing.append(f"{modname}.{name}")
    return missing


@pytest.mark.slow
def test_docs_build(tmp_path):
    """One build (one test, so parallel workers never build twice into the same generated sources)."""
    proc, seconds = _build_docs(tmp_path)
    html = tmp_path / "html"
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0 and not warnings, "docs build failed:\n" + "\n".join(warnings or [proc.stderr[-3000:]])
    pages = list(html.rglob("*.html"))
    print(f"docs built in {seconds:.1f} s, {len(pages)} HTML pages")

    # every public name of every public module is in the API reference
    missing = _missing_public_names(html)
    assert not missing, f"public names missing from the API reference: {missing}"

    # the notebooks (as committed, not executed), every result file, the guide, the architecture map
    for nb in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        page = html / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), f"notebook {nb.name} not rendered"
        assert "RDL_NEURO_NOTEBOOK_QUICK" in page.read_text(), page  # its first code cell is on the page
    for result in sorted((REPO_ROOT / "benchmarks" / "results").glob("*.md")):
        assert (html / "results" / f"{result.stem}.html").is_file(), f"result file {result.name} has no page"
    if (DOCS / "architecture.md").exists():
        assert 'href="architecture.html"' in (html / "index.html").read_text()
    for page in ("guide/training", "guide/rsa", "guide/fmri", "guide/figures", "guide/distributed", "changelog"):
        assert (html / f"{page}.html").is_file(), page


def test_api_generator_reports_undocumented_and_missing_names(tmp_path, monkeypatch):
    """The check behind the -W build: a public name without docs or a bad __all__ is a problem."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package."""\nfrom fakepkg.mod import documented, bare\n'
                                     '__all__ = ["documented", "bare", "ghost", "LIMIT"]\nLIMIT = 3\n')
    (pkg / "mod.py").write_text('"""A module."""\n\ndef documented():\n    """Has a docstring."""\n\n\n'
                                'def bare():\n    pass\n\n\nclass Thing:\n    """A class."""\n\n'
                                '    def method(self):\n        pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    _, problems = apigen.generate(tmp_path / "api", package="fakepkg")
    text = "\n".join(problems)
    assert "fakepkg.__all__ names 'ghost'" in text
    assert "undocumented public name fakepkg.mod.bare" in text  # documented at its stage (here: mod)
    assert "undocumented public name fakepkg.LIMIT" in text
    assert "undocumented public member fakepkg.mod.Thing.method" in text
    assert "fakepkg.documented" not in text
    assert (tmp_path / "api" / "mod.rst").is_file() and (tmp_path / "api" / "index.rst").is_file()


def test_committed_inventories_match_their_script():
    for project, (version, _, entries) in make_inventories.INVENTORIES.items():
        committed = (DOCS / "inventories" / f"{project}.inv").read_bytes()
        assert committed == make_inventories.inventory_bytes(project, version, entries), (
            f"docs/inventories/{project}.inv is stale: run python docs/inventories/make_inventories.py")
