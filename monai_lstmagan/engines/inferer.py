"""The inferer of whole-volume validation: a 2D network over a stack of slices, in chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["SliceStackInferer"]


class SliceStackInferer(Inferer):
    """Run a 2D network over a stack of slices in chunks, for whole-volume validation.

    Args:
        slice_batch_size: number of slices per forward pass (bounds the memory).

    ``inputs`` ``[B, T, C, h, w]`` (or ``[N, C, h, w]``) -> network output for every slice, with the
    same leading dims: ``[B, T, C', H, W]`` (or ``[N, C', H, W]``).
    """

    def __init__(self, slice_batch_size: int = 8) -> None:
        super().__init__()
        if slice_batch_size < 1:
            raise ValueError(f"slice_batch_size must be >= 1, got {slice_batch_size}.")
        self.slice_batch_size = slice_batch_size

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if inputs.ndim not in (4, 5):
            raise ValueError(f"SliceStackInferer expects [N, C, h, w] or [B, T, C, h, w], got {tuple(inputs.shape)}.")
        lead = inputs.shape[:-3]
        slices = inputs.reshape(-1, *inputs.shape[-3:])
        outputs = torch.cat([network(chunk, *args, **kwargs) for chunk in slices.split(self.slice_batch_size)])
        return outputs.reshape(*lead, *outputs.shape[1:])
