"""Helpers shared by the handlers."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["is_main_process", "as_float"]


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0 (the process that writes files)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def as_float(value: Any) -> float:
    """A Python float of a number or a 0-dim tensor."""
    return float(value.item() if isinstance(value, torch.Tensor) else value)
