"""In-plane training and validation samples: axial slice sequences of a volume and their bicubic LR.

A slice stack is ``[Z, 1, X, Y]`` (slice index first, then channel); a training sample is a block of ``T``
consecutive axial slices ``[T, 1, H, W]``. The low-resolution image is made by
:func:`~monai_lstmagan.transforms.ops.bicubic_downsample`, the one operator used for training, evaluation
and (with :func:`~monai_lstmagan.transforms.ops.bicubic_upsample`) the bicubic baseline.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, Randomizable

from monai_lstmagan.transforms.augment import (
    AugmentationSettings,
    RandSliceAugmentd,
    RandStoredLevelsd,
    augmentation_settings,
)
from monai_lstmagan.transforms.intensity import source_name, volume_transforms
from monai_lstmagan.transforms.ops import bicubic_downsample
from monai_lstmagan.transforms.sampling import as_stack, crop_window, foreground_voxel

__all__ = [
    "RandSliceSequenced",
    "centre_crop_bounds",
    "SliceStackd",
    "MakeLowResolutiond",
    "sample_transforms",
    "train_transforms",
    "validation_transforms",
]


class RandSliceSequenced(Randomizable, MapTransform):
    """Random block of ``T`` consecutive axial slices with a random in-plane crop and flips.

    ``[C, X, Y, Z]`` volumes -> ``[T, C, H, W]`` slice sequences (plain float32 tensors), the same
    block, crop and flips for every key. The first key (the image) is written to ``hr_key`` and
    removed; the other keys (e.g. ``"mask"``) keep their names. A volume with fewer than ``T``
    slices, or smaller in-plane than the crop, is padded by reflection (no edge repeat, repeated
    reflection when needed), centred, instead of being dropped. Flips are along H and along W,
    each with probability ``prob_flip``.

    Where the anatomy is: with probability ``foreground_prob`` the crop (in-plane) and the slice block
    (along Z) are centred on a voxel drawn uniformly from the foreground mask ``mask_key`` (then shifted
    to lie inside the volume); otherwise, or when the mask is empty or absent, they are uniform over the
    volume. Most uniform crops of a head MR or chest CT are air, which teaches the generator nothing.

    Args:
        keys: image key first, then keys sliced the same way.
        num_slices: sequence length ``T`` (16: the LSTM discriminator's sequence).
        crop_size: in-plane crop ``(H, W)`` (an int means square).
        prob_flip: probability of each in-plane flip.
        hr_key: output key of the first key's slice sequence.
        foreground_prob: probability of centring a sample on a foreground voxel (0: uniform crops).
        mask_key: key of the foreground mask ``[1, X, Y, Z]`` used for that (e.g. :class:`ForegroundMaskd`'s).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        num_slices: int = 16,
        crop_size: int | Sequence[int] = (96, 96),
        prob_flip: float = 0.5,
        hr_key: str = "hr",
        foreground_prob: float = 0.9,
        mask_key: str = "mask",
    ) -> None:
        MapTransform.__init__(self, keys)
        self.num_slices = int(num_slices)
        self.crop_size = (
            (int(crop_size), int(crop_size)) if isinstance(crop_size, int) else tuple(int(c) for c in crop_size)
        )
        if self.num_slices < 1 or len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"num_slices and crop_size must be positive, got {num_slices} and {crop_size}.")
        if not 0.0 <= float(foreground_prob) <= 1.0:
            raise ValueError(f"foreground_prob must be in [0, 1], got {foreground_prob}.")
        self.prob_flip = float(prob_flip)
        self.hr_key = hr_key
        self.foreground_prob = float(foreground_prob)
        self.mask_key = mask_key

    def _axis(self, size: int, length: int, centre: int | None = None) -> np.ndarray:
        return crop_window(size, length, centre, self.R)

    def _foreground_centre(self, mask: torch.Tensor | np.ndarray | None) -> tuple[int, int, int] | None:
        """A voxel ``(x, y, z)`` drawn uniformly from the mask's first channel, or None (uniform sampling)."""
        return foreground_voxel(mask, self.foreground_prob, self.R)

    def randomize(
        self, shape: Sequence[int], mask: torch.Tensor | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw the in-plane crop, slice block and flips for a volume of spatial ``shape`` (X, Y, Z).

        ``mask`` ``[1, X, Y, Z]``: the foreground the sample is centred on with probability ``foreground_prob``.
        """
        centre = self._foreground_centre(mask)
        cx, cy, cz = centre if centre is not None else (None, None, None)
        ix = self._axis(shape[0], self.crop_size[0], cx)
        iy = self._axis(shape[1], self.crop_size[1], cy)
        iz = self._axis(shape[2], self.num_slices, cz)
        if self.R.rand() < self.prob_flip:
            ix = ix[::-1].copy()
        if self.R.rand() < self.prob_flip:
            iy = iy[::-1].copy()
        return ix, iy, iz

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        first = d[self.keys[0]]
        ix, iy, iz = self.randomize(first.shape[1:], d.get(self.mask_key))
        for key in self.key_iterator(d):
            d[key] = as_stack(d[key], ix, iy, iz)
        d[self.hr_key] = d.pop(self.keys[0])
        return d


def centre_crop_bounds(size: int, multiple: int) -> tuple[int, int]:
    """``(start, stop)`` of the centred crop of ``size`` voxels to the largest multiple of ``multiple``.

    The one crop rule of validation (:class:`SliceStackd`) and evaluation, so both score the same voxels.
    """
    kept = size - size % multiple
    start = (size - kept) // 2
    return start, start + kept


class SliceStackd(MapTransform):
    """Whole volume as a slice stack, centred in-plane crop to a multiple of ``multiple``.

    ``[C, X, Y, Z]`` -> ``[Z, C, X', Y']`` plain float32 tensors with ``X' = X - X % multiple``
    (same for Y). The first key is written to ``hr_key`` and removed; other keys keep their names.

    Args:
        keys: image key first, then keys stacked the same way.
        multiple: X' and Y' are multiples of it (the SR scale).
        hr_key: output key of the first key's stack.
    """

    def __init__(self, keys: KeysCollection = ("image", "mask"), multiple: int = 1, hr_key: str = "hr") -> None:
        super().__init__(keys)
        self.multiple = int(multiple)
        self.hr_key = hr_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        first = d[self.keys[0]]
        x, y, z = first.shape[1:]
        (x0, x1), (y0, y1) = centre_crop_bounds(x, self.multiple), centre_crop_bounds(y, self.multiple)
        if x1 == x0 or y1 == y0:
            raise ValueError(
                f"{source_name(first, str(self.keys[0]))}: in-plane size {x}x{y} "
                f"is smaller than the scale {self.multiple}."
            )
        ix, iy = np.arange(x0, x1), np.arange(y0, y1)
        iz = np.arange(z)
        for key in self.key_iterator(d):
            d[key] = as_stack(d[key], ix, iy, iz)
        d[self.hr_key] = d.pop(self.keys[0])
        return d


class MakeLowResolutiond(MapTransform):
    """Add the LR image: ``lr = clamp(bicubic_downsample(hr, scale), 0, 1)``.

    The clamp keeps LR in the normalised range, as a stored LR image has no bicubic overshoot.

    Args:
        hr_key: key of the HR slices ``[..., H, W]`` in [0, 1], H and W divisible by ``scale``.
        lr_key: output key, ``[..., H / scale, W / scale]``.
        scale: downsampling factor.
    """

    def __init__(self, hr_key: str = "hr", lr_key: str = "lr", scale: int = 2) -> None:
        super().__init__(hr_key)
        self.hr_key, self.lr_key, self.scale = hr_key, lr_key, scale

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        d[self.lr_key] = bicubic_downsample(d[self.hr_key], self.scale).clamp(0.0, 1.0)
        return d


def sample_transforms(
    scale: int,
    num_slices: int = 16,
    crop_size: int | Sequence[int] = 96,
    foreground_prob: float = 0.9,
    augment: AugmentationSettings | Mapping | None = None,
) -> Compose:
    """The random part of :func:`train_transforms`, for volumes prepared once (:mod:`monai_lstmagan.data.cache`).

    Input ``"image"`` and ``"mask"`` ``[1, X, Y, Z]`` (tensors, or a prepared volume's channels); output as
    :func:`train_transforms`. Args as :func:`train_transforms`, plus ``augment``: the training augmentation
    (:class:`~monai_lstmagan.transforms.augment.AugmentationSettings` or its fields as a dict; None: none, the
    samples of an unaugmented training).
    """
    crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if crop[0] % scale or crop[1] % scale:
        raise ValueError(f"crop_size {crop} must be divisible by the scale {scale}.")
    settings = augmentation_settings(augment)
    return Compose(
        [
            RandSliceSequenced(
                ("image", "mask"), num_slices=num_slices, crop_size=settings.source_crop(crop, scale),
                foreground_prob=foreground_prob,
            ),
            *([RandSliceAugmentd(settings, crop)] if settings.on_hr else []),
            MakeLowResolutiond("hr", "lr", scale=scale),
            *([RandStoredLevelsd(settings)] if settings.on_lr else []),
        ]
    )  # fmt: skip


def train_transforms(
    scale: int,
    num_slices: int = 16,
    crop_size: int | Sequence[int] = 96,
    modality: str = "auto",
    foreground_prob: float = 0.9,
) -> Compose:
    """Training samples: random T-slice blocks with a random crop and flips, and their bicubic LR.

    Output ``"hr"`` ``[T, 1, H, W]``, ``"lr"`` ``[T, 1, H/s, W/s]``, ``"mask"`` ``[T, 1, H, W]``
    (float32 in [0, 1]); batched by a DataLoader: ``[B, T, 1, H, W]``.

    Args:
        scale: SR factor; the crop must be divisible by it.
        num_slices: sequence length T.
        crop_size: HR in-plane crop (H, W) or an int for a square.
        modality: as in :func:`volume_transforms`.
        foreground_prob: probability of centring a sample on a foreground voxel (see :class:`RandSliceSequenced`).
    """
    sampling = sample_transforms(scale, num_slices=num_slices, crop_size=crop_size, foreground_prob=foreground_prob)
    return Compose([*volume_transforms(modality).transforms, *sampling.transforms])


def validation_transforms(scale: int, modality: str = "auto") -> Compose:
    """Whole volumes as slice stacks with their bicubic LR, for validation and evaluation.

    Output ``"hr"`` ``[Z, 1, X', Y']``, ``"lr"`` ``[Z, 1, X'/s, Y'/s]``, ``"mask"`` ``[Z, 1, X', Y']``
    with X', Y' the centred crop of X, Y to multiples of ``scale``; batched (batch size 1): ``[1, Z, 1, H, W]``.

    Args:
        scale: SR factor.
        modality: as in :func:`volume_transforms`.
    """
    return Compose(
        [
            *volume_transforms(modality).transforms,
            SliceStackd(("image", "mask"), multiple=scale),
            MakeLowResolutiond("hr", "lr", scale=scale),
        ]
    )
