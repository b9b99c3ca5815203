"""Datasets over prepared volumes (:mod:`monai_lstmagan.data.cache`): random training samples and validation
slice chunks, neither holding more than the slices it reads.

A training index is a plain ``int`` or, from :class:`monai_lstmagan.reproducible.IterationBatchSampler`, a
``(index, seed, first)`` triple: the first sample of a batch seeds the random transforms with the iteration's
seed, so iteration ``i``'s crops depend on ``(seed, rank, i)`` only, in the main process or in any DataLoader
worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import Dataset

from monai_lstmagan.data.cache import CorruptCacheEntryError, PreparedVolume, apply_sample_transforms, rebuild
from monai_lstmagan.transforms.in_plane import centre_crop_bounds
from monai_lstmagan.transforms.ops import bicubic_downsample

__all__ = ["SliceSampleDataset", "ValidationChunkDataset"]

logger = logging.getLogger(__name__)


def _corrupt_entry(error: BaseException) -> CorruptCacheEntryError | None:
    """The :class:`CorruptCacheEntryError` behind ``error`` (MONAI wraps a transform's error in a RuntimeError)."""
    while error is not None:
        if isinstance(error, CorruptCacheEntryError):
            return error
        error = error.__cause__
    return None


class _RebuildingVolumes:
    """The prepared volumes of a dataset; a corrupt disk entry is rebuilt from its source once, then used.

    ``before_retry`` (if given) runs before the second call, e.g. to restore the random state of the first.
    """

    def __init__(self, volumes: Sequence[PreparedVolume]) -> None:
        self.volumes = list(volumes)

    def call(self, index: int, function, before_retry=None):
        try:
            return function(self.volumes[index])
        except Exception as e:
            corrupt = _corrupt_entry(e)
            if corrupt is None:
                raise
            logger.warning("%s", corrupt)
            self.volumes[index] = rebuild(self.volumes[index])
            if before_retry is not None:
                before_retry()
            return function(self.volumes[index])


def _random_states(transforms: Compose) -> list:
    """The RandomState of ``transforms`` and of each of its random transforms, to draw the same numbers again."""
    owners = [transforms, *transforms.transforms]
    return [(t, t.R.get_state()) for t in owners if hasattr(t, "R")]


class SliceSampleDataset(Dataset):
    """``samples_per_volume`` random slice-sequence samples of every prepared volume per epoch.

    Index ``k`` draws a sample of volume ``k % len(volumes)`` (the order of ``Subset(CacheDataset, range(n) *
    samples_per_volume)``) with ``transforms`` (e.g. :func:`~monai_lstmagan.transforms.in_plane.sample_transforms`:
    ``"hr"`` ``[T, 1, H, W]``, ``"lr"``, ``"mask"``).

    Args:
        volumes: the prepared volumes (:func:`~monai_lstmagan.data.cache.prepare_volumes`).
        transforms: the random sample transforms (a MONAI ``Compose``).
        samples_per_volume: samples of each volume per epoch.
        items: the datalist items of the volumes (their other keys, e.g. ``"patient"``, go into the sample).
    """

    def __init__(
        self,
        volumes: Sequence[PreparedVolume],
        transforms: Compose,
        samples_per_volume: int = 1,
        items: Sequence[dict] | None = None,
    ) -> None:
        self.volumes = _RebuildingVolumes(volumes)
        self.transforms = transforms
        self.samples_per_volume = int(samples_per_volume)
        self.items = [dict(i) for i in items] if items is not None else [{} for _ in volumes]
        for item in self.items:
            item.pop("image", None)

    def __len__(self) -> int:
        return len(self.volumes.volumes) * self.samples_per_volume

    def __getitem__(self, index) -> dict:
        if isinstance(index, (tuple, list)):
            index, seed, first = index
            if first:
                self.transforms.set_random_state(seed=int(seed))
        volume = int(index) % len(self.volumes.volumes)
        states = _random_states(self.transforms)

        def sample(prepared: PreparedVolume) -> dict:
            return apply_sample_transforms(self.transforms, prepared, self.items[volume])

        def same_draws() -> None:  # the retry on the rebuilt entry draws the same crop
            for owner, state in states:
                owner.R.set_state(state)

        return self.volumes.call(volume, sample, before_retry=same_draws)


class ValidationChunkDataset(Dataset):
    """Whole validation volumes as consecutive chunks of at most ``chunk_slices`` axial slices.

    Item ``k``: ``"hr"`` ``[n, 1, X', Y']`` normalised slices (the centred in-plane crop to multiples of
    ``scale``, as :class:`~monai_lstmagan.transforms.in_plane.SliceStackd`), ``"lr"`` their bicubic LR
    (:func:`~monai_lstmagan.transforms.ops.bicubic_downsample`, clamped to [0, 1]), ``"mask"``, and
    ``"volume"`` (the volume's number) and ``"last"`` (the volume's last chunk), for
    :class:`~monai_lstmagan.handlers.metrics.StreamingVolumeMetrics`. Only one chunk is in memory at a time.

    Args:
        volumes: the prepared validation volumes.
        scale: the SR factor.
        chunk_slices: slices per item.
    """

    def __init__(self, volumes: Sequence[PreparedVolume], scale: int, chunk_slices: int = 32) -> None:
        self.volumes = _RebuildingVolumes(volumes)
        self.scale = int(scale)
        self.chunk_slices = int(chunk_slices)
        if self.chunk_slices < 1:
            raise ValueError(f"chunk_slices must be >= 1, got {chunk_slices}.")
        self.chunks = []
        for v, volume in enumerate(self.volumes.volumes):
            x, y, z = volume.shape
            if x < self.scale or y < self.scale:
                raise ValueError(f"{volume.source}: in-plane size {x}x{y} is smaller than the scale {self.scale}.")
            starts = list(range(0, z, self.chunk_slices))
            self.chunks += [(v, s, min(s + self.chunk_slices, z), s == starts[-1]) for s in starts]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> dict:
        v, z0, z1, last = self.chunks[index]

        def chunk(volume: PreparedVolume) -> tuple[torch.Tensor, torch.Tensor]:
            x, y, _ = volume.shape
            (x0, x1), (y0, y1) = centre_crop_bounds(x, self.scale), centre_crop_bounds(y, self.scale)
            return volume.stack(np.arange(x0, x1), np.arange(y0, y1), np.arange(z0, z1))

        hr, mask = self.volumes.call(v, chunk)
        lr = bicubic_downsample(hr, self.scale).clamp(0.0, 1.0)
        return {"hr": hr, "lr": lr, "mask": mask, "volume": v, "last": last}
