"""Per-volume image-quality metrics, the one definition used by training validation and evaluation.

PSNR and SSIM with ``data_range = 1`` on normalised intensities:

- PSNR, whole image: ``10 log10(1 / MSE)`` with the MSE over all voxels of the volume (as MONAI ``PSNRMetric``);
- PSNR, foreground: ``10 log10(1 / MSE)`` with the MSE averaged over the voxels of the mask only;
- SSIM: the SSIM map of MONAI (``compute_ssim_and_cs``, 2D per axial slice, 11x11 Gaussian window,
  sigma 1.5, k1 0.01, k2 0.03; the map covers the voxels where the window fits); whole image = mean of
  the map (equal to MONAI ``SSIMMetric`` averaged over slices), foreground = mean of the map over the
  mask voxels.
"""

from __future__ import annotations

import math

import torch
from monai.metrics.regression import compute_ssim_and_cs

__all__ = ["REGIONS", "SSIM_WINDOW", "SSIM_SIGMA", "VolumeMetricAccumulator", "volume_metrics"]

REGIONS = ("foreground", "whole")
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


class VolumeMetricAccumulator:
    """PSNR / SSIM of one volume from its slices, given in any number of chunks (the one definition).

    ``update(pred, target, mask)`` with ``[n, 1, H, W]`` chunks of the volume's slices (same H, W); ``result()``
    gives :func:`volume_metrics`'s dictionary. Sums are float64; the SSIM map of each slice is MONAI's
    ``compute_ssim_and_cs`` (2D, per slice, so chunking does not change it). ``slice_ssim_sum`` /
    ``num_slices`` is the sum / number of the per-slice mean SSIM (MONAI ``SSIMMetric`` per slice).
    """

    def __init__(self) -> None:
        self.squared_error, self.num_voxels = 0.0, 0
        self.fg_squared_error, self.num_foreground = 0.0, 0
        self.map_sum, self.map_count, self.fg_map_sum, self.fg_map_count = 0.0, 0, 0.0, 0
        self.slice_ssim_sum, self.num_slices = 0.0, 0

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Add a chunk: ``pred``, ``target``, ``mask`` ``[n, 1, H, W]`` (mask nonzero = foreground)."""
        if pred.shape != target.shape or mask.shape != target.shape or target.dim() != 4 or target.shape[1] != 1:
            raise ValueError(
                f"volume metrics: expected pred, target, mask of equal shape [Z, 1, H, W], got "
                f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}."
            )
        if min(target.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(f"volume metrics: slices of {tuple(target.shape[-2:])} are smaller than the SSIM window.")
        pred, target = pred.float(), target.float()
        foreground = mask > 0
        squared_error = (pred - target) ** 2
        self.squared_error += float(squared_error.double().sum())
        self.num_voxels += squared_error.numel()
        self.fg_squared_error += float(squared_error[foreground].double().sum())
        self.num_foreground += int(foreground.sum())
        half = SSIM_WINDOW // 2
        ssim_map, _ = compute_ssim_and_cs(
            pred,
            target,
            spatial_dims=2,
            kernel_size=(SSIM_WINDOW, SSIM_WINDOW),
            kernel_sigma=(SSIM_SIGMA, SSIM_SIGMA),
            data_range=1.0,
        )
        inside = foreground[:, :, half:-half, half:-half]
        self.map_sum += float(ssim_map.double().sum())
        self.map_count += ssim_map.numel()
        self.fg_map_sum += float(ssim_map[inside].double().sum())
        self.fg_map_count += int(inside.sum())
        self.slice_ssim_sum += float(ssim_map.double().mean(dim=(1, 2, 3)).sum())
        self.num_slices += ssim_map.shape[0]

    def result(self) -> dict[str, dict[str, float]]:
        """``{"foreground": {"psnr", "ssim"}, "whole": {"psnr", "ssim"}}`` (foreground NaN for an empty mask)."""
        mse = self.squared_error / self.num_voxels
        fg_mse = self.fg_squared_error / self.num_foreground if self.num_foreground else math.nan
        return {
            "foreground": {
                "psnr": _psnr(fg_mse) if self.num_foreground else math.nan,
                "ssim": self.fg_map_sum / self.fg_map_count if self.fg_map_count else math.nan,
            },
            "whole": {"psnr": _psnr(mse), "ssim": self.map_sum / self.map_count},
        }


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


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
    accumulator = VolumeMetricAccumulator()
    for start in range(0, target.shape[0], chunk):
        accumulator.update(pred[start : start + chunk], target[start : start + chunk], mask[start : start + chunk])
    return accumulator.result()
