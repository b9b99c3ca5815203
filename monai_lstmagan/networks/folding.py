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

The trunk (head and attention-gated dense blocks) has a second rewrite, :class:`SplitConvTrunk`: a dense layer's
conv over the concatenation ``[x, y_0, .., y_{l-1}]`` is the sum of one conv per source with the matching slice of
its weights, so no concatenated tensor is ever built (each concatenation copies every earlier map again); the
residual scale ``beta`` is folded into the fusion conv, ``Wp P + Wg G`` becomes one sum of two convs, and the
one-map ``psi`` conv of the gate is repeated to ``C`` maps so that ``alpha * P`` needs no broadcast. It equals
:meth:`~monai_lstmagan.networks.generator.LSTMAGANGenerator.features` within float rounding (~3e-7 on the shipped
models) and runs 1.15-1.25x faster in both backends (``docs/benchmark_inference.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_lstmagan.networks.blocks import ADCBlock, DenseBlock

__all__ = ["GEMM_BLOCK_ROWS", "FoldedUpsampler", "upsampler_and_tail", "SplitConvTrunk", "inference_trunk"]

#: Rows of the pre-shuffle maps per GEMM of :meth:`FoldedUpsampler.folded_tail_as_gemm` (bounds its products).
GEMM_BLOCK_ROWS = 64


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
        # the same kernel as one GEMM: row (phase, dy, dx) holds K[phase, :, dy, dx], [4 * size^2, 4C]
        self.register_buffer("offset_weights", kernel.permute(0, 2, 3, 1).reshape(4 * size * size, -1).clone())

    def folded_tail_as_gemm(self, v: torch.Tensor) -> torch.Tensor:
        """``conv2d(v, kernel, bias, padding)`` as GEMMs and sums of shifted maps: ``[N, 4C, h, w] -> [N, 4, h, w]``.

        The conv has 4 output maps, a poor GEMM on a CPU; the GEMM of all ``4 * size^2`` (phase, offset) products,
        ``[4 size^2, 4C] x [4C, rows * w]``, runs near the CPU's GEMM rate, and the sum of the ``size^2`` shifted
        product maps of each phase is memory-bound and short: the upsampler and tail 1.2-1.3x faster on 256x256
        and 512x512 slices at x2 and x4 (``docs/benchmark_inference.md``), equal within float rounding. The rows
        go in blocks of :data:`GEMM_BLOCK_ROWS` (each with ``padding`` rows of halo), so the products stay small
        (about 30 MB for a 1024-wide map). ``v`` may be NCHW or channels_last.
        """
        n, _, height, width = v.shape
        size, pad = 2 * self.padding + 1, self.padding
        out = self.bias.view(1, 4, 1, 1).expand(n, 4, height, width).clone()
        for top in range(0, height, GEMM_BLOCK_ROWS):
            bottom = min(height, top + GEMM_BLOCK_ROWS)
            first, last = max(0, top - pad), min(height, bottom + pad)  # the rows of v the block reads
            products = torch.matmul(self.offset_weights, v[:, :, first:last].flatten(2))
            products = products.view(n, 4, size, size, last - first, width)
            for dy in range(size):
                shift_y = dy - pad  # out[i] += products[.., dy, .., i + shift_y]: rows where both exist
                row0, row1 = max(top, first - shift_y), min(bottom, last - shift_y)
                if row0 >= row1:
                    continue
                rows = products[:, :, dy, :, row0 + shift_y - first : row1 + shift_y - first]  # [N, 4, size, r, w]
                for dx in range(size):
                    shift_x = dx - pad
                    col0, col1 = max(0, -shift_x), min(width, width - shift_x)
                    if col0 < col1:
                        out[:, :, row0:row1, col0:col1] += rows[:, :, dx, :, col0 + shift_x : col1 + shift_x]
        return out

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        v = F.prelu(self.front(features), self.alpha)
        if v.device.type == "cpu":
            return F.pixel_shuffle(self.folded_tail_as_gemm(v), 2)
        return F.pixel_shuffle(F.conv2d(v, self.kernel, self.bias, padding=self.padding), 2)


def upsampler_and_tail(generator: nn.Module) -> nn.Module:
    """``features [N, C, h, w] -> [N, 1, h*s, w*s]`` (before the residual): :class:`FoldedUpsampler` when the
    generator allows it, else ``tail(upsample(.))`` as it is (e.g. a scale-1 refiner, whose upsampler is empty)."""
    if _foldable(generator):
        return FoldedUpsampler(generator)
    return nn.Sequential(generator.upsample, generator.tail)


class _SumOfConvs(nn.Module):
    """``sum_j conv2d(sources[j], weights[j]) + bias``: one conv over the concatenation of ``sources``, without
    building it (``weights[j]`` is the slice of the conv's input channels that ``sources[j]`` fills)."""

    def __init__(self, weights: list[torch.Tensor], bias: torch.Tensor, padding: int) -> None:
        super().__init__()
        for j, weight in enumerate(weights):
            self.register_buffer(f"weight{j}", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        self.sources = len(weights)
        self.padding = padding

    def forward(self, sources: list[torch.Tensor]) -> torch.Tensor:
        out = F.conv2d(sources[0], self.weight0, self.bias, padding=self.padding)
        for j in range(1, self.sources):
            out = out + F.conv2d(sources[j], getattr(self, f"weight{j}"), None, padding=self.padding)
        return out


class _SplitConvADC(nn.Module):
    """An :class:`~monai_lstmagan.networks.blocks.ADCBlock` without concatenations, ``beta`` folded into the
    fusion conv and ``alpha`` computed on all ``C`` maps: ``[N, C, H, W] -> [N, C, H, W]``."""

    def __init__(self, block: ADCBlock) -> None:
        super().__init__()
        layers, fusion = block.dense.layers, block.dense.fusion
        channels, growth = layers[0][0].in_channels, layers[0][0].out_channels

        def split(weight: torch.Tensor, earlier_layers: int) -> list[torch.Tensor]:
            return list(torch.split(weight.detach(), [channels] + [growth] * earlier_layers, dim=1))

        pads = [layer[0].padding[0] for layer in layers]
        self.layers = nn.ModuleList(
            _SumOfConvs(split(layer[0].weight, i), layer[0].bias, pad)
            for i, (layer, pad) in enumerate(zip(layers, pads))
        )
        beta = block.beta
        self.fusion = _SumOfConvs([w * beta for w in split(fusion.weight, len(layers))], fusion.bias.detach() * beta, 0)
        gate = block.gate
        self.gated = gate is not None
        if gate is not None:
            bias = gate.w_g.bias if gate.w_g.bias is not None else gate.w_g.weight.new_zeros(gate.w_g.out_channels)
            self.gate_input = _SumOfConvs([gate.w_p.weight, gate.w_g.weight], bias, 0)
            self.register_buffer("psi_weight", gate.psi.weight.detach().repeat(channels, 1, 1, 1).clone())
            self.register_buffer("psi_bias", gate.psi.bias.detach().repeat(channels).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sources = [x]
        for layer in self.layers:
            sources.append(torch.relu(layer(sources)))
        g = self.fusion(sources)  # beta * D(x)
        if not self.gated:
            return x + g
        q = torch.relu(self.gate_input([x, g]))
        alpha = torch.sigmoid(F.conv2d(q, self.psi_weight, self.psi_bias))  # [N, C, H, W], the same in every map
        return alpha * x + g


def _splittable(generator: nn.Module) -> bool:
    """Whether every body block is a stock :class:`ADCBlock` (3x3 dense layers, 1x1 fusion and gate convs)."""
    body = getattr(generator, "body", None)
    if body is None or not hasattr(generator, "head") or not hasattr(generator, "body_tail"):
        return False
    for block in body:
        if type(block) is not ADCBlock or type(block.dense) is not DenseBlock:
            return False
        if block.gate is not None and block.gate.psi.out_channels != 1:
            return False
    return len(body) > 0


class SplitConvTrunk(nn.Module):
    """``[N, 1, h, w] -> [N, C, h, w]``: ``generator.features`` with the dense blocks rewritten without
    concatenations (module docstring). The weights are copied at construction; head and body tail are shared.

    Args:
        generator: an :class:`~monai_lstmagan.networks.generator.LSTMAGANGenerator` (stock ADC blocks).
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        if not _splittable(generator):
            raise ValueError(f"{type(generator).__name__} has no stock ADC blocks to rewrite.")
        self.head = generator.head
        self.body = nn.Sequential(*(_SplitConvADC(block) for block in generator.body))
        self.body_tail = generator.body_tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        return features + self.body_tail(self.body(features))


class _Features(nn.Module):
    """``generator.features`` as a module (for generators whose blocks are not rewritten)."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator.features(x)


def inference_trunk(generator: nn.Module) -> nn.Module:
    """``features [N, 1, h, w] -> [N, C, h, w]`` for inference: :class:`SplitConvTrunk` when the generator allows
    it, else ``generator.features`` as it is (for ``channels_last``, convert the result: its weights are copies)."""
    return SplitConvTrunk(generator) if _splittable(generator) else _Features(generator)
