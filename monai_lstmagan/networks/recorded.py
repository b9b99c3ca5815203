"""The bundle's ``network_def``: a generator whose architecture is the one recorded in the checkpoint it loads.

Every ``model.pt`` of this project records its generator's constructor arguments in the state dict's
``_metadata`` (:mod:`monai_lstmagan.checkpoints`). MONAI's bundle tools (``ckpt_export``, ``onnx_export``,
``verify_net_in_out``, ``CheckpointLoader``) build ``network_def`` from the config and then load a state dict
into it; :class:`RecordedGenerator` starts from the architecture of the config's checkpoint and, when the state
dict it is given records another architecture (a model a user trained), rebuilds itself as that one first, so
the tools work on any checkpoint with their default arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from monai_lstmagan.checkpoints import GENERATOR_FORMAT, METADATA_KEY, load_generator
from monai_lstmagan.networks import build_generator

__all__ = ["RecordedGenerator", "recorded_architecture"]


def recorded_architecture(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """The generator kwargs a ``model.pt`` state dict records, or None for a state dict without them."""
    info = (getattr(state_dict, "_metadata", None) or {}).get(METADATA_KEY)
    if (
        isinstance(info, Mapping)
        and info.get("format") == GENERATOR_FORMAT
        and isinstance(info.get("generator"), Mapping)
    ):
        return dict(info["generator"])
    return None


class RecordedGenerator(nn.Module):
    """``[N, 1, h, w] -> [N, 1, h*s, w*s]``: the generator of a ``model.pt``, rebuilt on load as the loaded one.

    Args:
        checkpoint: a ``model.pt`` whose architecture (and weights) the module starts with.

    Attributes:
        generator: the wrapped generator (LSTMAGAN or a comparison architecture).
        architecture: its constructor kwargs.
    """

    __jit_unused_properties__ = ["scale"]

    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        self.generator, info = load_generator(checkpoint)
        self.architecture = dict(info["generator"])

    @property
    def scale(self) -> int:
        """The in-plane SR factor."""
        return int(self.architecture["scale"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load a generator state dict (a ``model.pt``, keys without prefix); rebuild first if it records another
        architecture. A state dict of this wrapper itself (keys ``generator.*``) loads as usual."""
        if any(key.startswith("generator.") for key in state_dict):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        architecture = recorded_architecture(state_dict)
        if architecture is not None and architecture != self.architecture:
            self.generator = build_generator(**architecture).to(next(self.generator.parameters()).device)
            self.architecture = architecture
        result = self.generator.load_state_dict(state_dict, strict=strict, assign=assign)
        self.generator.eval()
        return result
