"""The package layout's one rule that a grep cannot keep true by itself: no rdl_neuro module imports
another module's ``_private`` name. What modules share is public in its home (see docs/architecture.md)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rdl_neuro"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path) -> list[str]:
    """``from X import _name`` and ``X._name`` attribute uses (``X`` another rdl_neuro module or one of its
    names) in one file. Private *modules* (``rdl_neuro._progress``) are package helpers with public names."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    aliases: dict[str, str] = {}  # local name -> rdl_neuro module it names
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("rdl_neuro"):
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if alias.name.startswith("_") and not alias.name.startswith("__") and base != here:
                    found.append(f"{here}: from {base} import {alias.name}")
                aliases[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rdl_neuro"):
                    aliases[alias.asname or "rdl_neuro"] = alias.name if alias.asname else "rdl_neuro"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        chain, value = [], node.value  # module.sub._name -> ["module", "sub"]
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in aliases:
            owner = ".".join([aliases[value.id], *chain])
            if owner != here:
                found.append(f"{here}: {'.'.join([value.id, *chain, node.attr])} ({owner})")
    return found


def test_no_module_imports_another_modules_private_names():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30  # the whole package is scanned
    offences = [line for path in files for line in _private_imports(path)]
    assert not offences, "private names used across modules (make them public in their home):\n" + "\n".join(offences)


def test_the_check_sees_private_imports(tmp_path):
    """The scan itself finds each form of a private import (so the test above can fail)."""
    pkg = tmp_path / "rdl_neuro" / "sub"
    pkg.mkdir(parents=True)
    bad = pkg / "mod.py"
    bad.write_text("from rdl_neuro.rdm.calc import _unit_rows\n"
                   "from ..rdm.calc import _SymmetricGram\n"
                   "from rdl_neuro._progress import progress_bar\n"
                   "from rdl_neuro.rdm import calc\n"
                   "calc._row_blocks(3)\n"
                   "import rdl_neuro.train.losses\n"
                   "rdl_neuro.train.losses._flat(None)\n"
                   "from rdl_neuro.rdm.calc import compute_rdm\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "rdl_neuro"
    try:
        found = _private_imports(bad)
    finally:
        PACKAGE = saved
    assert found == ["rdl_neuro.sub.mod: from rdl_neuro.rdm.calc import _unit_rows",
                     "rdl_neuro.sub.mod: from rdl_neuro.rdm.calc import _SymmetricGram",
                     "rdl_neuro.sub.mod: calc._row_blocks (rdl_neuro.rdm.calc)",
                     "rdl_neuro.sub.mod: rdl_neuro.train.losses._flat (rdl_neuro.train.losses)"]
