"""Inference benchmark: streaming ``super_resolve_volume`` against a naive loop of one slice per forward."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from monai_lstmagan.bench.complexity import count_flops
from monai_lstmagan.bench.config import VARIANTS, InferenceBenchConfig, Variant, check_variant
from monai_lstmagan.bench.memory import PeakMemoryTracker, max_memory
from monai_lstmagan.bench.timing import seconds_summary, synchronize
from monai_lstmagan.inference.in_plane import super_resolve_volume
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.networks import LSTMAGANGenerator

__all__ = ["naive_super_resolve_volume", "benchmark_inference"]


class _AutocastBF16(nn.Module):
    """Run the wrapped module under CUDA bfloat16 autocast (``super_resolve_volume``'s ``amp`` is float16)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            return self.module(x)


def _inference_model(generator: nn.Module, variant: Variant, device: torch.device) -> nn.Module:
    model = generator.to(device).eval()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if variant.bf16:
        model = _AutocastBF16(model)
    if variant.compile:
        model = torch.compile(model, dynamic=False)
    return model


def naive_super_resolve_volume(
    generator: nn.Module, volume: torch.Tensor, scale: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The naive floor: one axial slice per forward pass.

    Args:
        generator: ``[1, 1, h, w] -> [1, 1, h*s, w*s]``.
        volume: ``[1, X, Y, Z]`` in [0, 1].
        scale: SR factor ``s``.
        device: where the generator runs.

    Returns:
        ``[1, X*s, Y*s, Z]`` float32 on CPU, clamped to [0, 1] (as :func:`super_resolve_volume`).
    """
    device = torch.device(device)
    _, x, y, z = volume.shape
    out = torch.empty((1, x * scale, y * scale, z), dtype=torch.float32)
    generator = generator.to(device).eval()
    with torch.inference_mode():
        for index in range(z):
            sr = generator(volume[:, :, :, index].unsqueeze(0).to(device))  # [1, 1, X*s, Y*s]
            out[0, :, :, index] = sr[0, 0].float().clamp(0.0, 1.0).cpu()
    return out


def benchmark_inference(
    config: InferenceBenchConfig, scale: int, device: str | torch.device = "cpu", variant: Variant = VARIANTS["fp32"]
) -> dict[str, Any]:
    """Time whole-volume SR with :func:`super_resolve_volume` against :func:`naive_super_resolve_volume`.

    The methods run in alternating order, one whole volume at a time, after one untimed warm-up each on
    a few slices.

    Args:
        config: volume size, streaming batch sizes, repeats.
        scale: SR factor; the LR input is ``(X/s, Y/s, Z)`` of ``config.volume_shape``.
        device: where the generator runs.
        variant: fp32 or a CUDA-only option (bf16 autocast, channels_last, ``torch.compile``).

    Returns:
        ``{"variant", "scale", "lr_shape", "sr_shape", "output_voxels", "gflop_per_volume", "methods": {...},
        "speedup_over_naive": {...}, "max_abs_difference"}``. ``methods`` maps ``"streaming_b<N>"`` (one per
        entry of ``config.batch_sizes``) and ``"naive"`` to ``batch_size``, ``seconds``, ``median_s``, ``min_s``,
        ``voxels_per_s`` (output voxels, from the median), ``gflop_per_s`` and the memory fields of
        :class:`PeakMemoryTracker`; ``speedup_over_naive`` maps each streaming method to the naive median time
        over its median time; ``max_abs_difference`` is the largest difference of a streaming output from the
        naive output.
    """
    device = torch.device(device)
    check_variant(variant, device)
    x, y, z = config.volume_shape
    torch.manual_seed(config.seed)
    generator = LSTMAGANGenerator(scale=scale, **config.generator).to(device).eval()
    flops_per_slice = count_flops(generator, (1, 1, x // scale, y // scale))
    volume = torch.rand((1, x // scale, y // scale, z), generator=torch.Generator().manual_seed(config.seed))
    model = _inference_model(generator, variant, device)

    def streaming(batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda v: super_resolve_volume(model, v, scale, InferenceOptions(batch_size, device))

    methods: dict[str, tuple[int, Callable[[torch.Tensor], torch.Tensor]]] = {
        f"streaming_b{batch}": (batch, streaming(batch)) for batch in config.batch_sizes
    }
    methods["naive"] = (1, lambda v: naive_super_resolve_volume(model, v, scale, device=device))
    for batch_size, method in methods.values():
        method(volume[..., : min(batch_size, z)])  # warm-up (and compilation) at the batch shape
    tracker = PeakMemoryTracker(device)
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    memory: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    outputs: dict[str, torch.Tensor] = {}
    for repeat in range(config.repeats):
        for name in list(methods) if repeat % 2 == 0 else list(methods)[::-1]:
            outputs.pop(name, None)  # free this method's previous output before measuring
            tracker.start()
            start = time.perf_counter()
            outputs[name] = methods[name][1](volume)
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
            memory[name].append(tracker.stop())
    voxels = x * y * z
    gflop = flops_per_slice * z / 1e9
    results: dict[str, dict[str, Any]] = {}
    for name, (batch_size, _) in methods.items():
        summary = seconds_summary(seconds[name], voxels, "voxels")
        summary["gflop_per_s"] = gflop / summary["median_s"]
        results[name] = {"batch_size": batch_size, **summary, **max_memory(memory[name])}
    streaming_names = [name for name in methods if name != "naive"]
    return {
        "variant": variant.name,
        "scale": scale,
        "lr_shape": [x // scale, y // scale, z],
        "sr_shape": [x, y, z],
        "output_voxels": voxels,
        "gflop_per_volume": gflop,
        "methods": results,
        "speedup_over_naive": {
            name: results["naive"]["median_s"] / results[name]["median_s"] for name in streaming_names
        },
        "max_abs_difference": max(float((outputs[name] - outputs["naive"]).abs().max()) for name in streaming_names),
    }
