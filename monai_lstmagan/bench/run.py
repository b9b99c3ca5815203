"""One benchmark run: hardware facts, matmul ceilings, training and inference for every variant, as JSON-ready data."""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from types import ModuleType
from typing import Any

import torch

from monai_lstmagan.bench.config import VARIANTS, InferenceBenchConfig, TrainingBenchConfig, bench_configs
from monai_lstmagan.bench.inference import benchmark_inference
from monai_lstmagan.bench.timing import matmul_gflops
from monai_lstmagan.bench.training import benchmark_training

__all__ = ["run_benchmark"]


def bench_package() -> ModuleType:
    """The package ``monai_lstmagan.bench``, through which ``measured_ceilings`` and ``run_benchmark`` are called.

    Replacing them on the package (as the tests do) then takes effect, as when the benchmark was one module.
    """
    return sys.modules[__package__]


def _device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read(), re.MULTILINE)
            name = match.group(1).strip() if match else name
        except OSError:
            pass
        info["name"] = name
        info["cpu_count"] = os.cpu_count()
    return info


def measured_ceilings(device: torch.device) -> dict[str, float]:
    """Matmul GFLOP/s per dtype on ``device``: fp32 (CPU); fp32, tf32 and bf16 (CUDA)."""
    if device.type != "cuda":
        return {"fp32": matmul_gflops(device)}
    ceilings = {"fp32": matmul_gflops(device, dtype=torch.float32), "bf16": matmul_gflops(device, dtype=torch.bfloat16)}
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # TF32, what cuDNN convolutions use by default
        ceilings["tf32"] = matmul_gflops(device, dtype=torch.float32)
    finally:
        torch.set_float32_matmul_precision(precision)
    return ceilings


def run_benchmark(
    device: str | torch.device = "cpu",
    training: TrainingBenchConfig | None = None,
    inference: InferenceBenchConfig | None = None,
    variants: Sequence[str] | None = None,
    ceiling: bool = True,
) -> dict[str, Any]:
    """Run the training and inference benchmarks for every variant; the JSON-ready result.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        training, inference: sizes (default :func:`bench_configs` for ``device``).
        variants: names from :data:`VARIANTS`; default all of them on CUDA, ``["fp32"]`` on CPU.
        ceiling: also measure the matmul ceilings (:func:`matmul_gflops`).

    Returns:
        ``{"device": {...}, "config": {"training": ..., "inference": ...}, "matmul_gflops": {dtype: GFLOP/s},
        "training": [benchmark_training results], "inference": [benchmark_inference results], "notes": [...]}``.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("bench: --device cuda was asked for but torch.cuda.is_available() is False.")
    default_training, default_inference = bench_configs(device.type)
    training = training or default_training
    inference = inference or default_inference
    if variants is None:
        variants = list(VARIANTS) if device.type == "cuda" else ["fp32"]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"bench: unknown variants {unknown}; choose from {sorted(VARIANTS)}.")
    if device.type != "cuda" and list(variants) != ["fp32"]:
        raise ValueError(f"bench: on '{device}' only the fp32 variant is measured, got {list(variants)}.")
    ceilings = bench_package().measured_ceilings(device) if ceiling else {}
    result: dict[str, Any] = {
        "device": _device_info(device),
        "config": {"training": asdict(training), "inference": asdict(inference)},
        "matmul_gflops": ceilings,
        "training": [benchmark_training(training, device, VARIANTS[name]) for name in variants],
        "inference": [
            benchmark_inference(inference, scale, device, VARIANTS[name])
            for name in variants
            for scale in inference.scales
        ],
        "notes": [
            "matmul_gflops: fastest square matmul, measured before and after the benchmarks (the better of the two)",
            "perceptual loss: VGG19 with random weights (no download); the cost equals the ImageNet-weighted loss",
            "peak RSS: whole-process resident-set high-water mark over the timed part; RSS increase: peak minus "
            "the resident set at the start of the timed part (after glibc malloc_trim)",
            "peak CUDA: torch.cuda.max_memory_allocated over the timed part",
            "engine_time_ratio: median seconds per iteration of AdversarialTrainer over that of the plain-PyTorch "
            "loop; paired_time_ratio: median of the per-iteration ratios (the two loops alternate iteration by "
            "iteration)",
            "inference input: LR = SR shape / scale in-plane; voxels/s counts output voxels",
        ],
    }
    if ceiling:  # again at the end: on a shared machine the load at the start may not be typical
        again = bench_package().measured_ceilings(device)
        result["matmul_gflops"] = {dtype: max(value, ceilings[dtype]) for dtype, value in again.items()}
    return result
