"""Atomic file writes: ``atomic_write_bytes``, ``atomic_torch_save``, ``atomic_write_csv``.

A file written here is either absent, or its old version, or its complete new
version -- never a partial one -- even when the process is killed with SIGKILL
in the middle of a write: the data go to a hidden temporary file in the same
folder (same file system, so the rename is atomic), are flushed and fsync'ed,
and only then renamed over the destination. A kill leaves at most a stale
temporary file named ``.<name>.tmp-<random>``; :func:`remove_stale_temporaries`
cleans those up (the trainer calls it when it starts).
"""
from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pandas as pd
import torch

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "atomic_write_csv",
    "remove_stale_temporaries",
    "TMP_INFIX",
]

#: marker in the names of temporary files (``.<name>.tmp-XXXXXXXX``)
TMP_INFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    # the rename itself is only durable once the directory entry is on disk
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, then rename it to ``path``.

    If ``write`` raises, the temporary file is removed and ``path`` is left as
    it was. Returns the destination as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_INFIX}", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)``, atomically.

    The object is serialised to memory first, so a failure while pickling
    never touches the file system.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_csv(df: pd.DataFrame, path: str | os.PathLike[str], *, index: bool = False) -> Path:
    """``df.to_csv(path, index=index)``, atomically."""
    return atomic_write_text(path, df.to_csv(index=index))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files left in ``folder`` by killed atomic writes; returns what was removed.

    Only call this when no other process writes into ``folder``.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.is_file() and p.name.startswith(".") and TMP_INFIX in p.name:
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:  # pragma: no cover - raced with another cleaner
                pass
    return removed
