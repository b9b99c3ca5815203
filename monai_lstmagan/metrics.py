"""Per-volume image-quality metrics, the one definition used by training validation and evaluation.

PSNR and SSIM with ``data_range = 1`` on normalised intensities:

- PSNR, whole image: MONAI ``PSNRMetric`` over all voxels of the volume;
- PSNR, foreground: ``10 log10(1 / MSE)`` with the MSE averaged over the voxels of the mask only;
- SSIM: the SSIM map of MONAI (``compute_ssim_and_cs``, 2D per axial slice, 11x11 Gaussian window,
  sigma 1.5, k1 0.01, k2 0.03; the map covers the voxels where the window fits); whole image = mean of
  the map (equal to MONAI ``SSIMMetric`` averaged over slices), foreground = mean of the map over the
  mask voxels.
"""

from __future__ import annotations

import math

import torch
from monai.metrics import PSNRMetric
from monai.metrics.regression import compute_ssim_and_cs

__all__ = ["REGIONS", "SSIM_WINDOW", "SSIM_SIGMA", "volume_metrics"]

REGIONS = ("foreground", "whole")
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def volume_metrics(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, chunk: int = 32
) -> dict[str, dict[str, float]]:
    """PSNR and SSIM of one volume, on the foreground mask and on the whole image (``data_range`` 1).

    Args:
        pred: ``[Z, 1, H, W]`` slices in [0, 1].
        target: ``[Z, 1, H, W]`` reference slices in [0, 1].
        mask: ``[Z, 1, H, W]`` foreground mask (nonzero = foreground).
        chunk: slices per SSIM computation (bounds memory).

    Returns:
        ``{"foreground": {"psnr": ..., "ssim": ...}, "whole": {"psnr": ..., "ssim": ...}}``; the
        foreground values are NaN when the mask is empty.
    """
    if pred.shape != target.shape or mask.shape != target.shape or target.dim() != 4 or target.shape[1] != 1:
        raise ValueError(
            f"volume_metrics: expected pred, target, mask of equal shape [Z, 1, H, W], got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}."
        )
    if min(target.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"volume_metrics: slices of {tuple(target.shape[-2:])} are smaller than the SSIM window.")
    pred, target = pred.float(), target.float()
    foreground = mask > 0
    whole_psnr = float(PSNRMetric(max_val=1.0, reduction="none")(pred.reshape(1, -1), target.reshape(1, -1)).item())
    squared_error = (pred - target) ** 2
    num_foreground = int(foreground.sum())
    fg_mse = float(squared_error[foreground].double().mean()) if num_foreground else math.nan
    fg_psnr = (math.inf if fg_mse == 0 else 10.0 * math.log10(1.0 / fg_mse)) if num_foreground else math.nan

    half = SSIM_WINDOW // 2
    map_sum, map_count, fg_sum, fg_count = 0.0, 0, 0.0, 0
    for start in range(0, target.shape[0], chunk):
        ssim_map, _ = compute_ssim_and_cs(
            pred[start : start + chunk],
            target[start : start + chunk],
            spatial_dims=2,
            kernel_size=(SSIM_WINDOW, SSIM_WINDOW),
            kernel_sigma=(SSIM_SIGMA, SSIM_SIGMA),
            data_range=1.0,
        )
        inside = foreground[start : start + chunk, :, half:-half, half:-half]
        map_sum += float(ssim_map.double().sum())
        map_count += ssim_map.numel()
        fg_sum += float(ssim_map[inside].double().sum())
        fg_count += int(inside.sum())
    return {
        "foreground": {"psnr": fg_psnr, "ssim": fg_sum / fg_count if fg_count else math.nan},
        "whole": {"psnr": whole_psnr, "ssim": map_sum / map_count},
    }
