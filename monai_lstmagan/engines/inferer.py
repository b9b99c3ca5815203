"""The inferer of whole-volume validation and inference: a 2D network over a stack of slices, in chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer

__all__ = ["SliceStackInferer"]


class SliceStackInferer(Inferer):
    """Run a 2D network over a stack of slices in chunks, for whole-volume validation and inference.

    Args:
        slice_batch_size: number of slices per forward pass (bounds the memory).
        tile: when given, every chunk is super-resolved in in-plane tiles of ``tile x tile`` pixels blended with
            Gaussian weights (MONAI ``SlidingWindowInferer``, ``slice_batch_size`` tiles per forward pass), for
            very large slices; None: whole slices.
        tile_overlap: overlap of neighbouring tiles, as a fraction of the tile.

    ``inputs`` ``[B, T, C, h, w]`` (or ``[N, C, h, w]``) -> network output for every slice, with the
    same leading dims: ``[B, T, C', H, W]`` (or ``[N, C', H, W]``).
    """

    def __init__(self, slice_batch_size: int = 8, tile: int | None = None, tile_overlap: float = 0.25) -> None:
        super().__init__()
        if slice_batch_size < 1:
            raise ValueError(f"slice_batch_size must be >= 1, got {slice_batch_size}.")
        if tile is not None and (tile < 1 or not 0.0 <= tile_overlap < 1.0):
            raise ValueError(f"tile must be >= 1 and tile_overlap in [0, 1), got tile={tile}, {tile_overlap=}.")
        self.slice_batch_size = slice_batch_size
        self.tiles = None
        if tile is not None:
            self.tiles = SlidingWindowInferer(
                roi_size=(tile, tile), sw_batch_size=slice_batch_size, overlap=tile_overlap, mode="gaussian"
            )

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if inputs.ndim not in (4, 5):
            raise ValueError(f"SliceStackInferer expects [N, C, h, w] or [B, T, C, h, w], got {tuple(inputs.shape)}.")
        lead = inputs.shape[:-3]
        slices = inputs.reshape(-1, *inputs.shape[-3:])
        if self.tiles is None:
            outputs = [network(chunk, *args, **kwargs) for chunk in slices.split(self.slice_batch_size)]
        else:
            outputs = [self.tiles(chunk, network, *args, **kwargs) for chunk in slices.split(self.slice_batch_size)]
        outputs = torch.cat(outputs)
        return outputs.reshape(*lead, *outputs.shape[1:])
