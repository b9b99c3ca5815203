"""What the benchmark measures: the variants (fp32, bf16, channels_last, compile) and the benchmark sizes."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Variant", "VARIANTS", "TrainingBenchConfig", "InferenceBenchConfig", "bench_configs"]


@dataclass(frozen=True)
class Variant:
    """How the networks run: AMP bfloat16 autocast, channels_last weights, ``torch.compile`` of the generator.

    Every option other than ``fp32`` is CUDA-only.
    """

    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


VARIANTS: dict[str, Variant] = {
    "fp32": Variant("fp32"),
    "bf16": Variant("bf16", bf16=True),
    "channels_last": Variant("channels_last", channels_last=True),
    "compile": Variant("compile", compile=True),
    "bf16+channels_last+compile": Variant("bf16+channels_last+compile", bf16=True, channels_last=True, compile=True),
}


def check_variant(variant: Variant, device: torch.device) -> None:
    if device.type != "cuda" and (variant.bf16 or variant.channels_last or variant.compile):
        raise ValueError(f"variant {variant.name!r} is measured on CUDA only, got device '{device}'.")
    if variant.compile:  # fresh compile caches: every variant/scale compiles the same forward code objects
        torch.compiler.reset()


def variant_autocast(variant: Variant):
    """CUDA bfloat16 autocast for the bf16 variants, else nothing."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if variant.bf16 else nullcontext()


@dataclass(frozen=True)
class TrainingBenchConfig:
    """Sizes of the training benchmark.

    Args:
        generator: ``LSTMAGANGenerator`` kwargs (besides ``scale``).
        scale: SR factor of the training pairs.
        batch_size: sequences per batch ``B``.
        num_slices: slices per sequence ``T`` (the LSTM critic's sequence length).
        crop_size: HR in-plane crop (divisible by ``scale``).
        critic: ``LSTMDiscriminator`` kwargs (besides ``num_slices``).
        perceptual_layer: VGG19 layer of the perceptual loss (SRGAN's VGG54 is ``relu5_4``).
        n_critic: critic steps per generator step.
        warmup: untimed iterations (>= 1) of each side.
        iterations: timed iterations of each side.
        seed: seed of the weights, the batch and the gradient penalty's mixing weights.
    """

    generator: dict[str, Any] = field(default_factory=dict)
    scale: int = 4
    batch_size: int = 8
    num_slices: int = 16
    crop_size: int = 96
    critic: dict[str, Any] = field(default_factory=dict)
    perceptual_layer: str = "relu5_4"
    n_critic: int = 1
    warmup: int = 3
    iterations: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.iterations < 1:
            raise ValueError(f"warmup and iterations must be >= 1, got {self.warmup}, {self.iterations}.")
        if self.crop_size % self.scale:
            raise ValueError(f"crop_size {self.crop_size} is not divisible by scale {self.scale}.")


@dataclass(frozen=True)
class InferenceBenchConfig:
    """Sizes of the inference benchmark.

    Args:
        generator: ``LSTMAGANGenerator`` kwargs (besides ``scale``).
        volume_shape: ``(X, Y, Z)`` of the super-resolved volume; the LR input is ``(X/s, Y/s, Z)``.
        scales: SR factors to measure.
        batch_sizes: slices per forward pass of the streaming inference, one measurement each.
        repeats: timed whole-volume runs per method (after one untimed warm-up on a few slices).
        seed: seed of the weights and the volume.
    """

    generator: dict[str, Any] = field(default_factory=dict)
    volume_shape: tuple[int, int, int] = (256, 256, 48)
    scales: tuple[int, ...] = (2, 4)
    batch_sizes: tuple[int, ...] = (8, 1)
    repeats: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.repeats < 1 or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"repeats and batch_sizes must be >= 1, got {self.repeats}, {self.batch_sizes}.")
        for scale in self.scales:
            if self.volume_shape[0] % scale or self.volume_shape[1] % scale:
                raise ValueError(f"volume_shape {self.volume_shape} is not divisible in-plane by scale {scale}.")


_SMALL_GENERATOR = {"num_blocks": 4, "channels": 32}


def bench_configs(device: str, quick: bool = False) -> tuple[TrainingBenchConfig, InferenceBenchConfig]:
    """Default benchmark sizes for a device.

    On CUDA: the sizes of the bundle's full-size training (default generator, x4, batch 8 x 16 slices of
    96x96, default LSTM critic, VGG54 perceptual loss). Otherwise the small CPU generator (4 blocks,
    32 channels), x2, one sequence of 16 slices of 64x64. Inference: a 256x256x48 SR volume at x2 and x4.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        quick: small generator, smaller crops/volume and fewer iterations on any device (a few minutes on 2 cores).
    """
    if quick:
        return (
            TrainingBenchConfig(
                generator=dict(_SMALL_GENERATOR),
                scale=2,
                batch_size=1,
                num_slices=8,
                crop_size=32,
                warmup=1,
                iterations=4,
            ),
            InferenceBenchConfig(generator=dict(_SMALL_GENERATOR), volume_shape=(128, 128, 16), repeats=2),
        )
    if torch.device(device).type == "cuda":
        return TrainingBenchConfig(), InferenceBenchConfig(batch_sizes=(32, 8, 1), repeats=5)
    return (
        TrainingBenchConfig(
            generator=dict(_SMALL_GENERATOR),
            scale=2,
            batch_size=1,
            num_slices=16,
            crop_size=64,
            warmup=2,
            iterations=10,
        ),
        InferenceBenchConfig(generator=dict(_SMALL_GENERATOR), repeats=5),
    )
