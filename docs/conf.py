"""Sphinx configuration of the rdl_neuro documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (see README).
Nothing is fetched while building: intersphinx reads the small inventories in
``docs/inventories/``, and the notebooks are rendered as committed, not executed.
Generated at each build (git ignores them): ``api/`` (from the package's public
names, see ``_ext/apigen.py``), ``notebooks/`` (copies of ``../notebooks/*.ipynb``)
and ``results/`` (one page per ``../benchmarks/results/*.md``).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
if os.environ.get("RDL_NEURO_DOCS_USE_INSTALLED") != "1":
    sys.path.insert(0, str(REPO))  # document this checkout, not whatever rdl_neuro is installed

import rdl_neuro  # noqa: E402

project = "rdl_neuro"
author = "rdl_neuro developers"
copyright = "2026, rdl_neuro developers"
release = rdl_neuro.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
    "apigen",
]

exclude_patterns = ["_build", "_ext", "inventories", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = f"rdl_neuro {release}"
html_static_path: list[str] = []

# -- cross-references ---------------------------------------------------------
# Broken references to our own names fail the build (-W). References into other
# projects resolve through the local inventories; the ones they lack render as
# plain text instead of failing, since the inventories list only what we link.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(torch|numpy|np|pandas|pd|rsatoolbox|matplotlib|plt|nibabel|nib|nilearn|scipy|sklearn|tqdm"
              r"|mlxtend|PIL|h5py|skimage)(\..*)?"),
    ("py:.*", r"(typing|collections|pathlib|os|argparse|tomllib|dataclasses)\..*"),
]
intersphinx_mapping = {
    name: (url, str(DOCS / "inventories" / f"{name}.inv"))
    for name, url in {
        "python": "https://docs.python.org/3/",
        "numpy": "https://numpy.org/doc/stable/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "pandas": "https://pandas.pydata.org/docs/",
        "matplotlib": "https://matplotlib.org/stable/",
        "nibabel": "https://nipy.org/nibabel/",
        "rsatoolbox": "https://rsatoolbox.readthedocs.io/en/stable/",
    }.items()
}

# -- autodoc + numpydoc ---------------------------------------------------------
autodoc_typehints = "none"          # the types are in the numpydoc Parameters sections
autodoc_member_order = "bysource"
autoclass_content = "class"
numpydoc_show_class_members = False  # autodoc's :members: lists them (nn.Module's own would flood the page)
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = True
numpydoc_xref_ignore = "all"         # only the aliases below (and numpydoc's builtins) become links
numpydoc_xref_aliases = {
    "Tensor": "torch.Tensor", "tensor": "torch.Tensor", "torch.Tensor": "torch.Tensor",
    "nn.Module": "torch.nn.Module", "torch.nn.Module": "torch.nn.Module", "Module": "torch.nn.Module",
    "DataLoader": "torch.utils.data.DataLoader", "torch.device": "torch.device", "device": "torch.device",
    "torch.dtype": "torch.dtype", "dtype": "torch.dtype", "Optimizer": "torch.optim.Optimizer",
    "torch.optim.Optimizer": "torch.optim.Optimizer", "torch.Generator": "torch.Generator",
    "DataFrame": "pandas.DataFrame", "pd.DataFrame": "pandas.DataFrame", "pandas.DataFrame": "pandas.DataFrame",
    "Series": "pandas.Series", "pd.Series": "pandas.Series",
    "np.random.Generator": "numpy.random.Generator", "numpy.ndarray": "numpy.ndarray",
    "RDMs": "rsatoolbox.rdm.RDMs", "rsatoolbox.rdm.RDMs": "rsatoolbox.rdm.RDMs",
    "rsatoolbox.data.Dataset": "rsatoolbox.data.Dataset",
    "Figure": "matplotlib.figure.Figure", "matplotlib.figure.Figure": "matplotlib.figure.Figure",
    "Axes": "matplotlib.axes.Axes", "matplotlib.axes.Axes": "matplotlib.axes.Axes",
    "Nifti1Image": "nibabel.nifti1.Nifti1Image", "Path": "pathlib.Path", "pathlib.Path": "pathlib.Path",
    "path-like": ":term:`python:path-like object`", "mapping": ":term:`python:mapping`",
}

# -- notebooks and Markdown ------------------------------------------------------
nb_execution_mode = "off"           # rendered as committed; tests/test_notebooks.py runs them
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # result files and notebooks start sections at any level


def _copy_notebooks() -> None:
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    sources = sorted((REPO / "notebooks").glob("*.ipynb"))
    for nb in sources:
        if not (target / nb.name).exists() or (target / nb.name).read_bytes() != nb.read_bytes():
            shutil.copyfile(nb, target / nb.name)
    for stale in set(p.name for p in target.glob("*.ipynb")) - {nb.name for nb in sources}:
        (target / stale).unlink()


def _result_pages() -> None:
    """One page per committed benchmark result file, each including the file itself."""
    target = DOCS / "results"
    target.mkdir(exist_ok=True)
    files = sorted((REPO / "benchmarks" / "results").glob("*.md"))
    for path in files:
        text = path.read_text()
        heading = "" if text.lstrip().startswith("# ") else f"# {path.stem}\n\n"
        page = (f"{heading}```{{include}} ../../benchmarks/results/{path.name}\n"
                ":relative-images:\n```\n")
        _write(target / path.name, page)
    listing = "\n".join(f"{p.stem}" for p in files)
    intro = ("Every number the README publishes comes from one of these files, written by the benchmark\n"
             "script named in it (command, commit, library versions, machine, seeds, wall time).\n")
    if not files:
        intro += "\nNo result file is committed in `benchmarks/results/` yet.\n"
    _write(target / "index.md", f"# Benchmark results\n\n{intro}\n```{{toctree}}\n:maxdepth: 1\n\n{listing}\n```\n")
    for stale in set(p.name for p in target.glob("*.md")) - {p.name for p in files} - {"index.md"}:
        (target / stale).unlink()


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _drop_missing_architecture(app, docname: str, source: list[str]) -> None:
    """The architecture map is another page's file: list it in the index only once it exists."""
    if docname == "index" and not (DOCS / "architecture.md").exists():
        source[0] = "\n".join(line for line in source[0].splitlines() if line.strip() != "architecture")


def _architecture_changed(app, env, added: set, changed: set, removed: set) -> list[str]:
    """Re-read the index when the architecture map appears or goes (its toctree lists it)."""
    return ["index"] if "architecture" in added | removed else []


def _links_to_repository_files(app, doctree) -> None:
    """A Markdown link to a repository file outside ``docs/`` (``../README.md``) becomes a download link.

    MyST takes such a link for a document it cannot find; pages written for the
    repository (the architecture map, result files) link to its files that way.
    """
    from sphinx import addnodes

    docdir = Path(app.srcdir, app.env.docname).parent
    for node in list(doctree.findall(addnodes.pending_xref)):
        if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
            continue
        matches = [Path(app.srcdir, node["reftarget"] + suffix) for suffix in (".md", ".ipynb", ".rst")]
        found = next((m.resolve() for m in matches if m.is_file()), None)
        if found is None or found.is_relative_to(DOCS):
            continue  # a page of the docs (resolved as usual), or a real broken link (warned about)
        download = addnodes.download_reference("", "", *node.children, refdomain=None, reftype="myst",
                                               reftarget=os.path.relpath(found, docdir), refexplicit=True,
                                               refdoc=app.env.docname, classes=["xref", "download", "myst"])
        node.replace_self(download)


def setup(app) -> None:
    _copy_notebooks()
    _result_pages()
    app.connect("source-read", _drop_missing_architecture)
    app.connect("env-get-outdated", _architecture_changed)
    app.connect("doctree-read", _links_to_repository_files, priority=400)  # before downloads are collected
