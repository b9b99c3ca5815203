"""MedSRGAN generator (Gu et al., MTAP 2020): RWMAN, the residual whole-map attention network.

Only the abstract of the paper ("MedSRGAN: medical images super-resolution using generative adversarial
networks", ``../shared/papers/medsrgan_mtap_2020.txt``) is available here. It says: the generator is RWMAN, which
extracts "the useful information through different channels" and pays "more attention on meaningful regions";
the loss is a weighted sum of content, adversarial and adversarial feature loss. The block structure below follows
the public description of RWMAN (a public PyTorch re-implementation, ``04RR/MedSRGAN``, read with the ``search``
tool; no code is copied) and RCAN, which RWMAN modifies. Every choice:

* residual whole-map attention block (RWMAB): ``F = conv3x3(ReLU(conv3x3(x)))``, a "whole map" attention
  ``A = sigmoid(conv1x1(F))`` of the same shape as ``F`` (one weight per channel AND pixel, instead of RCAN's one
  weight per channel), output ``x + A * F``;
* residual groups (RCAN's "short skip"): ``blocks_per_group`` RWMABs in a chain plus the group input; no conv at
  the end of a group (as the public description);
* RWMAN: 3x3 head conv ``1 -> C``, ``num_groups`` groups, a 1x1 conv, concatenated with the head features (the
  long skip is a concatenation, ``2C`` maps), ``log2(scale)`` x2 stages (3x3 conv to 4x channels, PixelShuffle(2),
  PReLU; the first reads the ``2C`` maps), 3x3 tail conv to one channel, linear output (the public description ends
  in a sigmoid; this project's generators have a linear output and the bicubic residual);
* default sizes: 8 groups of 16 RWMABs, 64 channels (the public description's; the abstract gives none);
* the discriminator and losses: the paper's discriminator reads (LR, SR/HR) pairs; this project's trainer gives the
  critic HR-size slice sequences only, so MedSRGAN is trained with the unconditional
  :class:`~.discriminators.ConvDiscriminator`; the adversarial feature loss is
  :class:`monai_lstmagan.losses.DiscriminatorFeatureLoss` (L1 between the critic's stage features of SR and HR);
  the content loss is this project's pixel MSE (the public description uses L1 + VGG features), see
  ``bundle/configs/medsrgan.yaml`` for weights and objective.

The bicubic residual (``residual="bicubic"``, zero-initialised tail) is this project's deviation.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_lstmagan.networks.generator import SliceSRGenerator, pixel_shuffle_upsampler

__all__ = ["ResidualWholeMapAttentionBlock", "ResidualGroup", "MedSRGANGenerator"]


class ResidualWholeMapAttentionBlock(nn.Module):
    """RWMAB: ``x + sigmoid(conv1x1(F)) * F`` with ``F = conv3x3(ReLU(conv3x3(x)))``.

    Args:
        channels: feature maps in and out.

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``; :meth:`attention_map` gives ``[N, channels, H, W]`` in (0, 1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.attention = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Sigmoid())

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The whole-map attention ``sigmoid(conv1x1(F))`` of the block input ``x``."""
        return self.attention(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return x + self.attention(features) * features


class ResidualGroup(nn.Module):
    """A chain of RWMABs with a short skip: ``x + RWMAB_n(... RWMAB_1(x))``.

    Args:
        channels: feature maps in and out.
        num_blocks: RWMABs in the group.

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``.
    """

    def __init__(self, channels: int, num_blocks: int = 16) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"ResidualGroup: num_blocks must be >= 1, got {num_blocks}.")
        self.blocks = nn.Sequential(*[ResidualWholeMapAttentionBlock(channels) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.blocks(x)


class MedSRGANGenerator(SliceSRGenerator):
    """MedSRGAN's RWMAN generator: residual groups of whole-map attention blocks, concatenated long skip.

    ``head`` (3x3 conv) -> ``num_groups`` :class:`ResidualGroup` -> 1x1 conv -> concatenation with the head
    features (``2 * channels`` maps) -> ``log2(scale)`` x2 stages (3x3 conv to ``4 * channels``, PixelShuffle(2),
    PReLU) -> 3x3 tail conv to one channel. The choices made without the paper's full text are listed in the
    module docstring.

    Args:
        scale: upsampling factor, one of 2, 4, 8.
        num_groups: number of residual groups.
        blocks_per_group: RWMABs per group.
        channels: feature maps of the body.
        residual: ``"bicubic"`` (output = bicubic upsampling + network, zero-initialised tail) or ``"none"``.

    Shapes:
        ``[N, 1, h, w] -> [N, 1, h*scale, w*scale]`` or ``[B, T, 1, h, w] -> [B, T, 1, h*scale, w*scale]``
        (the slices of a sequence are super-resolved independently).
    """

    def __init__(
        self,
        scale: int = 4,
        num_groups: int = 8,
        blocks_per_group: int = 16,
        channels: int = 64,
        residual: str = "bicubic",
    ) -> None:
        super().__init__("MedSRGANGenerator", scale, residual)
        if num_groups < 1 or channels < 1:
            raise ValueError(f"MedSRGANGenerator: num_groups and channels must be >= 1, got {num_groups}, {channels}.")
        self.head = nn.Conv2d(1, channels, 3, padding=1)
        self.body = nn.Sequential(
            *[ResidualGroup(channels, blocks_per_group) for _ in range(num_groups)], nn.Conv2d(channels, channels, 1)
        )
        self.upsample = pixel_shuffle_upsampler(channels, scale, in_channels=2 * channels)
        self.tail = nn.Conv2d(channels, 1, 3, padding=1)
        self.zero_tail(self.tail)

    def super_resolve_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, 1, h*scale, w*scale]``."""
        features = self.head(x)
        return self.add_residual(self.tail(self.upsample(torch.cat([self.body(features), features], dim=1))), x)
