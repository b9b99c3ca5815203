"""FA-GAN generator (Jiang et al., CMIG 2021): local fusion feature blocks and a global feature fusion block.

The paper ("FA-GAN: Fused attentive generative adversarial networks for MRI image super-resolution",
``../shared/papers/fa_gan_cmig_2021.txt``) builds on SRGAN: local fusion feature blocks (LFFB: three paths with
different kernel sizes whose information is shared, concatenation + 1x1 fusion), a global feature fusion block
(GFFB: channel attention and self-attention with a learnable ``gamma`` starting at 0, joined by a "weighted
connection" with ``alpha = beta = 0.5``), pixel-shuffle upsampling, a spectrally normalised discriminator
(:class:`~.discriminators.ConvDiscriminator` with ``spectral_norm=True``) and pixel + VGG + adversarial losses.
It publishes no code. Choices made here, where the text is silent or ambiguous:

* LFFB paths: kernel sizes 3, 5, 7 (the text says "different convolution kernels"). Each path has three ``s x s``
  convs with one ReLU after the first (the text: "three convolution layers with s x s kernel size and one ReLU
  intermediate activation layer"); the information of the three paths is shared after that first layer as in
  MSRN: the second conv of every path reads the concatenation of all three first-layer outputs. The three path
  outputs are concatenated, fused by a 1x1 conv and added to the block input (residual, as SRGAN's blocks);
* GFFB position: at the end of the LR-resolution body, before SRGAN's global skip and the upsampling (the paper's
  figure puts it after the upsampling; at HR size the self-attention map of one 256x256 output slice would have
  65536^2 entries);
* channel attention: squeeze-and-excitation (global average pooling, FC to ``C / reduction``, ReLU, FC, sigmoid,
  rescale), ``reduction = 16`` as SE / RCAN, at least one hidden unit;
* self-attention: SAGAN's (``f, g``: 1x1 convs to ``C / 8``, ``h``: 1x1 conv to ``C``, softmax over the key
  positions, output 1x1 conv ``v``, ``gamma * o + x`` with ``gamma = 0`` at start). The keys and values are
  max-pooled by ``attention_pool`` (2, BigGAN's form of SAGAN's block) so that a whole CT slice (128x128 LR
  positions at x2) fits in memory: the map is ``[h*w, h*w / pool^2]``; ``attention_pool=1`` is SAGAN's exact form;
* weighted connection (eq. not printed in the text): a per-element softmax competition between the two outputs,
  ``(w_R, w_Y) = softmax(alpha * R, beta * Y)``, output ``w_R * R + w_Y * Y`` with the paper's preset
  ``alpha = beta = 0.5`` (parameter-free, "calculated from R and Y");
* head 9x9 conv + PReLU, 3x3 body conv, global skip, ``log2(scale)`` x (3x3 conv to 4C, PixelShuffle(2), PReLU),
  9x9 tail conv: SRGAN's skeleton; no BatchNorm (as ESRGAN and the rest of this project);
* default sizes: 16 LFFBs of 64 channels (SRGAN's 16 residual blocks of 64 channels; the paper gives none).

The bicubic residual (``residual="bicubic"``, zero-initialised tail) is this project's deviation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_lstmagan.networks.generator import SliceSRGenerator, pixel_shuffle_upsampler

__all__ = ["LocalFusionFeatureBlock", "ChannelAttention", "SelfAttention", "GlobalFeatureFusionBlock", "FAGANGenerator"]


class LocalFusionFeatureBlock(nn.Module):
    """FA-GAN's LFFB: parallel paths of different kernel sizes that share information, fused by a 1x1 conv.

    Path ``k`` (kernel ``s_k``): ``a_k = ReLU(conv_k1(x))``; ``b_k = conv_k2(cat(a_1, .., a_K))``;
    ``c_k = conv_k3(b_k)``. Output ``x + fusion(cat(c_1, .., c_K))`` (``fusion``: 1x1 conv ``K*C -> C``).

    Args:
        channels: feature maps in and out (and of every path).
        kernel_sizes: odd kernel size of each path.

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``.
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7)) -> None:
        super().__init__()
        if len(kernel_sizes) < 1 or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"LocalFusionFeatureBlock: kernel_sizes must be odd and >= 1, got {list(kernel_sizes)}.")
        paths = len(kernel_sizes)
        self.first = nn.ModuleList(nn.Conv2d(channels, channels, k, padding=k // 2) for k in kernel_sizes)
        self.second = nn.ModuleList(nn.Conv2d(paths * channels, channels, k, padding=k // 2) for k in kernel_sizes)
        self.third = nn.ModuleList(nn.Conv2d(channels, channels, k, padding=k // 2) for k in kernel_sizes)
        self.relu = nn.ReLU()
        self.fusion = nn.Conv2d(paths * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = torch.cat([self.relu(conv(x)) for conv in self.first], dim=1)
        outputs = [third(second(shared)) for second, third in zip(self.second, self.third)]
        return x + self.fusion(torch.cat(outputs, dim=1))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention: ``x * sigmoid(FC(ReLU(FC(avgpool(x)))))``.

    Args:
        channels: feature maps.
        reduction: hidden width is ``max(channels // reduction, 1)``.

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.excite = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),  # a linear layer on the pooled vector
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(x)


class SelfAttention(nn.Module):
    """SAGAN self-attention ``gamma * v(h(x) softmax(f(x)^T g(x))) + x`` with ``gamma`` starting at 0.

    Queries ``f(x)`` are taken at every position, keys ``g(x)`` and values ``h(x)`` after a ``pool x pool`` max
    pooling (``ceil_mode``, any size), so the attention map is ``[h*w, ceil(h/pool)*ceil(w/pool)]``.

    Args:
        channels: feature maps.
        pool: max-pooling factor of keys and values (1: SAGAN's exact form).

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``.
    """

    def __init__(self, channels: int, pool: int = 2) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"SelfAttention: pool must be >= 1, got {pool}.")
        inner = max(channels // 8, 1)
        self.pool = pool
        self.query = nn.Conv2d(channels, inner, 1, bias=False)
        self.key = nn.Conv2d(channels, inner, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        pooled = x if self.pool == 1 else F.max_pool2d(x, self.pool, ceil_mode=True)
        key = self.key(pooled).flatten(2)  # [N, C', hw]
        value = self.value(pooled).flatten(2)  # [N, C, hw]
        attention = torch.softmax(torch.bmm(query, key), dim=-1)  # [N, HW, hw]
        attended = torch.bmm(value, attention.transpose(1, 2)).reshape(batch, channels, height, width)
        return self.gamma * self.out(attended) + x


class GlobalFeatureFusionBlock(nn.Module):
    """FA-GAN's GFFB: channel attention ``R`` and self-attention ``Y`` of the same features, weighted connection.

    ``(w_R, w_Y) = softmax(alpha * R, beta * Y)`` per element, output ``w_R * R + w_Y * Y``, ``alpha = beta = 0.5``
    (the paper's preset values).

    Args:
        channels: feature maps.
        reduction: channel-attention reduction ratio.
        attention_pool: key/value pooling of the self-attention.

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``.
    """

    def __init__(self, channels: int, reduction: int = 16, attention_pool: int = 2) -> None:
        super().__init__()
        self.alpha = 0.5
        self.beta = 0.5
        self.channel_attention = ChannelAttention(channels, reduction)
        self.self_attention = SelfAttention(channels, attention_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.channel_attention(x)
        y = self.self_attention(x)
        weights = torch.softmax(torch.stack([self.alpha * r, self.beta * y]), dim=0)
        return weights[0] * r + weights[1] * y


class FAGANGenerator(SliceSRGenerator):
    """FA-GAN generator on SRGAN's skeleton: LFFBs, a GFFB, global skip, pixel-shuffle upsampling.

    ``head`` (9x9 conv + PReLU) -> ``num_blocks`` :class:`LocalFusionFeatureBlock` ->
    :class:`GlobalFeatureFusionBlock` -> 3x3 conv -> global skip (+ head output) -> ``log2(scale)`` x2 stages
    (3x3 conv to 4x channels, PixelShuffle(2), PReLU) -> 9x9 tail conv to one channel. The choices the paper
    leaves open are listed in the module docstring.

    Args:
        scale: upsampling factor, one of 2, 4, 8.
        num_blocks: number of local fusion feature blocks.
        channels: feature maps of the body.
        kernel_sizes: kernel size of each LFFB path.
        reduction: channel-attention reduction ratio.
        attention_pool: key/value max-pooling of the self-attention (1: SAGAN's exact form).
        residual: ``"bicubic"`` (output = bicubic upsampling + network, zero-initialised tail) or ``"none"``.

    Shapes:
        ``[N, 1, h, w] -> [N, 1, h*scale, w*scale]`` or ``[B, T, 1, h, w] -> [B, T, 1, h*scale, w*scale]``
        (the slices of a sequence are super-resolved independently).
    """

    def __init__(
        self,
        scale: int = 4,
        num_blocks: int = 16,
        channels: int = 64,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        reduction: int = 16,
        attention_pool: int = 2,
        residual: str = "bicubic",
    ) -> None:
        super().__init__("FAGANGenerator", scale, residual)
        if num_blocks < 1 or channels < 1:
            raise ValueError(f"FAGANGenerator: num_blocks and channels must be >= 1, got {num_blocks}, {channels}.")
        self.head = nn.Sequential(nn.Conv2d(1, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(
            *[LocalFusionFeatureBlock(channels, tuple(kernel_sizes)) for _ in range(num_blocks)],
            GlobalFeatureFusionBlock(channels, reduction, attention_pool),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.upsample = pixel_shuffle_upsampler(channels, scale)
        self.tail = nn.Conv2d(channels, 1, 9, padding=4)
        self.zero_tail(self.tail)

    def super_resolve_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, 1, h*scale, w*scale]``."""
        features = self.head(x)
        return self.add_residual(self.tail(self.upsample(features + self.body(features))), x)
