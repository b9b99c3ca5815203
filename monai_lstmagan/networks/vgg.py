"""VGG19 feature extractor for the perceptual loss, defined here so that torchvision is not needed.

The layers sit in ``self.features`` at the same indices as torchvision's ``vgg19().features``, so the
standard ImageNet state_dict (keys ``features.<index>.weight`` / ``.bias``) loads unchanged.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

__all__ = ["VGG19Features", "VGG19_LAYERS", "VGG19_IMAGENET_URL"]

logger = logging.getLogger(__name__)

VGG19_IMAGENET_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
_CONFIG = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for stage, widths in enumerate(_CONFIG, start=1):
        for conv in range(1, len(widths) + 1):
            names += [f"conv{stage}_{conv}", f"relu{stage}_{conv}"]
        names.append(f"pool{stage}")
    return tuple(names)


#: Names of ``vgg19().features[i]`` in index order: ``conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ...``.
VGG19_LAYERS: tuple[str, ...] = _layer_names()


class VGG19Features(nn.Module):
    """Frozen VGG19 feature extractor for one-channel images in ``[0, 1]``, truncated after ``layer``.

    The grey image is repeated to 3 channels and normalised with the ImageNet mean/std before the conv
    layers. Parameters never require gradients and the module stays in eval mode (``train()`` is a no-op),
    gradients still flow to the input.

    Args:
        layer: last layer to compute, a name from :data:`VGG19_LAYERS`; ``"relu5_4"`` is SRGAN's VGG54
            (``"conv5_4"`` is the pre-activation variant used by ESRGAN).
        weights: ``None`` for random initialisation (only useful for tests; logged as a warning),
            ``"imagenet"`` to fetch :data:`VGG19_IMAGENET_URL` with ``torch.hub.load_state_dict_from_url``
            (cached in the torch hub folder), or the path of a local state_dict file in torchvision's key
            layout (``features.<index>.weight``; a ``{"state_dict": ...}`` wrapper is accepted).

    Shapes:
        ``[N, 1, H, W] -> [N, C_layer, H / 2**k, W / 2**k]``.
    """

    def __init__(self, layer: str = "relu5_4", weights: str | None = None) -> None:
        super().__init__()
        if layer not in VGG19_LAYERS:
            raise ValueError(f"VGG19Features: unknown layer {layer!r}; choose one of {', '.join(VGG19_LAYERS)}.")
        self.layer = layer
        modules: list[nn.Module] = []
        in_channels = 3
        for name in VGG19_LAYERS[: VGG19_LAYERS.index(layer) + 1]:  # build only the layers that are used
            if name.startswith("conv"):
                width = _CONFIG[int(name[4]) - 1][int(name[6]) - 1]
                modules.append(nn.Conv2d(in_channels, width, 3, padding=1))
                in_channels = width
            else:
                modules.append(nn.ReLU() if name.startswith("relu") else nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._load(weights)
        self.requires_grad_(False)
        super().train(False)

    def _load(self, weights: str | None) -> None:
        if weights is None:
            logger.warning(
                "VGG19Features: weights=None, the perceptual loss uses RANDOM VGG19 weights; "
                "pass weights='imagenet' or a local vgg19 state_dict file for a meaningful perceptual loss."
            )
            return
        if weights == "imagenet":
            state = torch.hub.load_state_dict_from_url(VGG19_IMAGENET_URL, map_location="cpu", check_hash=True)
            source = VGG19_IMAGENET_URL
        else:
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"VGG19Features: weights file {weights!r} does not exist.")
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except Exception as error:  # a corrupt / non-torch file
                raise ValueError(f"VGG19Features: cannot read weights file {weights!r}: {error}") from error
            source = weights
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"VGG19Features: {source!r} does not hold a state_dict.")
        own = {f"features.{key}" for key in self.features.state_dict()}
        missing = sorted(own - set(state))
        if missing:
            raise ValueError(
                f"VGG19Features: {source!r} is not a torchvision VGG19 state_dict, missing keys {missing[:4]}"
                f"{' ...' if len(missing) > 4 else ''}."
            )
        try:
            self.features.load_state_dict({key[len("features.") :]: state[key] for key in own})
        except RuntimeError as error:
            raise ValueError(f"VGG19Features: {source!r} does not match the VGG19 layout: {error}") from error

    def train(self, mode: bool = True) -> VGG19Features:
        """Keep the frozen extractor in eval mode whatever the parent module does."""
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"VGG19Features expects one-channel images [N, 1, H, W], got shape {list(x.shape)}.")
        return self.features((x.expand(-1, 3, -1, -1) - self.mean) / self.std)
