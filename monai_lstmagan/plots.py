"""Figures for training and evaluation (matplotlib, ``Agg`` backend: no display needed).

- :func:`plot_training_curves`: loss curves (generator parts, discriminator, gradient penalty),
  discriminator accuracy, and validation PSNR/SSIM of SR next to bicubic, per epoch, read from the
  CSV files that training writes (``iterations.csv``, ``validation.csv``).
- :func:`plot_comparison`: one panel per volume: HR | bicubic | SR (| extra methods), each with a
  zoomed inset of the same region, and under each method its signed difference to HR
  (method - HR) in a red/blue map shared by all methods, as in Fig. 4 of the LSTMAGAN paper.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy.ndimage import uniform_filter  # noqa: E402

from monai_lstmagan.losses import G_LOSS_KEYS, LossKeys  # noqa: E402

__all__ = [
    "plot_training_curves", "plot_comparison", "plot_spectrum_ratio", "read_epoch_means", "choose_inset", "save_figure"
]  # fmt: skip

LOSS_COLUMNS = (*G_LOSS_KEYS, LossKeys.ADVERSARIAL_FEATURE, LossKeys.D_LOSS, LossKeys.GRADIENT_PENALTY)
LOSS_TITLES = {
    LossKeys.LOSS: "G total loss",
    LossKeys.MSE: "G content (MSE)",
    LossKeys.PERCEPTUAL: "G perceptual (VGG features)",
    LossKeys.ADVERSARIAL: "G adversarial",
    LossKeys.ADVERSARIAL_FEATURE: "G adversarial feature (MedSRGAN)",
    LossKeys.D_LOSS: "D loss",
    LossKeys.GRADIENT_PENALTY: "gradient penalty",
}
CRITIC_COLUMNS = (LossKeys.D_ACCURACY, LossKeys.D_ACCURACY_MIDPOINT, LossKeys.D_REAL, LossKeys.D_FAKE)


def _to_float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_epoch_means(csv_path: str, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Read a training CSV and average each column per epoch (NaN-aware).

    Args:
        csv_path: a CSV with an ``epoch`` column and numeric columns (empty cells count as missing).
        columns: the columns to average; columns absent from the file are left out of the result.

    Returns:
        ``{"epoch": [E], column: [E], ...}`` sorted by epoch; empty dict if the file has no rows.
    """
    rows_by_epoch: OrderedDict[int, list[dict[str, str]]] = OrderedDict()
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "epoch" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: no 'epoch' column (header: {reader.fieldnames}).")
        present = [c for c in columns if c in reader.fieldnames]
        for row in reader:
            epoch = _to_float(row.get("epoch"))
            if math.isnan(epoch):
                continue
            rows_by_epoch.setdefault(int(epoch), []).append(row)
    if not rows_by_epoch:
        return {}
    epochs = sorted(rows_by_epoch)
    out = {"epoch": np.asarray(epochs, dtype=float)}
    for c in present:
        means = []
        for e in epochs:
            values = np.asarray([_to_float(r.get(c)) for r in rows_by_epoch[e]], dtype=float)
            finite = values[np.isfinite(values)]
            means.append(finite.mean() if finite.size else math.nan)
        out[c] = np.asarray(means)
    return out


def _usable(csv_path: str) -> bool:
    if not os.path.isfile(csv_path):
        warnings.warn(f"{csv_path} does not exist: its curves are skipped.", stacklevel=3)
        return False
    if os.path.getsize(csv_path) == 0:
        warnings.warn(f"{csv_path} is empty: its curves are skipped.", stacklevel=3)
        return False
    return True


def _has_values(series: np.ndarray | None) -> bool:
    return series is not None and bool(np.isfinite(series).any())


def plot_training_curves(output_dir: str) -> list[str]:
    """Plot the per-epoch training curves from the CSVs that training writes in ``output_dir``.

    Reads ``iterations.csv`` (columns ``epoch,iteration,loss,mse,perceptual,adversarial,d_loss,
    gradient_penalty,d_real,d_fake,d_accuracy``; values are averaged per epoch) and
    ``validation.csv`` (columns ``epoch`` and ``<metric>_sr``, ``<metric>_bicubic`` for the metrics of
    :data:`VALIDATION_PANELS`: foreground and whole-image PSNR / SSIM). Writes

    - ``curves_losses.png``: one axis per generator part, D loss and gradient penalty,
    - ``curves_d_accuracy.png``: discriminator accuracy, paired and midpoint (chance level 0.5 marked),
    - ``curves_validation.png``: validation PSNR and SSIM per epoch (foreground and whole image), SR next to
      bicubic.

    A CSV that is missing or has no rows is skipped with a warning; columns with no finite values
    (e.g. ``adversarial`` during MSE-only pre-training) are left out.

    Args:
        output_dir: the training output folder.

    Returns:
        the paths of the figures written.
    """
    written: list[str] = []
    iterations_csv = os.path.join(output_dir, "iterations.csv")
    if _usable(iterations_csv):
        means = read_epoch_means(iterations_csv, (*LOSS_COLUMNS, *CRITIC_COLUMNS))
        if not means:
            warnings.warn(f"{iterations_csv} has no rows: its curves are skipped.", stacklevel=2)
        else:
            written += _plot_losses(means, output_dir)
            written += _plot_d_accuracy(means, output_dir)
    validation_csv = os.path.join(output_dir, "validation.csv")
    if _usable(validation_csv):
        means = read_epoch_means(
            validation_csv, tuple(f"{metric}_{m}" for metric, _ in VALIDATION_PANELS for m in ("sr", "bicubic"))
        )
        if not means:
            warnings.warn(f"{validation_csv} has no rows: its curves are skipped.", stacklevel=2)
        else:
            written += _plot_validation(means, output_dir)
    return written


def _epoch_axis(ax) -> None:
    """x axis in whole epochs, light grid."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def save_figure(fig, path: str) -> list[str]:
    """Lay out, write and close ``fig``; returns ``[path]``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _plot_losses(means: Mapping[str, np.ndarray], output_dir: str) -> list[str]:
    columns = [c for c in LOSS_COLUMNS if _has_values(means.get(c))]
    if not columns:
        return []
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, c in zip(axes.flat, columns):
        ax.plot(means["epoch"], means[c], marker="o", markersize=3)
        ax.set_title(LOSS_TITLES[c])
        _epoch_axis(ax)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    fig.suptitle("Training losses (mean per epoch)")
    return save_figure(fig, os.path.join(output_dir, "curves_losses.png"))


def _plot_d_accuracy(means: Mapping[str, np.ndarray], output_dir: str) -> list[str]:
    if not _has_values(means.get(LossKeys.D_ACCURACY)):
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(means["epoch"], means[LossKeys.D_ACCURACY], marker="o", markersize=3, label="D accuracy (paired)")
    if _has_values(means.get(LossKeys.D_ACCURACY_MIDPOINT)):
        ax.plot(
            means["epoch"], means[LossKeys.D_ACCURACY_MIDPOINT], marker="s", markersize=3, label="D accuracy (midpoint)"
        )
    ax.axhline(0.5, color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(-0.02, 1.02)
    _epoch_axis(ax)
    ax.set_ylabel("accuracy")
    ax.set_title("Discriminator accuracy (mean per epoch)")
    ax.legend()
    return save_figure(fig, os.path.join(output_dir, "curves_d_accuracy.png"))


#: ``(column prefix, title)`` of the validation panels; columns ``<prefix>_sr`` and ``<prefix>_bicubic``.
VALIDATION_PANELS = (
    ("psnr_fg", "foreground PSNR (dB)"), ("ssim_fg", "foreground SSIM"),
    ("psnr", "whole-image PSNR (dB)"), ("ssim", "whole-image SSIM"),
)  # fmt: skip


def _plot_validation(means: Mapping[str, np.ndarray], output_dir: str) -> list[str]:
    panels = [(m, f"{m}_sr", f"{m}_bicubic", title) for m, title in VALIDATION_PANELS]
    panels = [p for p in panels if _has_values(means.get(p[1])) or _has_values(means.get(p[2]))]
    if not panels:
        return []
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.5 * nrows), squeeze=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax, (_, sr_col, bic_col, title) in zip(axes.flat, panels):
        if _has_values(means.get(sr_col)):
            ax.plot(means["epoch"], means[sr_col], marker="o", markersize=3, label="SR (generator)")
        if _has_values(means.get(bic_col)):
            ax.plot(means["epoch"], means[bic_col], linestyle="--", label="bicubic")
        ax.set_title(f"validation {title}")
        _epoch_axis(ax)
        ax.legend()
    return save_figure(fig, os.path.join(output_dir, "curves_validation.png"))


def _as_2d(image: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"plot_comparison: '{name}' must be one 2D slice, got shape {tuple(np.shape(image))}.")
    return array


def choose_inset(hr: np.ndarray, size_fraction: float = 0.25) -> tuple[int, int, int, int]:
    """Pick the square region with the most detail (largest local intensity variance) of a 2D HR slice.

    Args:
        hr: ``[H, W]`` reference slice.
        size_fraction: side of the square relative to ``min(H, W)``.

    Returns:
        ``(row, col, height, width)`` of the region.
    """
    h, w = hr.shape
    side = max(4, int(round(min(h, w) * size_fraction)))
    side = min(side, h, w)
    mean = uniform_filter(hr, side, mode="constant")
    variance = uniform_filter(hr * hr, side, mode="constant") - mean * mean
    half = side // 2
    valid = variance[half : h - side + half + 1, half : w - side + half + 1]
    r, c = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(r), int(c), side, side


def plot_comparison(
    hr: np.ndarray | torch.Tensor,
    bicubic: np.ndarray | torch.Tensor,
    sr: np.ndarray | torch.Tensor,
    out_path: str,
    title: str = "",
    inset: tuple[int, int, int, int] | None = None,
    extra: Mapping[str, np.ndarray | torch.Tensor] | None = None,
    reference_name: str = "HR",
    baseline_name: str = "bicubic",
) -> str:
    """Write a comparison panel of one slice: HR | bicubic | SR (| extra methods), zoom insets, difference maps.

    Top row: the images (grey, intensity window [0, 1]) with a zoomed inset of the region ``inset``
    drawn in the lower-right corner and the region outlined. Bottom row: for each method, the signed
    difference ``method - HR`` (red: brighter than HR, blue: darker), with one colour scale shared by
    all methods (symmetric, +- the 99.5th percentile of the absolute differences, so one outlier
    does not wash out the map).

    Args:
        hr: reference slice ``[H, W]`` (or squeezable to it), intensities in [0, 1].
        bicubic: bicubic baseline ``[H, W]``.
        sr: generator output ``[H, W]``.
        out_path: PNG file to write (its folder is created).
        title: figure title, e.g. the volume name and slice index.
        inset: ``(row, col, height, width)`` region to zoom; default: :func:`choose_inset` on HR.
        extra: further methods to show after SR, ``{name: [H, W]}`` (e.g. the MSE-only generator).
        reference_name, baseline_name: the labels of ``hr`` and ``bicubic`` (through-plane SR: the thin-slice
            truth and the cubic interpolation along the slice axis).

    Returns:
        ``out_path``.
    """
    images: OrderedDict[str, np.ndarray] = OrderedDict()
    images[reference_name], images[baseline_name] = _as_2d(hr, "hr"), _as_2d(bicubic, "bicubic")
    images["SR"] = _as_2d(sr, "sr")
    for name, image in (extra or {}).items():
        images[name] = _as_2d(image, name)
    shape = images[reference_name].shape
    for name, image in images.items():
        if image.shape != shape:
            raise ValueError(f"plot_comparison: '{name}' has shape {image.shape}, {reference_name} has {shape}.")
    r0, c0, rh, cw = inset if inset is not None else choose_inset(images[reference_name])
    if not (0 <= r0 and 0 <= c0 and rh > 0 and cw > 0 and r0 + rh <= shape[0] and c0 + cw <= shape[1]):
        raise ValueError(f"plot_comparison: inset {(r0, c0, rh, cw)} is outside the image of shape {shape}.")

    differences = {name: image - images[reference_name] for name, image in images.items() if name != reference_name}
    limit = max(float(np.percentile(np.abs(d), 99.5)) for d in differences.values()) or 1e-6
    ncols = len(images)
    fig, axes = plt.subplots(2, ncols, figsize=(3.3 * ncols, 6.9), squeeze=False)
    for col, (name, image) in enumerate(images.items()):
        ax = axes[0, col]
        ax.imshow(image.T, cmap="gray", vmin=0.0, vmax=1.0, origin="lower", interpolation="nearest")
        ax.add_patch(Rectangle((r0 - 0.5, c0 - 0.5), rh, cw, fill=False, edgecolor="yellow", linewidth=1))
        zoom = ax.inset_axes((0.6, 0.0, 0.4, 0.4))
        zoom.imshow(
            image[r0 : r0 + rh, c0 : c0 + cw].T,
            cmap="gray",
            vmin=0.0,
            vmax=1.0,
            origin="lower",
            interpolation="nearest",
        )
        zoom.set_xticks([])
        zoom.set_yticks([])
        for spine in zoom.spines.values():
            spine.set_edgecolor("yellow")
        ax.set_title(name)
        ax.axis("off")
        diff_ax = axes[1, col]
        if name == reference_name:
            diff_ax.axis("off")
            diff_ax.text(
                0.5,
                0.5,
                f"difference to {reference_name}\n(red: method > {reference_name},\nblue: method < {reference_name})",
                ha="center",
                va="center",
            )
            continue
        shown = diff_ax.imshow(
            differences[name].T, cmap="bwr", vmin=-limit, vmax=limit, origin="lower", interpolation="nearest"
        )
        diff_ax.set_title(f"{name} - {reference_name}")
        diff_ax.axis("off")
    fig.colorbar(shown, ax=list(axes[1, 1:]), fraction=0.025, pad=0.02)
    if title:
        fig.suptitle(title)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def plot_spectrum_ratio(
    bin_edges: Sequence[float], ratios: Mapping[str, Sequence[float | None]], out_path: str, scale: int, title: str = ""
) -> str:
    """Write the radial spectrum ratio SR/HR against frequency, one line per method (log y axis).

    Args:
        bin_edges: the radial bin edges in cycles per HR pixel (``len(ratio) + 1`` values, up to 0.5).
        ratios: ``{method: energy ratio per bin}`` (``None`` where HR has no energy), e.g. the
            ``radial_spectrum`` of an evaluation summary.
        out_path: PNG file to write (its folder is created).
        scale: the LR factor: the LR Nyquist ``1/(2 scale)`` and the band edge ``1/(4 scale)`` are marked.
        title: figure title.

    Returns:
        ``out_path``.
    """
    edges = np.asarray(bin_edges, dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, ratio in ratios.items():
        values = np.asarray([np.nan if v is None else v for v in ratio], dtype=float)
        values[values <= 0] = np.nan
        ax.plot(centres, values, marker=".", label=method)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axvline(1 / (2 * scale), color="grey", linestyle="--", linewidth=0.8, label=f"LR Nyquist 1/{2 * scale}")
    ax.axvline(1 / (4 * scale), color="grey", linestyle=":", linewidth=0.8, label=f"1/{4 * scale}")
    ax.set_yscale("log")
    ax.set_xlim(0, 0.5)
    ax.set_xlabel("radial frequency (cycles / HR pixel)")
    ax.set_ylabel("spectral energy SR / HR (foreground)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    return save_figure(fig, out_path)[0]
