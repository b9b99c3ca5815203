"""Training-time augmentation for generators that meet scans unlike the training scans (issue 26).

Real scans vary in what two training scans cannot show: pixel size, MR contrast and normalisation, bias fields,
the orientation of the anatomy in the crop, and the integer storage of the low-resolution file. Two seeded
transforms, applied to a training sample (``"hr"`` / ``"mask"`` ``[T, 1, H, W]`` in [0, 1]) by
:func:`~monai_lstmagan.transforms.in_plane.sample_transforms` when given :class:`AugmentationSettings`:

- :class:`RandSliceAugmentd`, on the HR slices (so the LR follows): a random 90-degree rotation, a zoom that
  changes the pixel size (a window of ``crop * zoom`` pixels resampled to the crop, antialiased bicubic), and
  intensity changes (gamma, a random window remap with clamping, a smooth multiplicative bias field);
- :class:`RandStoredLevelsd`, on the LR slices: rounding to a number of stored levels (a uint8 file: 256 levels
  over the range; an int16 CT in its 1400 HU window: 1400), and optional Gaussian noise.

All randomness comes from each transform's ``R`` (MONAI ``Randomizable``), so the per-iteration seeding of
:mod:`monai_lstmagan.data.datasets` makes the samples reproducible. With the default settings (all off) no
transform is added and training is bit-identical to training without augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, Randomizable

__all__ = ["AugmentationSettings", "RandSliceAugmentd", "RandStoredLevelsd", "augmentation_settings"]


@dataclass(frozen=True)
class AugmentationSettings:
    """Probabilities and ranges of the training augmentation; every probability 0 (the default) = off.

    Attributes:
        rotate_prob: probability of a random 90/180/270-degree in-plane rotation (square crops only).
        zoom_prob: probability of changing the pixel size by a factor drawn log-uniformly from ``zoom_range``
            (> 1: coarser pixels, < 1: finer).
        zoom_range: ``(low, high)`` pixel-size factors.
        gamma_prob: probability of ``x ** gamma`` with gamma log-uniform in ``gamma_range``.
        gamma_range: ``(low, high)``.
        window_prob: probability of remapping ``[a, b] -> [0, 1]`` (clamped), ``a`` uniform in ``window_low``,
            ``b`` in ``window_high``: other normalisation windows and percentiles.
        window_low, window_high: ranges of ``a`` and ``b``.
        bias_prob: probability of a smooth multiplicative field ``1 + quadratic(u, v)`` over the crop.
        bias_strength: largest coefficient of the field's terms.
        levels_prob: probability of rounding the LR to ``L - 1`` steps over [0, 1], ``L`` drawn from ``levels``.
        levels: numbers of stored levels to draw from.
        noise_prob: probability of Gaussian noise on the LR, sigma uniform in ``(0, noise_sigma)``.
        noise_sigma: largest noise sigma (in the [0, 1] range).
    """

    rotate_prob: float = 0.0
    zoom_prob: float = 0.0
    zoom_range: tuple[float, float] = (0.75, 1.33)
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.4)
    window_prob: float = 0.0
    window_low: tuple[float, float] = (-0.1, 0.15)
    window_high: tuple[float, float] = (0.8, 1.1)
    bias_prob: float = 0.0
    bias_strength: float = 0.1
    levels_prob: float = 0.0
    levels: tuple[int, ...] = (256, 1400, 4096)
    noise_prob: float = 0.0
    noise_sigma: float = 0.01

    def __post_init__(self) -> None:
        for field in fields(self):
            if field.name.endswith("_prob") and not 0.0 <= getattr(self, field.name) <= 1.0:
                raise ValueError(f"{field.name} must be in [0, 1], got {getattr(self, field.name)}.")
        if not 0 < self.zoom_range[0] <= self.zoom_range[1] or not 0 < self.gamma_range[0] <= self.gamma_range[1]:
            raise ValueError(f"zoom_range and gamma_range must be 0 < low <= high, got {self.zoom_range}, "
                             f"{self.gamma_range}.")  # fmt: skip
        if min(self.levels) < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}.")

    @property
    def on_hr(self) -> bool:
        """Whether :class:`RandSliceAugmentd` has anything to do."""
        return max(self.rotate_prob, self.zoom_prob, self.gamma_prob, self.window_prob, self.bias_prob) > 0

    @property
    def on_lr(self) -> bool:
        """Whether :class:`RandStoredLevelsd` has anything to do."""
        return max(self.levels_prob, self.noise_prob) > 0

    def source_crop(self, crop: Sequence[int], scale: int) -> tuple[int, int]:
        """The HR crop to sample so that a zoom up to ``zoom_range[1]`` fits in it (a multiple of ``scale``)."""
        if self.zoom_prob == 0:
            return tuple(int(c) for c in crop)
        return tuple(int(math.ceil(c * max(1.0, self.zoom_range[1]) / scale) * scale) for c in crop)


def augmentation_settings(settings: AugmentationSettings | Mapping | None) -> AugmentationSettings:
    """``settings`` as :class:`AugmentationSettings` (a dict from a config, None: all off)."""
    if settings is None:
        return AugmentationSettings()
    if isinstance(settings, AugmentationSettings):
        return settings
    return AugmentationSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in dict(settings).items()})


def _log_uniform(rng, bounds: Sequence[float]) -> float:
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


class RandSliceAugmentd(Randomizable, MapTransform):
    """Rotation, pixel-size zoom and intensity changes of a training sample's HR slices (and the same geometry for
    the mask): ``"hr"``, ``"mask"`` ``[T, 1, H0, W0]`` -> ``[T, 1, H, W]`` with ``(H, W) = crop_size`` (the centre
    window of ``crop * zoom`` pixels of the source crop, resampled), values in [0, 1].

    Args:
        settings: the probabilities and ranges (:class:`AugmentationSettings`).
        crop_size: the output crop ``(H, W)``; the input crop must be at least ``crop * zoom_range[1]``.
        hr_key, mask_key: keys of the HR slices and the foreground mask.
    """

    def __init__(
        self, settings: AugmentationSettings, crop_size: Sequence[int], hr_key: str = "hr", mask_key: str = "mask"
    ) -> None:
        MapTransform.__init__(self, (hr_key, mask_key), allow_missing_keys=True)
        self.settings, self.crop = settings, (int(crop_size[0]), int(crop_size[1]))
        self.hr_key, self.mask_key = hr_key, mask_key

    def _window(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The centre ``size`` window of ``[..., H0, W0]``."""
        top, left = (image.shape[-2] - size[0]) // 2, (image.shape[-1] - size[1]) // 2
        return image[..., top : top + size[0], left : left + size[1]]

    def _geometry(self, image: torch.Tensor, zoom: float, turns: int, mask: bool) -> torch.Tensor:
        window = (min(image.shape[-2], round(self.crop[0] * zoom)), min(image.shape[-1], round(self.crop[1] * zoom)))
        image = self._window(image, window)
        if window != self.crop:
            flat = image.reshape(-1, 1, *window).float()
            if mask:
                flat = (F.interpolate(flat, size=self.crop, mode="bilinear", align_corners=False) >= 0.5).float()
            else:
                flat = F.interpolate(flat, size=self.crop, mode="bicubic", antialias=True, align_corners=False)
            image = flat.reshape(*image.shape[:-2], *self.crop)
        return torch.rot90(image, turns, dims=(-2, -1)) if turns else image

    def _bias_field(self, shape: Sequence[int]) -> torch.Tensor:
        """``[H, W]`` ``1 + c1 u + c2 v + c3 uv + c4 u^2 + c5 v^2`` (``u, v`` in [-1, 1]), at least 0.5."""
        c = self.R.uniform(-self.settings.bias_strength, self.settings.bias_strength, 5)
        u = torch.linspace(-1.0, 1.0, shape[0])[:, None]
        v = torch.linspace(-1.0, 1.0, shape[1])[None, :]
        return (1.0 + c[0] * u + c[1] * v + c[2] * u * v + c[3] * u * u + c[4] * v * v).clamp_min(0.5).float()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        s = self.settings
        zoom = _log_uniform(self.R, s.zoom_range) if self.R.rand() < s.zoom_prob else 1.0
        square = self.crop[0] == self.crop[1]
        turns = int(self.R.randint(1, 4)) if self.R.rand() < s.rotate_prob and square else 0
        hr = self._geometry(torch.as_tensor(d[self.hr_key]), zoom, turns, mask=False).clamp(0.0, 1.0)
        if self.mask_key in d:
            d[self.mask_key] = self._geometry(torch.as_tensor(d[self.mask_key]), zoom, turns, mask=True)
        if self.R.rand() < s.window_prob:
            low, high = self.R.uniform(*s.window_low), self.R.uniform(*s.window_high)
            hr = ((hr - low) / max(high - low, 1e-3)).clamp(0.0, 1.0)
        if self.R.rand() < s.gamma_prob:
            hr = hr.pow(_log_uniform(self.R, s.gamma_range))
        if self.R.rand() < s.bias_prob:
            hr = (hr * self._bias_field(hr.shape[-2:])).clamp(0.0, 1.0)
        d[self.hr_key] = hr.contiguous()
        return d


class RandStoredLevelsd(Randomizable, MapTransform):
    """The LR slices as a file stores them: ``"lr"`` ``[T, 1, h, w]`` in [0, 1] rounded to ``L - 1`` steps (``L``
    drawn from ``settings.levels``) with probability ``levels_prob``, then Gaussian noise with probability
    ``noise_prob``; clamped to [0, 1].

    Args:
        settings: :class:`AugmentationSettings`.
        lr_key: key of the LR slices.
    """

    def __init__(self, settings: AugmentationSettings, lr_key: str = "lr") -> None:
        MapTransform.__init__(self, lr_key)
        self.settings, self.lr_key = settings, lr_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        s = self.settings
        lr = torch.as_tensor(d[self.lr_key])
        if self.R.rand() < s.levels_prob:
            steps = float(s.levels[int(self.R.randint(len(s.levels)))] - 1)
            lr = torch.round(lr * steps) / steps
        if self.R.rand() < s.noise_prob:
            sigma = float(self.R.uniform(0.0, s.noise_sigma))
            noise = torch.from_numpy(self.R.standard_normal(tuple(lr.shape))).to(lr.dtype)
            lr = (lr + sigma * noise).clamp(0.0, 1.0)
        d[self.lr_key] = lr
        return d
