"""FRDAGAN generator (Zhang et al., QIMS 2025): residual dense blocks, then an attention gate on the global skip.

The paper ("Fusing residual dense and attention in generative adversarial networks for super-resolution of
medical images", ``../shared/papers/frdagan_qims_2025.txt``) describes the generator in words and one figure:
a conv module, ``N`` residual dense blocks (eq. 3), a conv layer with batch normalisation, then an attention gate
(eqs. 4-5) fed the body output ``G`` and the initial features ``P``, upsampling to the SR image; loss
``MSE + 6e-3 VGG + 1e-3 WGAN-GP`` (eq. 10). It publishes no code. Choices made here, where the text is silent:

* residual dense block (eq. 3, "RDB"): ``dense_blocks`` dense blocks in a chain, block ``i < n`` as
  ``x_i = x_{i-1} + beta * DB(x_{i-1})`` (the plain scaled dense residual block, :class:`~.blocks.ADCBlock` without
  attention), the last one added to the RDB input: ``out = x_0 + beta * DB(x_{n-1})`` (eq. 3 read literally;
  ESRGAN's RRDB would add ``beta * x_n`` instead). ``DB`` is the project's :class:`~.blocks.DenseBlock` (conv + ReLU
  layers with dense concatenation and a 1x1 local fusion conv, RDN's form);
* head and tail: 3x3 convs (the RDN / ESRGAN family the paper builds on), head followed by PReLU;
* attention gate: the project's :class:`~.blocks.AttentionGate` with ``P`` = head features and ``G`` = the
  body output after its conv (+ norm); the gated skip is added to ``G``: ``alpha * P + G`` (the paper's figure
  feeds both into the gate and continues with the gate output; how ``P'`` and ``G`` are combined is not written,
  so this is the same combination as LSTMAGAN's ADC block);
* upsampling: ``log2(scale)`` stages of 3x3 conv to 4x channels, PixelShuffle(2), PReLU (SRGAN's);
* ``norm="batch"`` is the paper's batch normalisation after the body conv; the default ``"none"`` follows this
  project's measurement on LSTMAGAN (BatchNorm cost 2.7 dB in the demo) and ESRGAN;
* default sizes: 16 RDBs, 64 channels, 3 dense blocks of 4 layers with growth 32, beta 0.2 (the paper gives beta
  only; the rest are ESRGAN's / LSTMAGAN's defaults).

The bicubic residual (``residual="bicubic"``, zero-initialised tail: an untrained generator is the bicubic
baseline) is this project's deviation, as for :class:`~.generator.LSTMAGANGenerator`.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_lstmagan.networks.blocks import ADCBlock, AttentionGate, DenseBlock
from monai_lstmagan.networks.generator import SliceSRGenerator, pixel_shuffle_upsampler

__all__ = ["ResidualDenseBlock", "FRDAGANGenerator"]


class ResidualDenseBlock(nn.Module):
    """FRDAGAN's residual dense block (eq. 3): a chain of scaled dense residual blocks with an outer skip.

    ``x_i = x_{i-1} + beta * DB_i(x_{i-1})`` for ``i = 1 .. n-1``, output ``x_0 + beta * DB_n(x_{n-1})``.

    Args:
        channels: feature maps in and out.
        dense_blocks: number ``n`` of dense blocks (>= 1; 1 gives ``x_0 + beta * DB(x_0)``).
        dense_layers: conv + ReLU layers of each dense block.
        growth: growth rate of the dense blocks.
        beta: residual scale (0.2 in the paper).

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``.
    """

    def __init__(
        self, channels: int, dense_blocks: int = 3, dense_layers: int = 4, growth: int = 32, beta: float = 0.2
    ) -> None:
        super().__init__()
        if dense_blocks < 1:
            raise ValueError(f"ResidualDenseBlock: dense_blocks must be >= 1, got {dense_blocks}.")
        self.beta = float(beta)
        self.chain = nn.Sequential(
            *[ADCBlock(channels, dense_layers, growth, beta, attention=False) for _ in range(dense_blocks - 1)]
        )
        self.last = DenseBlock(channels, dense_layers, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.beta * self.last(self.chain(x))


class FRDAGANGenerator(SliceSRGenerator):
    """FRDAGAN generator: residual dense blocks, body conv, attention-gated global skip, pixel-shuffle upsampling.

    ``P = head(lr)`` (3x3 conv + PReLU) -> ``num_blocks`` :class:`ResidualDenseBlock` -> 3x3 conv (+ BatchNorm
    with ``norm="batch"``) = ``G`` -> ``alpha(P, G) * P + G`` (:class:`~.blocks.AttentionGate`) -> ``log2(scale)``
    x2 stages (3x3 conv to 4x channels, PixelShuffle(2), PReLU) -> 3x3 tail conv to one channel. The choices the
    paper leaves open are listed in the module docstring.

    Args:
        scale: upsampling factor, one of 2, 4, 8.
        num_blocks: number of residual dense blocks.
        channels: feature maps of the body.
        dense_blocks: dense blocks per residual dense block.
        dense_layers: conv + ReLU layers in each dense block.
        growth: growth rate of the dense blocks.
        beta: residual scale.
        residual: ``"bicubic"`` (output = bicubic upsampling + network, zero-initialised tail) or ``"none"``.
        norm: ``"none"`` (default) or ``"batch"`` (the paper's BatchNorm after the body conv).

    Shapes:
        ``[N, 1, h, w] -> [N, 1, h*scale, w*scale]`` or ``[B, T, 1, h, w] -> [B, T, 1, h*scale, w*scale]``
        (the slices of a sequence are super-resolved independently).
    """

    def __init__(
        self,
        scale: int = 4,
        num_blocks: int = 16,
        channels: int = 64,
        dense_blocks: int = 3,
        dense_layers: int = 4,
        growth: int = 32,
        beta: float = 0.2,
        residual: str = "bicubic",
        norm: str = "none",
    ) -> None:
        super().__init__("FRDAGANGenerator", scale, residual, norm)
        if num_blocks < 1 or channels < 1:
            raise ValueError(f"FRDAGANGenerator: num_blocks and channels must be >= 1, got {num_blocks}, {channels}.")
        self.head = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.PReLU(channels))
        self.body = nn.Sequential(
            *[ResidualDenseBlock(channels, dense_blocks, dense_layers, growth, beta) for _ in range(num_blocks)]
        )
        body_norm: nn.Module = nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), body_norm)
        self.gate = AttentionGate(channels)
        self.upsample = pixel_shuffle_upsampler(channels, scale)
        self.tail = nn.Conv2d(channels, 1, 3, padding=1)
        self.zero_tail(self.tail)

    def super_resolve_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, 1, h*scale, w*scale]``."""
        p = self.head(x)
        g = self.body_tail(self.body(p))
        return self.add_residual(self.tail(self.upsample(self.gate(p, g) + g)), x)
