"""Per-volume PSNR / SSIM of the generator next to the bicubic baseline, on the foreground and the whole image.

Protocol (``docs/design.md``):

- each HR volume is loaded with ``transforms.volume_transforms`` (RAS, intensities normalised to
  [0, 1] from the HR volume itself: CT window, MR foreground percentiles; foreground mask), and its
  in-plane size is centre-cropped to a multiple of the scale, as for validation during training;
- LR = ``transforms.MakeLowResolutiond`` of every axial slice, exactly the LR of training and
  validation (``bicubic_downsample``, clamped to [0, 1]), bicubic baseline =
  ``transforms.bicubic_upsample`` of LR, SR = the generator on LR (and any extra
  generators, e.g. the MSE-only model); every output is clamped to [0, 1];
- metrics per volume with ``data_range = 1`` (on grayscale images the paper's "Y channel" is the
  image itself): foreground and whole-image PSNR / SSIM of :mod:`monai_lstmagan.metrics`, and the metrics
  that see fine detail and invented detail, :mod:`monai_lstmagan.detail_metrics` (spectral energy ratios
  above and below the LR Nyquist, the high-band spectral error, the gradient ratio, HFEN; MS-SSIM and VIF of
  torchmetrics when the ``iqa`` extra is installed, else NaN).

Outputs in ``output_dir``: ``metrics.csv`` (long format, :data:`~monai_lstmagan.evaluation.report.METRICS_COLUMNS`:
``volume,method,region,psnr,ssim,spectral_high,...``), ``summary.json`` (mean and sample standard deviation over
volumes per method, region and metric, and the number of volumes; a non-finite mean, e.g. an infinite PSNR of a
perfect copy, is written as ``null``; ``radial_spectrum``: the foreground SR/HR energy ratio per radial frequency
bin, summed over the volumes, per method), ``figures/<volume>.png`` (comparison panel of the slice with the
largest foreground), ``figures/spectrum_ratio.png`` (that ratio against frequency) and, with ``save_volumes``,
``volumes/<volume>_{hr,lr,bicubic,sr,...}.nii.gz``
(normalised [0, 1] intensities, RAS geometry of the cropped HR / LR grids).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from monai_lstmagan.checkpoints import load_generator
from monai_lstmagan.data.datalist import load_datalist, split_by_patient
from monai_lstmagan.data.discovery import find_volumes
from monai_lstmagan.detail_metrics import library_metrics, library_metrics_note, radial_bin_edges, volume_detail_metrics
from monai_lstmagan.evaluation.report import RESERVED_METHODS, save_volume, volume_name, write_results
from monai_lstmagan.inference.in_plane import super_resolve_volume
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.io.geometry import upsampled_affine
from monai_lstmagan.io.paths import check_output_dir
from monai_lstmagan.metrics import REGIONS, SSIM_WINDOW, volume_metrics
from monai_lstmagan.plots import plot_comparison, plot_spectrum_ratio
from monai_lstmagan.transforms.in_plane import MakeLowResolutiond, centre_crop_bounds
from monai_lstmagan.transforms.intensity import volume_transforms
from monai_lstmagan.transforms.ops import bicubic_upsample

__all__ = ["select_volumes", "evaluate"]


def select_volumes(
    dataset_dir: str | None, datalist_file: str | None = None, split: str = "test", modality: str = "auto"
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
        batch_size, device, amp: how the generators run (:class:`~monai_lstmagan.inference.options.InferenceOptions`).
        save_volumes: also write the cropped HR, LR, bicubic and SR volumes as NIfTI.
        figures: write a comparison panel per volume.
        progress: progress bar over volumes.

    Returns:
        the summary written to ``summary.json``.
    """
    output_dir = check_output_dir(output_dir)
    options = InferenceOptions(batch_size, device, amp)
    extra_checkpoints = dict(extra_checkpoints or {})
    for name in extra_checkpoints:
        if name in RESERVED_METHODS or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise ValueError(
                f"extra checkpoint name {name!r} must be [A-Za-z0-9_-]+ and not one of {RESERVED_METHODS}."
            )
    items = select_volumes(dataset_dir, datalist_file, split, modality)
    generator, ckpt = load_generator(ckpt_path)
    scale = int(ckpt["generator"]["scale"])
    generators = {"sr": generator}
    for name, path in extra_checkpoints.items():
        generators[name] = load_generator(path, expected_scale=scale)[0]

    rows: list[dict[str, Any]] = []
    used_names: set[str] = set()
    radial: dict[str, list[torch.Tensor]] = {}  # method -> [SR energy per bin, HR energy per bin], over volumes
    for item in tqdm(items, desc="evaluating", unit="volume", disable=not progress):
        name = volume_name(item, used_names)
        data = volume_transforms(item.get("modality", modality))(
            {"image": item["image"], "modality": item.get("modality", modality)}
        )
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
            sr_volume = super_resolve_volume(net, lr_volume, scale, options)
            outputs[method] = sr_volume[0].permute(2, 0, 1).unsqueeze(1)
        slice_mask = mask_volume[0].permute(2, 0, 1).unsqueeze(1)
        for method, pred in outputs.items():
            metrics = volume_metrics(pred, hr, slice_mask)
            detail = volume_detail_metrics(pred, hr, slice_mask, scale)
            fidelity = library_metrics(pred, hr, slice_mask)
            for region, values in detail.result().items():
                metrics[region].update(values, **fidelity[region])
            for region in REGIONS:
                rows.append({"volume": name, "method": method, "region": region, **metrics[region]})
            energies = radial.setdefault(method, [0.0, 0.0])
            for k, energy in enumerate(detail.radial_energy("foreground")):
                energies[k] = energies[k] + energy

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
            save_volume(hr_volume, hr_affine, os.path.join(folder, f"{name}_hr.nii.gz"))
            save_volume(
                lr_volume, upsampled_affine(hr_affine, (0, 1), 1.0 / scale), os.path.join(folder, f"{name}_lr.nii.gz")
            )
            for method, pred in outputs.items():
                save_volume(
                    pred[:, 0].permute(1, 2, 0).unsqueeze(0), hr_affine, os.path.join(folder, f"{name}_{method}.nii.gz")
                )

    radial_ratio = {
        method: [float(p / t) if t > 0 else None for p, t in zip(pred.tolist(), target.tolist())]
        for method, (pred, target) in radial.items()
    }
    if figures and radial_ratio:
        plot_spectrum_ratio(
            radial_bin_edges(), radial_ratio, os.path.join(output_dir, "figures", "spectrum_ratio.png"), scale,
            title=f"radial spectrum SR / HR, foreground, {len(items)} volume(s), x{scale}",
        )  # fmt: skip
    return write_results(output_dir, rows, {
        "num_volumes": len(items),
        "volumes": sorted(used_names),
        "scale": scale,
        "split": split,
        "checkpoint": os.path.abspath(ckpt_path),
        "extra_checkpoints": {k: os.path.abspath(v) for k, v in extra_checkpoints.items()},
        "protocol": "per-volume PSNR/SSIM on normalised [0,1] intensities; foreground = body/head mask; "
        "SSIM 2D per axial slice, 11x11 Gaussian window (sigma 1.5); std = sample std over volumes; "
        "detail metrics: monai_lstmagan.detail_metrics (docs/evaluation.md)",
        "library_metrics": library_metrics_note(),
        "radial_spectrum": {"bin_edges": radial_bin_edges(), "region": "foreground", "ratio": radial_ratio},
    })  # fmt: skip
