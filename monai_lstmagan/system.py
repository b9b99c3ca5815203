"""What the machine leaves this process: available memory (``MemAvailable`` and the cgroup limits) and free disk.

Used by the checks made before any work (inference refuses a volume that cannot fit) and by the training data
path (``data_cache auto`` keeps the prepared volumes in RAM only when they fit in what is available).
"""

from __future__ import annotations

import os
import shutil

__all__ = ["available_memory", "free_disk", "format_bytes"]

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
