"""Per-volume PSNR / SSIM of the generator next to the bicubic baseline, on the foreground and the whole image.

Protocol (see the design doc):

- each HR volume is loaded with ``transforms.volume_transforms`` (RAS, intensities normalised to
  [0, 1] from the HR volume itself: CT window, MR foreground percentiles; foreground mask), and its
  in-plane size is centre-cropped to a multiple of the scale, as for validation during training;
- LR = ``transforms.MakeLowResolutiond`` of every axial slice, exactly the LR of training and
  validation (``bicubic_downsample``, clamped to [0, 1]), bicubic baseline =
  ``transforms.bicubic_upsample`` of LR, SR = the generator on LR (and any extra
  generators, e.g. the MSE-only model); every output is clamped to [0, 1];
- metrics per volume with ``data_range = 1`` (on grayscale images the paper's "Y channel" is the
  image itself):

  - PSNR, whole image: MONAI ``PSNRMetric`` over all voxels of the volume;
  - PSNR, foreground: ``10 log10(1 / MSE)`` with the MSE averaged over the voxels of the mask only;
  - SSIM: the SSIM map of MONAI (``compute_ssim_and_cs``, 2D per axial slice, 11x11 Gaussian window,
    sigma 1.5, k1 0.01, k2 0.03; the map covers the voxels where the window fits); whole image = mean of
    the map (equal to MONAI ``SSIMMetric`` averaged over slices), foreground = mean of the map over the
    mask voxels.

Outputs in ``output_dir``: ``metrics.csv`` (long format ``volume,method,region,psnr,ssim``),
``summary.json`` (mean and sample standard deviation over volumes per method and region, and the
number of volumes; a non-finite mean, e.g. an infinite PSNR of a perfect copy, is written as ``null``), ``figures/<volume>.png`` (comparison panel of the slice with the largest
foreground) and, with ``save_volumes``, ``volumes/<volume>_{hr,lr,bicubic,sr,...}.nii.gz``
(normalised [0, 1] intensities, RAS geometry of the cropped HR / LR grids).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.metrics import PSNRMetric
from monai.metrics.regression import compute_ssim_and_cs
from tqdm import tqdm

from monai_lstmagan.checkpoints import load_generator
from monai_lstmagan.atomic import atomic_files, atomic_write
from monai_lstmagan.inference import check_output_dir, super_resolve_volume, upsampled_affine
from monai_lstmagan.plots import plot_comparison

__all__ = [
    "METRICS_COLUMNS",
    "REGIONS",
    "SSIM_WINDOW",
    "volume_metrics",
    "select_volumes",
    "summarize",
    "evaluate",
    "write_results",
]

METRICS_COLUMNS = ("volume", "method", "region", "psnr", "ssim")
REGIONS = ("foreground", "whole")
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_RESERVED_METHODS = ("bicubic", "sr", "hr", "lr")


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


def select_volumes(
    dataset_dir: str | None,
    datalist_file: str | None = None,
    split: str = "test",
    modality: str = "auto",
) -> list[dict]:
    """The volumes to evaluate: one split of the datalist (written once by training) or a whole folder.

    Evaluation never writes a datalist: when ``datalist_file`` does not exist, the split of ``dataset_dir``
    is computed in memory exactly as training would write it (``data.split_by_patient``, same seed). When
    both are given, the datalist's volumes must lie in ``dataset_dir``: a datalist of another dataset is
    refused instead of silently evaluating other volumes than the folder asked for.

    Args:
        dataset_dir: the dataset folder (needed for ``split="all"`` or without a datalist file).
        datalist_file: the datalist JSON of training (read, never written).
        split: ``"test"`` (the held-out split), ``"validation"``, ``"training"`` or ``"all"`` (every volume
            of ``dataset_dir``, no datalist).
        modality: ``"ct"``, ``"mr"`` or ``"auto"``.

    Raises:
        ValueError: unknown split, the split is empty (the message gives the split sizes), or the datalist
            lists volumes outside ``dataset_dir``.
        FileNotFoundError: neither an existing datalist nor a dataset_dir.
    """
    from monai_lstmagan.data import find_volumes, load_datalist, split_by_patient

    if split == "all":
        if not dataset_dir:
            raise ValueError("split 'all' needs a dataset_dir.")
        return find_volumes(dataset_dir, modality=modality)
    if split not in ("test", "validation", "training"):
        raise ValueError(f"split must be 'test', 'validation', 'training' or 'all', got {split!r}.")
    if datalist_file and os.path.exists(datalist_file):
        datalist = load_datalist(datalist_file, modality)
        source = f"'{datalist_file}'"
        if dataset_dir:
            root = os.path.join(os.path.realpath(dataset_dir), "")
            outside = [i["image"] for k in ("training", "validation", "test") for i in datalist.get(k, [])
                       if not os.path.realpath(i["image"]).startswith(root)]  # fmt: skip
            if outside:
                raise ValueError(
                    f"datalist {source} lists {len(outside)} volume(s) outside dataset_dir '{dataset_dir}' (e.g. "
                    f"'{outside[0]}'): it is the split of another dataset. Give that dataset's datalist "
                    "(--datalist_file), or a datalist_file that does not exist to split dataset_dir in memory, "
                    "or --split all to evaluate every volume of dataset_dir."
                )
    elif dataset_dir:
        datalist = split_by_patient(find_volumes(dataset_dir, modality=modality))
        source = f"the patient split of '{dataset_dir}' (computed, not written)"
    else:
        raise FileNotFoundError(
            f"datalist '{datalist_file}' does not exist and no dataset_dir was given to split: give --dataset_dir."
        )
    items = datalist.get(split, [])
    if not items:
        sizes = ", ".join(f"{len(datalist.get(k, []))} {k}" for k in ("training", "validation", "test"))
        raise ValueError(
            f"the {split!r} split of {source} is empty ({sizes}): evaluate another split "
            "(--split validation) or every volume of a folder (--split all --dataset_dir DIR)."
        )
    return items


def _volume_name(item: Mapping[str, Any], used: set[str]) -> str:
    base = os.path.basename(item["image"])
    for suffix in (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float | None]]]]:
    """Mean and sample standard deviation (ddof 1; ``None`` for a single volume) per method, region and metric.

    Args:
        rows: ``metrics.csv`` rows with keys ``method, region, psnr, ssim``. NaN values (empty
            foreground) are left out; ``count`` says how many values were averaged.
    """
    out: dict = {}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        out[method] = {}
        for region in REGIONS:
            out[method][region] = {}
            for metric in ("psnr", "ssim"):
                values = np.asarray(
                    [float(r[metric]) for r in rows if r["method"] == method and r["region"] == region], dtype=float
                )
                values = values[~np.isnan(values)]
                mean = float(values.mean()) if values.size else None
                std = float(values.std(ddof=1)) if values.size > 1 else None
                out[method][region][metric] = {
                    "mean": mean if mean is not None and math.isfinite(mean) else None,
                    "std": std if std is not None and math.isfinite(std) else None,
                    "count": int(values.size),
                }
    return out


def _save_nifti(array: torch.Tensor, affine: np.ndarray, path: str) -> None:
    """``array`` ``[1, X, Y, Z]`` as a float32 NIfTI at ``path``, written atomically."""
    folder, name = os.path.split(path)
    with atomic_files(folder) as tmp_dir:
        nib.save(nib.Nifti1Image(array.squeeze(0).numpy().astype(np.float32), affine), os.path.join(tmp_dir, name))


def evaluate(
    ckpt_path: str,
    output_dir: str,
    dataset_dir: str | None = None,
    datalist_file: str | None = None,
    split: str = "test",
    extra_checkpoints: Mapping[str, str] | None = None,
    modality: str = "auto",
    batch_size: int | None = None,
    device: str | None = "auto",
    amp: bool = False,
    save_volumes: bool = False,
    figures: bool = True,
    progress: bool = True,
) -> dict:
    """Evaluate a generator (and optional extra generators) against the bicubic baseline, volume by volume.

    Args:
        ckpt_path: the generator checkpoint ``model.pt`` (method name ``"sr"``).
        output_dir: where ``metrics.csv``, ``summary.json``, ``figures/`` and ``volumes/`` are written.
        dataset_dir, datalist_file, split, modality: which volumes, see :func:`select_volumes`.
        extra_checkpoints: ``{method name: model.pt}`` evaluated on the same volumes (same scale), e.g.
            ``{"mse_only": ".../mse/model.pt"}``.
        batch_size, device, amp: how the generators run (see ``inference.super_resolve_volume``).
        save_volumes: also write the cropped HR, LR, bicubic and SR volumes as NIfTI.
        figures: write a comparison panel per volume.
        progress: progress bar over volumes.

    Returns:
        the summary written to ``summary.json``.
    """
    from monai_lstmagan.transforms import MakeLowResolutiond, bicubic_upsample, centre_crop_bounds, volume_transforms

    output_dir = check_output_dir(output_dir)
    extra_checkpoints = dict(extra_checkpoints or {})
    for name in extra_checkpoints:
        if name in _RESERVED_METHODS or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise ValueError(f"extra checkpoint name {name!r} must be [A-Za-z0-9_-]+ and not one of {_RESERVED_METHODS}.")
    items = select_volumes(dataset_dir, datalist_file, split, modality)
    generator, ckpt = load_generator(ckpt_path)
    scale = int(ckpt["generator"]["scale"])
    generators = {"sr": generator}
    for name, path in extra_checkpoints.items():
        generators[name] = load_generator(path, expected_scale=scale)[0]

    rows: list[dict[str, Any]] = []
    used_names: set[str] = set()
    for item in tqdm(items, desc="evaluating", unit="volume", disable=not progress):
        name = _volume_name(item, used_names)
        data = volume_transforms(item.get("modality", modality))({"image": item["image"], "modality": item.get("modality", modality)})
        image, mask = data["image"], data["mask"]
        affine = np.asarray(getattr(image, "affine", torch.eye(4)), dtype=np.float64)  # RAS, of the whole volume
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        mask = mask.as_tensor() if hasattr(mask, "as_tensor") else torch.as_tensor(mask)
        _, x, y, _ = image.shape
        x0, x1 = centre_crop_bounds(x, scale)
        y0, y1 = centre_crop_bounds(y, scale)
        if x1 - x0 < scale * SSIM_WINDOW or y1 - y0 < scale * SSIM_WINDOW:
            raise ValueError(f"'{item['image']}': slices of {x}x{y} are too small to evaluate at x{scale}.")
        hr_volume = torch.as_tensor(image[:, x0:x1, y0:y1, :], dtype=torch.float32)  # [1, X, Y, Z]
        mask_volume = torch.as_tensor(mask[:, x0:x1, y0:y1, :], dtype=torch.float32)
        hr = hr_volume[0].permute(2, 0, 1).unsqueeze(1)  # [Z, 1, X, Y]
        lr = MakeLowResolutiond("hr", "lr", scale=scale)({"hr": hr})["lr"]  # the LR of training and validation
        outputs = {"bicubic": bicubic_upsample(lr, scale).clamp(0.0, 1.0)}
        lr_volume = lr[:, 0].permute(1, 2, 0).unsqueeze(0)  # [1, X/s, Y/s, Z]
        for method, net in generators.items():
            sr_volume = super_resolve_volume(net, lr_volume, scale, batch_size=batch_size, device=device, amp=amp)
            outputs[method] = sr_volume[0].permute(2, 0, 1).unsqueeze(1)
        slice_mask = mask_volume[0].permute(2, 0, 1).unsqueeze(1)
        for method, pred in outputs.items():
            metrics = volume_metrics(pred, hr, slice_mask)
            for region in REGIONS:
                rows.append({"volume": name, "method": method, "region": region, **metrics[region]})

        if figures:
            z = int(torch.argmax(slice_mask.sum(dim=(1, 2, 3))))
            plot_comparison(
                hr[z, 0],
                outputs["bicubic"][z, 0],
                outputs["sr"][z, 0],
                os.path.join(output_dir, "figures", f"{name}.png"),
                title=f"{name}, axial slice {z}, x{scale}",
                extra={m: outputs[m][z, 0] for m in extra_checkpoints},
            )
        if save_volumes:
            folder = os.path.join(output_dir, "volumes")
            os.makedirs(folder, exist_ok=True)
            hr_affine = affine.copy()
            hr_affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.array([x0, y0, 0.0])
            _save_nifti(hr_volume, hr_affine, os.path.join(folder, f"{name}_hr.nii.gz"))
            _save_nifti(lr_volume, upsampled_affine(hr_affine, (0, 1), 1.0 / scale), os.path.join(folder, f"{name}_lr.nii.gz"))
            for method, pred in outputs.items():
                _save_nifti(pred[:, 0].permute(1, 2, 0).unsqueeze(0), hr_affine, os.path.join(folder, f"{name}_{method}.nii.gz"))

    return write_results(output_dir, rows, {
        "num_volumes": len(items),
        "volumes": sorted(used_names),
        "scale": scale,
        "split": split,
        "checkpoint": os.path.abspath(ckpt_path),
        "extra_checkpoints": {k: os.path.abspath(v) for k, v in extra_checkpoints.items()},
        "protocol": "per-volume PSNR/SSIM on normalised [0,1] intensities; foreground = body/head mask; "
        "SSIM 2D per axial slice, 11x11 Gaussian window (sigma 1.5); std = sample std over volumes",
    })  # fmt: skip


def write_results(output_dir: str, rows: Sequence[Mapping[str, Any]], description: Mapping[str, Any]) -> dict:
    """Write ``metrics.csv`` (one row per volume, method, region) and ``summary.json`` atomically.

    Args:
        output_dir: the evaluation's output folder.
        rows: ``{"volume", "method", "region", "psnr", "ssim"}`` per volume, method and region.
        description: what was evaluated and how (volumes, checkpoint, protocol, ...), stored in the summary
            with ``data_range``, ``created`` and ``metrics`` (:func:`summarize`).

    Returns:
        the summary written to ``summary.json``.
    """
    with atomic_write(os.path.join(output_dir, "metrics.csv"), "w", newline="", what="metrics") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in METRICS_COLUMNS})
    summary = {
        **description,
        "data_range": 1.0,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": summarize(rows),
    }
    with atomic_write(os.path.join(output_dir, "summary.json"), "w", what="summary") as f:
        json.dump(summary, f, indent=2, allow_nan=False, default=str)
    return summary
