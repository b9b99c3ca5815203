"""Through-plane (SMORE) samples: self-supervised pairs from in-plane patches, and simulated thick-slice stacks."""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, Randomizable
from monai.utils import convert_to_tensor

from monai_lstmagan.transforms.intensity import volume_transforms
from monai_lstmagan.transforms.sampling import crop_window, foreground_indices, foreground_voxel
from monai_lstmagan.transforms.slice_profile import (
    DEFAULT_PROFILE,
    PROFILES,
    interpolate_axis,
    simulate_thick_slices,
    thick_slice_pair,
)

__all__ = [
    "in_plane_spacing",
    "RandThroughPlanePairsd",
    "ThickSliceStackd",
    "through_plane_train_transforms",
    "through_plane_validation_transforms",
]


def in_plane_spacing(image: torch.Tensor) -> tuple[float, float]:
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
    :func:`monai_lstmagan.transforms.slice_profile.thick_slice_pair`: the target is the patch at the refined slice
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
        profile: str = DEFAULT_PROFILE,
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
            raise ValueError(
                f"thickness_ratio and target_spacing must be > 0, got {thickness_ratio}, {target_spacing}."
            )
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
        pixel = in_plane_spacing(image)
        stretch = [max(1.0, self.target_spacing / p) if self.target_spacing else 1.0 for p in pixel]
        # target rows that fit in the slice along either axis (one size for all patches of the item)
        max_target = min(int(volume.shape[a] / stretch[a]) for a in (0, 1)) if self.target_spacing else 10**9
        fixed = self.factors[0] == self.factors[1]
        if mask is not None and self.foreground_prob > 0.0 and (self._mask is None or self._mask() is not mask):
            # found once per mask, not per patch: per-scan fine-tuning samples the same mask at every step
            self._mask, self._foreground = weakref.ref(mask), foreground_indices(mask)
        foreground = self._foreground if mask is not None and self.foreground_prob > 0.0 else None
        inputs, targets = [], []
        for _ in range(self.num_patches):
            factor = self.factors[0] if fixed else float(self.R.uniform(*self.factors))
            target_rows, thick_rows = self._lengths(factor, max_target)
            axis = int(self.R.randint(0, 2))  # the degraded in-plane axis (rows)
            source_rows = max(target_rows, round(target_rows * stretch[axis]))
            centre = foreground_voxel(mask, self.foreground_prob, self.R, foreground)
            z = int(self.R.randint(0, volume.shape[2])) if centre is None else centre[2]
            plane = volume[:, :, z] if axis == 0 else volume[:, :, z].T  # [rows, columns]
            rows = crop_window(plane.shape[0], source_rows, None if centre is None else centre[axis], self.R)
            cols = crop_window(plane.shape[1], self.patch_size[1], None if centre is None else centre[1 - axis], self.R)
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
    and measured with the slice profile (:func:`monai_lstmagan.transforms.slice_profile.simulate_thick_slices`),
    interpolated back to
    the thin grid, and cut into the
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
        profile: str = DEFAULT_PROFILE,
        interpolation: str = "cubic",
    ) -> None:
        super().__init__(keys)
        self.factor, self.thickness_ratio, self.profile, self.interpolation = (
            factor,
            thickness_ratio,
            profile,
            interpolation,
        )

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
    profile: str = DEFAULT_PROFILE,
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
    factor: float = 4.0, thickness_ratio: float = 1.0, profile: str = DEFAULT_PROFILE, modality: str = "auto"
) -> Compose:
    """Whole volumes with simulated thick slices along Z (:class:`ThickSliceStackd`): ``"lr"`` (cubic
    along Z), ``"hr"``, ``"mask"`` ``[X, 1, Z', Y]``; batched (batch size 1) ``[1, X, 1, Z', Y]``."""
    return Compose(
        [
            *volume_transforms(modality).transforms,
            ThickSliceStackd(("image", "mask"), factor=factor, thickness_ratio=thickness_ratio, profile=profile),
        ]
    )
