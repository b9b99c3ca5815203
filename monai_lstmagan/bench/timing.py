"""Timing primitives: device synchronisation, the summary of timed runs, the matmul GFLOP/s ceiling."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["matmul_gflops"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_summary(seconds: Sequence[float], items: float, unit: str) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {"seconds": list(seconds), "median_s": median, "min_s": min(seconds), f"{unit}_per_s": items / median}


def matmul_gflops(
    device: str | torch.device, size: int | None = None, dtype: torch.dtype = torch.float32, repeats: int = 10
) -> float:
    """GFLOP/s of a square ``size x size`` matmul, the best of ``repeats`` after one warm-up: a reference ceiling.

    Args:
        device: where to measure.
        size: matrix side; default 2048 on CPU, 8192 on CUDA.
        dtype: element type (on CUDA, float32 uses the current ``torch.get_float32_matmul_precision``).
        repeats: timed products.
    """
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.rand(size, size, generator=generator).to(device=device, dtype=dtype)
    times = []
    for index in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        if index:
            times.append(time.perf_counter() - start)
    return 2.0 * size**3 / min(times) / 1e9
