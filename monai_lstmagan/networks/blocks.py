"""Building blocks of the LSTMAGAN generator: dense block, attention gate, attention dense connectivity block.

All blocks work on 2D feature maps ``[N, C, H, W]`` and keep the spatial size.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["DenseBlock", "AttentionGate", "ADCBlock"]


class DenseBlock(nn.Module):
    """Densely connected conv block (DenseNet / RDN style) that maps ``channels`` back to ``channels``.

    Layer ``l`` (``l = 0 .. num_layers - 1``) is a 3x3 conv + ReLU fed the concatenation of the block
    input and the outputs of all earlier layers, and adds ``growth`` feature maps. A 1x1 conv (local
    feature fusion, no activation) maps the ``channels + num_layers * growth`` maps back to ``channels``
    so that the block output can be added to its input.

    Args:
        channels: number of input and output feature maps.
        num_layers: number of conv + ReLU layers (depth).
        growth: feature maps added by each layer (growth rate).

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``.
    """

    def __init__(self, channels: int, num_layers: int = 4, growth: int = 32) -> None:
        super().__init__()
        if channels < 1 or num_layers < 1 or growth < 1:
            raise ValueError(
                f"DenseBlock needs channels, num_layers and growth >= 1, got {channels}, {num_layers}, {growth}."
            )
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels + i * growth, growth, 3, padding=1), nn.ReLU()) for i in range(num_layers)
        )
        self.fusion = nn.Conv2d(channels + num_layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return self.fusion(torch.cat(features, dim=1))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., Attention U-Net) with 1x1 convs, eqs. 3-4 of LSTMAGAN.

    ``q = psi(ReLU(Wp P + Wg G + bg)) + bpsi``, ``alpha = sigmoid(q)``, output ``P' = alpha * P``.
    ``Wp`` has no bias, ``Wg`` carries ``bg`` and ``psi`` carries ``bpsi``. ``alpha`` has one channel
    (one coefficient per pixel) and is broadcast over the channels of ``P``.

    ``bpsi`` is initialised to ``open_bias`` (3.0, ``alpha`` ~ 0.95) so that an untrained gate starts
    almost open: in a deep stack of gated residual blocks a gate starting at ``alpha ~ 0.5`` would
    shrink the identity path by ``0.5 ** num_blocks`` (at init, in a 16-block generator with ``bpsi = 0``, the
    first block's conv would get ~1e-3 times the gradient of the last block's). Training can still close the gate anywhere.

    Args:
        channels: feature maps of ``P`` and ``G``.
        inter_channels: feature maps of the intermediate ``Wp P + Wg G`` map; default ``max(channels // 2, 1)``.

    Shapes:
        ``P, G: [N, channels, H, W] -> P': [N, channels, H, W]``; :meth:`coefficients` gives ``alpha``
        ``[N, 1, H, W]`` in ``(0, 1)``.
    """

    open_bias: float = 3.0

    def __init__(self, channels: int, inter_channels: Optional[int] = None) -> None:
        super().__init__()
        inter = max(channels // 2, 1) if inter_channels is None else inter_channels
        self.w_p = nn.Conv2d(channels, inter, 1, bias=False)
        self.w_g = nn.Conv2d(channels, inter, 1, bias=True)
        self.psi = nn.Conv2d(inter, 1, 1, bias=True)
        self.relu = nn.ReLU()
        nn.init.constant_(self.psi.bias, self.open_bias)

    def coefficients(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``alpha = sigmoid(psi(ReLU(Wp P + Wg G + bg)) + bpsi)``, ``[N, 1, H, W]``."""
        return torch.sigmoid(self.psi(self.relu(self.w_p(p) + self.w_g(g))))

    def forward(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.coefficients(p, g) * p


class ADCBlock(nn.Module):
    """Attention Dense Connectivity block: a dense block whose scaled output gates the block input.

    With block input ``P``, dense block ``D`` and residual scale ``beta``:

    * gating signal ``G = beta * D(P)``;
    * gated input ``P' = alpha(P, G) * P`` (:class:`AttentionGate`);
    * output ``P' + G = alpha * P + beta * D(P)``.

    The gate sits on the block's skip connection, as in Attention U-Net where the gate filters the skip
    features with a signal from the other path: the residual branch ``G`` decides, per pixel, how much
    of the incoming features is carried on, and the residual update ``G`` itself is always added (it is
    the new information of the block, gating it by a function of itself would only rescale it). With
    ``attention=False`` (``alpha = 1``) the block is exactly the plain scaled dense residual block
    ``P + beta * D(P)`` of ESRGAN/RDN, which is the generator of the ablation without attention.

    Args:
        channels: feature maps in and out.
        dense_layers: conv + ReLU layers of the dense block.
        growth: growth rate of the dense block.
        beta: residual scale of the dense output (0.2 in the paper).
        attention: gate the skip connection; ``False`` gives the plain dense residual block.

    Shapes:
        ``[N, channels, H, W] -> [N, channels, H, W]``.
    """

    def __init__(
        self, channels: int, dense_layers: int = 4, growth: int = 32, beta: float = 0.2, attention: bool = True
    ) -> None:
        super().__init__()
        self.beta = float(beta)
        self.dense = DenseBlock(channels, dense_layers, growth)
        self.gate: Optional[AttentionGate] = AttentionGate(channels) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.beta * self.dense(x)
        gate = self.gate
        if gate is not None:
            return gate(x, g) + g
        return x + g
