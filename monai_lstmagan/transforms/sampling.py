"""Index windows and foreground-centred crops shared by the in-plane and through-plane samplers."""

from __future__ import annotations

import numpy as np
import torch
from monai.utils import convert_to_tensor

__all__ = ["reflected_window", "crop_window", "foreground_indices", "foreground_voxel", "as_stack"]


def reflected_window(size: int, length: int, start: int) -> np.ndarray:
    """Indices of ``length`` consecutive positions from ``start``; reflected (no edge repeat) past the ends."""
    index = np.arange(start, start + length)
    if size == 1:
        return np.zeros(length, dtype=np.int64)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index < size, index, period - index).astype(np.int64)


def crop_window(size: int, length: int, centre: int | None, rng: np.random.RandomState) -> np.ndarray:
    """Indices of a crop of ``length`` along an axis of ``size``: around ``centre`` (shifted inside), uniform
    when ``centre`` is None, reflected and centred when the axis is shorter than the crop."""
    if size < length:
        start = -((length - size) // 2)
    elif centre is None:
        start = int(rng.randint(0, size - length + 1))
    else:
        start = min(max(centre - length // 2, 0), size - length)
    return reflected_window(size, length, start)


def foreground_indices(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Flat indices of the foreground voxels of the first channel of ``mask`` ``[1, X, Y, Z]``.

    A prepared volume's mask (:class:`monai_lstmagan.data.cache.VolumeChannel`) gives its recorded indices.
    """
    if hasattr(mask, "foreground_indices"):
        return mask.foreground_indices()
    return np.flatnonzero(convert_to_tensor(mask, track_meta=False)[0].detach().cpu().numpy() > 0.5)


def foreground_voxel(
    mask: torch.Tensor | np.ndarray | None,
    probability: float,
    rng: np.random.RandomState,
    indices: np.ndarray | None = None,
) -> tuple[int, int, int] | None:
    """With ``probability``, a voxel ``(x, y, z)`` drawn uniformly from the first channel of ``mask``
    ``[1, X, Y, Z]``; None otherwise or for an empty / absent mask (the caller samples uniformly).
    ``indices``: the mask's :func:`foreground_indices`, when the caller draws several voxels of one mask."""
    if mask is None or probability == 0.0 or not rng.rand() < probability:
        return None
    voxels = foreground_indices(mask) if indices is None else indices
    if voxels.size == 0:
        return None
    index = np.unravel_index(int(voxels[rng.randint(0, voxels.size)]), tuple(mask.shape[1:]))
    return int(index[0]), int(index[1]), int(index[2])


def as_stack(volume: torch.Tensor, ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> torch.Tensor:
    """``[C, X, Y, Z]`` -> ``[len(iz), C, len(ix), len(iy)]`` plain float32 tensor.

    A prepared volume's channel (:class:`monai_lstmagan.data.cache.VolumeChannel`) reads only those slices.
    """
    if hasattr(volume, "stack"):
        return volume.stack(ix, iy, iz)
    v = convert_to_tensor(volume, track_meta=False)
    v = v[..., torch.as_tensor(iz)][:, torch.as_tensor(ix)][:, :, torch.as_tensor(iy)]
    return v.permute(3, 0, 1, 2).contiguous().float()
