"""How the shipped generators do on scans unlike their training scans, as a user runs them (issue 26).

``python -m monai_lstmagan.bench.generalisation [--models x2=PATH x4=PATH ...] [--slices N] [--json OUT]`` makes
variants of the two sample scans that imitate what other scanners and sites produce, writes each variant's LR file
the way a real LR file is stored, runs ``lstmagan-sr`` (:func:`~monai_lstmagan.inference.in_plane.run_inference`)
on it and reports the foreground PSNR of SR and of bicubic against the variant's HR:

- ``as stored``: the scan itself (the training scans of the shipped models: in-sample);
- ``coarser pixels``: the HR resampled in-plane to 1.3x the pixel size (a 1 mm MR from a 0.78 mm one);
- ``finer pixels``: 0.8x the pixel size;
- ``uint8`` (MR): intensities scaled to 0..255 and stored as uint8, as many research T1 files are;
- ``other contrast`` (MR): a gamma of 0.6 on the intensities (flatter white/grey contrast), int16.

The LR of a variant is :func:`~monai_lstmagan.transforms.ops.bicubic_downsample` of its HR, rounded to the HR's
voxel type; bicubic is the package's baseline (:func:`~monai_lstmagan.transforms.ops.bicubic_upsample`) of that
stored LR. Metrics follow the evaluation protocol: intensities normalised with the HR's CT window / MR
percentiles, PSNR on the HR's foreground mask (:class:`~monai_lstmagan.transforms.intensity.ForegroundMaskd`),
data range 1. The variants are made from the training scans, so they measure robustness to the variation, not
generalisation to other patients (the leave-one-patient-out runs in ``docs/results.md`` do that).

``--scans ct=PATH mr=PATH ...`` measures real scans of other subjects instead, each ``as stored`` (its own voxel
type, pixel size and intensities): the held-out check of the shipped models (``docs/results.md`` names the public
scans it was run on).

Next to the PSNR, each row has the foreground energy above the LR Nyquist of SR and of bicubic relative to HR's
(``spectral_high`` of :mod:`monai_lstmagan.detail_metrics`: 1 = HR's fine detail, < 1 smoother) and the energy
of the SR's error there (``spectral_error_high``: 0 exact; invented detail raises it). ``--gan-models
SCALE=PATH --perceptual ALPHA`` runs ``lstmagan-sr --gan-model PATH --perceptual ALPHA`` (network interpolation
towards a GAN-trained model), the user's knob of issue 24.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_lstmagan.detail_metrics import volume_detail_metrics
from monai_lstmagan.inference.in_plane import run_inference
from monai_lstmagan.io.scans import read_scan, to_voxel_type
from monai_lstmagan.metrics import volume_metrics
from monai_lstmagan.pretrained import pretrained_model_path
from monai_lstmagan.transforms.intensity import ForegroundMaskd, intensity_range
from monai_lstmagan.transforms.ops import bicubic_downsample, bicubic_upsample

__all__ = ["SAMPLE_SCANS", "VARIANTS", "make_variant", "variant_gain", "run_generalisation", "main"]

#: The sample scans the variants are made from (relative to the repository's ``bundle/sample_data``).
SAMPLE_SCANS = {"ct": "ct/lung1_crop.mhd", "mr": "mr/brain1_t1c.nii.gz"}
_SAMPLE_DATA = Path(__file__).resolve().parents[2] / "bundle" / "sample_data"


def _resample_in_plane(volume: np.ndarray, factor: float) -> np.ndarray:
    """``[X, Y, Z]`` resampled in-plane to ``factor`` times the pixel size (antialiased bicubic), float32."""
    slices = torch.from_numpy(np.ascontiguousarray(volume.transpose(2, 0, 1), dtype=np.float32))[:, None]
    size = [max(8, round(s / factor)) for s in volume.shape[:2]]
    out = torch.nn.functional.interpolate(slices, size=size, mode="bicubic", antialias=True, align_corners=False)
    return out[:, 0].permute(1, 2, 0).numpy()


def _mr_scaled(volume: np.ndarray, top: float, gamma: float = 1.0) -> np.ndarray:
    """MR intensities mapped to ``0..top`` by the 99.5th foreground percentile, with a gamma (float32)."""
    high = float(np.percentile(volume[volume > volume.min()], 99.5))
    return (top * np.clip(volume / high, 0.0, None) ** gamma).astype(np.float32)


#: Variant name -> (the modalities it applies to, HR ``[X, Y, Z]`` float -> (HR float, stored voxel type or None)).
VARIANTS: dict[str, tuple[tuple[str, ...], Callable[[np.ndarray], tuple[np.ndarray, str | None]]]] = {
    "as stored": (("ct", "mr"), lambda v: (v, None)),
    "coarser pixels": (("ct", "mr"), lambda v: (_resample_in_plane(v, 1.3), None)),
    "finer pixels": (("ct", "mr"), lambda v: (_resample_in_plane(v, 0.8), None)),
    "uint8": (("mr",), lambda v: (_mr_scaled(v, 255.0), "uint8")),
    "other contrast": (("mr",), lambda v: (_mr_scaled(v, 2000.0, gamma=0.6), "int16")),
}


def make_variant(
    modality: str, name: str, slices: int | None = None, path: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The HR of a variant of the sample scan of ``modality`` (or of the scan at ``path``): ``(array [X, Y, Z] in
    its stored type, RAS affine)``.

    ``slices``: keep only that many central axial slices (faster). The in-plane size is that of the resampled scan.
    """
    scan = read_scan(path or str(_SAMPLE_DATA / SAMPLE_SCANS[modality]))
    volume = scan.array.astype(np.float32)
    if slices is not None and slices < volume.shape[2]:
        start = (volume.shape[2] - slices) // 2
        volume = volume[:, :, start : start + slices]
    modalities, make = VARIANTS[name]
    if modality not in modalities:
        raise ValueError(f"variant {name!r} applies to {modalities}, not {modality!r}.")
    hr, dtype = make(volume)
    affine = scan.affine.copy()
    factor = scan.array.shape[0] / hr.shape[0]
    affine[:3, :2] *= factor
    return to_voxel_type(hr, np.dtype(dtype or scan.dtype)), affine


def _normalised(volume: np.ndarray, low: float, high: float) -> torch.Tensor:
    """``[X, Y, Z]`` -> ``[Z, 1, X, Y]`` in [0, 1]."""
    values = np.clip((volume.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))[:, None]


def variant_gain(
    model: str,
    scale: int,
    modality: str,
    name: str,
    folder: str,
    slices: int | None = None,
    path: str | None = None,
    gan_model: str | None = None,
    perceptual: float = 0.0,
) -> dict[str, float]:
    """Foreground PSNR and ``spectral_high`` of ``lstmagan-sr`` (the generator ``model``, interpolated towards
    ``gan_model`` by ``perceptual`` when given) and of bicubic on one variant (of the sample scan of ``modality``, or
    of the scan at ``path``), and the PSNR gain.

    Returns:
        ``{"sr", "bicubic", "gain"}`` (dB) and, for ``m`` in sr, bicubic, ``m_spectral_high`` and
        ``m_spectral_error_high`` (ratios to HR's energy above the LR Nyquist: of the image, of its error).
    """
    hr, affine = make_variant(modality, name, slices, path)
    x, y = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    hr = hr[:x, :y]
    lr_float = bicubic_downsample(torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1), np.float32)), scale)
    lr = to_voxel_type(lr_float.permute(1, 2, 0).numpy(), hr.dtype)
    lr_affine = affine.copy()
    lr_affine[:3, :2] *= scale
    lr_affine[:3, 3] += affine[:3, :2] @ np.full(2, (scale - 1) / 2)
    path = os.path.join(folder, f"{modality}_{name.replace(' ', '_')}_x{scale}.nii.gz")
    nib.save(nib.Nifti1Image(lr, lr_affine), path)
    (written,) = run_inference(
        model, folder, inputs=[path], modality=modality, progress=False, gan_model=gan_model, perceptual=perceptual
    )
    sr = read_scan(written).array
    os.remove(written)
    bicubic = bicubic_upsample(torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1), np.float32)), scale)
    low, high, _ = intensity_range(hr, modality)
    target = _normalised(hr, low, high)
    meta = {"modality": modality, "intensity_low": low, "intensity_high": high}
    image = MetaTensor(target[:, 0].permute(1, 2, 0)[None], meta=meta)
    mask = ForegroundMaskd("image")({"image": image})["mask"].as_tensor()[0].permute(2, 0, 1)[:, None]
    result = {}
    for method, volume in (("sr", sr), ("bicubic", bicubic.permute(1, 2, 0).numpy())):
        prediction = _normalised(volume, low, high)
        result[method] = volume_metrics(prediction, target, mask)["foreground"]["psnr"]
        detail = volume_detail_metrics(prediction, target, mask, scale).result()["foreground"]
        result[f"{method}_spectral_high"] = detail["spectral_high"]
        result[f"{method}_spectral_error_high"] = detail["spectral_error_high"]
    return {**result, "gain": result["sr"] - result["bicubic"]}


def run_generalisation(
    models: dict[int, str],
    slices: int | None = None,
    scans: Sequence[tuple[str, str]] = (),
    gan_models: dict[int, str] | None = None,
    perceptual: float = 0.0,
) -> list[dict[str, Any]]:
    """Every variant of both sample scans for each ``{scale: model path}``; with ``scans`` (``(modality, path)``
    pairs), each of those scans as stored instead. ``gan_models`` (``{scale: path}``) and ``perceptual``: the
    network interpolation of :func:`variant_gain` (a scale without a GAN model runs its PSNR model)."""
    rows = []
    gan_models = gan_models or {}
    with tempfile.TemporaryDirectory() as folder:
        for scale, model in models.items():
            knob = {"gan_model": gan_models.get(scale), "perceptual": perceptual if scale in gan_models else 0.0}
            for modality, path in scans:
                result = variant_gain(model, scale, modality, "as stored", folder, slices, path, **knob)
                rows.append({"scale": scale, "modality": modality, "variant": os.path.basename(path), "model": model,
                             **result})  # fmt: skip
            for modality in () if scans else SAMPLE_SCANS:
                for name, (modalities, _) in VARIANTS.items():
                    if modality in modalities:
                        result = variant_gain(model, scale, modality, name, folder, slices, **knob)
                        rows.append({"scale": scale, "modality": modality, "variant": name, "model": model, **result})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_lstmagan.bench.generalisation", description=__doc__)
    parser.add_argument("--models", nargs="+", default=None, help="SCALE=PATH (default: the shipped x2 and x4)")
    parser.add_argument("--slices", type=int, default=None, help="central axial slices per scan (default: all)")
    parser.add_argument("--scans", nargs="+", default=(), help="MODALITY=PATH (ct or mr): real scans, as stored")
    parser.add_argument("--gan-models", nargs="+", default=(), help="SCALE=PATH: GAN-trained models to interpolate to")
    parser.add_argument("--perceptual", type=float, default=0.0, help="weight of the GAN model in [0, 1] (default 0)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    scans = [tuple(item.split("=", 1)) for item in args.scans]
    for item in scans:
        if len(item) != 2 or item[0] not in SAMPLE_SCANS:
            parser.error(f"--scans takes ct=PATH or mr=PATH, not {'='.join(item)!r}")
    models = {2: pretrained_model_path(2), 4: pretrained_model_path(4)}
    if args.models:
        models = {int(k): v for k, v in (item.split("=", 1) for item in args.models)}
    gan_models = {int(k): v for k, v in (item.split("=", 1) for item in args.gan_models)}
    rows = run_generalisation(models, args.slices, scans, gan_models, args.perceptual)
    print(
        "| scale | scan | variant | bicubic fg PSNR | SR fg PSNR | gain dB | bicubic high-band | SR high-band "
        "| SR high-band error |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| x{r['scale']} | {r['modality']} | {r['variant']} | {r['bicubic']:.2f} | {r['sr']:.2f} | {r['gain']:+.2f} "
            f"| {r['bicubic_spectral_high']:.3f} | {r['sr_spectral_high']:.3f} | {r['sr_spectral_error_high']:.3f} |"
        )
    for scale in models:
        gains = [r["gain"] for r in rows if r["scale"] == scale]
        high = [r["sr_spectral_high"] for r in rows if r["scale"] == scale]
        print(
            f"x{scale}: mean gain {np.mean(gains):+.2f} dB, lowest {min(gains):+.2f} dB; "
            f"SR high-band ratio mean {np.mean(high):.3f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
