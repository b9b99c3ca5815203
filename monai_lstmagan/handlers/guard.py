"""Stop training with a clear message (after saving a checkpoint) when a loss turns NaN/Inf."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import AdversarialIterationEvents

from monai_lstmagan.checkpoints import atomic_save
from monai_lstmagan.handlers.utils import as_float, is_main_process
from monai_lstmagan.losses import G_LOSS_KEYS, LossKeys

__all__ = ["NonFiniteLossGuard"]


class NonFiniteLossGuard:
    """Stop training when a loss is NaN/Inf, before the optimizer step that would use it.

    Attached to the trainer's ``LOSS_COMPLETED`` (G) and ``DISCRIMINATOR_LOSS_COMPLETED`` (D) events, it
    checks the scalar losses in ``engine.state.output``. On a non-finite value it saves ``save_dict``
    (the weights are still finite at that point) to ``output_dir/nonfinite_checkpoint_iteration=N.pt``,
    which resume does not pick up automatically, and raises ``FloatingPointError`` naming the losses.

    Args:
        output_dir: where to write the checkpoint.
        save_dict: objects to save, as for ``CheckpointSaver`` (``{"network": G, "trainer": trainer, ...}``).
        keys: the output entries to check.
    """

    def __init__(
        self,
        output_dir: str,
        save_dict: Mapping[str, Any],
        keys: Sequence[str] = (*G_LOSS_KEYS, LossKeys.D_LOSS, LossKeys.GRADIENT_PENALTY),
    ) -> None:
        self.output_dir = output_dir
        self.save_dict = save_dict
        self.keys = tuple(str(key) for key in keys)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)
        if engine.has_registered_events(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED):
            engine.add_event_handler(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        bad = {}
        for key in self.keys:
            if key in output and output[key] is not None:
                value = as_float(output[key])
                if not math.isfinite(value):
                    bad[key] = value
        if not bad:
            return
        iteration, epoch = engine.state.iteration, engine.state.epoch
        path = os.path.join(self.output_dir, f"nonfinite_checkpoint_iteration={iteration}.pt")
        if is_main_process():
            atomic_save({k: v.state_dict() for k, v in self.save_dict.items()}, path)
        message = (
            f"non-finite loss at epoch {epoch}, iteration {iteration}: {bad}. Training stopped before the "
            f"optimizer step; the state at this point is saved in '{path}'. Resume from the last full "
            "checkpoint (resume.yaml) with a lower learning rate, AMP off, or a larger warm-up."
        )
        self.logger.error(message)
        raise FloatingPointError(message)
