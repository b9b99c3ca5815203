"""Peak memory of the measured work: the process' resident set (``VmHWM`` / sampled ``VmRSS``) and CUDA."""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["PeakMemoryTracker"]

_MIB = 1024.0 * 1024.0


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            match = re.search(rf"^{key}:\s+(\d+)\s+kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _release_free_heap() -> None:
    """Return the C allocator's free memory to the OS (glibc ``malloc_trim``), so that RSS counts live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (``VmHWM``) of this process; ``False`` if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class PeakMemoryTracker:
    """Peak resident set size of this process (and peak CUDA allocation) between ``start()`` and ``stop()``.

    The RSS peak is the kernel's ``VmHWM`` after a reset through ``/proc/self/clear_refs`` (method
    ``"VmHWM"``); where the reset is refused, a thread samples ``VmRSS`` every ``interval`` seconds (method
    ``"sampled VmRSS"``, may miss peaks shorter than the interval); without ``/proc`` (not Linux) the RSS
    values are ``None``.

    Args:
        device: the CUDA device whose ``max_memory_allocated`` is reported; ``None``/CPU: no CUDA numbers.
        interval: sampling period of the fallback thread, seconds.
    """

    def __init__(self, device: torch.device | None = None, interval: float = 1e-3) -> None:
        self.cuda_device = device if device is not None and device.type == "cuda" else None
        self.interval = interval
        self.method: str | None = None
        self._start_rss: int | None = None
        self._sampled_peak = 0
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop_sampling.wait(self.interval):
            self._sampled_peak = max(self._sampled_peak, _status_kib("VmRSS") or 0)

    def start(self) -> None:
        """Begin a measurement (resets the peaks)."""
        if self.cuda_device is not None:
            torch.cuda.synchronize(self.cuda_device)
            torch.cuda.reset_peak_memory_stats(self.cuda_device)
        _release_free_heap()
        self._start_rss = _status_kib("VmRSS")
        if self._start_rss is None:
            self.method = None
        elif _reset_peak_rss():
            self.method = "VmHWM"
        else:
            self.method = "sampled VmRSS"
            self._sampled_peak = self._start_rss
            self._stop_sampling.clear()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def stop(self) -> dict[str, float | str | None]:
        """End the measurement: ``{"peak_rss_mib", "rss_increase_mib", "peak_cuda_mib", "rss_method"}``.

        Values that cannot be measured here are ``None``.
        """
        peak_cuda = None
        if self.cuda_device is not None:
            torch.cuda.synchronize(self.cuda_device)
            peak_cuda = torch.cuda.max_memory_allocated(self.cuda_device) / _MIB
        peak_kib: int | None = None
        if self.method == "VmHWM":
            peak_kib = _status_kib("VmHWM")
        elif self.method == "sampled VmRSS" and self._sampler is not None:
            self._stop_sampling.set()
            self._sampler.join()
            self._sampler = None
            peak_kib = max(self._sampled_peak, _status_kib("VmRSS") or 0)
        return {
            "peak_rss_mib": None if peak_kib is None else peak_kib / 1024.0,
            "rss_increase_mib": (
                None if peak_kib is None or self._start_rss is None else (peak_kib - self._start_rss) / 1024.0
            ),
            "peak_cuda_mib": peak_cuda,
            "rss_method": self.method,
        }


def max_memory(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise maximum of :meth:`PeakMemoryTracker.stop` results (``None`` stays ``None``)."""
    merged: dict[str, Any] = {"rss_method": records[0]["rss_method"]}
    for key in ("peak_rss_mib", "rss_increase_mib", "peak_cuda_mib"):
        values = [r[key] for r in records if r[key] is not None]
        merged[key] = max(values) if values else None
    return merged
