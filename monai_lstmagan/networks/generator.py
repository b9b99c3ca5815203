"""LSTMAGAN generator: SRResNet skeleton with attention dense connectivity (ADC) blocks."""

from __future__ import annotations

import torch
from torch import nn

from monai_lstmagan.networks.blocks import ADCBlock
from monai_lstmagan.transforms.ops import bicubic_upsample_slices

__all__ = [
    "SliceSRGenerator",
    "LSTMAGANGenerator",
    "SUPPORTED_SCALES",
    "RESIDUALS",
    "GENERATOR_NORMS",
    "pixel_shuffle_upsampler",
]

SUPPORTED_SCALES = (2, 4, 8)
RESIDUALS = ("bicubic", "none")
GENERATOR_NORMS = ("none", "batch")


def pixel_shuffle_upsampler(channels: int, scale: int, in_channels: int | None = None) -> nn.Sequential:
    """SRGAN's upsampling: ``log2(scale)`` stages of 3x3 conv to ``4 * channels``, PixelShuffle(2), PReLU.

    ``[N, in_channels, h, w] -> [N, channels, h*scale, w*scale]`` (``in_channels`` feeds the first stage; default
    ``channels``); empty (identity) for ``scale=1``.
    """
    stages: list[nn.Module] = []
    previous = channels if in_channels is None else in_channels
    for _ in range(scale.bit_length() - 1):
        stages += [nn.Conv2d(previous, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(channels)]
        previous = channels
    return nn.Sequential(*stages)


class SliceSRGenerator(nn.Module):
    """What every 2D super-resolution generator of the package shares (LSTMAGAN and the comparison models).

    The checks of ``scale``, ``residual`` (and ``norm``), the global bicubic residual with its zero-initialised
    tail (:meth:`zero_tail`, :meth:`add_residual`), and :meth:`forward`, which folds a slice sequence
    ``[B, T, 1, h, w]`` into the batch, so the slices are super-resolved independently. A subclass builds its
    layers and implements :meth:`super_resolve_slices` ``[N, 1, h, w] -> [N, 1, h*scale, w*scale]``.

    Args:
        name: the class name used in error messages.
        scale: 2, 4 or 8 (1 where ``refiner`` is allowed: the same-size refiner of through-plane SR).
        residual: ``"bicubic"`` or ``"none"``.
        norm: ``"none"``/``"batch"`` for generators that have the option, None for those that do not.
        refiner: whether ``scale=1`` is allowed.
    """

    def __init__(self, name: str, scale: int, residual: str, norm: str | None = None, refiner: bool = False) -> None:
        super().__init__()
        if scale not in SUPPORTED_SCALES and not (refiner and scale == 1):
            allowed = f"{SUPPORTED_SCALES} (or 1: refiner)" if refiner else f"{SUPPORTED_SCALES}"
            raise ValueError(f"{name}: scale must be one of {allowed}, got {scale}.")
        if residual not in RESIDUALS:
            raise ValueError(f"{name}: residual must be one of {RESIDUALS}, got {residual!r}.")
        if norm is not None and norm not in GENERATOR_NORMS:
            raise ValueError(f"{name}: norm must be one of {GENERATOR_NORMS}, got {norm!r}.")
        self.name = name
        self.scale = scale
        self.bicubic_residual = residual == "bicubic"

    def zero_tail(self, tail: nn.Conv2d) -> None:
        """Start the last conv at zero when the output is a bicubic residual: the untrained generator is bicubic."""
        if self.bicubic_residual:
            nn.init.zeros_(tail.weight)
            nn.init.zeros_(tail.bias)

    def add_residual(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out`` plus the bicubic upsampling of the input ``x`` (the input itself at scale 1) if residual."""
        if self.bicubic_residual:
            return out + (x if self.scale == 1 else bicubic_upsample_slices(x, self.scale))
        return out

    def super_resolve_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, 1, h*scale, w*scale]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] == 1:
            return self.super_resolve_slices(x)
        if x.dim() == 5 and x.shape[2] == 1:
            batch, steps = x.shape[0], x.shape[1]
            out = self.super_resolve_slices(x.flatten(0, 1))
            return out.reshape(batch, steps, 1, out.shape[-2], out.shape[-1])
        raise ValueError(
            self.name
            + " expects one-channel slices [N, 1, h, w] or sequences [B, T, 1, h, w], got shape "
            + str(list(x.shape))
            + "."
        )


class LSTMAGANGenerator(SliceSRGenerator):
    """Single-channel 2D super-resolution generator (SRResNet skeleton, ADC blocks).

    ``head`` (9x9 conv + PReLU) -> ``num_blocks`` :class:`ADCBlock` -> 3x3 conv (+ BatchNorm if
    ``norm="batch"``) -> global skip (+ head output) -> ``log2(scale)`` x2 stages (3x3 conv to 4x channels,
    PixelShuffle(2), PReLU) -> 9x9 tail conv to one channel (linear output, no clamping).

    With ``residual="bicubic"`` (default) the network predicts a correction on top of the bicubic
    upsampling of its input, ``out = bicubic_upsample(lr) + tail(...)``, and the tail conv starts at zero,
    so an untrained generator returns exactly the bicubic baseline and training starts from it (VDSR /
    ESRGAN-era practice; the from-scratch form is compared in docs/results.md).
    ``residual="none"`` is the paper-literal SRResNet output (ablation).

    ``scale=1`` is the same-size refiner of through-plane SR (:mod:`monai_lstmagan.inference.through_plane`): its input is
    already interpolated along the slice axis, the residual is on top of that input, and there are no
    pixel-shuffle stages (any real factor, one network).

    Works on any input size ``h x w`` (the output is ``h*scale x w*scale``). A slice sequence
    ``[B, T, 1, h, w]`` is folded into the batch, so the slices are super-resolved independently; the
    3D context is only seen by the LSTM discriminator.

    Args:
        scale: upsampling factor, one of 2, 4, 8; 1 for the through-plane refiner.
        num_blocks: number of ADC blocks.
        channels: feature maps of the body.
        dense_layers: conv + ReLU layers in each dense block.
        growth: growth rate of the dense blocks.
        beta: residual scale of the dense output.
        attention: use attention gates; ``False`` gives plain dense residual blocks (ablation).
        residual: ``"bicubic"`` (global bicubic residual, zero-initialised tail) or ``"none"`` (SRResNet output).
        norm: ``"none"`` (default, as ESRGAN) or ``"batch"`` (SRResNet's BatchNorm after the body conv; it uses
            running statistics in ``eval()`` mode).

    Shapes:
        ``[N, 1, h, w] -> [N, 1, h*scale, w*scale]`` or ``[B, T, 1, h, w] -> [B, T, 1, h*scale, w*scale]``.
    """

    def __init__(
        self,
        scale: int = 4,
        num_blocks: int = 16,
        channels: int = 64,
        dense_layers: int = 4,
        growth: int = 32,
        beta: float = 0.2,
        attention: bool = True,
        residual: str = "bicubic",
        norm: str = "none",
    ) -> None:
        super().__init__("LSTMAGANGenerator", scale, residual, norm, refiner=True)
        if num_blocks < 1 or channels < 1:
            raise ValueError(f"LSTMAGANGenerator: num_blocks and channels must be >= 1, got {num_blocks}, {channels}.")
        self.head = nn.Sequential(nn.Conv2d(1, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(
            *[ADCBlock(channels, dense_layers, growth, beta, attention) for _ in range(num_blocks)]
        )
        body_norm: nn.Module = nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), body_norm)
        self.upsample = pixel_shuffle_upsampler(channels, scale)
        self.tail = nn.Conv2d(channels, 1, 9, padding=4)
        self.zero_tail(self.tail)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, channels, h, w]``: head and dense blocks, the input of the upsampler."""
        features = self.head(x)
        return features + self.body_tail(self.body(features))

    def super_resolve_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, 1, h*scale, w*scale]``."""
        return self.add_residual(self.tail(self.upsample(self.features(x))), x)
