"""LSTMAGAN generator: SRResNet skeleton with attention dense connectivity (ADC) blocks."""

from __future__ import annotations

import torch
from torch import nn

from monai_lstmagan.networks.blocks import ADCBlock

__all__ = ["LSTMAGANGenerator", "SUPPORTED_SCALES"]

SUPPORTED_SCALES = (2, 4, 8)


class LSTMAGANGenerator(nn.Module):
    """Single-channel 2D super-resolution generator (SRResNet skeleton, ADC blocks).

    ``head`` (9x9 conv + PReLU) -> ``num_blocks`` :class:`ADCBlock` -> 3x3 conv + BatchNorm -> global skip
    (+ head output) -> ``log2(scale)`` x2 stages (3x3 conv to 4x channels, PixelShuffle(2), PReLU) ->
    9x9 tail conv to one channel (linear output, no clamping).

    Works on any input size ``h x w`` (the output is ``h*scale x w*scale``). A slice sequence
    ``[B, T, 1, h, w]`` is folded into the batch, so the slices are super-resolved independently; the
    3D context is only seen by the LSTM discriminator. The BatchNorm after the body conv uses running
    statistics in ``eval()`` mode, so single slices are fine at inference.

    Args:
        scale: upsampling factor, one of 2, 4, 8.
        num_blocks: number of ADC blocks.
        channels: feature maps of the body.
        dense_layers: conv + ReLU layers in each dense block.
        growth: growth rate of the dense blocks.
        beta: residual scale of the dense output.
        attention: use attention gates; ``False`` gives plain dense residual blocks (ablation).

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
    ) -> None:
        super().__init__()
        if scale not in SUPPORTED_SCALES:
            raise ValueError(f"LSTMAGANGenerator: scale must be one of {SUPPORTED_SCALES}, got {scale}.")
        if num_blocks < 1 or channels < 1:
            raise ValueError(f"LSTMAGANGenerator: num_blocks and channels must be >= 1, got {num_blocks}, {channels}.")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(1, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(
            *[ADCBlock(channels, dense_layers, growth, beta, attention) for _ in range(num_blocks)]
        )
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        upsampling: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            upsampling += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(channels)]
        self.upsample = nn.Sequential(*upsampling)
        self.tail = nn.Conv2d(channels, 1, 9, padding=4)

    def super_resolve_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, 1, h*scale, w*scale]``."""
        features = self.head(x)
        features = features + self.body_tail(self.body(features))
        return self.tail(self.upsample(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] == 1:
            return self.super_resolve_slices(x)
        if x.dim() == 5 and x.shape[2] == 1:
            batch, steps = x.shape[0], x.shape[1]
            out = self.super_resolve_slices(x.flatten(0, 1))
            return out.reshape(batch, steps, 1, out.shape[-2], out.shape[-1])
        raise ValueError(
            "LSTMAGANGenerator expects one-channel slices [N, 1, h, w] or sequences [B, T, 1, h, w], got shape "
            + str(list(x.shape))
            + "."
        )
