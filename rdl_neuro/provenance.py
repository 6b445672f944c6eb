"""Result records: a published table together with what produced it.

A *record* is a pair of files ``<folder>/<name>.md`` and ``<folder>/<name>.csv``:

- the CSV is the table itself, cells exactly as they are shown (scripts format
  their numbers before recording them);
- the markdown shows the table, the ``RESULT`` line and named values for people,
  and ends with a JSON block that holds everything for programs: the command,
  the commit it ran on and whether the working tree was clean, the library
  versions, the machine, the seeds, the wall time, the digest of the exact
  numbers behind the table, and the files the numbers depend on (with a digest
  of each, taken when the run started).

``benchmarks/_provenance.py`` writes records for the benchmark scripts (and
publishes them under ``benchmarks/results/``); ``rdl-neuro demo`` writes one into
its output folder; ``benchmarks/update_readme.py`` puts their tables and values
into the README and other Markdown files.

Examples
--------
>>> import tempfile, pandas as pd
>>> from rdl_neuro.provenance import write_record, read_record
>>> folder = tempfile.mkdtemp()
>>> table = pd.DataFrame({"method": ["a", "b"], "error %": ["1.50", "2.25"]})
>>> path = write_record(folder, "example", title="An example", command="python make.py", table=table,
...                     result_line="RESULT best=a", values={"best": "a"}, seeds=[0, 1], wall_s=1.0)
>>> rec = read_record(path)
>>> rec["values"]["best"], rec["table"]["error %"].tolist()
('a', ['1.50', '2.25'])
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from rdl_neuro.io import atomic_write_text

__all__ = [
    "RECORD_VERSION",
    "PACKAGES",
    "environment",
    "git_state",
    "dependency_files",
    "frame_digest",
    "markdown_table",
    "write_record",
    "read_record",
    "update_record",
    "record_paths",
]

#: version of the record format written by :func:`write_record` (the ``record_version`` field)
RECORD_VERSION = 1
#: libraries whose versions every record lists
PACKAGES = ("rdl-neuro", "torch", "numpy", "scipy", "pandas", "scikit-learn", "rsatoolbox", "matplotlib")
_JSON_OPEN = "```json provenance"


# --------------------------------------------------------------------------- #
# facts about the run
# --------------------------------------------------------------------------- #
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Library versions and the machine: ``{"versions": {...}, "machine": {...}}``.

    Examples
    --------
    >>> sorted(environment())
    ['machine', 'versions']
    """
    from rdl_neuro import __version__

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["rdl-neuro"] = __version__  # the code that runs (an editable install's metadata can lag behind)
    machine: dict[str, Any] = {"platform": platform.platform(), "cpu": _cpu_model(), "cpus": os.cpu_count()}
    if "torch" in sys.modules:  # only report threads if torch runs here (importing it is slow)
        machine["torch_threads"] = sys.modules["torch"].get_num_threads()
    try:
        machine["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        pass
    return {"versions": versions, "machine": machine}


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(root: str | os.PathLike[str], ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The commit checked out in ``root`` and whether tracked files differ from it.

    ``ignore``: paths (relative to ``root``) whose changes do not count, e.g. the
    folder the records themselves are written to. Outside a git checkout every
    value is ``None``.

    Returns
    -------
    dict
        ``commit`` (full hash), ``clean`` (bool), ``modified`` (the changed tracked paths).
    """
    root = Path(root)
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "clean": None, "modified": None}
    spec = ["--", "."] + [f":(exclude){p}" for p in ignore]
    status = _git(root, "status", "--porcelain", "--untracked-files=no", *spec) or ""
    modified = sorted(line[3:] for line in status.splitlines() if line.strip())
    return {"commit": head.strip(), "clean": not modified, "modified": modified}


def dependency_files(root: str | os.PathLike[str], paths: Iterable[str]) -> dict[str, str]:
    """``{file: sha256 prefix}`` of every file under ``paths`` (files or folders relative to ``root``).

    Tracked files are listed by git when ``root`` is a checkout (so caches and
    outputs never count); otherwise every ``.py``/``.toml`` file under the paths.
    The digests are of the files' current contents, uncommitted edits included.
    """
    root = Path(root)
    paths = list(paths)
    if not paths:
        return {}
    listed = _git(root, "ls-files", "--", *paths)
    if listed is not None:
        files = sorted(set(listed.splitlines()))
    else:
        files = sorted(str(f.relative_to(root)) for p in paths for f in
                       ([root / p] if (root / p).is_file() else (root / p).rglob("*"))
                       if f.is_file() and f.suffix in (".py", ".toml"))
    out = {}
    for f in files:
        path = root / f
        if path.is_file():  # a tracked file deleted in the working tree is simply gone
            out[f] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of a table's exact values (floats at full precision, 17 significant digits).

    Two runs that agree in every bit of every number have the same digest; any
    change to a number, however small, changes it.
    """
    text = frame.to_csv(index=False, float_format="%.17g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- #
# writing and reading records
# --------------------------------------------------------------------------- #
def markdown_table(table: pd.DataFrame) -> str:
    """The table as GitHub markdown, every cell as its text (``|`` escaped).

    Examples
    --------
    >>> print(markdown_table(pd.DataFrame({"a": ["1"], "b": ["x|y"]})))
    | a | b |
    | --- | --- |
    | 1 | x\\|y |
    """
    cols = [str(c) for c in table.columns]

    def cell(v: Any) -> str:
        return ("" if v is None or (isinstance(v, float) and v != v) else str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def record_paths(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """``(<folder>/<name>.md, <folder>/<name>.csv)``."""
    folder = Path(folder)
    return folder / f"{name}.md", folder / f"{name}.csv"


def write_record(folder: str | os.PathLike[str], name: str, *, title: str, command: str, table: pd.DataFrame,
                 result_line: str | None = None, values: Mapping[str, Any] | None = None,
                 seeds: Any = None, wall_s: float | None = None, exact: pd.DataFrame | None = None,
                 notes: str = "", git: Mapping[str, Any] | None = None,
                 depends_on: Sequence[str] = (), dependency_digests: Mapping[str, str] | None = None,
                 quick_command: Sequence[str] | None = None, fingerprint: str | None = None,
                 started_utc: str | None = None, env: Mapping[str, Any] | None = None) -> Path:
    """Write the record pair ``<folder>/<name>.md`` and ``<folder>/<name>.csv``; returns the markdown path.

    Parameters
    ----------
    table : DataFrame
        The published table, every cell formatted as it should be shown.
    result_line : str, optional
        The script's ``RESULT key=value ...`` line.
    values : mapping, optional
        Named numbers or sentences quoted elsewhere (README prose), already formatted.
    seeds : any JSON-able
        The seeds the numbers come from.
    exact : DataFrame, optional
        The unrounded numbers behind the table (e.g. every run); its
        :func:`frame_digest` is stored as ``digest``. Default: the table's digest.
    git : mapping, optional
        :func:`git_state` taken when the run started (default: none recorded).
    depends_on, dependency_digests
        The code the numbers depend on (paths) and :func:`dependency_files` of
        them taken when the run started.
    quick_command, fingerprint
        The command of the fast deterministic variant of this run and the digest
        its record had (see ``benchmarks/_provenance.py``).
    """
    values = {k: str(v) for k, v in (values or {}).items()}
    git = dict(git or {"commit": None, "clean": None, "modified": None})
    env = dict(env or environment())
    md_path, csv_path = record_paths(folder, name)
    csv_text = table.to_csv(index=False, lineterminator="\n")
    meta = {
        "record_version": RECORD_VERSION, "name": name, "title": title, "command": command,
        "started_utc": started_utc, "written_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "commit": git.get("commit"), "clean": git.get("clean"), "modified": git.get("modified"),
        "versions": env["versions"], "machine": env["machine"], "seeds": seeds,
        "wall_s": None if wall_s is None else round(float(wall_s), 1),
        "result_line": result_line, "values": values,
        "digest": frame_digest(exact if exact is not None else table),
        "depends_on": list(depends_on), "dependency_files": dict(dependency_digests or {}),
        "quick_command": list(quick_command) if quick_command else None, "fingerprint": fingerprint,
        "table_file": csv_path.name,
    }
    commit = meta["commit"][:10] if meta["commit"] else "unknown"
    tree = {True: "clean tree", False: "uncommitted changes: " + ", ".join(git.get("modified") or []),
            None: "not a git checkout"}[meta["clean"]]
    machine = env["machine"]
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += [markdown_table(pd.read_csv(io.StringIO(csv_text), dtype=str, keep_default_na=False)), ""]
    if result_line:
        lines += ["```", result_line, "```", ""]
    if values:
        lines += ["Values quoted in the text:", ""]
        for k, v in values.items():
            lines += [f"- `{k}`:", "", "  ```", *(f"  {x}" for x in v.splitlines()), "  ```"] if "\n" in v \
                else [f"- `{k}`: {v}"]
        lines += [""]
    lines += ["## Provenance", "",
              f"- command: `{command}`",
              f"- commit: `{commit}` ({tree})",
              f"- started: {started_utc or 'unknown'} UTC; wall time: "
              f"{'unknown' if wall_s is None else f'{wall_s:.0f} s'}",
              f"- seeds: {seeds}",
              f"- machine: {machine.get('cpu')}, {machine.get('cpus')} CPUs, {machine.get('platform')}"
              + (f", torch threads {machine['torch_threads']}" if "torch_threads" in machine else ""),
              "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
              f"- depends on: {', '.join(depends_on) if depends_on else 'nothing recorded'}",
              "", _JSON_OPEN, json.dumps(meta, indent=1, sort_keys=False), "```", ""]
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(csv_path, csv_text)
    atomic_write_text(md_path, "\n".join(lines))
    return md_path


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A record's metadata (the JSON block) with its table under ``"table"`` (a DataFrame of strings).

    ``path`` is the ``.md`` file (or its stem). Raises ``ValueError`` naming the
    file when the JSON block is missing or broken and ``FileNotFoundError`` when
    a file of the pair is missing.
    """
    md_path = Path(path).with_suffix(".md")
    text = md_path.read_text()
    start = text.rfind(_JSON_OPEN)
    end = text.find("\n```", start + len(_JSON_OPEN)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ValueError(f"{md_path}: no '{_JSON_OPEN}' block: not a result record")
    try:
        meta = json.loads(text[start + len(_JSON_OPEN):end])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{md_path}: broken provenance JSON: {exc}") from None
    csv_path = md_path.with_name(meta.get("table_file") or md_path.with_suffix(".csv").name)
    meta["table"] = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    meta["path"] = md_path
    return meta


def update_record(path: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Set ``fields`` in a record's JSON block (e.g. ``fingerprint``), leaving the rest of the file as it is.

    Returns the updated metadata (as :func:`read_record`).
    """
    md_path = Path(path).with_suffix(".md")
    meta = read_record(md_path)
    text = md_path.read_text()
    start = text.rfind(_JSON_OPEN)
    end = text.find("\n```", start + len(_JSON_OPEN))
    plain = {k: v for k, v in meta.items() if k not in ("table", "path")}
    unknown = set(fields) - set(plain)
    if unknown:
        raise ValueError(f"{md_path}: no field(s) {sorted(unknown)} in the record")
    plain.update(fields)
    atomic_write_text(md_path, text[:start + len(_JSON_OPEN)] + "\n" + json.dumps(plain, indent=1) + text[end:])
    return read_record(md_path)
