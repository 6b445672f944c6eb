"""Generate the API reference from the package itself, so new names and modules appear by themselves.

What is public (the one rule, also used by ``tests/test_docs.py``):

* a module is public when no part of its dotted name starts with ``_``;
* its public names are its ``__all__`` when it has one, otherwise the functions and
  classes defined in it (``obj.__module__`` is the module) whose names do not start
  with ``_``.

One page per stage (``rdl_neuro.data``, ``rdm``, ``model``, ``inference``, ``vis``,
``train``, ``cli``, then any other public top-level module): the package's docstring
and the names it exports, then each submodule with its docstring and the public names
not already documented. An object reachable under several names is documented once,
at its first public path; the others link to it. Public names and public methods
without a docstring are reported as warnings, which fail the ``-W`` build.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sphinx.util import logging

PACKAGE = "rdl_neuro"
# the pipeline's stages in reading order; other public top-level modules follow
STAGES = ("data", "rdm", "model", "inference", "vis", "train", "cli")

logger = logging.getLogger(__name__)


def public_modules(package: str = PACKAGE) -> list[str]:
    """Dotted names of the package and every public (sub)module, package first, sorted."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def public_names(module: ModuleType) -> list[str]:
    """The public names of ``module``: ``__all__``, else its own non-underscore functions and classes."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__]


def is_routine_or_class(obj: Any) -> bool:
    """Objects that autodoc documents by their own docstring (not by a ``#:`` comment)."""
    return inspect.isclass(obj) or inspect.isroutine(obj)


def object_key(name: str, obj: Any) -> tuple:
    """Identity of a documented object: functions and classes by identity, data by name and identity."""
    return ("obj", id(obj)) if is_routine_or_class(obj) else ("data", name, id(obj))


@dataclass
class Entry:
    """One public name: where it is documented and what it is."""
    module: str
    name: str
    obj: Any
    doc_path: str = ""          # full dotted name under which it is documented
    data_doc: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


def _attr_docs(module_names: list[str]) -> dict[str, dict[str, list[str]]]:
    """``#:`` comments / docstrings after assignments, per module (Sphinx's own source analyser)."""
    from sphinx.pycode import ModuleAnalyzer
    docs = {}
    for name in module_names:
        try:
            found = ModuleAnalyzer.for_module(name).find_attr_docs()
        except Exception:  # noqa: BLE001 -- extension modules have no source to analyse
            found = {}
        docs[name] = {attr: list(lines) for (scope, attr), lines in found.items() if scope == ""}
    return docs


def collect(package: str = PACKAGE) -> tuple[dict[str, list[Entry]], list[str]]:
    """Every public name per module and the problems found (undocumented or missing names)."""
    modules = public_modules(package)
    attr_docs = _attr_docs(modules)
    loaded = {name: importlib.import_module(name) for name in modules}
    problems: list[str] = []
    by_module: dict[str, list[Entry]] = {}
    for modname in modules:
        entries = []
        for name in public_names(loaded[modname]):
            try:
                obj = getattr(loaded[modname], name)
            except AttributeError:
                problems.append(f"{modname}.__all__ names {name!r}, which the module does not have")
                continue
            entry = Entry(modname, name, obj)
            if not is_routine_or_class(obj) and not inspect.ismodule(obj):
                # a constant: its doc is the ``#:`` comment where it is defined (any public module)
                entry.data_doc = next((attr_docs[m][name] for m in [modname] + modules
                                       if name in attr_docs[m] and getattr(loaded[m], name, None) is obj), [])
            entries.append(entry)
        by_module[modname] = entries
    return by_module, problems


def _undocumented_members(cls: type) -> list[str]:
    """Public methods and properties defined on ``cls`` itself with no docstring (inherited ones count)."""
    missing = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            if not inspect.getdoc(getattr(cls, name, value)) and not _inherited_doc(cls, name):
                missing.append(name)
    return missing


def _inherited_doc(cls: type, name: str) -> bool:
    return any(inspect.getdoc(getattr(base, name)) for base in cls.__mro__[1:] if hasattr(base, name))


def _title(text: str, char: str = "=") -> str:
    return f"{text}\n{char * len(text)}\n"


def _directive(entry: Entry) -> str:
    obj, path = entry.obj, entry.path
    if inspect.isclass(obj):
        kind = "autoexception" if issubclass(obj, BaseException) else "autoclass"
        return f".. {kind}:: {path}\n   :members:\n   :member-order: bysource\n"
    if inspect.isroutine(obj):
        return f".. autofunction:: {path}\n"
    value = re.sub(r"\s+", " ", repr(obj))
    value = value if len(value) <= 120 else value[:117] + "..."
    lines = [f".. py:data:: {entry.name}", f"   :module: {entry.module}", f"   :value: {value}", ""]
    lines += [f"   {line}" if line else "" for line in entry.data_doc]
    return "\n".join(lines) + "\n"


def assign_paths(by_module: dict[str, list[Entry]], order: list[str]) -> dict[tuple, str]:
    """Choose where each object is documented: its first public path in ``order``.

    A package-level name that is also a submodule's name (``rdl_neuro.cli.main``
    the function and the module) is documented in that submodule instead.
    """
    documented: dict[tuple, str] = {}
    for modname in order:
        for entry in by_module[modname]:
            key = object_key(entry.name, entry.obj)
            if inspect.ismodule(entry.obj) or entry.path in by_module or key in documented:
                continue
            documented[key] = entry.doc_path = entry.path
    return documented


def _page(stage: str, modules: list[str], by_module: dict[str, list[Entry]], documented: dict) -> str:
    parts = [_title(f"``{stage}``"), f".. automodule:: {stage}\n   :no-members:\n"]
    for modname in modules:
        if modname != stage:
            parts.append(_title(f"``{modname}``", "-"))
            parts.append(f".. automodule:: {modname}\n   :no-members:\n")
        elsewhere = []
        for entry in by_module[modname]:
            if entry.doc_path:
                parts.append(_directive(entry))
            elif inspect.ismodule(entry.obj):
                elsewhere.append(f":mod:`{entry.name} <{entry.obj.__name__}>`")
            elif object_key(entry.name, entry.obj) in documented:
                elsewhere.append(f":obj:`{entry.name} <{documented[object_key(entry.name, entry.obj)]}>`")
        if elsewhere:
            parts.append(f"Also importable from here: {', '.join(elsewhere)}.\n")
    return "\n".join(parts)


def generate(out_dir: Path, package: str = PACKAGE) -> tuple[dict[tuple, str], list[str]]:
    """Write ``index.rst`` and one page per stage into ``out_dir``.

    Returns the documented path of every object (see :func:`object_key`) and the problems found.
    """
    by_module, problems = collect(package)
    top_level = sorted({m.split(".")[1] for m in by_module if m != package})
    stages = [s for s in STAGES if s in top_level] + [s for s in top_level if s not in STAGES]
    stage_modules = {s: [m for m in sorted(by_module) if m == f"{package}.{s}" or m.startswith(f"{package}.{s}.")]
                     for s in stages}
    # the stages first so every object is documented at its stage's path; the shortcuts link there
    documented = assign_paths(by_module, [m for s in stages for m in stage_modules[s]] + [package])
    pages = {s: _page(f"{package}.{s}", stage_modules[s], by_module, documented) for s in stages}
    shortcuts = [f"   * - ``{package}.{e.name}``\n     - :obj:`{documented[object_key(e.name, e.obj)]}`"
                 for e in by_module[package] if not e.doc_path]
    index = [_title("API reference"), f".. automodule:: {package}\n   :no-members:\n",
             *[_directive(e) for e in by_module[package] if e.doc_path],
             "The shortcuts ``import rdl_neuro`` offers (loaded on first use):\n",
             ".. list-table::\n   :header-rows: 1\n\n   * - name\n     - documented as\n" + "\n".join(shortcuts) + "\n",
             ".. toctree::\n   :maxdepth: 2\n\n" + "".join(f"   {s}\n" for s in stages)]
    pages["index"] = "\n".join(index)
    for entries in by_module.values():
        for entry in entries:
            key = object_key(entry.name, entry.obj)
            if inspect.ismodule(entry.obj):
                continue
            if key not in documented:
                problems.append(f"public name {entry.path} has no place in the API reference")
            elif is_routine_or_class(entry.obj):
                if entry.doc_path and not inspect.getdoc(entry.obj):
                    problems.append(f"undocumented public name {entry.path}")
                if inspect.isclass(entry.obj) and entry.doc_path:
                    problems += [f"undocumented public member {entry.path}.{m}"
                                 for m in _undocumented_members(entry.obj)]
            elif entry.doc_path and not entry.data_doc:
                problems.append(f"undocumented public name {entry.path} (add a '#:' comment where it is defined)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in pages.items():
        _write_if_changed(out_dir / f"{name}.rst", text)
    for stale in set(p.stem for p in out_dir.glob("*.rst")) - set(pages):
        (out_dir / f"{stale}.rst").unlink()
    return documented, problems


def _write_if_changed(path: Path, text: str) -> None:
    """Keep the file's time stamp when nothing changed, so incremental builds stay incremental."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def documented_target(target: str, documented: dict[tuple, str], package: str = PACKAGE) -> str | None:
    """The documented path of the object that the dotted name ``target`` reaches, if any.

    ``rdl_neuro.data.loaders.load_digits`` -> ``rdl_neuro.data.load_digits`` (documented at the
    package path); members follow their class (``...RDMTeacher.from_array``).
    """
    parts = target.split(".")
    if parts[0] != package:
        return None
    obj: Any = None
    for i in range(len(parts), 0, -1):  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            continue
    else:
        return None
    found = None
    for j in range(i, len(parts)):
        try:
            obj = getattr(obj, parts[j])
        except AttributeError:
            return None
        path = documented.get(object_key(parts[j], obj))
        if path:
            found = ".".join([path, *parts[j + 1:]])
    return found


def setup(app) -> dict:
    """Sphinx extension entry point: generate the pages when the builder starts, resolve aliases."""
    state: dict[str, dict] = {"documented": {}}

    def on_builder_inited(app) -> None:
        state["documented"], problems = generate(Path(app.srcdir) / "api")
        for problem in problems:
            logger.warning(problem, type="rdl_neuro", subtype="api")

    def on_missing_reference(app, env, node, contnode):
        # a name written relative to its home module (``:func:`load_digits``` in
        # rdl_neuro.data.loaders) or by another public path than the one it is documented at
        if node.get("refdomain") != "py":
            return None
        target, module, cls = node["reftarget"], node.get("py:module") or "", node.get("py:class")
        # the class, the module, then its enclosing packages (a sibling module's name)
        parts = module.split(".") if module else []
        prefixes = ([f"{module}.{cls}"] if module and cls else []) + [
            ".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        candidates = [f"{p}.{target}" for p in prefixes] + [target]
        for candidate in candidates:
            path = documented_target(candidate, state["documented"])
            if path:
                return env.domains["py"].resolve_xref(env, node["refdoc"], app.builder, "obj", path, node, contnode)
        return None

    app.connect("builder-inited", on_builder_inited)
    app.connect("missing-reference", on_missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
