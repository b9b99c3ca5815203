"""What the machine leaves this process: available memory (``MemAvailable`` and the cgroup limits) and free disk;
and how the C allocator of this process reuses memory (:func:`keep_freed_memory_for_reuse`).

Used by the checks made before any work (inference refuses a volume that cannot fit) and by the training data
path (``data_cache auto`` keeps the prepared volumes in RAM only when they fit in what is available).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys

__all__ = ["available_memory", "free_disk", "format_bytes", "keep_freed_memory_for_reuse"]

_CGROUP_ROOTS = (  # (mount point, limit file, usage file, memory.stat key of the reclaimable page cache)
    ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),  # v2 (unified)
    ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),  # v1
)
_NO_LIMIT = 1 << 60  # cgroup v1 "unlimited" is 2**63 rounded to pages; v2 writes "max"


def _read_number(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == key:
                    return int(fields[1])
    except (OSError, ValueError):
        pass
    return 0


def _own_cgroups() -> list[str]:
    """The cgroup paths of this process (``/proc/self/cgroup``: v2 ``0::/path``, v1 ``N:memory:/path``)."""
    paths = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "" or "memory" in controllers.split(","):
                    paths.append(path)
    except (OSError, ValueError):
        pass
    return paths


def _cgroup_available() -> int | None:
    """The least that a memory limit of this process' cgroups (and their parents) leaves: limit - usage +
    reclaimable page cache; None when no cgroup limits it."""
    least = None
    for root, limit_file, usage_file, stat_key in _CGROUP_ROOTS:
        for own in [*_own_cgroups(), "/"]:
            folder = os.path.normpath(os.path.join(root, own.lstrip("/")))
            while folder.startswith(root):
                limit = _read_number(os.path.join(folder, limit_file))
                usage = _read_number(os.path.join(folder, usage_file))
                if limit is not None and usage is not None and limit < _NO_LIMIT:
                    cache = _stat_value(os.path.join(folder, "memory.stat"), stat_key)
                    left = max(0, limit - usage + cache)
                    least = left if least is None else min(least, left)
                if folder == root:
                    break
                folder = os.path.dirname(folder)
    return least


def available_memory() -> tuple[int, str]:
    """``(bytes, where the number comes from)``: ``MemAvailable`` or, when lower, what a cgroup limit leaves."""
    meminfo = _stat_value("/proc/meminfo", "MemAvailable:") * 1024 or None
    cgroup = _cgroup_available()
    if cgroup is not None and (meminfo is None or cgroup < meminfo):
        return cgroup, "left by the cgroup memory limit"
    if meminfo is None:
        return 1 << 62, "unknown (no /proc/meminfo)"
    return meminfo, "MemAvailable"


def free_disk(folder: str) -> int:
    """Free bytes of the file system of ``folder`` (for this user)."""
    return shutil.disk_usage(folder).free


def format_bytes(count: float) -> str:
    """``1.6 GB``-style size (decimal units, as ``df -H``)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


#: glibc ``mallopt`` parameters (``malloc.h``) and the values :func:`keep_freed_memory_for_reuse` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 1 << 30  # blocks below 1 GiB come from the heap (glibc's own default tops out at 32 MiB)
_TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # the heap's free top is kept (up to 2 GiB) instead of returned to the OS
_allocator_tuned: bool | None = None


def keep_freed_memory_for_reuse() -> bool:
    """Let glibc's ``malloc`` reuse freed activation buffers instead of mapping fresh zeroed pages for each one.

    A generator's activations on a 512x512 slice are 16-200 MB each, above glibc's largest automatic mmap threshold
    (32 MiB): every one is a fresh ``mmap``, its pages are zero-filled by the kernel at first touch, and the block is
    unmapped when freed. Measured on this project's 2-core CPU, those page faults took more than half the time of
    a shipped x2 generator on a 512x512 slice (``docs/benchmark_inference.md``). With a 1 GiB mmap threshold and a
    2 GiB trim threshold the blocks come from the heap and are reused. The process keeps up to 2 GiB of freed heap
    until it exits, which suits a whole-volume inference or evaluation run. The peak resident memory of PyTorch's
    forward stayed where it was (x4 of a 512x512x200 CT: 1.73 GB), but buffers of other sizes allocated in between
    fragment the heap: ONNX Runtime's trunk with the x4 upsampler peaked at 2.1-2.4 GB, which is why ``auto`` runs
    x4 in PyTorch (:data:`~monai_lstmagan.inference.backends.ONNX_MAX_SCALE`). Called by
    :func:`~monai_lstmagan.inference.backends.slice_forward` on the CPU; once per process, later calls do nothing.

    Returns:
        whether the settings are in effect (``False`` on a C library other than glibc, e.g. musl or macOS).
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(None).mallopt
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _allocator_tuned = bool(
                    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                    and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
                )
            except (OSError, AttributeError):  # not glibc: no mallopt
                pass
    return _allocator_tuned
