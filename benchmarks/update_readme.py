"""Regenerate every published number in the README, docs and notebooks from the committed result records.

Numbers that the Markdown files of this repository quote live between marker comments::

    <!-- result paper_mnist:table -->
    ...generated: the record's table...
    <!-- /result -->

    RDL beats the baseline by <!-- result paper_mnist:rdl_gain_range -->1.9–4.6<!-- /result --> points.

``NAME`` is a record in ``benchmarks/results/`` (``NAME.md`` + ``NAME.csv``, written
by the scripts through ``benchmarks/_provenance.py``); ``KEY`` is one of

- ``table``: the record's table (markdown);
- ``result_line``: its ``RESULT ...`` line in a code block;
- ``command``: the command that made it, in backticks;
- ``source``: a link to the record with its commit, date and wall time;
- any key of the record's ``values`` (a value with line breaks becomes a code block).

Every tracked or new (not ignored) ``*.md`` file and the markdown cells of every
``*.ipynb`` notebook are scanned, so a docs page or notebook quotes numbers the
same way. ``tests/test_results.py`` fails when a generated part differs from
what this script would write (e.g. a hand-edited number) or when a record is
older than code that changes its numbers.

Usage::

    python benchmarks/update_readme.py                  # rewrite the generated parts in place
    python benchmarks/update_readme.py --check          # list differences, exit 1 if any
    python benchmarks/update_readme.py --stale          # which records are stale and why (reruns quick modes)
    python benchmarks/update_readme.py --publish demo_out/demo.md   # copy a record into benchmarks/results/
                                                        # (adding its quick fingerprint), then regenerate
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import PUBLISHED_DIR, REPO_ROOT, check_record, published_records, run_quick  # noqa: E402

from rdl_neuro.provenance import markdown_table, read_record, record_paths, update_record  # noqa: E402

MARKER = re.compile(r"<!-- result (?P<name>[\w.+-]+):(?P<key>[\w.+-]+) -->(?P<body>.*?)<!-- /result -->", re.S)
OPEN = re.compile(r"<!-- result (?P<spec>[^>]*?) ?-->")
SKIP_PARTS = {".git", "results", "runs", "demo_out", "build", "dist", "node_modules", ".ipynb_checkpoints"}


class MarkerError(ValueError):
    """A marker that names no record or key, or is not closed; the message names file and line."""


# --------------------------------------------------------------------------- #
# rendering
# --------------------------------------------------------------------------- #
def render(record: Mapping[str, Any], key: str, doc: Path | None = None) -> str:
    """The text a marker ``<!-- result NAME:KEY -->`` stands for (see the module docstring)."""
    if key == "table":
        return markdown_table(record["table"])
    if key == "result_line":
        if not record.get("result_line"):
            raise KeyError("result_line")
        return f"```\n{record['result_line']}\n```"
    if key == "command":
        return f"`{record['command']}`"
    if key == "source":
        path = Path(record["path"]).resolve()
        shown = path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else path.as_posix()
        link = Path(os.path.relpath(path, doc.resolve().parent if doc else REPO_ROOT)).as_posix()
        commit = (record.get("commit") or "unknown")[:7]
        tree = {True: "clean tree", False: "uncommitted changes", None: "no git"}[record.get("clean")]
        wall = record.get("wall_s")
        wall_text = "" if wall is None else (f", {wall / 60:.0f} min" if wall >= 120 else f", {wall:.0f} s")
        date = (record.get("started_utc") or record.get("written_utc") or "")[:10]
        load = (record.get("machine") or {}).get("loadavg_1m")
        load_text = "" if load is None else f", load {load:.0f} on {record['machine'].get('cpus')} CPUs"
        return f"record [`{shown}`]({link}): commit `{commit}` ({tree}), {date}{wall_text}{load_text}"
    values = record.get("values") or {}
    if key not in values:
        raise KeyError(key)
    value = values[key]
    return f"```\n{value.strip(chr(10))}\n```" if "\n" in value else value


def _body(text: str) -> str:
    """Marker content: block (own lines) for multi-line text, inline otherwise."""
    return f"\n{text}\n" if "\n" in text else text


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def regenerate_text(text: str, records: Mapping[str, Mapping[str, Any]], where: str = "<text>",
                    doc: Path | None = None) -> tuple[str, list[str]]:
    """``text`` with every marker's body regenerated, and one message per body that changed.

    Raises :class:`MarkerError` for a marker without its ``<!-- /result -->`` or naming
    an unknown record or key.
    """
    for m in MARKER.finditer(text):
        if OPEN.search(m.group("body")):
            raise MarkerError(f"{where}:{_line(text, m.start())}: a '<!-- result NAME:KEY -->' marker without its "
                              "'<!-- /result -->' before the next marker")
    n_open = len(OPEN.findall(text))
    if n_open != len(MARKER.findall(text)) or text.count("<!-- /result -->") != n_open:
        spans = {m.start() for m in MARKER.finditer(text)}
        bad = [m for m in OPEN.finditer(text) if m.start() not in spans]
        at = f"{where}:{_line(text, bad[0].start())}: " if bad else f"{where}: "
        raise MarkerError(at + "a '<!-- result NAME:KEY -->' marker without its '<!-- /result -->' (or a "
                          "malformed marker)")
    changes: list[str] = []

    def replace(m: re.Match[str]) -> str:
        name, key = m.group("name"), m.group("key")
        at = f"{where}:{_line(text, m.start())}"
        if name not in records:
            raise MarkerError(f"{at}: no record {name!r} in {PUBLISHED_DIR.relative_to(REPO_ROOT)}/ "
                              f"(records: {', '.join(sorted(records)) or 'none'})")
        try:
            new = _body(render(records[name], key, doc))
        except KeyError:
            keys = ["table", "command", "source"] + (["result_line"] if records[name].get("result_line") else [])
            keys += sorted(records[name].get("values") or {})
            raise MarkerError(f"{at}: record {name!r} has no {key!r} (keys: {', '.join(keys)})") from None
        if new != m.group("body"):
            old_lines, new_lines = m.group("body").strip().splitlines(), new.strip().splitlines()
            first = next((i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b),
                         min(len(old_lines), len(new_lines)))
            shown = (old_lines[first] if first < len(old_lines) else "(nothing)",
                     new_lines[first] if first < len(new_lines) else "(nothing)")
            changes.append(f"{at}: {name}:{key} differs from the record {name}\n      here:   {shown[0]}\n"
                           f"      record: {shown[1]}")
        return f"<!-- result {name}:{key} -->{new}<!-- /result -->"

    return MARKER.sub(replace, text), changes


# --------------------------------------------------------------------------- #
# files
# --------------------------------------------------------------------------- #
def documents(root: Path = REPO_ROOT) -> list[Path]:
    """The Markdown files and notebooks that may quote results (tracked or new, not ignored)."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard",
                          "*.md", "*.ipynb"], capture_output=True, text=True)
    if out.returncode == 0:
        files = [root / f for f in sorted(set(out.stdout.splitlines()))]
    else:  # not a git checkout
        files = sorted(p for ext in ("*.md", "*.ipynb") for p in root.rglob(ext))
    published = PUBLISHED_DIR.resolve()
    return [f for f in files if f.is_file() and not f.resolve().is_relative_to(published)
            and not SKIP_PARTS & set(f.relative_to(root).parts[:-1])]


@dataclass
class DocumentUpdate:
    """One file's regenerated text (``new``) and what changed (``changes``)."""

    path: Path
    old: str
    new: str
    changes: list[str]


def regenerate_file(path: Path, records: Mapping[str, Mapping[str, Any]], root: Path = REPO_ROOT) -> DocumentUpdate:
    """Regenerate one Markdown file or notebook (its markdown cells) in memory."""
    old = path.read_text()
    where = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    if path.suffix != ".ipynb":
        new, changes = regenerate_text(old, records, where, path)
        return DocumentUpdate(path, old, new, changes)
    nb = json.loads(old)
    changes: list[str] = []
    for k, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "markdown":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if "<!-- result " not in src:
            continue
        text, cell_changes = regenerate_text(src, records, f"{where} (cell {k})", path)
        changes += cell_changes
        cell["source"] = text.splitlines(keepends=True)
    new = old if not changes else json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    return DocumentUpdate(path, old, new, changes)


def regenerate_all(root: Path = REPO_ROOT, records: Mapping[str, Mapping[str, Any]] | None = None,
                   write: bool = False) -> list[DocumentUpdate]:
    """Every document with a change (written back when ``write``)."""
    records = published_records() if records is None else records
    updates = [u for u in (regenerate_file(p, records, root) for p in documents(root)) if u.changes]
    if write:
        for u in updates:
            u.path.write_text(u.new)
    return updates


def publish(record_md: str | os.PathLike[str]) -> Path:
    """Copy a record (``.md`` + ``.csv``) into ``benchmarks/results/``, adding its quick fingerprint if missing."""
    rec = read_record(record_md)
    md_dst, csv_dst = record_paths(PUBLISHED_DIR, rec["name"])
    PUBLISHED_DIR.mkdir(parents=True, exist_ok=True)
    src_md, src_csv = Path(rec["path"]), Path(rec["path"]).with_name(rec["table_file"])
    if src_md.resolve() != md_dst.resolve():
        shutil.copyfile(src_md, md_dst)
        shutil.copyfile(src_csv, csv_dst)
    if rec.get("quick_command") and not rec.get("fingerprint"):
        print(f"fingerprint of {rec['name']}: {' '.join(rec['quick_command'])} ...", flush=True)
        update_record(md_dst, fingerprint=run_quick(rec["quick_command"], rec["name"]))
    return md_dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="only list differences; exit 1 if any")
    group.add_argument("--stale", action="store_true", help="report stale records (reruns quick modes where needed)")
    group.add_argument("--publish", type=Path, nargs="+", metavar="RECORD.md",
                       help="copy records into benchmarks/results/ (adding fingerprints), then regenerate")
    args = p.parse_args(argv)
    if args.stale:
        checks = [check_record(r) for r in published_records().values()]
        for c in checks:
            print(c)
        return 1 if any(c.fails for c in checks) else 0
    for path in args.publish or []:
        if not Path(path).is_file():
            print(f"error: no record file {path}", file=sys.stderr)
            return 2
        print(f"published {publish(path).relative_to(REPO_ROOT)}")
    try:
        updates = regenerate_all(write=not args.check)
    except MarkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for u in updates:
        for c in u.changes:
            print(c)
    if args.check:
        print(f"{len(updates)} file(s) out of date" if updates else "every generated part matches its record")
        return 1 if updates else 0
    print(f"rewrote {len(updates)} file(s): {', '.join(str(u.path.relative_to(REPO_ROOT)) for u in updates)}"
          if updates else "nothing to change")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
