"""Per-volume metrics that can see what an adversarial generator adds (or invents): the one definition used by
``evaluate`` and by the training validation (``docs/evaluation.md`` gives the formulas).

All of them compare SR with HR slice by slice, ``[N, 1, H, W]`` in [0, 1], on a region (the foreground mask, or
the whole slice), for a known in-plane factor ``s`` (frequencies in cycles per pixel of the HR grid):

- ``spectral_high``: energy of SR / energy of HR in the band above the LR Nyquist, ``1/(2s) < r <= 1/2``
  (``r`` = radial frequency; 1/2 = the HR Nyquist). 1 = as much fine detail as HR, < 1 = smoother than HR
  (bicubic, MSE models), > 1 = more high-frequency energy than HR (noise, ringing, invented texture);
- ``spectral_mid``: the same ratio in the band below the LR Nyquist, ``1/(4s) < r <= 1/(2s)``;
- ``spectral_error_high``: energy of the spectrum of SR - HR in the high band / energy of HR there. 0 = exact;
  invented detail that is not HR's raises it (noise of HR's energy gives about 1, a zero high band exactly 1),
  so a ratio ``spectral_high`` near 1 reached by noise is not rewarded;
- ``gradient_ratio``: mean gradient magnitude of SR / of HR over the region (central differences);
- ``hfen``: the high-frequency error norm of Ravishankar & Bresler (IEEE TMI 2011), ``||LoG(SR - HR)|| /
  ||LoG(HR)||`` over the region, LoG = MATLAB ``fspecial('log', 15, 1.5)``.

The spectra are taken per slice on the bounding box of the region in that slice, the image multiplied by the mask
(background inside the box is 0 in SR and HR alike) and by a 2D Hann window (so the periodic extension of the FFT
adds no edge of its own); the energies are summed over the slices of the volume before the ratio is taken, so a
volume given in chunks (:class:`DetailMetricAccumulator`) gets the same numbers. Slices whose box is smaller than
:data:`MIN_SPECTRUM_SIZE` pixels on a side are left out of the spectral sums.

Fidelity metrics of a maintained image-quality library (:func:`library_metrics`, the ``iqa`` extra:
``pip install monai_lstmagan[iqa]``, torchmetrics, which needs neither torchvision nor a download): MS-SSIM and
pixel-domain VIF, per slice on the bounding box of the volume's foreground (the whole slice for ``"whole"``), mean
over slices. Without torchmetrics they are NaN and :func:`library_metrics_note` says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from monai_lstmagan.metrics import REGIONS

__all__ = [
    "DETAIL_METRICS",
    "HFEN_KERNEL",
    "HFEN_SIGMA",
    "LIBRARY_METRICS",
    "MIN_SPECTRUM_SIZE",
    "MS_SSIM_MIN_SIZE",
    "RADIAL_BINS",
    "VIF_MIN_SIZE",
    "DetailMetricAccumulator",
    "frequency_bands",
    "library_metrics",
    "library_metrics_note",
    "log_kernel",
    "radial_bin_edges",
    "volume_detail_metrics",
]

#: the columns of :meth:`DetailMetricAccumulator.result` per region.
DETAIL_METRICS = ("spectral_high", "spectral_mid", "spectral_error_high", "gradient_ratio", "hfen")
#: the columns of :func:`library_metrics` per region.
LIBRARY_METRICS = ("ms_ssim", "vif")
HFEN_SIGMA = 1.5
HFEN_KERNEL = 15
MIN_SPECTRUM_SIZE = 8
#: radial frequency bins of width 1/64 cycle/pixel from 0 to the HR Nyquist 1/2 (the spectrum-ratio figure).
RADIAL_BINS = 32
#: torchmetrics' smallest side for MS-SSIM with 5 scales and an 11x11 window (``side // 16 > 10``).
MS_SSIM_MIN_SIZE = 176
#: torchmetrics' smallest side for VIF-P.
VIF_MIN_SIZE = 41


def frequency_bands(scale: int) -> dict[str, tuple[float, float]]:
    """``{"high": (1/(2s), 1/2), "mid": (1/(4s), 1/(2s))}``: the bands ``low < r <= high`` in cycles per HR pixel."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"detail metrics: the LR factor must be a positive integer, got {scale!r}.")
    nyquist_lr = 1.0 / (2 * scale)
    return {"high": (nyquist_lr, 0.5), "mid": (nyquist_lr / 2, nyquist_lr)}


def radial_bin_edges() -> list[float]:
    """The :data:`RADIAL_BINS` + 1 edges ``k / 64`` of the radial bins (bin ``k``: ``k/64 <= r < (k+1)/64``)."""
    return [k / (2 * RADIAL_BINS) for k in range(RADIAL_BINS + 1)]


def log_kernel(sigma: float = HFEN_SIGMA, size: int = HFEN_KERNEL) -> torch.Tensor:
    """Laplacian of Gaussian ``[1, 1, size, size]`` (float64) exactly as MATLAB ``fspecial('log', size, sigma)``:
    ``g = exp(-(x^2+y^2)/(2 sigma^2)) / sum``, ``h = g (x^2+y^2-2 sigma^2) / sigma^4``, minus its mean (sums to 0)."""
    half = (size - 1) / 2
    x = torch.arange(size, dtype=torch.float64) - half
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    g = torch.exp(-r2 / (2 * sigma**2))
    g = g / g.sum()
    h = g * (r2 - 2 * sigma**2) / sigma**4
    return (h - h.mean())[None, None]


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    if pred.shape != target.shape or mask.shape != target.shape or target.dim() != 4 or target.shape[1] != 1:
        raise ValueError(
            f"{what}: expected pred, target, mask of equal shape [N, 1, H, W], got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}."
        )


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the nonzero pixels of a 2D ``mask``, ``None`` when it has none."""
    rows, cols = torch.nonzero(mask.any(dim=1)), torch.nonzero(mask.any(dim=0))
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


class DetailMetricAccumulator:
    """The :data:`DETAIL_METRICS` of one volume from its slices, given in any number of chunks.

    ``update(pred, target, mask)`` with ``[n, 1, H, W]`` chunks (same H, W within a chunk); ``result()`` gives
    ``{"foreground": {metric: value}, "whole": {metric: value}}`` (NaN where the region holds nothing, e.g. an
    empty mask); ``radial_energy(region)`` the SR and HR energies per radial bin (:func:`radial_bin_edges`).
    The images are filtered and transformed in float32, every sum is float64 and every term is per slice, so
    chunking does not change the result.

    Args:
        scale: the LR factor ``s`` (sets the bands, :func:`frequency_bands`).
    """

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.bands = frequency_bands(scale)
        self._log = log_kernel().float()
        self._layouts: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._sums = {
            region: {
                **{f"{who}_{band}": 0.0 for who in ("pred", "target", "error") for band in self.bands},
                "grad_pred": 0.0, "grad_target": 0.0, "log_error": 0.0, "log_target": 0.0,
                "radial_pred": torch.zeros(RADIAL_BINS, dtype=torch.float64),
                "radial_target": torch.zeros(RADIAL_BINS, dtype=torch.float64),
            }
            for region in REGIONS
        }  # fmt: skip

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Add a chunk: ``pred``, ``target``, ``mask`` ``[n, 1, H, W]`` (mask nonzero = foreground)."""
        _check(pred, target, mask, "detail metrics")
        pred, target, mask = (x.as_tensor() if hasattr(x, "as_tensor") else x for x in (pred, target, mask))
        pred, target = pred.detach().float().cpu(), target.detach().float().cpu()
        foreground = (mask.detach() > 0).cpu()
        regions = {"foreground": foreground, "whole": torch.ones_like(foreground)}
        grad_pred, grad_target = _gradient_magnitude(pred), _gradient_magnitude(target)
        log_error = _filter(pred - target, self._log) ** 2
        log_target = _filter(target, self._log) ** 2
        for region, region_mask in regions.items():
            sums = self._sums[region]
            weight = region_mask.double()
            sums["grad_pred"] += float((grad_pred.double() * weight).sum())
            sums["grad_target"] += float((grad_target.double() * weight).sum())
            sums["log_error"] += float((log_error.double() * weight).sum())
            sums["log_target"] += float((log_target.double() * weight).sum())
            weight = region_mask.float()
            for z in range(target.shape[0]):
                self._add_spectra(sums, pred[z, 0], target[z, 0], weight[z, 0])

    def _frequency_layout(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For an ``h x w`` FFT: the 2D Hann window, the band of each frequency (0 mid, 1 high, 2 neither) and its
        radial bin (:data:`RADIAL_BINS` = past the HR Nyquist), flattened; cached per size."""
        key = (h, w)
        if key not in self._layouts:
            window = torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None] * torch.hann_window(
                w, periodic=False, dtype=torch.float64
            )
            fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
            radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).flatten()
            band = torch.full_like(radius, 2, dtype=torch.long)
            for index, name in enumerate(("mid", "high")):
                low, high = self.bands[name]
                band[(radius > low) & (radius <= high)] = index
            bins = torch.floor(radius * 2 * RADIAL_BINS).long().clamp(max=RADIAL_BINS)
            self._layouts[key] = (window.float(), band, bins)
        return self._layouts[key]

    def _add_spectra(self, sums: dict, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the windowed spectra of one slice ``[H, W]`` on the bounding box of ``mask``."""
        box = _bounding_box(mask)
        if box is None or min(box[1] - box[0], box[3] - box[2]) < MIN_SPECTRUM_SIZE:
            return
        y0, y1, x0, x1 = box
        window, band, bins = self._frequency_layout(y1 - y0, x1 - x0)
        weight = mask[y0:y1, x0:x1] * window
        spectra = torch.fft.fft2(torch.stack([pred[y0:y1, x0:x1], target[y0:y1, x0:x1]]) * weight)
        energy = torch.stack([spectra[0], spectra[1], spectra[0] - spectra[1]]).abs().square().flatten(1).double()
        for who, e in zip(("pred", "target", "error"), energy):
            per_band = torch.bincount(band, weights=e, minlength=3)
            sums[f"{who}_mid"] += float(per_band[0])
            sums[f"{who}_high"] += float(per_band[1])
            if who != "error":
                sums[f"radial_{who}"] += torch.bincount(bins, weights=e, minlength=RADIAL_BINS + 1)[:RADIAL_BINS]

    def result(self) -> dict[str, dict[str, float]]:
        """``{region: {"spectral_high", "spectral_mid", "spectral_error_high", "gradient_ratio", "hfen"}}``."""
        out = {}
        for region, s in self._sums.items():
            out[region] = {
                "spectral_high": _ratio(s["pred_high"], s["target_high"]),
                "spectral_mid": _ratio(s["pred_mid"], s["target_mid"]),
                "spectral_error_high": _ratio(s["error_high"], s["target_high"]),
                "gradient_ratio": _ratio(s["grad_pred"], s["grad_target"]),
                "hfen": math.sqrt(_ratio(s["log_error"], s["log_target"])) if s["log_target"] > 0 else math.nan,
            }
        return out

    def radial_energy(self, region: str = "foreground") -> tuple[torch.Tensor, torch.Tensor]:
        """SR and HR spectral energies ``[RADIAL_BINS]`` (float64) per radial bin, summed over the slices."""
        return self._sums[region]["radial_pred"].clone(), self._sums[region]["radial_target"].clone()


def _gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` -> ``|grad|`` ``[N, 1, H, W]`` by central differences (edges replicated)."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    return torch.sqrt(gx**2 + gy**2)


def _filter(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` filtered by an odd square ``kernel`` ``[1, 1, k, k]`` (edges replicated), same size."""
    half = kernel.shape[-1] // 2
    return F.conv2d(F.pad(image, (half, half, half, half), mode="replicate"), kernel.to(image.dtype))


def volume_detail_metrics(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scale: int, chunk: int = 32
) -> DetailMetricAccumulator:
    """The filled :class:`DetailMetricAccumulator` of one volume (``.result()`` for the metrics).

    Args:
        pred: ``[Z, 1, H, W]`` SR slices in [0, 1].
        target: ``[Z, 1, H, W]`` HR slices in [0, 1].
        mask: ``[Z, 1, H, W]`` foreground mask (nonzero = foreground).
        scale: the LR factor ``s``.
        chunk: slices per update (bounds memory).
    """
    _check(pred, target, mask, "volume_detail_metrics")
    accumulator = DetailMetricAccumulator(scale)
    for start in range(0, target.shape[0], chunk):
        accumulator.update(pred[start : start + chunk], target[start : start + chunk], mask[start : start + chunk])
    return accumulator


def _torchmetrics_image():
    try:
        from torchmetrics.functional import image
    except ImportError:
        return None
    return image


def library_metrics_note() -> str:
    """How the library metrics were computed, or why they are NaN."""
    if _torchmetrics_image() is None:
        return "ms_ssim and vif are NaN: torchmetrics is not installed (pip install 'monai_lstmagan[iqa]')."
    import torchmetrics

    return (
        f"ms_ssim, vif: torchmetrics {torchmetrics.__version__} (MS-SSIM 5 scales, 11x11 Gaussian window sigma 1.5, "
        "data_range 1; VIF-P with sigma_n^2 2 on intensities x255), per slice on the foreground bounding box of the "
        f"volume (whole: the slice), mean over slices; NaN for a box under {MS_SSIM_MIN_SIZE} (MS-SSIM) or "
        f"{VIF_MIN_SIZE} (VIF) pixels on a side."
    )


def library_metrics(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, chunk: int = 16
) -> dict[str, dict[str, float]]:
    """MS-SSIM and VIF-P of torchmetrics (the ``iqa`` extra), per slice, averaged over the slices of the volume.

    Args:
        pred: ``[Z, 1, H, W]`` SR slices in [0, 1].
        target: ``[Z, 1, H, W]`` HR slices in [0, 1] (the reference).
        mask: ``[Z, 1, H, W]`` foreground mask: ``"foreground"`` uses the slices with foreground, cropped to the
            bounding box of the volume's foreground; ``"whole"`` every slice, uncropped.
        chunk: slices per call.

    Returns:
        ``{"foreground": {"ms_ssim", "vif"}, "whole": {"ms_ssim", "vif"}}``; NaN without torchmetrics
        (:func:`library_metrics_note`), for an empty mask, or for a region smaller than the metric allows.
    """
    _check(pred, target, mask, "library_metrics")
    nan = {region: dict.fromkeys(LIBRARY_METRICS, math.nan) for region in REGIONS}
    image = _torchmetrics_image()
    if image is None:
        return nan
    foreground = mask[:, 0] > 0
    regions: dict[str, tuple[torch.Tensor, torch.Tensor]] = {"whole": (pred, target)}
    box = _bounding_box(foreground.any(dim=0))
    if box is not None:
        y0, y1, x0, x1 = box
        slices = foreground.flatten(1).any(dim=1)
        regions["foreground"] = (pred[slices, :, y0:y1, x0:x1], target[slices, :, y0:y1, x0:x1])
    out: dict[str, dict[str, float]] = {}
    for region in REGIONS:
        if region not in regions:
            out[region] = nan[region]
            continue
        p, t = (x.float().cpu() for x in regions[region])
        values: Mapping[str, list[torch.Tensor]] = {"ms_ssim": [], "vif": []}
        side = min(t.shape[-2:])
        for start in range(0, t.shape[0], chunk):
            pc, tc = p[start : start + chunk], t[start : start + chunk]
            if side >= MS_SSIM_MIN_SIZE:
                values["ms_ssim"].append(
                    image.multiscale_structural_similarity_index_measure(pc, tc, data_range=1.0, reduction="none")
                )
            if side >= VIF_MIN_SIZE:
                values["vif"].append(image.visual_information_fidelity(pc * 255.0, tc * 255.0, reduction="none"))
        out[region] = {k: float(torch.cat(v).double().mean()) if v else math.nan for k, v in values.items()}
    return out
