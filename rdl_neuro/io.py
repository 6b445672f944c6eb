"""Atomic file writes (``atomic_write_bytes``, ``atomic_torch_save``, ``atomic_write_csv``) and
``reading``, which names the file and what was expected when a file cannot be read.

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
import pickle
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    "UnreadableFileError",
    "reading",
]

#: marker in the names of temporary files (``.<name>.tmp-XXXXXXXX``)
TMP_INFIX = ".tmp-"


class UnreadableFileError(ValueError):
    """A file exists but cannot be read as what it should be (truncated, corrupt, another format).

    The message names the file and what was expected; ``path`` and ``expected``
    hold them, and the library's own error is chained as ``__cause__``.
    """

    def __init__(self, path: str | os.PathLike[str], expected: str, cause: BaseException) -> None:
        self.path, self.expected = Path(path), expected
        detail = str(cause).strip() or type(cause).__name__
        super().__init__(f"cannot read {self.path}: expected {expected} ({type(cause).__name__}: {detail})")


# what readers of damaged files raise: gzip/zlib (EOFError, BadGzipFile = OSError, zlib.error), zip
# (.npz), pickle, tar, struct, scipy.io (ValueError, OSError), nibabel (OSError, EOFError, ValueError)
_READ_ERRORS = (EOFError, OSError, ValueError, zlib.error, zipfile.BadZipFile, pickle.UnpicklingError,
                tarfile.TarError, struct.error, KeyError, IndexError, TypeError, AttributeError)


@contextmanager
def reading(path: str | os.PathLike[str], expected: str,
            also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Run a block that reads ``path``; the errors of damaged files become ``UnreadableFileError``.

    Errors whose message starts with the file's name (the readers' own
    checks, ``f"{path}: ..."``), and ``FileNotFoundError``, pass unchanged. ``also`` adds a reader's own
    exception types (e.g. nibabel's ``ImageFileError``).

    Examples
    --------
    >>> import gzip, tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "x.gz"
    >>> _ = bad.write_bytes(gzip.compress(b"0123456789")[:12])
    >>> with reading(bad, "a gzip file"):
    ...     gzip.open(bad).read()
    Traceback (most recent call last):
    ...
    rdl_neuro.io.UnreadableFileError: cannot read ...x.gz: expected a gzip file (EOFError: ...)
    """
    try:
        yield
    except _READ_ERRORS + also as err:
        if isinstance(err, (FileNotFoundError, UnreadableFileError)) or str(err).startswith(str(path)):
            raise
        raise UnreadableFileError(path, expected, err) from err


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_INFIX}", dir=path.parent)
    except OSError as err:
        # name the requested file, not the temporary one (or a parent) that the error mentions
        raise type(err)(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    if path.is_dir():
        os.close(fd)
        os.unlink(tmp)
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
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
