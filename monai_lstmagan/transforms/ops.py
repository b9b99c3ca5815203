"""The resampling operators of the project, each in one place.

- :func:`bicubic_upsample_slices`: the bicubic upsampling of slices ``[N, C, h, w]``, the generators' global
  residual and the bicubic baseline;
- :func:`bicubic_downsample` / :func:`bicubic_upsample`: the same kernel on any ``[..., H, W]``; the
  downsampling makes every LR image of training and evaluation;
- :func:`keys_cubic`: Keys' cubic convolution kernel (``a = -0.5``), the kernel of all of them, used by
  :mod:`monai_lstmagan.transforms.slice_profile` for its interpolation matrices along one axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["keys_cubic", "bicubic_upsample_slices", "bicubic_downsample", "bicubic_upsample"]


def keys_cubic(d: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel at offsets ``d`` (any shape): 1 at 0, 0 at the other integers, 0 beyond 2."""
    d = d.abs()
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return torch.where(d <= 1.0, near, torch.where(d < 2.0, far, torch.zeros_like(d)))


def bicubic_upsample_slices(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The project's bicubic upsampling operator on slices: ``[N, C, h, w] -> [N, C, h*scale, w*scale]``.

    Keys' cubic kernel with ``a = -0.5`` (MATLAB ``imresize`` / PIL ``BICUBIC``), ``align_corners=False``:
    ``F.interpolate(mode="bicubic", antialias=True)``. (Without ``antialias`` PyTorch uses ``a = -0.75``
    even when upsampling, which is another kernel.) It is the bicubic baseline (:func:`bicubic_upsample`)
    and the global residual of the generators.
    """
    size = [x.shape[-2] * scale, x.shape[-1] * scale]
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)


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
