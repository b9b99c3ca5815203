"""Loading, intensity normalisation and foreground masks of volumes (MONAI dictionary transforms).

Axis convention: a volume is loaded channel-first and reoriented to RAS, so it is ``[1, X, Y, Z]``
with ``Z`` the axial (inferior -> superior) slice axis.

Intensities are mapped to [0, 1] with a fixed rule taken from the HR volume: CT by an HU window
(default -1000..400 HU), MR by the 0.5 / 99.5 percentiles of the foreground.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, MapTransform, Orientationd
from monai.utils import convert_to_dst_type, convert_to_tensor
from scipy import ndimage

from monai_lstmagan.io.dicom import DICOM_FORMAT
from monai_lstmagan.io.paths import scan_format
from monai_lstmagan.io.scans import BadVolumeError, check_file, read_scan, voxel_problem

__all__ = [
    "CT_WINDOW",
    "MR_PERCENTILES",
    "MODALITIES",
    "source_name",
    "intensity_range",
    "LoadVolumed",
    "IntensityNormalizationd",
    "ForegroundMaskd",
    "load_transforms",
    "normalize_transforms",
    "volume_transforms",
]

#: Default CT window in HU mapped to [0, 1].
CT_WINDOW = (-1000.0, 400.0)
#: Default MR foreground percentiles mapped to [0, 1].
MR_PERCENTILES = (0.5, 99.5)

_CT_AIR_HU = -500.0  # below: air; a volume with such voxels is CT in "auto" mode
_CT_BODY_HU = -950.0  # above: body incl. lung parenchyma (outside air is about -1000 HU)
_MR_HEAD_THRESHOLD = 0.05  # normalised MR intensity above which a voxel is head (air noise is below)

#: The modality values an item or a command accepts ("auto": CT when some voxel is below -500 HU).
MODALITIES = ("ct", "mr", "auto")


def source_name(image: torch.Tensor | np.ndarray, fallback: str = "<volume>") -> str:
    """The file a MetaTensor was read from (its ``filename_or_obj``), or ``fallback``."""
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
        raise ValueError(f"{source_name(volume)}: constant image, no foreground to take MR percentiles from.")
    low, high = (float(v) for v in np.percentile(foreground, list(mr_percentiles)))
    if not high > low:
        raise ValueError(
            f"{source_name(volume)}: MR percentiles {tuple(mr_percentiles)} of the foreground are equal ({low:g}); "
            "the image has (almost) no contrast."
        )
    return low, high, "mr"


class LoadVolumed(MapTransform):
    """Load a volume file as ``[1, X, Y, Z]`` float32 and check it, naming the file in every error.

    The file is first checked by :func:`monai_lstmagan.io.scans.check_file` (unsupported suffix, corrupt or
    truncated gzip, short MetaImage data), then read with MONAI's ``LoadImaged`` (ITK for ``.mhd``/``.mha``/
    ``.nrrd``, nibabel for ``.nii``/``.nii.gz``), channel first. A 4D image keeps its first volume (index 0
    of the 4th axis) with a warning, the rule inference follows too. Raises ``ValueError`` naming the file
    for a damaged file, a 2D image (or a single slice), NaN/Inf voxels or a constant image
    (:func:`monai_lstmagan.io.scans.voxel_problem`), and ``RuntimeError`` when the reader fails. A DICOM scan
    (a series folder, a multi-frame file, a DICOMDIR, ``FOLDER#<SeriesInstanceUID>``) is read by the one reader,
    :func:`monai_lstmagan.io.scans.read_scan` (pydicom; rescaled, sorted along the slice normal), not by MONAI's
    readers, so training sees the voxels and affine inference sees.

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
            if scan_format(path) == DICOM_FORMAT:
                try:
                    scan = read_scan(path)
                except ValueError as e:
                    raise ValueError(f"Volume {e}") from e
                array = torch.from_numpy(np.ascontiguousarray(scan.array, dtype=np.float32))[None]
                d[key] = MetaTensor(array, affine=torch.as_tensor(scan.affine), meta={"filename_or_obj": path})
                continue
            try:
                check_file(path)
            except BadVolumeError as e:
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


def load_transforms() -> Compose:
    """Load a volume file (:class:`LoadVolumed`) and reorient it to RAS: ``"image"`` ``[1, X, Y, Z]`` float32."""
    return Compose([LoadVolumed("image"), Orientationd("image", axcodes="RAS", labels=None)])


def normalize_transforms(modality: str = "auto") -> Compose:
    """Normalise a loaded RAS volume to [0, 1] (:class:`IntensityNormalizationd`) and add its ``"mask"``."""
    return Compose(
        [IntensityNormalizationd("image", default_modality=modality), ForegroundMaskd("image", mask_key="mask")]
    )


def volume_transforms(modality: str = "auto") -> Compose:
    """Load, reorient to RAS, normalise to [0, 1] and mask a volume (:func:`load_transforms`, then
    :func:`normalize_transforms`).

    Input item ``{"image": path, "modality": ...}``; output ``"image"`` ``[1, X, Y, Z]`` MetaTensor in
    [0, 1] (Z axial; meta has the RAS affine and ``intensity_low/high``, ``modality``) and ``"mask"``
    ``[1, X, Y, Z]`` float {0, 1}.

    Args:
        modality: ``"ct"``, ``"mr"`` or ``"auto"``, used when the item's ``"modality"`` is missing or ``"auto"``.
    """
    return Compose([*load_transforms().transforms, *normalize_transforms(modality).transforms])
