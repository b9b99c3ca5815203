"""MONAI dictionary transforms that turn volume files into (LR, HR) axial slice sequences.

Axis convention: a volume is loaded channel-first and reoriented to RAS, so it is ``[1, X, Y, Z]``
with ``Z`` the axial (inferior -> superior) slice axis. A slice stack is ``[Z, 1, X, Y]`` (slice
index first, then channel); a training sample is a block of ``T`` consecutive axial slices
``[T, 1, H, W]``.

Intensities are mapped to [0, 1] with a fixed rule taken from the HR volume: CT by an HU window
(default -1000..400 HU), MR by the 0.5 / 99.5 percentiles of the foreground. The low-resolution
image is made by :func:`bicubic_downsample`, the one operator used for training, evaluation and
(with :func:`bicubic_upsample`) the bicubic baseline.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, MapTransform, Orientationd, Randomizable
from monai.utils import convert_to_dst_type, convert_to_tensor
from scipy import ndimage

from monai_lstmagan.networks.generator import bicubic_upsample_slices
from monai_lstmagan.slice_profile import PROFILES, interpolate_axis, simulate_thick_slices, thick_slice_pair
from monai_lstmagan.volumes import BadVolume, check_file, voxel_problem

__all__ = [
    "CT_WINDOW",
    "MR_PERCENTILES",
    "bicubic_downsample",
    "bicubic_upsample",
    "intensity_range",
    "LoadVolumed",
    "IntensityNormalizationd",
    "ForegroundMaskd",
    "RandSliceSequenced",
    "centre_crop_bounds",
    "SliceStackd",
    "MakeLowResolutiond",
    "volume_transforms",
    "train_transforms",
    "validation_transforms",
    "RandThroughPlanePairsd",
    "ThickSliceStackd",
    "through_plane_train_transforms",
    "through_plane_validation_transforms",
]

CT_WINDOW = (-1000.0, 400.0)
"""Default CT window in HU mapped to [0, 1]."""
MR_PERCENTILES = (0.5, 99.5)
"""Default MR foreground percentiles mapped to [0, 1]."""

_CT_AIR_HU = -500.0  # below: air; a volume with such voxels is CT in "auto" mode
_CT_BODY_HU = -950.0  # above: body incl. lung parenchyma (outside air is about -1000 HU)
_MR_HEAD_THRESHOLD = 0.05  # normalised MR intensity above which a voxel is head (air noise is below)


def _check_scale(image: torch.Tensor, scale: int, divisible: bool) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}.")
    if image.ndim < 2:
        raise ValueError(f"Expected an image [..., H, W], got shape {tuple(image.shape)}.")
    if not torch.is_floating_point(image):
        raise ValueError(f"Expected a floating point image, got {image.dtype}.")
    if divisible and (image.shape[-2] % scale or image.shape[-1] % scale):
        raise ValueError(
            f"Image size {tuple(image.shape[-2:])} is not divisible by the scale {scale}; crop it to a multiple first."
        )


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    lead = image.shape[:-2]
    flat = image.reshape(-1, 1, *image.shape[-2:])
    out = F.interpolate(flat, size=size, mode="bicubic", antialias=True, align_corners=False)
    return out.reshape(*lead, *size)


def bicubic_downsample(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling by an integer factor: ``[..., H, W] -> [..., H/s, W/s]``.

    The kernel is Keys' cubic convolution with ``a = -0.5`` (the kernel of MATLAB's ``imresize`` and
    PIL's ``BICUBIC``), stretched by the scale factor so that it spans ``4 * scale`` input pixels and
    acts as the low-pass (antialiasing) filter; pixel centres are aligned as ``align_corners=False``.
    This is ``torch.nn.functional.interpolate(mode="bicubic", antialias=True, align_corners=False)``
    applied to every 2D image of the leading dimensions. It is the one operator that makes the LR
    image for training and evaluation; no clamping is done here (see :class:`MakeLowResolutiond`).

    Args:
        image: float tensor ``[..., H, W]`` with ``H`` and ``W`` divisible by ``scale``.
        scale: integer downsampling factor (2, 4 or 8 in the paper).

    Returns:
        ``[..., H // scale, W // scale]``, same dtype and device.
    """
    _check_scale(image, scale, divisible=True)
    return _resize(image, (image.shape[-2] // scale, image.shape[-1] // scale))


def bicubic_upsample(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by an integer factor, the bicubic baseline: ``[..., h, w] -> [..., h*s, w*s]``.

    Same kernel as :func:`bicubic_downsample` (Keys cubic, ``a = -0.5``, ``align_corners=False``; when
    upsampling the kernel is not stretched). Values may overshoot the input range: callers clamp to [0, 1].

    Args:
        image: float tensor ``[..., h, w]``.
        scale: integer upsampling factor.

    Returns:
        ``[..., h * scale, w * scale]``.
    """
    _check_scale(image, scale, divisible=False)
    lead = image.shape[:-2]
    out = bicubic_upsample_slices(image.reshape(-1, 1, *image.shape[-2:]), scale)
    return out.reshape(*lead, *out.shape[-2:])


def _filename(image: torch.Tensor | np.ndarray, fallback: str = "<volume>") -> str:
    if isinstance(image, MetaTensor):
        return str(image.meta.get("filename_or_obj", fallback))
    return fallback


def intensity_range(
    volume: torch.Tensor | np.ndarray,
    modality: str = "auto",
    ct_window: Sequence[float] = CT_WINDOW,
    mr_percentiles: Sequence[float] = MR_PERCENTILES,
) -> tuple[float, float, str]:
    """The intensities mapped to 0 and 1 for a volume, and its modality.

    Args:
        volume: the HR volume in scanner units (e.g. ``[1, X, Y, Z]``; any shape).
        modality: ``"ct"``, ``"mr"`` or ``"auto"``: CT if some voxel is below -500 (air in HU), else MR.
        ct_window: (low, high) HU window for CT.
        mr_percentiles: (low, high) percentiles for MR, taken over the foreground: the voxels above
            the volume's minimum (the zero background of skull-stripped BraTS, or the darkest air).

    Returns:
        ``(low, high, modality)`` with ``modality`` resolved to ``"ct"`` or ``"mr"``.

    Raises:
        ValueError: unknown modality, or an MR volume whose percentiles are equal (e.g. constant).
    """
    if modality not in ("ct", "mr", "auto"):
        raise ValueError(f"modality must be 'ct', 'mr' or 'auto', got {modality!r}.")
    values = convert_to_tensor(volume, track_meta=False).detach().float().cpu().numpy()
    if modality == "auto":
        modality = "ct" if float(values.min()) < _CT_AIR_HU else "mr"
    if modality == "ct":
        low, high = float(ct_window[0]), float(ct_window[1])
        if not high > low:
            raise ValueError(f"ct_window must be (low, high) with low < high, got {tuple(ct_window)}.")
        return low, high, "ct"
    foreground = values[values > values.min()]
    if foreground.size == 0:
        raise ValueError(f"{_filename(volume)}: constant image, no foreground to take MR percentiles from.")
    low, high = (float(v) for v in np.percentile(foreground, list(mr_percentiles)))
    if not high > low:
        raise ValueError(
            f"{_filename(volume)}: MR percentiles {tuple(mr_percentiles)} of the foreground are equal ({low:g}); "
            "the image has (almost) no contrast."
        )
    return low, high, "mr"


class LoadVolumed(MapTransform):
    """Load a volume file as ``[1, X, Y, Z]`` float32 and check it, naming the file in every error.

    The file is first checked by :func:`monai_lstmagan.volumes.check_file` (unsupported suffix, corrupt or
    truncated gzip, short MetaImage data), then read with MONAI's ``LoadImaged`` (ITK for ``.mhd``/``.mha``/
    ``.nrrd``, nibabel for ``.nii``/``.nii.gz``), channel first. A 4D image keeps its first volume (index 0
    of the 4th axis) with a warning, the rule inference follows too. Raises ``ValueError`` naming the file
    for a damaged file, a 2D image (or a single slice), NaN/Inf voxels or a constant image
    (:func:`monai_lstmagan.volumes.voxel_problem`), and ``RuntimeError`` when the reader fails.

    Args:
        keys: keys holding file paths.
    """

    def __init__(self, keys: KeysCollection = "image") -> None:
        super().__init__(keys)
        self.loader = LoadImaged(keys=self.keys, image_only=True, ensure_channel_first=True, dtype=np.float32)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            try:
                check_file(path)
            except BadVolume as e:
                raise ValueError(f"Volume {path!r} {e}.") from e
            try:
                image = self.loader({key: d[key]})[key]
            except Exception as e:
                raise RuntimeError(f"Volume {path!r} cannot be read ({type(e).__name__}: {e}).") from e
            if image.ndim != 4 or min(image.shape[1:]) < 2:
                raise ValueError(
                    f"Volume {path!r} is a 2D image (channel-first shape {tuple(image.shape)}); "
                    "a 3D volume with several axial slices is expected."
                )
            if image.shape[0] > 1:
                warnings.warn(f"Volume {path!r} is 4D ({image.shape[0]} volumes): only the first one is used.")
                image = image[:1]
            problem = voxel_problem(image)
            if problem:
                raise ValueError(f"Volume {path!r} {problem}.")
            d[key] = image
        return d


class IntensityNormalizationd(MapTransform):
    """Map volumes to [0, 1] with ``clip((v - low) / (high - low), 0, 1)`` from :func:`intensity_range`.

    The modality is the item's ``modality_key`` value when it is ``"ct"`` or ``"mr"``, else
    ``default_modality`` (``"auto"`` detects it). ``low``, ``high`` and the modality are recorded in
    the MetaTensor's meta (``"intensity_low"``, ``"intensity_high"``, ``"modality"``) so outputs can be
    mapped back to scanner units (``v * (high - low) + low``), and the item's ``modality_key`` is set to
    the resolved modality.

    Args:
        keys: keys of the volumes (e.g. ``[1, X, Y, Z]``).
        modality_key: item key holding ``"ct"``, ``"mr"`` or ``"auto"``.
        default_modality: modality used when the item's is missing or ``"auto"``.
        ct_window: HU window for CT.
        mr_percentiles: foreground percentiles for MR.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality_key: str = "modality",
        default_modality: str = "auto",
        ct_window: Sequence[float] = CT_WINDOW,
        mr_percentiles: Sequence[float] = MR_PERCENTILES,
    ) -> None:
        super().__init__(keys)
        if default_modality not in ("ct", "mr", "auto"):
            raise ValueError(f"default_modality must be 'ct', 'mr' or 'auto', got {default_modality!r}.")
        self.modality_key = modality_key
        self.default_modality = default_modality
        self.ct_window = tuple(ct_window)
        self.mr_percentiles = tuple(mr_percentiles)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        requested = d.get(self.modality_key, "auto")
        if requested not in ("ct", "mr"):
            requested = self.default_modality
        for key in self.key_iterator(d):
            image = d[key] if isinstance(d[key], MetaTensor) else MetaTensor(d[key])
            low, high, modality = intensity_range(image, requested, self.ct_window, self.mr_percentiles)
            out = ((image.float() - low) / (high - low)).clamp_(0.0, 1.0)
            out.meta.update({"intensity_low": low, "intensity_high": high, "modality": modality})
            d[key] = out
            d[self.modality_key] = modality
        return d


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


class ForegroundMaskd(MapTransform):
    """Body (CT) or head (MR) mask of a normalised volume, for foreground metrics.

    Threshold, fill holes in every axial slice (lungs, ventricles), keep the largest 3D connected
    component. CT threshold: -950 HU (converted with the meta's ``intensity_low/high``), which keeps
    lung parenchyma (about -850 HU) while outside air is about -1000 HU. MR threshold: 0.05 of the
    normalised range, above the noise of the air around an unstripped head.

    Args:
        keys: key of the normalised volume ``[1, X, Y, Z]`` (output of :class:`IntensityNormalizationd`).
        mask_key: key the mask is written to: float32 {0, 1}, same shape and meta as the volume.
    """

    def __init__(self, keys: KeysCollection = "image", mask_key: str = "mask") -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError("ForegroundMaskd takes one image key.")
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = d[self.keys[0]]
        meta = image.meta if isinstance(image, MetaTensor) else {}
        if meta.get("modality") == "ct":
            low, high = float(meta["intensity_low"]), float(meta["intensity_high"])
            threshold = (_CT_BODY_HU - low) / (high - low)
        else:
            threshold = _MR_HEAD_THRESHOLD
        values = convert_to_tensor(image, track_meta=False).detach().cpu().numpy()
        mask = values > threshold  # [C, X, Y, Z]
        for c in range(mask.shape[0]):
            for z in range(mask.shape[-1]):
                mask[c, ..., z] = ndimage.binary_fill_holes(mask[c, ..., z])
            mask[c] = _largest_component(mask[c])
        d[self.mask_key] = convert_to_dst_type(mask.astype(np.float32), dst=image, dtype=torch.float32)[0]
        return d


def _window(size: int, length: int, start: int) -> np.ndarray:
    """Indices of ``length`` consecutive positions from ``start``; reflected (no edge repeat) past the ends."""
    index = np.arange(start, start + length)
    if size == 1:
        return np.zeros(length, dtype=np.int64)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index < size, index, period - index).astype(np.int64)


def _crop_window(size: int, length: int, centre: int | None, rng: np.random.RandomState) -> np.ndarray:
    """Indices of a crop of ``length`` along an axis of ``size``: around ``centre`` (shifted inside), uniform
    when ``centre`` is None, reflected and centred when the axis is shorter than the crop."""
    if size < length:
        start = -((length - size) // 2)
    elif centre is None:
        start = int(rng.randint(0, size - length + 1))
    else:
        start = min(max(centre - length // 2, 0), size - length)
    return _window(size, length, start)


def _foreground_indices(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Flat indices of the foreground voxels of the first channel of ``mask`` ``[1, X, Y, Z]``."""
    return np.flatnonzero(convert_to_tensor(mask, track_meta=False)[0].detach().cpu().numpy() > 0.5)


def _foreground_voxel(
    mask: torch.Tensor | np.ndarray | None,
    probability: float,
    rng: np.random.RandomState,
    indices: np.ndarray | None = None,
) -> tuple[int, int, int] | None:
    """With ``probability``, a voxel ``(x, y, z)`` drawn uniformly from the first channel of ``mask``
    ``[1, X, Y, Z]``; None otherwise or for an empty / absent mask (the caller samples uniformly).
    ``indices``: the mask's :func:`_foreground_indices`, when the caller draws several voxels of one mask."""
    if mask is None or probability == 0.0 or not rng.rand() < probability:
        return None
    voxels = _foreground_indices(mask) if indices is None else indices
    if voxels.size == 0:
        return None
    index = np.unravel_index(int(voxels[rng.randint(0, voxels.size)]), tuple(mask.shape[1:]))
    return int(index[0]), int(index[1]), int(index[2])


def _as_stack(volume: torch.Tensor, ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> torch.Tensor:
    """``[C, X, Y, Z]`` -> ``[len(iz), C, len(ix), len(iy)]`` plain float32 tensor."""
    v = convert_to_tensor(volume, track_meta=False)
    v = v[..., torch.as_tensor(iz)][:, torch.as_tensor(ix)][:, :, torch.as_tensor(iy)]
    return v.permute(3, 0, 1, 2).contiguous().float()


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
        return _crop_window(size, length, centre, self.R)

    def _foreground_centre(self, mask: torch.Tensor | np.ndarray | None) -> tuple[int, int, int] | None:
        """A voxel ``(x, y, z)`` drawn uniformly from the mask's first channel, or None (uniform sampling)."""
        return _foreground_voxel(mask, self.foreground_prob, self.R)

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
            d[key] = _as_stack(d[key], ix, iy, iz)
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
                f"{_filename(first, str(self.keys[0]))}: in-plane size {x}x{y} "
                f"is smaller than the scale {self.multiple}."
            )
        ix, iy = np.arange(x0, x1), np.arange(y0, y1)
        iz = np.arange(z)
        for key in self.key_iterator(d):
            d[key] = _as_stack(d[key], ix, iy, iz)
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


def volume_transforms(modality: str = "auto") -> Compose:
    """Load, reorient to RAS, normalise to [0, 1] and mask a volume.

    Input item ``{"image": path, "modality": ...}``; output ``"image"`` ``[1, X, Y, Z]`` MetaTensor in
    [0, 1] (Z axial; meta has the RAS affine and ``intensity_low/high``, ``modality``) and ``"mask"``
    ``[1, X, Y, Z]`` float {0, 1}.

    Args:
        modality: ``"ct"``, ``"mr"`` or ``"auto"``, used when the item's ``"modality"`` is missing or ``"auto"``.
    """
    return Compose(
        [
            LoadVolumed("image"),
            Orientationd("image", axcodes="RAS", labels=None),
            IntensityNormalizationd("image", default_modality=modality),
            ForegroundMaskd("image", mask_key="mask"),
        ]
    )


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
    crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if crop[0] % scale or crop[1] % scale:
        raise ValueError(f"crop_size {crop} must be divisible by the scale {scale}.")
    return Compose(
        [
            *volume_transforms(modality).transforms,
            RandSliceSequenced(
                ("image", "mask"), num_slices=num_slices, crop_size=crop, foreground_prob=foreground_prob
            ),
            MakeLowResolutiond("hr", "lr", scale=scale),
        ]
    )


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


def _in_plane_spacing(image: torch.Tensor) -> tuple[float, float]:
    """Spacing of the X and Y axes of a ``[C, X, Y, Z]`` MetaTensor (1, 1 for a plain tensor)."""
    if isinstance(image, MetaTensor):
        spacing = image.pixdim
        return float(spacing[0]), float(spacing[1])
    return 1.0, 1.0


class RandThroughPlanePairsd(Randomizable, MapTransform):
    """Self-supervised training pairs of through-plane SR (SMORE) from the axial slices of a volume.

    ``num_patches`` times: an axial slice and one of its two axes (the degraded axis) are drawn, a patch is
    cropped (centred on a foreground voxel with probability ``foreground_prob``), flipped at random, laid
    out with the degraded axis as rows, and made into ``(input, target)`` by
    :func:`monai_lstmagan.slice_profile.thick_slice_pair`: the target is the patch at the refined slice
    spacing, the input the cubic interpolation of its thick-slice version. The in-plane pixels play the
    thin slices, so no thin-slice scan is needed; the network learns to undo along rows what thick slices
    do along the slice axis, and inference applies it to the planes that contain the slice axis.

    ``[1, X, Y, Z]`` (Z = slice axis, meta with the spacing) -> ``"lr"`` (network input) and ``"hr"``
    (target), both ``[num_patches, 1, P, W]`` float32; the image and mask keys are removed.

    Args:
        keys: image key, then the foreground mask key (optional, see ``foreground_prob``).
        factor: SR factor along the slice axis: a number, or a ``(low, high)`` range drawn uniformly per patch
            (one model for several factors; then ``P = patch_size`` and the thick rows ``round(P / factor)``).
        thickness_ratio: slice thickness / slice spacing of the thick slices (1: contiguous slices; the profile
            FWHM is ``thickness_ratio * factor`` target rows).
        profile: slice profile, ``"gaussian"`` or ``"box"``; ``"mixed"``: one of the two drawn per patch (the
            profile of the scan is unknown).
        target_spacing: spacing [mm] of the target rows (the refined slice spacing, slice spacing / factor);
            None: the in-plane spacing (the in-plane pixels are the target). Per-scan fine-tuning sets it when
            the refined slices stay coarser than the pixels; the source patch then spans ``target_spacing /
            pixel spacing`` times more rows (limited by the slice size).
        patch_size: target rows ``P`` (about; a fixed factor makes it ``round(round(P / factor) * factor)``)
            and columns ``W`` (an int: both).
        num_patches: patches per item ``T`` (a DataLoader batch is ``[B, T, 1, P, W]``).
        foreground_prob: probability of centring a patch on a foreground voxel.
        mask_key: the foreground mask ``[1, X, Y, Z]``.
        interpolation: how the thick patch is interpolated back (``"cubic"``, the network's input everywhere).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        factor: float | Sequence[float] = (2.0, 6.0),
        thickness_ratio: float = 1.0,
        profile: str = "gaussian",
        target_spacing: float | None = None,
        patch_size: int | Sequence[int] = 64,
        num_patches: int = 8,
        foreground_prob: float = 0.9,
        mask_key: str = "mask",
        interpolation: str = "cubic",
    ) -> None:
        MapTransform.__init__(self, keys)
        factors = (float(factor),) * 2 if isinstance(factor, (int, float)) else tuple(float(f) for f in factor)
        if len(factors) != 2 or not 1.0 < factors[0] <= factors[1]:
            raise ValueError(f"factor must be a number > 1 or a range (low, high) with 1 < low <= high, got {factor}.")
        if profile not in (*PROFILES, "mixed"):
            raise ValueError(f"profile must be one of {(*PROFILES, 'mixed')}, got {profile!r}.")
        if not thickness_ratio > 0 or (target_spacing is not None and not target_spacing > 0):
            raise ValueError(f"thickness_ratio and target_spacing must be > 0, got {thickness_ratio}, {target_spacing}.")
        size = (int(patch_size),) * 2 if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
        if len(size) != 2 or min(size) < 4 or num_patches < 1:
            raise ValueError(f"patch_size must be >= 4 and num_patches >= 1, got {patch_size}, {num_patches}.")
        self.factors = factors
        self.thickness_ratio = float(thickness_ratio)
        self.profile = profile
        self.target_spacing = target_spacing
        self.patch_size = size
        self.num_patches = int(num_patches)
        self.foreground_prob = float(foreground_prob)
        self.mask_key = mask_key
        self.interpolation = interpolation
        self._mask: weakref.ref | None = None  # the mask whose foreground indices are cached
        self._foreground: np.ndarray | None = None

    def _lengths(self, factor: float, max_target: int) -> tuple[int, int]:
        """``(target rows, thick rows)`` of a patch of ``factor`` with at most ``max_target`` target rows."""
        rows = min(self.patch_size[0], max_target)
        if self.factors[0] < self.factors[1]:  # a range: fixed target rows (batches stack), thick rows rounded
            return rows, max(2, round(rows / factor))
        thick = max(2, round(rows / factor))
        target = round(thick * factor)
        while target > max_target and thick > 2:
            thick -= 1
            target = round(thick * factor)
        return target, thick

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = d[self.keys[0]]
        mask = d.get(self.mask_key)
        volume = convert_to_tensor(image, track_meta=False)[0].float()  # [X, Y, Z]
        pixel = _in_plane_spacing(image)
        stretch = [max(1.0, self.target_spacing / p) if self.target_spacing else 1.0 for p in pixel]
        # target rows that fit in the slice along either axis (one size for all patches of the item)
        max_target = min(int(volume.shape[a] / stretch[a]) for a in (0, 1)) if self.target_spacing else 10**9
        fixed = self.factors[0] == self.factors[1]
        if mask is not None and self.foreground_prob > 0.0 and (self._mask is None or self._mask() is not mask):
            # found once per mask, not per patch: per-scan fine-tuning samples the same mask at every step
            self._mask, self._foreground = weakref.ref(mask), _foreground_indices(mask)
        foreground = self._foreground if mask is not None and self.foreground_prob > 0.0 else None
        inputs, targets = [], []
        for _ in range(self.num_patches):
            factor = self.factors[0] if fixed else float(self.R.uniform(*self.factors))
            target_rows, thick_rows = self._lengths(factor, max_target)
            axis = int(self.R.randint(0, 2))  # the degraded in-plane axis (rows)
            source_rows = max(target_rows, round(target_rows * stretch[axis]))
            centre = _foreground_voxel(mask, self.foreground_prob, self.R, foreground)
            z = int(self.R.randint(0, volume.shape[2])) if centre is None else centre[2]
            plane = volume[:, :, z] if axis == 0 else volume[:, :, z].T  # [rows, columns]
            rows = _crop_window(plane.shape[0], source_rows, None if centre is None else centre[axis], self.R)
            cols = _crop_window(plane.shape[1], self.patch_size[1], None if centre is None else centre[1 - axis], self.R)
            if self.R.rand() < 0.5:
                rows = rows[::-1].copy()
            if self.R.rand() < 0.5:
                cols = cols[::-1].copy()
            patch = plane[torch.as_tensor(rows)][:, torch.as_tensor(cols)][None]  # [1, source_rows, W]
            fwhm = self.thickness_ratio * target_rows / thick_rows
            profile = PROFILES[int(self.R.randint(0, len(PROFILES)))] if self.profile == "mixed" else self.profile
            network_input, target = thick_slice_pair(patch, target_rows, thick_rows, fwhm, profile, self.interpolation)
            inputs.append(network_input.clamp(0.0, 1.0))
            targets.append(target)
        for key in (*self.keys, self.mask_key):
            d.pop(key, None)
        d["lr"], d["hr"] = torch.stack(inputs), torch.stack(targets)
        return d


class ThickSliceStackd(MapTransform):
    """Simulated thick slices along Z of a (thin-slice) volume, interpolated back, as a stack of planes.

    The volume is cropped along Z to the slices a thick grid of ``factor`` covers exactly
    and measured with the slice profile (:func:`monai_lstmagan.slice_profile.simulate_thick_slices`), interpolated back to the thin grid, and cut into the
    planes of fixed X (rows = Z, columns = Y), the layout of :class:`RandThroughPlanePairsd`.

    ``[1, X, Y, Z]`` -> ``"lr"`` (interpolated thick volume: the network input and, as it is, the
    interpolation baseline), ``"hr"`` (the thin truth) and the mask key, each ``[X, 1, Z', Y]``.

    Args:
        keys: image key, then keys cut the same way (the mask).
        factor: thick / thin slice spacing (``> 1``, a fraction with denominator <= 16).
        thickness_ratio: slice thickness / spacing of the simulated thick slices (1: contiguous).
        profile: ``"gaussian"`` or ``"box"``.
        interpolation: ``"cubic"`` or ``"linear"``.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        factor: float = 4.0,
        thickness_ratio: float = 1.0,
        profile: str = "gaussian",
        interpolation: str = "cubic",
    ) -> None:
        super().__init__(keys)
        self.factor, self.thickness_ratio, self.profile, self.interpolation = factor, thickness_ratio, profile, interpolation

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        first = convert_to_tensor(d[self.keys[0]], track_meta=False).float()
        thick, (start, stop) = simulate_thick_slices(first, self.factor, self.thickness_ratio, self.profile)
        d["lr"] = interpolate_axis(thick, -1, stop - start, self.interpolation).clamp(0.0, 1.0)
        d["hr"] = first[..., start:stop]
        for key in self.key_iterator(d):
            if key != self.keys[0]:
                d[key] = convert_to_tensor(d[key], track_meta=False).float()[..., start:stop]
        d.pop(self.keys[0])
        for key in ("lr", "hr", *self.keys[1:]):
            d[key] = d[key][0].permute(0, 2, 1)[:, None].contiguous()  # [X, 1, Z', Y]
        return d


def through_plane_train_transforms(
    factor: float | Sequence[float] = (2.0, 6.0),
    thickness_ratio: float = 1.0,
    profile: str = "gaussian",
    patch_size: int = 64,
    num_patches: int = 8,
    modality: str = "auto",
    foreground_prob: float = 0.9,
) -> Compose:
    """Through-plane SR training samples from any volumes: ``"lr"``/``"hr"`` ``[T, 1, P, P]`` (see
    :class:`RandThroughPlanePairsd`); batched ``[B, T, 1, P, P]``, the layout the trainer expects."""
    return Compose(
        [
            *volume_transforms(modality).transforms,
            RandThroughPlanePairsd(
                ("image", "mask"), factor=factor, thickness_ratio=thickness_ratio, profile=profile,
                patch_size=patch_size, num_patches=num_patches, foreground_prob=foreground_prob,
            ),
        ]
    )  # fmt: skip


def through_plane_validation_transforms(
    factor: float = 4.0, thickness_ratio: float = 1.0, profile: str = "gaussian", modality: str = "auto"
) -> Compose:
    """Whole volumes with simulated thick slices along Z (:class:`ThickSliceStackd`): ``"lr"`` (cubic
    along Z), ``"hr"``, ``"mask"`` ``[X, 1, Z', Y]``; batched (batch size 1) ``[1, X, 1, Z', Y]``."""
    return Compose(
        [
            *volume_transforms(modality).transforms,
            ThickSliceStackd(("image", "mask"), factor=factor, thickness_ratio=thickness_ratio, profile=profile),
        ]
    )
