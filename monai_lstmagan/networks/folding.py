"""The upsampler and tail of a generator with the last PixelShuffle folded into the tail conv (inference only).

The tail of :class:`~monai_lstmagan.networks.generator.LSTMAGANGenerator` is a 9x9 conv from ``C`` maps to one at
the output resolution, after the last stage ``conv -> PixelShuffle(2) -> PReLU`` of the upsampler: on a CPU it runs
at ~10 GFLOP/s (one output channel is a poor GEMM). The same function is a conv on the grid *before* that
PixelShuffle, from its ``4C`` maps to the 4 sub-pixel phases with a 5x5 kernel, then a PixelShuffle of those 4
maps (the sub-pixel convolution identity):

    y[2i + p, 2j + q] = b + sum_{c, dy, dx} w[c, dy, dx] * u[c, 2i + p + dy, 2j + q + dx],
    u[c, 2a + r, 2b + t] = prelu_c(v[4c + 2r + t, a, b])

so with ``2i + p + dy = 2(i + da) + r``, the folded kernel is ``K[2p + q, 4c + 2r + t, da, db] =
w[c, 2da + r - p, 2db + t - q]`` (zero where that offset is outside the 9x9 kernel), the PReLU moves before the
shuffle with each parameter repeated 4 times, and the zero padding of the tail becomes zero padding of ``v``
(PReLU(0) = 0). The result equals the unfolded one within float rounding (max abs difference ~6e-7 on the shipped
models) and the tail runs 2.5-3x faster (``docs/benchmark_inference.md``). Both inference backends use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FoldedUpsampler", "upsampler_and_tail"]


def _foldable(generator: nn.Module) -> bool:
    """Whether the generator ends in ``... conv, PixelShuffle(2), PReLU`` + a one-map odd-kernel tail conv."""
    stages = list(getattr(generator, "upsample", []))
    tail = getattr(generator, "tail", None)
    return (
        len(stages) >= 3
        and isinstance(stages[-2], nn.PixelShuffle)
        and stages[-2].upscale_factor == 2
        and isinstance(stages[-1], nn.PReLU)
        and isinstance(tail, nn.Conv2d)
        and tail.out_channels == 1
        and tail.stride == (1, 1)
        and tail.dilation == (1, 1)
        and tail.groups == 1
        and tail.kernel_size[0] == tail.kernel_size[1]
        and tail.kernel_size[0] % 2 == 1
        and tail.padding == (tail.kernel_size[0] // 2,) * 2
        and tail.padding_mode == "zeros"
    )


class FoldedUpsampler(nn.Module):
    """``tail(upsample(features))`` of a generator, ``[N, C, h, w] -> [N, 1, h*s, w*s]``, with the last
    PixelShuffle(2) folded into the tail conv (module docstring). The weights are copied at construction.

    Args:
        generator: a generator with ``upsample`` (ending in conv, PixelShuffle(2), PReLU) and a one-map ``tail``
            conv (see :func:`upsampler_and_tail` for generators without them).
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        if not _foldable(generator):
            raise ValueError(f"{type(generator).__name__} has no foldable upsampler and tail.")
        stages = list(generator.upsample)
        self.front = nn.Sequential(*stages[:-2])  # up to and including the last stage's conv: [N, 4C, h*s/2, ...]
        prelu, tail = stages[-1], generator.tail
        weight = tail.weight.detach()[0]  # [C, k, k]
        channels, half = weight.shape[0], tail.kernel_size[0] // 2
        self.padding = max(-((-half) // 2), (1 + half) // 2)  # LR offsets of the folded kernel: -padding..padding
        size = 2 * self.padding + 1
        kernel = weight.new_zeros(4, 4 * channels, size, size)
        sources = torch.arange(channels, device=weight.device) * 4
        for p in range(2):
            for q in range(2):
                for r in range(2):
                    for t in range(2):
                        for da in range(-self.padding, self.padding + 1):
                            for db in range(-self.padding, self.padding + 1):
                                dy, dx = 2 * da + r - p, 2 * db + t - q
                                if abs(dy) <= half and abs(dx) <= half:
                                    kernel[2 * p + q, sources + 2 * r + t, da + self.padding, db + self.padding] = (
                                        weight[:, dy + half, dx + half]
                                    )
        alpha = prelu.weight.detach()
        alpha = alpha.expand(channels) if alpha.numel() == 1 else alpha
        self.register_buffer("alpha", alpha.repeat_interleave(4).clone())
        self.register_buffer("kernel", kernel)
        bias = tail.bias.detach() if tail.bias is not None else weight.new_zeros(1)
        self.register_buffer("bias", bias.repeat(4).clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        v = F.prelu(self.front(features), self.alpha)
        return F.pixel_shuffle(F.conv2d(v, self.kernel, self.bias, padding=self.padding), 2)


def upsampler_and_tail(generator: nn.Module) -> nn.Module:
    """``features [N, C, h, w] -> [N, 1, h*s, w*s]`` (before the residual): :class:`FoldedUpsampler` when the
    generator allows it, else ``tail(upsample(.))`` as it is (e.g. a scale-1 refiner, whose upsampler is empty)."""
    if _foldable(generator):
        return FoldedUpsampler(generator)
    return nn.Sequential(generator.upsample, generator.tail)
