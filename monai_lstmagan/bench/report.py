"""Markdown tables of a :func:`~monai_lstmagan.bench.run.run_benchmark` result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from monai_lstmagan.bench.config import VARIANTS

__all__ = ["format_tables"]


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ceiling_for(result: dict[str, Any], variant: str) -> float | None:
    """The matmul ceiling a variant is compared with: bf16 for autocast variants, else TF32 (CUDA) or fp32."""
    ceilings = result["matmul_gflops"]
    if VARIANTS[variant].bf16:
        return ceilings.get("bf16")
    return ceilings.get("tf32", ceilings.get("fp32"))


def _memory_cells(side: dict[str, Any]) -> list[str]:
    return [_fmt(side["peak_rss_mib"], 0), _fmt(side["rss_increase_mib"], 0), _fmt(side["peak_cuda_mib"], 0)]


def format_tables(result: dict[str, Any]) -> str:
    """Markdown: a line naming the hardware, then the training and the inference table of :func:`run_benchmark`."""
    info = result["device"]
    train_cfg, infer_cfg = result["config"]["training"], result["config"]["inference"]
    ceilings = ", ".join(f"{dtype} {_fmt(value, 0)} GFLOP/s" for dtype, value in result["matmul_gflops"].items())
    memory_header = ["peak RSS (MiB)", "RSS increase (MiB)", "peak CUDA (MiB)"]
    training_rows = []
    for row in result["training"]:
        for name, label in (("engine", "AdversarialTrainer"), ("reference", "plain PyTorch")):
            side = row[name]
            ratio = f"{row['engine_time_ratio']:.3f}; {row['paired_time_ratio']:.3f}" if name == "engine" else ""
            training_rows.append(
                [row["variant"], label, _fmt(side["median_s"], 3), _fmt(side["min_s"], 3), _fmt(side["slices_per_s"])]
                + _memory_cells(side)
                + [ratio]
            )
    inference_rows = []
    for row in result["inference"]:
        ceiling = _ceiling_for(result, row["variant"])
        shapes = " -> ".join("x".join(str(v) for v in row[key]) for key in ("lr_shape", "sr_shape"))
        for name, side in row["methods"].items():
            label = "naive loop, 1" if name == "naive" else f"super_resolve_volume, {side['batch_size']}"
            share = 100.0 * side["gflop_per_s"] / ceiling if ceiling else None
            speedup = _fmt(row["speedup_over_naive"].get(name), 2) if name != "naive" else ""
            inference_rows.append(
                [row["variant"], f"x{row['scale']}", shapes, label, _fmt(side["median_s"], 2), _fmt(side["min_s"], 2)]
                + [_fmt(side["voxels_per_s"] / 1e6, 2), _fmt(side["gflop_per_s"]), _fmt(share, 0)]
                + _memory_cells(side)
                + [speedup]
            )
    lines = [
        f"Device: {info['type']} ({info['name']}), torch {info['torch']}, torch threads: {info['threads']}."
        + (f" Matmul ceiling (fastest square matmul): {ceilings}." if ceilings else ""),
        "",
        f"Training: generator {train_cfg['generator'] or 'default'} x{train_cfg['scale']}, batch "
        f"{train_cfg['batch_size']} x {train_cfg['num_slices']} slices of {train_cfg['crop_size']}x"
        f"{train_cfg['crop_size']} HR, LSTM critic, WGAN-GP (n_critic={train_cfg['n_critic']}), MSE + perceptual "
        f"{train_cfg['perceptual_layer']} (random VGG19 weights); "
        f"{train_cfg['iterations']} timed iterations after {train_cfg['warmup']} warm-up, engine and reference "
        "alternating.",
        "",
        *_markdown_table(
            ["variant", "loop", "s / iteration (median)", "(min)", "slices / s"]
            + memory_header
            + ["engine / reference time (medians; paired)"],
            training_rows,
        ),
        "",
        f"Inference: generator {infer_cfg['generator'] or 'default'}, SR volume "
        f"{'x'.join(str(v) for v in infer_cfg['volume_shape'])} (LR = SR / scale in-plane), streaming "
        f"super_resolve_volume vs a naive loop of one slice per forward; median of {infer_cfg['repeats']} runs.",
        "",
        *_markdown_table(
            ["variant", "scale", "LR -> SR", "method, slices per forward", "s / volume (median)", "(min)"]
            + ["output Mvoxel / s"]
            + ["GFLOP/s", "% of matmul ceiling"]
            + memory_header
            + ["speed-up over naive"],
            inference_rows,
        ),
    ]
    return "\n".join(lines)
