"""Exponential moving average of the generator (validated and exported instead of G)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_lstmagan.engines.utils import unwrap_module

__all__ = ["GeneratorEMA"]


class GeneratorEMA(torch.nn.Module):
    """Exponential moving average of a generator's weights, itself usable as the generator.

    ``ema = decay_t * ema + (1 - decay_t) * G`` after every training iteration, with the TensorFlow-style
    warm-up ``decay_t = min(decay, (1 + t) / (10 + t))`` (t = number of updates) so that short runs are not
    dominated by the initial weights. Buffers (none in the default G) are copied. ``forward`` runs the
    averaged generator, so this module is what validation uses and what ``model.pt`` stores (``.module``).

    Args:
        generator: the trained G (may be wrapped in DDP / torch.compile); the average starts as its copy.
        decay: the long-run decay (0.999 in the paper's setting).
    """

    def __init__(self, generator: torch.nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.module = copy.deepcopy(unwrap_module(generator)).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._source = [generator]  # a list so the trained G is not registered (and saved) as a submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self) -> None:
        """Blend the current weights of the trained generator into the average."""
        t = int(self.num_updates)
        decay = min(self.decay, (1.0 + t) / (10.0 + t))
        source = unwrap_module(self._source[0])
        for ema_param, param in zip(self.module.parameters(), source.parameters()):
            ema_param.lerp_(param.detach().to(ema_param.dtype), 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), source.buffers()):
            ema_buffer.copy_(buffer)
        self.num_updates += 1

    def attach(self, engine: Engine) -> None:
        """Update after every training iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: self.update())
