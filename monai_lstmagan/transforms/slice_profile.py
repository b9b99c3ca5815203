"""Resampling along one axis: the slice-profile degradation and the interpolation baselines of through-plane SR.

Every operator here is a weight matrix ``W`` of shape ``[num_out, num_in]`` applied along one axis of a
tensor (:func:`apply_along_axis`). The grid convention is the project's (``align_corners=False``): output
sample ``j`` is centred at input coordinate ``c_j = (j + 0.5) * num_in / num_out - 0.5``, so the first and
last edges of the two grids coincide (the same physical extent), as in
:func:`monai_lstmagan.io.geometry.upsampled_affine`. Factors need not be integers.

- :func:`slice_profile_matrix`: what a thick slice measures. Sample ``j`` is the integral, over each input
  pixel ``[i - 0.5, i + 0.5]``, of a slice profile centred at ``c_j`` of full width at half maximum
  ``fwhm`` input pixels: ``"gaussian"`` (SMORE's model of an MR slice profile) or ``"box"`` (contiguous
  slices that average their thickness; a box of width 3 over an impulse is 3 pixels of 1/3).
- :func:`interpolation_matrix`: cubic (Keys, ``a = -0.5``, the kernel of
  :func:`~monai_lstmagan.transforms.ops.bicubic_upsample_slices`) or linear interpolation, with PIL's edge rule
  (taps outside the grid dropped and the weights renormalised),
  which makes ``"cubic"`` equal to ``F.interpolate(mode="bicubic", antialias=True)`` along that axis.

Rows are normalised to sum to one, so a constant stays constant up to the edges. The matrices are cached
(the same few sizes recur for every training patch): do not modify them in place.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import torch

from monai_lstmagan.transforms.ops import keys_cubic

__all__ = [
    "PROFILES",
    "DEFAULT_PROFILE",
    "INTERPOLATIONS",
    "slice_profile_matrix",
    "interpolation_matrix",
    "apply_along_axis",
    "degrade_axis",
    "interpolate_axis",
    "thick_slice_pair",
    "thick_grid",
    "simulate_thick_slices",
]

#: Slice profiles of :func:`slice_profile_matrix`.
PROFILES = ("gaussian", "box")
#: The profile assumed when none is given, everywhere (CLI, configs, transforms): contiguous slices that average
#: their thickness, what a reconstructed CT or a 2D MR stack without gaps is.
DEFAULT_PROFILE = "box"
#: Interpolation kernels of :func:`interpolation_matrix` (the baselines users have today).
INTERPOLATIONS = ("cubic", "linear")

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _sample_centres(num_in: int, num_out: int) -> torch.Tensor:
    """``[num_out]`` input coordinates of the output samples' centres (``align_corners=False``)."""
    if num_in < 1 or num_out < 1:
        raise ValueError(f"grid sizes must be >= 1, got num_in={num_in}, num_out={num_out}.")
    return (torch.arange(num_out, dtype=torch.float64) + 0.5) * (num_in / num_out) - 0.5


def _normalised(weights: torch.Tensor) -> torch.Tensor:
    return (weights / weights.sum(dim=1, keepdim=True)).float()


@lru_cache(maxsize=256)
def slice_profile_matrix(num_in: int, num_out: int, fwhm: float, profile: str = DEFAULT_PROFILE) -> torch.Tensor:
    """``[num_out, num_in]`` weights of thick samples measured from a fine grid with a slice profile.

    Args:
        num_in: samples of the fine grid along the axis.
        num_out: thick samples over the same extent (``num_in / num_out`` is the spacing ratio).
        fwhm: full width at half maximum of the profile, in fine-grid pixels (the slice thickness divided by
            the fine spacing; equal to the spacing ratio for contiguous slices).
        profile: ``"gaussian"`` or ``"box"`` (width ``fwhm``).

    Returns:
        float32 ``[num_out, num_in]`` with rows summing to one (the profile renormalised at the grid's edges).
    """
    if profile not in PROFILES:
        raise ValueError(f"slice profile must be one of {PROFILES}, got {profile!r}.")
    if not fwhm > 0:
        raise ValueError(f"slice profile FWHM must be > 0 pixels, got {fwhm}.")
    centres = _sample_centres(num_in, num_out)[:, None]
    pixel = torch.arange(num_in, dtype=torch.float64)[None, :]
    low, high = pixel - 0.5 - centres, pixel + 0.5 - centres  # pixel edges relative to the profile centre
    if profile == "box":
        half = fwhm / 2.0
        weights = (torch.minimum(high, torch.tensor(half)) - torch.maximum(low, torch.tensor(-half))).clamp(min=0.0)
    else:
        scale = 1.0 / (_FWHM_TO_SIGMA * fwhm * math.sqrt(2.0))
        weights = 0.5 * (torch.erf(high * scale) - torch.erf(low * scale))
    return _normalised(weights)


@lru_cache(maxsize=256)
def interpolation_matrix(num_in: int, num_out: int, mode: str = "cubic") -> torch.Tensor:
    """``[num_out, num_in]`` interpolation weights from a coarse grid of ``num_in`` to ``num_out`` samples.

    Meant for upsampling (``num_out >= num_in``): the kernel is not widened, so it does not anti-alias.

    Args:
        num_in: coarse samples.
        num_out: interpolated samples over the same extent.
        mode: ``"cubic"`` (Keys, a = -0.5) or ``"linear"``.
    """
    if mode not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {mode!r}.")
    offsets = torch.arange(num_in, dtype=torch.float64)[None, :] - _sample_centres(num_in, num_out)[:, None]
    weights = keys_cubic(offsets) if mode == "cubic" else (1.0 - offsets.abs()).clamp(min=0.0)
    return _normalised(weights)


def apply_along_axis(x: torch.Tensor, weights: torch.Tensor, axis: int) -> torch.Tensor:
    """Resample ``x`` along ``axis`` with ``weights`` ``[num_out, num_in]``: ``x.shape[axis]`` becomes ``num_out``."""
    if x.shape[axis] != weights.shape[1]:
        raise ValueError(
            f"axis {axis} of shape {tuple(x.shape)} has {x.shape[axis]} samples, weights expect {weights.shape[1]}."
        )
    moved = torch.movedim(x, axis, -1)
    out = moved.to(weights.dtype) @ weights.to(x.device).T
    return torch.movedim(out, -1, axis).to(x.dtype)


def degrade_axis(x: torch.Tensor, axis: int, num_out: int, fwhm: float, profile: str = DEFAULT_PROFILE) -> torch.Tensor:
    """Thick samples of ``x`` along ``axis`` (:func:`slice_profile_matrix`): ``x.shape[axis] -> num_out``."""
    return apply_along_axis(x, slice_profile_matrix(x.shape[axis], num_out, fwhm, profile), axis)


def interpolate_axis(x: torch.Tensor, axis: int, num_out: int, mode: str = "cubic") -> torch.Tensor:
    """Interpolate ``x`` along ``axis`` (:func:`interpolation_matrix`): ``x.shape[axis] -> num_out``."""
    return apply_along_axis(x, interpolation_matrix(x.shape[axis], num_out, mode), axis)


def thick_slice_pair(
    source: torch.Tensor,
    target_length: int,
    thick_length: int,
    thick_fwhm: float,
    profile: str = DEFAULT_PROFILE,
    interpolation: str = "cubic",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A self-supervised training pair of through-plane SR from fine in-plane patches (SMORE).

    The degraded axis is ``-2`` (rows). The target is the source resampled to ``target_length`` rows with a
    slice profile of the source-to-target spacing ratio (the source itself when the lengths are equal: the
    in-plane pixels are the thin slices); the thick image is the target measured with ``thick_length``
    slices of profile FWHM ``thick_fwhm`` target rows, and the network input is its ``interpolation`` back to
    ``target_length`` rows, exactly what inference feeds the network along the slice axis.

    Args:
        source: ``[..., L_source, W]`` fine in-plane patches.
        target_length: rows of the target, ``<= L_source``.
        thick_length: thick slices over the same extent (``target_length / thick_length`` is the factor).
        thick_fwhm: slice profile FWHM of the thick slices, in target rows (the factor for contiguous slices).
        profile, interpolation: see :func:`slice_profile_matrix`, :func:`interpolation_matrix`.

    Returns:
        ``(network_input, target)``, both ``[..., target_length, W]``.
    """
    source_length = source.shape[-2]
    if not thick_length <= target_length <= source_length:
        raise ValueError(
            f"need thick_length <= target_length <= source rows, got {thick_length}, {target_length}, {source_length}."
        )
    target = source
    if target_length != source_length:
        target = degrade_axis(source, -2, target_length, source_length / target_length, profile)
    thick = degrade_axis(target, -2, thick_length, thick_fwhm, profile)
    return interpolate_axis(thick, -2, target_length, interpolation), target


def thick_grid(num_slices: int, factor: float) -> tuple[int, int, int]:
    """The thin slices a simulated thick grid of ``factor`` covers exactly: ``(start, stop, num_thick)``.

    ``factor`` is read as a fraction ``p / q`` (denominator <= 16, e.g. 2.5 = 5/2), the thin slices are the
    centred crop of ``num_slices`` to a multiple of ``p`` and ``num_thick = (stop - start) * q / p``, so
    ``num_thick * factor`` is a whole number of thin slices and both grids have the same extent.

    Raises:
        ValueError: the factor is not > 1, or fewer than ``p`` slices (one thick slice) are given.
    """
    if not factor > 1.0:
        raise ValueError(f"the through-plane factor must be > 1, got {factor}.")
    fraction = Fraction(factor).limit_denominator(16)
    kept = num_slices - num_slices % fraction.numerator
    if kept < fraction.numerator or kept // fraction.numerator * fraction.denominator < 2:
        raise ValueError(
            f"{num_slices} slices are too few to simulate at least two thick slices of factor {factor} "
            f"({fraction.numerator} thin slices make {fraction.denominator})."
        )
    start = (num_slices - kept) // 2
    return start, start + kept, kept // fraction.numerator * fraction.denominator


def simulate_thick_slices(
    volume: torch.Tensor, factor: float, thickness_ratio: float = 1.0, profile: str = DEFAULT_PROFILE
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Thick slices along Z of a volume ``[..., Z]``: ``(thick [..., Z_thick], (start, stop))`` of the thin
    slices the thick grid covers (``(stop - start) / Z_thick`` is the real factor)."""
    start, stop, num_thick = thick_grid(volume.shape[-1], factor)
    fwhm = thickness_ratio * (stop - start) / num_thick
    return degrade_axis(volume[..., start:stop], -1, num_thick, fwhm, profile), (start, stop)
