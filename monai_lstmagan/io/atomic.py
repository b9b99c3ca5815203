"""Atomic file writes: a reader (or a killed process) never sees a half-written output.

Every file the package writes goes through here: checkpoints and ``model.pt`` (:func:`atomic_write`, via
``checkpoints.atomic_save``), the datalist, rewritten CSV logs, and super-resolved volumes, which may be
several files (``.mhd`` + ``.raw``; :func:`atomic_files`). The data goes to a temporary file in the
destination folder, is flushed to disk and then renamed over the destination (``os.replace``, atomic on
one file system). Finished files get the usual permissions (``0o666`` minus the umask), not the
``0o600`` of a temporary file.

Interrupted writes: an error, Ctrl-C (``KeyboardInterrupt``) or a SIGTERM turned into an exception by the caller
removes the temporary file or folder; SIGINT/SIGTERM arriving while the finished files are renamed into place or
the temporary folder is removed are held until that is done. A process killed outright (SIGKILL, power loss)
cannot clean up: the temporary folders of :func:`atomic_files` are named ``.lstmagan-<host>-<pid>-<random>`` so
that :func:`remove_stale_temporaries` (called by :func:`monai_lstmagan.io.paths.check_output_dir` at the start of
every run) removes those whose process is gone. A write that fails (a full disk, a file size limit, an I/O error)
raises an ``OSError`` naming the destination.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

__all__ = [
    "TEMPORARY_PREFIX",
    "STALE_FOREIGN_SECONDS",
    "atomic_write",
    "atomic_write_json",
    "atomic_files",
    "remove_stale_temporaries",
    "default_file_mode",
    "temporary_folder",
]

#: How the temporary folders of :func:`atomic_files` start (the full name: ``.lstmagan-<host>-<pid>-<random>``).
TEMPORARY_PREFIX = ".lstmagan-"
#: Age after which a temporary folder of another host (or of an older version, without host and pid) is stale.
STALE_FOREIGN_SECONDS = 24 * 3600

_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32] or "host"
_OWN_TEMPORARY = re.compile(re.escape(TEMPORARY_PREFIX) + r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[^/]+")
_OLD_TEMPORARY = re.compile(re.escape(TEMPORARY_PREFIX) + r"[A-Za-z0-9_]{8}")  # mkdtemp's name before the pid


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(folder: str, started: float | None = None) -> list[str]:
    """Remove the temporary folders :func:`atomic_files` left in ``folder`` when its process was killed outright.

    Only folders of this tool are touched: a real folder (not a link) owned by the current user, whose name is
    ``.lstmagan-<host>-<pid>-<random>`` and which is older than ``started``, where ``host`` is this machine and
    ``pid`` no longer runs; or one of another host (or of an older version) older than
    :data:`STALE_FOREIGN_SECONDS`.

    Args:
        folder: the output folder.
        started: when the run began (``time.time()``; default now).

    Returns:
        the folders removed.
    """
    started = time.time() if started is None else started
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        own = _OWN_TEMPORARY.fullmatch(name)
        if not own and not _OLD_TEMPORARY.fullmatch(name):
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not os.path.isdir(path) or os.path.islink(path) or info.st_uid != os.geteuid() or info.st_mtime >= started:
            continue
        if own and own["host"] == _HOST:
            stale = not _process_alive(int(own["pid"]))
        else:
            stale = started - info.st_mtime > STALE_FOREIGN_SECONDS
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during a short step that must not stop half-way (renames, clean-up); they are
    delivered to the handlers of before when the step is done. Only the main thread handles signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(number)
        if handler is None:  # installed outside Python: left alone
            continue
        previous[number] = handler
        signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received:
            signal.raise_signal(number)


def _write_error(error: BaseException, destination: str, what: str) -> OSError:
    """An ``OSError`` (of the same kind, with the same ``errno``) saying which file could not be written."""
    text = str(error).strip()
    reason = getattr(error, "strerror", None) or (text.splitlines()[-1] if text else type(error).__name__)
    reason = re.sub(r"^(Reason|Description):\s*", "", reason)  # ITK's exception text
    if getattr(error, "errno", None) == errno.ENOSPC:
        reason = f"{reason} (the disk of '{os.path.dirname(destination)}' is full)"
    kind = type(error) if isinstance(error, OSError) else OSError
    try:
        new = kind(f"cannot write {what} '{destination}': {reason}")
    except TypeError:
        new = OSError(f"cannot write {what} '{destination}': {reason}")
    new.errno = getattr(error, "errno", None)
    return new


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
        raise type(e)(
            f"cannot write {what} '{os.path.join(folder, name)}': folder '{folder}' is not writable ({e})."
        ) from e


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", newline: str | None = None, what: str = "file"
) -> Iterator[IO]:
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
        try:
            with os.fdopen(fd, mode, newline=newline) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp_path, default_file_mode())
            os.replace(tmp_path, path)
        except OSError as e:
            raise _write_error(e, path, what) from e
    except BaseException:
        with _signals_held():
            if os.path.exists(tmp_path):
                os.remove(tmp_path)
        raise


def atomic_write_json(obj: object, path: str | os.PathLike, what: str = "file") -> None:
    """``obj`` as indented JSON (with a final newline) at ``path``, written atomically (:func:`atomic_write`)."""
    with atomic_write(path, "w", what=what) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def temporary_folder(folder: str) -> str:
    """A new temporary folder ``.lstmagan-<host>-<pid>-<random>`` in ``folder`` (the name
    :func:`remove_stale_temporaries` recognises once its process is gone); the caller renames or removes it."""
    return tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{_HOST}-{os.getpid()}-", dir=folder)


@contextmanager
def atomic_files(output_dir: str, last: str | None = None, protected: Iterable[str] = ()) -> Iterator[str]:
    """A temporary folder inside ``output_dir`` whose files are moved into ``output_dir`` on a clean exit.

    For outputs made of several files, or written by libraries that need the final file name (nibabel and
    ITK choose the format from the suffix): write them into the yielded folder under their final names. A folder
    written there (a DICOM series) is moved as a whole, replacing a folder of the same name (never one holding a
    ``protected`` file).

    Args:
        output_dir: the destination folder (must exist).
        last: the file moved last (a ``.mhd`` header after its ``.raw``: a visible header has its data); also the
            output named when a write fails.
        protected: real paths that must not be replaced (the inputs); nothing is moved if one would be.

    Yields:
        the temporary folder ``.lstmagan-<host>-<pid>-<random>``; it is removed afterwards, whatever happened.

    Raises:
        OSError: naming the output when writing it failed (``OSError`` of the writer, e.g. ENOSPC, or the
            ``RuntimeError`` of an ITK writer).
    """
    tmp_dir = temporary_folder(output_dir)
    destination = os.path.join(output_dir, last) if last else output_dir
    try:
        try:
            yield tmp_dir
        except (OSError, RuntimeError) as e:  # ITK reports a failed write as a RuntimeError
            raise _write_error(e, destination, "the output") from e
        names = sorted(os.listdir(tmp_dir), key=lambda name: name == last)
        protected = {os.path.realpath(p) for p in protected}
        for name in names:
            target = os.path.realpath(os.path.join(output_dir, name))
            inside = [p for p in protected if p.startswith(target + os.sep)]
            if target in protected or (os.path.isdir(target) and inside):
                raise ValueError(f"refusing to overwrite the input file '{(inside or [target])[0]}'.")
        with _signals_held():  # the files of one output appear together
            try:
                for name in names:
                    source, target = os.path.join(tmp_dir, name), os.path.join(output_dir, name)
                    if os.path.isdir(source):  # a folder output (a DICOM series): it replaces an earlier one whole
                        os.chmod(source, 0o777 & ~(0o666 & ~default_file_mode()))
                        if os.path.isdir(target) and not os.path.islink(target):
                            os.replace(target, os.path.join(tmp_dir, f".old-{name}"))
                    else:
                        os.chmod(source, default_file_mode())
                    os.replace(source, target)
            except OSError as e:
                raise _write_error(e, destination, "the output") from e
    finally:
        with _signals_held():
            shutil.rmtree(tmp_dir, ignore_errors=True)
