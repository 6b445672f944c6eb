"""Result records of the benchmark scripts: what every published number came from.

Every benchmark or experiment script writes, besides its own outputs, a *record*:
``<name>.md`` + ``<name>.csv`` (format: :mod:`rdl_neuro.provenance`) with the
command, the commit and whether the tree was clean, library versions, machine,
seeds, wall time, the ``RESULT`` line, the published table and the digests of
the code it depends on. Records go to ``<--out>/records/`` (or
``results/records/`` for scripts without ``--out``); with ``--publish`` they go
to ``benchmarks/results/``, the committed folder the README is generated from
(``python benchmarks/update_readme.py``).

Use in a script (two calls: the first when the run starts, so the commit and the
code digests are those of the code that ran; the second at the end)::

    from _provenance import add_arguments, start_record    # benchmarks/ is on sys.path

    parser = argparse.ArgumentParser(...)
    add_arguments(parser)                                   # adds --publish
    args = parser.parse_args(argv)
    rec = start_record("rdm_speed", args, argv, seeds=args.seed,
                       depends_on=["rdl_neuro/rdm", "benchmarks/rdm_speed.py"])
    ...                                                     # the run
    rec.finish(table, result_line=line)                     # table: a DataFrame, cells formatted as shown

``start_record(..., quick_args=["--quick"])`` is for deterministic scripts: when a
full run is published, the script is run once more with ``quick_args`` (seconds)
and the digest of that quick run's exact numbers is stored as the record's
``fingerprint``. ``tests/test_results.py`` reruns the quick command whenever the
code a record depends on has changed since the record was made: the same
fingerprint means the change cannot have moved the numbers (a refactor); a
different one fails the suite until the full run is redone and published.
``finish(..., exact=frame)`` names the unrounded numbers the digest is taken of
(default: the table).

Records of timings (no ``quick_args``) are reported stale after a change to
their code but cannot be checked by a rerun.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rdl_neuro.provenance import dependency_files, environment, git_state, read_record, write_record

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_DIR = REPO_ROOT / "benchmarks" / "results"
PUBLISHED_REL = "benchmarks/results"
#: the code the transfer experiments (paper_mnist, paper_cifar100) depend on
TRANSFER_DEPENDS = ["rdl_neuro/train", "rdl_neuro/rdm", "rdl_neuro/model", "rdl_neuro/data",
                    "benchmarks/_experiments.py"]

__all__ = ["add_arguments", "start_record", "Recorder", "published_records", "stale_reasons", "run_quick",
           "check_record", "RecordCheck", "PUBLISHED_DIR", "TRANSFER_DEPENDS"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--publish`` (write the record to ``benchmarks/results/``) to a script's parser."""
    parser.add_argument("--publish", action="store_true",
                        help=f"write the result record to {PUBLISHED_REL}/ (committed; the README is made from it)")
    return parser


def _command(script: str, argv: Sequence[str]) -> str:
    shown = [a for a in argv if a != "--publish"]  # where the record goes does not change the numbers
    return " ".join(["python", f"benchmarks/{script}", *(shlex.quote(a) for a in shown)])


@dataclass
class Recorder:
    """A run in progress: what was known when it started. Made by :func:`start_record`."""

    name: str
    script: str
    command: str
    folder: Path
    publish: bool
    seeds: Any
    depends_on: list[str]
    quick_args: list[str] | None
    git: dict[str, Any]
    dependency_digests: dict[str, str]
    started_utc: str
    t0: float = field(default_factory=time.perf_counter)

    def finish(self, table: pd.DataFrame, *, result_line: str | None = None, values: Mapping[str, Any] | None = None,
               exact: pd.DataFrame | None = None, notes: str = "", title: str | None = None,
               seeds: Any = None) -> Path:
        """Write the record (and, when publishing a full run with ``quick_args``, its fingerprint); returns the .md path."""
        wall = time.perf_counter() - self.t0
        quick = None
        fingerprint = None
        if self.quick_args is not None:
            quick = ["python", f"benchmarks/{self.script}", *self.quick_args, "--out", "{out}"]
            if self.publish:
                print(f"[{self.name}] fingerprint: running {' '.join(quick)} ...", flush=True)
                fingerprint = run_quick(quick, self.name)
        path = write_record(self.folder, self.name, title=title or self.name, command=self.command, table=table,
                            result_line=result_line, values=values, seeds=self.seeds if seeds is None else seeds,
                            wall_s=wall, exact=exact, notes=notes, git=self.git, depends_on=self.depends_on,
                            dependency_digests=self.dependency_digests, quick_command=quick,
                            fingerprint=fingerprint, started_utc=self.started_utc)
        print(f"[{self.name}] result record: {path} (+ .csv)", flush=True)
        return path


def start_record(name: str, args: argparse.Namespace, argv: Sequence[str] | None = None, *, seeds: Any = None,
                 depends_on: Sequence[str] = (), quick_args: Sequence[str] | None = None,
                 script: str | None = None) -> Recorder:
    """Begin the record of a run: the command, commit, clean-tree flag and code digests, now.

    Parameters
    ----------
    name : str
        Record name (``benchmarks/results/<name>.md``).
    args : argparse.Namespace
        The parsed arguments; ``args.publish`` and ``args.out`` (if present) choose the folder.
    argv : list of str, optional
        The arguments as given (default ``sys.argv[1:]``); they make the recorded command.
    seeds : any JSON-able
        The seeds of the run.
    depends_on : list of str
        Files and folders (relative to the repository) whose changes can alter the numbers.
    quick_args : list of str, optional
        Arguments of the script's fast deterministic mode (e.g. ``["--quick"]``); see the module docstring.
    script : str, optional
        File name of the script in ``benchmarks/`` (default: ``<name>.py``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    script = script or f"{name}.py"
    publish = bool(getattr(args, "publish", False))
    out = getattr(args, "out", None)
    folder = PUBLISHED_DIR if publish else (Path(out) / "records" if out else REPO_ROOT / "results" / "records")
    is_quick = bool(getattr(args, "quick", False))
    return Recorder(name=name, script=script, command=_command(script, argv), folder=folder, publish=publish,
                    seeds=seeds, depends_on=list(depends_on), quick_args=None if is_quick else (
                        list(quick_args) if quick_args is not None else None),
                    git=git_state(REPO_ROOT, ignore=[PUBLISHED_REL]),
                    dependency_digests=dependency_files(REPO_ROOT, depends_on),
                    started_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))


# --------------------------------------------------------------------------- #
# checking published records against today's code
# --------------------------------------------------------------------------- #
def published_records(folder: str | os.PathLike[str] = PUBLISHED_DIR) -> dict[str, dict[str, Any]]:
    """Every record in ``folder`` (default ``benchmarks/results/``): ``{name: read_record(...)}``."""
    return {p.stem: read_record(p) for p in sorted(Path(folder).glob("*.md"))}


def _last_change(path: str, root: str | os.PathLike[str] = REPO_ROOT) -> str:
    out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %cs %s", "--", path],
                         capture_output=True, text=True).stdout.strip()
    return f"last commit {out[:80]}" if out else "not committed yet"


def stale_reasons(record: Mapping[str, Any], root: str | os.PathLike[str] = REPO_ROOT) -> list[str]:
    """Why ``record`` may be out of date: one line per dependency file changed, added or removed since its run.

    Empty when the code it depends on is exactly as it was (content digests, so
    rebases and merges that leave the files alone do not count).
    """
    then = record.get("dependency_files") or {}
    now = dependency_files(root, record.get("depends_on") or [])
    commit = (record.get("commit") or "unknown")[:10]
    reasons = []
    for f in sorted(set(then) | set(now)):
        if f not in now:
            reasons.append(f"{f} removed since the record's run (commit {commit})")
        elif f not in then:
            reasons.append(f"{f} added since the record's run (commit {commit}); {_last_change(f, root)}")
        elif then[f] != now[f]:
            reasons.append(f"{f} changed since the record's run (commit {commit}); {_last_change(f, root)}")
    return reasons


def run_quick(command: Sequence[str], name: str, env: Mapping[str, str] | None = None,
              timeout: float = 600, root: str | os.PathLike[str] = REPO_ROOT) -> str:
    """Run a record's quick command in a fresh folder and return the digest of the record it writes.

    ``command``: the record's ``quick_command`` (``"python"`` is this interpreter,
    ``"rdl-neuro"`` this package's CLI, ``"{out}"`` the fresh folder). The code is
    that of the checkout ``root`` (the working directory; ``PYTHONPATH`` starts with it).
    """
    with tempfile.TemporaryDirectory(prefix=f"quick_{name}_") as tmp:
        cmd = [str(c).replace("{out}", tmp) for c in command]
        if cmd[0] == "python":
            cmd[0] = sys.executable
        elif cmd[0] == "rdl-neuro":
            cmd[:1] = [sys.executable, "-m", "rdl_neuro"]
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = os.pathsep.join([str(root), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        full_env.setdefault("PYTHONHASHSEED", "0")
        full_env.setdefault("MPLBACKEND", "Agg")
        proc = subprocess.run(cmd, cwd=root, env=full_env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"quick run of {name} failed ({' '.join(command)}):\n{proc.stderr[-3000:]}")
        for path in sorted(Path(tmp).rglob(f"{name}.md")):  # a script's own report may share the name
            try:
                return read_record(path)["digest"]
            except ValueError:
                continue
        raise RuntimeError(f"quick run of {name} wrote no record {name}.md under its output folder")


@dataclass
class RecordCheck:
    """Outcome of :func:`check_record`: ``status`` is one of ``"current"`` (code unchanged),
    ``"refactored"`` (code changed, quick fingerprint equal), ``"changed"`` (fingerprint differs: rerun),
    ``"unverifiable"`` (code changed, no quick mode: e.g. timings)."""

    name: str
    status: str
    reasons: list[str]
    detail: str = ""

    @property
    def fails(self) -> bool:
        """True when the record's numbers no longer come from today's code."""
        return self.status == "changed"

    def __str__(self) -> str:
        head = f"{self.name}: {self.status}"
        if self.detail:
            head += f" ({self.detail})"
        return "\n    ".join([head, *self.reasons])


def rerun_hint(record: Mapping[str, Any]) -> str:
    """The commands that refresh ``record``: a benchmark script publishes itself (``--publish``); a
    command of the package (``rdl-neuro demo``) writes its record into its ``--out`` folder, which
    ``update_readme.py --publish`` copies into ``benchmarks/results/``."""
    command = record["command"]
    if command.startswith("python benchmarks/"):
        return f"`{command} --publish` and `python benchmarks/update_readme.py`"
    words = shlex.split(command)
    out = words[words.index("--out") + 1] if "--out" in words[:-1] else "."
    return f"`{command}` and `python benchmarks/update_readme.py --publish {out}/{record['name']}.md`"


def check_record(record: Mapping[str, Any], *, force_quick: bool = False,
                 root: str | os.PathLike[str] = REPO_ROOT) -> RecordCheck:
    """Is ``record`` current in the checkout ``root``? Reruns its quick mode only if its code changed
    (or ``force_quick``)."""
    name = record["name"]
    reasons = stale_reasons(record, root)
    if not reasons and not force_quick:
        return RecordCheck(name, "current", [])
    quick, expected = record.get("quick_command"), record.get("fingerprint")
    if not quick or not expected:
        return RecordCheck(name, "unverifiable", reasons, f"no quick fingerprint: rerun {rerun_hint(record)}")
    got = run_quick(quick, name, root=root)
    if got == expected:
        return RecordCheck(name, "refactored" if reasons else "current", reasons,
                           f"quick fingerprint {got} unchanged: the numbers cannot have moved")
    return RecordCheck(name, "changed", reasons,
                       f"quick fingerprint {got} != recorded {expected}: the numbers move; rerun {rerun_hint(record)}")


if __name__ == "__main__":  # pragma: no cover - a status report: python benchmarks/_provenance.py
    for rec in published_records().values():
        print(check_record(rec))
