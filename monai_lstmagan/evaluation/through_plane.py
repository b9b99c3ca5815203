"""Evaluation of through-plane SR that can be trusted: simulated thick slices of real volumes, scored against
the slices they were made from, next to the interpolation users have today (cubic and linear along Z).

Per volume (normalised and masked as everywhere, :func:`monai_lstmagan.transforms.intensity.volume_transforms`):

1. the truth is the volume's own slices along Z, cropped to what a thick grid of ``factor`` covers exactly
   (:func:`monai_lstmagan.transforms.slice_profile.thick_grid`);
2. the thick input is the truth measured with the slice profile (Gaussian FWHM or box of
   ``thickness_ratio x factor`` slices) at ``factor`` times the spacing, the operator training uses;
3. methods: ``cubic`` and ``linear`` interpolation along Z, ``model`` (the refiner as it is) and ``sr`` (the
   refiner after per-scan self-supervised fine-tuning on the thick input alone, what ``lstmagan-sr
   --through-plane`` does; it never sees the truth);
4. foreground and whole-volume PSNR / SSIM (data range 1) with
   :func:`monai_lstmagan.metrics.volume_metrics`, SSIM 2D on the planes of fixed X (rows Z), which show the
   slice axis; ``metrics.csv``, ``summary.json`` (mean +- std over volumes) and a panel per volume.

With thin-slice volumes (BraTS 1 mm, thin-slice CT) the truth is thin; with the two thick sample scans of
this repository the truth is their own 5 / 6.5 mm slices and the input two times thicker, which tests the
same operator at another scale.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from tqdm import tqdm

from monai_lstmagan.evaluation.in_plane import select_volumes
from monai_lstmagan.evaluation.report import PSNR_SSIM_COLUMNS, volume_name, write_results
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.inference.through_plane import (  # fmt: skip
    DEFAULT_FINE_TUNE_ITERATIONS,
    DEFAULT_FINE_TUNE_SECONDS,
    default_refiner,
    fine_tuned_copy,
    load_refiner,
    super_resolve_slice_axis,
)
from monai_lstmagan.io.paths import check_output_dir
from monai_lstmagan.metrics import REGIONS, volume_metrics
from monai_lstmagan.plots import plot_comparison
from monai_lstmagan.transforms.intensity import ForegroundMaskd, volume_transforms
from monai_lstmagan.transforms.slice_profile import (
    DEFAULT_PROFILE,
    INTERPOLATIONS,
    interpolate_axis,
    simulate_thick_slices,
)

__all__ = ["evaluate_through_plane"]


def _planes(volume: torch.Tensor) -> torch.Tensor:
    """``[X, Y, Z] -> [X, 1, Z, Y]``: the planes of fixed X with the slice axis as rows."""
    return volume.permute(0, 2, 1)[:, None]


def _physical_aspect(plane: torch.Tensor, row_spacing: float, column_spacing: float) -> np.ndarray:
    """``[Z, Y]`` plane with its rows repeated so that the picture has the physical aspect (for figures)."""
    repeat = max(1, int(round(row_spacing / column_spacing)))
    return np.repeat(plane.numpy(), repeat, axis=0)


def evaluate_through_plane(
    ckpt_path: str | None,
    output_dir: str,
    dataset_dir: str | None = None,
    datalist_file: str | None = None,
    split: str = "all",
    factor: float = 2.0,
    thickness_ratio: float = 1.0,
    profile: str = DEFAULT_PROFILE,
    assumed_profile: str | None = None,
    fine_tune_iterations: int = DEFAULT_FINE_TUNE_ITERATIONS,
    fine_tune_seconds: float | None = DEFAULT_FINE_TUNE_SECONDS,
    modality: str = "auto",
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    figures: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Score a through-plane refiner on simulated thick slices against cubic and linear interpolation along Z.

    Args:
        ckpt_path: through-plane ``model.pt`` (scale 1); None: the untrained default refiner (``model`` = cubic).
        output_dir: where ``metrics.csv``, ``summary.json`` and ``figures/`` are written (nothing else is).
        dataset_dir, datalist_file, split, modality: which volumes (:func:`monai_lstmagan.evaluation.select_volumes`).
        factor: thick / thin slice spacing simulated (> 1).
        thickness_ratio, profile: slice thickness / spacing and slice profile of the simulated thick slices.
        assumed_profile: the profile the fine-tuning assumes (``--profile`` of the command); None: ``profile``
            (the right one). Another value measures what a wrong assumption costs.
        fine_tune_iterations, fine_tune_seconds: per-scan fine-tuning of method ``sr`` (0: no ``sr`` row).
        batch_size, device: planes per forward pass and where the refiner runs.
        figures: write a panel of the central plane of fixed X per volume.
        seed: seeds the fine-tuning.
        progress: progress bar over volumes.

    Returns:
        the summary written to ``summary.json``.
    """
    output_dir = check_output_dir(output_dir)
    items = select_volumes(dataset_dir, datalist_file, split, modality)
    refiner = load_refiner(ckpt_path) if ckpt_path else default_refiner(seed)
    options = InferenceOptions(batch_size, device)
    device = options.torch_device
    rows: list[dict[str, Any]] = []
    used_names: set[str] = set()
    fine_tuning: dict[str, Any] = {}
    for item in tqdm(items, desc="evaluating", unit="volume", disable=not progress):
        name = volume_name(item, used_names)
        data = volume_transforms(item.get("modality", modality))(
            {"image": item["image"], "modality": item.get("modality", modality)}
        )
        image, mask = data["image"], data["mask"]
        spacing = [float(s) for s in image.pixdim]
        try:
            thick, (start, stop) = simulate_thick_slices(image[0].as_tensor().float(), factor, thickness_ratio, profile)
        except ValueError as e:
            raise ValueError(f"'{item['image']}': {e}") from e
        truth = image[0].as_tensor().float()[..., start:stop]
        truth_mask = mask[0].as_tensor().float()[..., start:stop]
        real_factor = (stop - start) / thick.shape[-1]
        outputs = {mode: interpolate_axis(thick, -1, stop - start, mode).clamp(0.0, 1.0) for mode in INTERPOLATIONS}
        outputs["model"] = super_resolve_slice_axis(refiner, thick, stop - start, options)
        if fine_tune_iterations > 0:
            thick_affine = torch.as_tensor(np.diag([spacing[0], spacing[1], spacing[2] * real_factor, 1.0]))
            thick_image = MetaTensor(
                thick[None], affine=thick_affine, meta={k: v for k, v in image.meta.items() if k != "affine"}
            )
            thick_mask = ForegroundMaskd("image")({"image": thick_image})["mask"]  # from the thick input only
            model, fine_tuning[name] = fine_tuned_copy(
                refiner, thick_image, thick_mask, real_factor, fine_tune_iterations, thickness_ratio=thickness_ratio,
                profile=assumed_profile or profile, time_limit=fine_tune_seconds, seed=seed, device=device,
            )  # fmt: skip
            outputs["sr"] = super_resolve_slice_axis(model, thick, stop - start, options)
        for method, pred in outputs.items():
            metrics = volume_metrics(_planes(pred), _planes(truth), _planes(truth_mask))
            for region in REGIONS:
                rows.append({"volume": name, "method": method, "region": region, **metrics[region]})
        if figures:
            x = int(torch.argmax(truth_mask.sum(dim=(1, 2))))
            show = {m: _physical_aspect(p[x].T, spacing[2], spacing[1]) for m, p in outputs.items()}
            nearest = (torch.arange(stop - start) * thick.shape[-1]) // (stop - start)  # thick slice of each thin one
            show["thick"] = _physical_aspect(thick[x][:, nearest].T, spacing[2], spacing[1])
            final = "sr" if "sr" in outputs else "model"
            plot_comparison(
                _physical_aspect(truth[x].T, spacing[2], spacing[1]), show["cubic"], show[final],
                os.path.join(output_dir, "figures", f"{name}.png"),
                title=f"{name}, plane x={x} (rows: slice axis), thick slices x{real_factor:.3g} simulated, {profile}",
                extra={"linear": show["linear"], "thick": show["thick"]}, reference_name="truth", baseline_name="cubic",
            )  # fmt: skip

    return write_results(output_dir, rows, {
        "num_volumes": len(items),
        "volumes": sorted(used_names),
        "task": "through-plane",
        "factor": factor,
        "thickness_ratio": thickness_ratio,
        "profile": profile,
        "assumed_profile": assumed_profile or profile,
        "split": split,
        "checkpoint": os.path.abspath(ckpt_path) if ckpt_path else "untrained default refiner (cubic)",
        "fine_tune": fine_tuning,
        "protocol": "thick slices simulated along Z from the volume's slices with the slice profile; per-volume "
        "PSNR/SSIM on normalised [0,1] intensities against those slices; foreground = body/head mask; SSIM 2D "
        "on the planes of fixed X, 11x11 Gaussian window (sigma 1.5); std = sample std over volumes",
    }, columns=PSNR_SSIM_COLUMNS)  # fmt: skip
