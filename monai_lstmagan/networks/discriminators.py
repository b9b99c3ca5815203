"""Discriminators / critics on HR slice sequences ``[B, T, 1, H, W]``: LSTM over slices, and SRGAN-style conv."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_lstmagan.transforms.ops import bicubic_downsample, bicubic_upsample

__all__ = [
    "LSTMDiscriminator",
    "ConvDiscriminator",
    "HighPassCritic",
    "NORMS",
    "CRITICS",
    "build_discriminator",
    "spectrally_normalise",
]

NORMS = ("none", "instance", "layer", "batch")


def _check_sequence(x: torch.Tensor, name: str) -> None:
    if x.dim() != 5 or x.shape[2] != 1:
        raise ValueError(f"{name} expects slice sequences [B, T, 1, H, W], got shape {list(x.shape)}.")


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "none":
        return nn.Identity()
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")


def _init_leaky_convs(module: nn.Module, slope: float = 0.2) -> None:
    """He initialisation for LeakyReLU(``slope``) of every conv (zero bias): keeps the feature scale through
    the encoder, so an untrained critic's score depends on its input (PyTorch's default conv init shrinks it
    layer by layer: the gradient penalty stays ~1, the input gradient ~0, and the critic does not learn; docs/training.md).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class LSTMDiscriminator(nn.Module):
    """LSTM discriminator / critic over a sequence of consecutive axial slices.

    ``variant="encoder"`` (default, recommended): every slice goes through the same small conv encoder
    (3x3 stem conv, then a 4x4 stride-2 conv per entry of ``encoder_channels``, LeakyReLU(0.2), no
    normalisation layers, global average pooling), the LSTM runs over the ``T`` slice features, a linear
    layer scores every time step and the scores are averaged over the sequence.

    ``variant="literal"``: the paper's literal form: each slice is flattened to a vector of
    ``H * W`` values and fed to the LSTM with time_step = 1 (``input_size = H * W``), so the LSTM sees
    each slice on its own; a linear layer scores each slice and the scores are averaged over the
    sequence. It needs ``image_size`` and has ``4 * hidden_size * (H * W + hidden_size)`` LSTM weights.
    With one time step from a zero state the recurrent weights ``W_hh`` have no effect (zero gradient): the
    LSTM acts as a gated one-layer MLP per slice and no information flows between slices. It is kept for
    fidelity to the paper's text; ``"encoder"`` is the variant that models the slice sequence.
    ``encoder_channels`` is not used by this variant.

    There is no BatchNorm anywhere, so the module is a valid WGAN-GP critic.

    Args:
        num_slices: sequence length ``T`` the discriminator is built for; other lengths are refused.
        encoder_channels: output channels of the stride-2 encoder convs ("encoder" variant).
        hidden_size: LSTM hidden size.
        variant: ``"encoder"`` or ``"literal"``.
        image_size: ``(H, W)`` (or one int for square slices) of the HR slices; required for ``"literal"``.
        sigmoid: return ``sigmoid(score)`` (a probability, plain GAN only). Default ``False`` returns the
            raw score: the logit for :class:`~monai_lstmagan.losses.GANObjective` (which then applies the
            sigmoid inside BCE-with-logits) and the critic value for WGAN-GP.
        spectral_norm: spectrally normalise the encoder's convs and the score layer (:func:`spectrally_normalise`;
            for :class:`~monai_lstmagan.losses.HingeObjective`); the LSTM's weights are not normalised.

    Shapes:
        ``[B, T, 1, H, W] -> [B]``.
    """

    def __init__(
        self,
        num_slices: int = 16,
        encoder_channels: Sequence[int] = (32, 64, 128, 256),
        hidden_size: int = 256,
        variant: str = "encoder",
        image_size: int | Sequence[int] | None = None,
        sigmoid: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_slices < 1:
            raise ValueError(f"LSTMDiscriminator: num_slices must be >= 1, got {num_slices}.")
        self.num_slices = num_slices
        self.variant = variant
        self.sigmoid = sigmoid
        self.image_size: tuple[int, int] | None = None
        if variant == "encoder":
            if len(encoder_channels) < 1:
                raise ValueError("LSTMDiscriminator: encoder_channels must not be empty.")
            layers: list[nn.Module] = [nn.Conv2d(1, encoder_channels[0], 3, padding=1), nn.LeakyReLU(0.2)]
            previous = encoder_channels[0]
            for channels in encoder_channels:
                layers += [nn.Conv2d(previous, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
                previous = channels
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            self.encoder: nn.Module = nn.Sequential(*layers)
            input_size = previous
        elif variant == "literal":
            if image_size is None:
                raise ValueError('LSTMDiscriminator(variant="literal") needs image_size=(H, W) of the HR slices.')
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            if len(size) != 2:
                raise ValueError(f"LSTMDiscriminator: image_size must be (H, W), got {image_size}.")
            self.image_size = (int(size[0]), int(size[1]))
            self.encoder = nn.Flatten()
            input_size = self.image_size[0] * self.image_size[1]
        else:
            raise ValueError(f'LSTMDiscriminator: variant must be "encoder" or "literal", got {variant!r}.')
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.score = nn.Linear(hidden_size, 1)
        _init_leaky_convs(self.encoder)
        if spectral_norm:
            spectrally_normalise(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_sequence(x, "LSTMDiscriminator")
        batch, steps = x.shape[0], x.shape[1]
        if steps != self.num_slices:
            raise ValueError(f"LSTMDiscriminator was built for num_slices={self.num_slices}, got T={steps}.")
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f'LSTMDiscriminator(variant="literal") was built for {self.image_size} slices, '
                f"got {tuple(x.shape[-2:])}."
            )
        features = self.encoder(x.flatten(0, 1))  # [B*T, F]
        if self.variant == "literal":
            hidden, _ = self.lstm(features.unsqueeze(1))  # every slice is a sequence of one step
        else:
            hidden, _ = self.lstm(features.reshape(batch, steps, -1))  # [B, T, hidden]
        scores = self.score(hidden.reshape(batch, steps, -1)).mean(dim=(1, 2))
        return torch.sigmoid(scores) if self.sigmoid else scores


def spectrally_normalise(module: nn.Module) -> None:
    """Divide every ``Conv2d`` and ``Linear`` weight in ``module`` by its largest singular value
    (``torch.nn.utils.parametrizations.spectral_norm``, one power iteration per training forward, Miyato et al.
    2018), so each of those layers is 1-Lipschitz. An ``nn.LSTM``'s recurrent weights are left as they are."""
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(layer)


class ConvDiscriminator(nn.Module):
    """SRGAN-style strided conv discriminator / critic applied to every slice, scores averaged over slices.

    3x3 conv + LeakyReLU(0.2), then per entry ``c`` of ``channels`` a 3x3 conv to ``c`` (skipped for the
    first entry, as in SRGAN's k3n64s1 / k3n64s2 start) and a 3x3 stride-2 conv, each followed by ``norm``
    and LeakyReLU(0.2); global average pooling (any slice size), Linear(``fc_features``), LeakyReLU,
    Linear(1).

    With ``spectral_norm=True`` every conv and linear weight is divided by its largest singular value
    (``torch.nn.utils.parametrizations.spectral_norm``, one power iteration per training forward, Miyato et al. 2018),
    so each layer is 1-Lipschitz: FA-GAN's discriminator. The normalised weight is what ``module.weight`` returns;
    the raw one is ``module.parametrizations.weight.original``.

    :meth:`features` returns the activations at the end of every stride-2 stage (what MedSRGAN's adversarial feature
    loss, :class:`~monai_lstmagan.losses.DiscriminatorFeatureLoss`, compares between SR and HR).

    Args:
        channels: conv widths per stride-2 stage (SRGAN: 64, 128, 256, 512).
        fc_features: width of the hidden linear layer (SRGAN: 1024).
        norm: ``"none"`` (default), ``"instance"``, ``"layer"`` (GroupNorm with one group) or ``"batch"``.
            BatchNorm is SRGAN's choice for the plain GAN but invalid for a WGAN-GP critic (the penalty
            assumes each sample's score depends on that sample only); :class:`~monai_lstmagan.losses.WGANGPObjective`
            refuses it.
        sigmoid: return ``sigmoid(score)`` instead of the raw score (see :class:`LSTMDiscriminator`).
        spectral_norm: spectrally normalise every conv and linear layer (needs ``norm="none"``: a normalisation
            layer after a conv would undo the bound).

    Shapes:
        ``[B, T, 1, H, W] -> [B]``; :meth:`features`: a list of ``[B*T, channels[i], H / 2^(i+1), W / 2^(i+1)]``.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512),
        fc_features: int = 1024,
        norm: str = "none",
        sigmoid: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) < 1:
            raise ValueError("ConvDiscriminator: channels must not be empty.")
        if norm not in NORMS:
            raise ValueError(f"ConvDiscriminator: norm must be one of {NORMS}, got {norm!r}.")
        if spectral_norm and norm != "none":
            raise ValueError(f"ConvDiscriminator: spectral_norm needs norm='none', got {norm!r}.")
        self.sigmoid = sigmoid
        layers: list[nn.Module] = [nn.Conv2d(1, channels[0], 3, padding=1), nn.LeakyReLU(0.2)]
        stage_ends: list[int] = []
        previous = channels[0]
        for index, width in enumerate(channels):
            if index > 0:
                layers += [nn.Conv2d(previous, width, 3, padding=1), _norm(norm, width), nn.LeakyReLU(0.2)]
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), _norm(norm, width), nn.LeakyReLU(0.2)]
            stage_ends.append(len(layers) - 1)
            previous = width
        self.stage_ends: list[int] = stage_ends  # index in ``net`` of the last module of every stride-2 stage
        layers += [
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(previous, fc_features),
            nn.LeakyReLU(0.2),
            nn.Linear(fc_features, 1),
        ]
        self.net = nn.Sequential(*layers)
        _init_leaky_convs(self.net)
        if spectral_norm:
            spectrally_normalise(self.net)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations at the end of every stride-2 stage, slices folded: ``[B, T, 1, H, W]`` -> a list of
        ``[B*T, channels[i], H_i, W_i]``."""
        _check_sequence(x, "ConvDiscriminator")
        out = x.flatten(0, 1)
        features: list[torch.Tensor] = []
        last = self.stage_ends[-1]
        for index, module in enumerate(self.net):
            out = module(out)
            if index in self.stage_ends:
                features.append(out)
            if index == last:
                break
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_sequence(x, "ConvDiscriminator")
        batch, steps = x.shape[0], x.shape[1]
        scores = self.net(x.flatten(0, 1)).reshape(batch, steps).mean(dim=1)
        return torch.sigmoid(scores) if self.sigmoid else scores


class HighPassCritic(nn.Module):
    """A critic that sees only the detail above the LR Nyquist (frequency separation, Fritsche et al., "Frequency
    Separation for Real-World Super-Resolution", ICCV workshops 2019: the adversarial loss on the high frequencies).

    Each slice ``x`` becomes ``x - up(down(x))`` with the project's antialiased bicubic pair
    (:func:`~monai_lstmagan.transforms.ops.bicubic_downsample`, ``bicubic_upsample``) at the LR factor, so what the
    LR already fixes (anatomy, contrast, the band below the LR Nyquist) is the same for real and fake and only the
    fine detail the generator adds or misses is left to judge. The filter is linear, so the gradient penalty of
    WGAN-GP (taken on this module's input) stays valid.

    Args:
        critic: the wrapped critic (:class:`LSTMDiscriminator`, :class:`ConvDiscriminator`).
        scale: the LR factor ``s`` (slice sides must be divisible by it).

    Shapes:
        ``[B, T, 1, H, W] -> [B]`` (the wrapped critic's output).
    """

    def __init__(self, critic: nn.Module, scale: int) -> None:
        super().__init__()
        if not isinstance(scale, int) or scale < 2:
            raise ValueError(f"HighPassCritic: the LR factor must be an integer >= 2, got {scale!r}.")
        self.critic = critic
        self.scale = scale

    @property
    def sigmoid(self) -> bool:
        """The wrapped critic's ``sigmoid`` (probabilities instead of raw scores)."""
        return bool(getattr(self.critic, "sigmoid", False))

    def detail(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, 1, H, W]`` -> the same shape: ``x - up(down(x))`` per slice."""
        _check_sequence(x, "HighPassCritic")
        return x - bicubic_upsample(bicubic_downsample(x, self.scale), self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.detail(x))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The wrapped critic's ``features`` of the detail (for the critic-feature loss)."""
        return self.critic.features(self.detail(x))


#: Names of the critics a config can choose (``critic: lstm | conv``; ``null`` trains without one).
CRITICS = ("lstm", "conv")


def build_discriminator(kind: str, num_slices: int = 16, high_pass_scale: int | None = None, **kwargs) -> nn.Module:
    """Discriminator by name: ``"lstm"`` -> :class:`LSTMDiscriminator(num_slices, **kwargs)`,
    ``"conv"`` -> :class:`ConvDiscriminator(**kwargs)` (``num_slices`` is not needed by the per-slice conv);
    with ``high_pass_scale = s`` wrapped in :class:`HighPassCritic(critic, s)` (it judges the detail only)."""
    if kind == "lstm":
        critic: nn.Module = LSTMDiscriminator(num_slices=num_slices, **kwargs)
    elif kind == "conv":
        critic = ConvDiscriminator(**kwargs)
    else:
        raise ValueError(f"build_discriminator: kind must be one of {CRITICS}, got {kind!r}.")
    return critic if high_pass_scale is None else HighPassCritic(critic, high_pass_scale)
