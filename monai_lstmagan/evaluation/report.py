"""The results of an evaluation: volume names, ``metrics.csv``, ``summary.json`` and saved volumes."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from monai_lstmagan.detail_metrics import DETAIL_METRICS, LIBRARY_METRICS
from monai_lstmagan.io.atomic import atomic_files, atomic_write
from monai_lstmagan.io.paths import volume_stem
from monai_lstmagan.io.scans import write_scan
from monai_lstmagan.metrics import REGIONS

__all__ = [
    "KEY_COLUMNS",
    "METRICS_COLUMNS",
    "PSNR_SSIM_COLUMNS",
    "RESERVED_METHODS",
    "save_volume",
    "summarize",
    "volume_name",
    "write_results",
]

#: the columns that say which volume, method and region a row is about.
KEY_COLUMNS = ("volume", "method", "region")
#: the columns of a through-plane ``metrics.csv``.
PSNR_SSIM_COLUMNS = (*KEY_COLUMNS, "psnr", "ssim")
#: the columns of an in-plane ``metrics.csv``: PSNR / SSIM, the detail metrics and the library fidelity metrics
#: (:mod:`monai_lstmagan.detail_metrics`).
METRICS_COLUMNS = (*PSNR_SSIM_COLUMNS, *DETAIL_METRICS, *LIBRARY_METRICS)
#: Method names an extra checkpoint may not take.
RESERVED_METHODS = ("bicubic", "sr", "hr", "lr")


def volume_name(item: Mapping[str, Any], used: set[str]) -> str:
    """A unique name for an evaluated volume: its file name without the suffix, ``_2``, ``_3``... when taken
    (``used`` is updated)."""
    base = volume_stem(item["image"])
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float | None]]]]:
    """Mean and sample standard deviation (ddof 1; ``None`` for a single volume) per method, region and metric.

    Args:
        rows: ``metrics.csv`` rows with keys ``method, region`` and the metrics (every other key but ``volume``,
            e.g. ``psnr, ssim``). NaN values (empty foreground, a metric not available) are left out; ``count``
            says how many values were averaged.
    """
    out: dict = {}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = list(dict.fromkeys(k for r in rows for k in r if k not in KEY_COLUMNS))
    for method in methods:
        out[method] = {}
        for region in REGIONS:
            out[method][region] = {}
            for metric in metrics:
                values = np.asarray(
                    [float(r.get(metric, math.nan)) for r in rows if r["method"] == method and r["region"] == region],
                    dtype=float,
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


def save_volume(array: torch.Tensor, affine: np.ndarray, path: str) -> None:
    """``array`` ``[1, X, Y, Z]`` as a float32 NIfTI at ``path`` (RAS ``affine``), written atomically."""
    folder, name = os.path.split(path)
    with atomic_files(folder) as tmp_dir:
        write_scan(array.squeeze(0).numpy().astype(np.float32), affine, os.path.join(tmp_dir, name))


def write_results(
    output_dir: str,
    rows: Sequence[Mapping[str, Any]],
    description: Mapping[str, Any],
    columns: Sequence[str] = METRICS_COLUMNS,
) -> dict:
    """Write ``metrics.csv`` (one row per volume, method, region) and ``summary.json`` atomically.

    Args:
        output_dir: the evaluation's output folder.
        rows: ``{"volume", "method", "region", <metric>: value, ...}`` per volume, method and region, with every
            column of ``columns``.
        description: what was evaluated and how (volumes, checkpoint, protocol, ...), stored in the summary
            with ``data_range``, ``created`` and ``metrics`` (:func:`summarize` of the ``columns``).
        columns: the columns of ``metrics.csv`` (:data:`METRICS_COLUMNS` in-plane, :data:`PSNR_SSIM_COLUMNS`
            through-plane).

    Returns:
        the summary written to ``summary.json``.
    """
    with atomic_write(os.path.join(output_dir, "metrics.csv"), "w", newline="", what="metrics") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in columns})
    summary = {
        **description,
        "data_range": 1.0,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": summarize([{k: r[k] for k in columns} for r in rows]),
    }
    with atomic_write(os.path.join(output_dir, "summary.json"), "w", what="summary") as f:
        json.dump(summary, f, indent=2, allow_nan=False, default=str)
    return summary
