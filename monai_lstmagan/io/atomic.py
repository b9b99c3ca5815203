"""Atomic file writes: a reader (or a killed process) never sees a half-written output.

Every file the package writes goes through here: checkpoints and ``model.pt`` (:func:`atomic_write`, via
``checkpoints.atomic_save``), the datalist, rewritten CSV logs, and super-resolved volumes, which may be
several files (``.mhd`` + ``.raw``; :func:`atomic_files`). The data goes to a temporary file in the
destination folder, is flushed to disk and then renamed over the destination (``os.replace``, atomic on
one file system). Finished files get the usual permissions (``0o666`` minus the umask), not the
``0o600`` of a temporary file.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

__all__ = ["atomic_write", "atomic_write_json", "atomic_files", "default_file_mode"]


@functools.lru_cache(maxsize=1)
def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` minus the process umask (read once)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temporary_in(folder: str, name: str, what: str) -> tuple[int, str]:
    try:
        os.makedirs(folder, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise type(e)(f"cannot write {what} '{os.path.join(folder, name)}': folder '{folder}' is not writable ({e}).") from e


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", newline: str | None = None, what: str = "file") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path``, on an error it is removed.

    Args:
        path: the destination; its folder is created if needed.
        mode: ``"wb"`` or ``"w"`` (text).
        newline: as for ``open`` in text mode (``""`` for the csv module).
        what: what the file is, for the error message when its folder cannot be written.

    Yields:
        the open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}.")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = _temporary_in(folder, os.path.basename(path), what)
    try:
        with os.fdopen(fd, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def atomic_write_json(obj: object, path: str | os.PathLike, what: str = "file") -> None:
    """``obj`` as indented JSON (with a final newline) at ``path``, written atomically (:func:`atomic_write`)."""
    with atomic_write(path, "w", what=what) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


@contextmanager
def atomic_files(output_dir: str, last: str | None = None, protected: Iterable[str] = ()) -> Iterator[str]:
    """A temporary folder inside ``output_dir`` whose files are moved into ``output_dir`` on a clean exit.

    For outputs made of several files, or written by libraries that need the final file name (nibabel and
    ITK choose the format from the suffix): write them into the yielded folder under their final names.

    Args:
        output_dir: the destination folder (must exist).
        last: the file moved last (a ``.mhd`` header after its ``.raw``: a visible header has its data).
        protected: real paths that must not be replaced (the inputs); nothing is moved if one would be.

    Yields:
        the temporary folder; it is removed afterwards, whatever happened.
    """
    tmp_dir = tempfile.mkdtemp(prefix=".lstmagan-", dir=output_dir)
    try:
        yield tmp_dir
        names = sorted(os.listdir(tmp_dir), key=lambda name: name == last)
        protected = {os.path.realpath(p) for p in protected}
        for name in names:
            destination = os.path.realpath(os.path.join(output_dir, name))
            if destination in protected:
                raise ValueError(f"refusing to overwrite the input file '{destination}'.")
        for name in names:
            os.chmod(os.path.join(tmp_dir, name), default_file_mode())
            os.replace(os.path.join(tmp_dir, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
