"""``model.pt`` / ``model_best.pt`` of the generator, and MONAI's ``CheckpointSaver`` with atomic files."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from monai_lstmagan.checkpoints import save_generator
from monai_lstmagan.handlers.utils import as_float, is_main_process

__all__ = ["GeneratorCheckpoint", "AtomicCheckpointSaver"]


class GeneratorCheckpoint:
    """Write the generator-only ``model.pt`` format (:func:`monai_lstmagan.checkpoints.save_generator`).

    Without ``key_metric_name``: attached to the trainer, saves after every epoch and at the end
    (``model.pt``). With ``key_metric_name``: attached to the evaluator, saves when the metric beats the
    best so far (``model_best.pt``); the best value is part of :meth:`state_dict` so it survives a resume.
    Only rank 0 writes.

    Args:
        filename: destination file.
        generator: the module whose weights are saved (e.g. ``ema.module``).
        generator_kwargs: ``LSTMAGANGenerator`` constructor kwargs (incl. ``scale``).
        key_metric_name: metric in ``engine.state.metrics`` to maximise, or None.
    """

    def __init__(
        self,
        filename: str,
        generator: torch.nn.Module,
        generator_kwargs: Mapping[str, Any],
        key_metric_name: str | None = None,
    ) -> None:
        self.filename = filename
        self.generator = generator
        self.generator_kwargs = dict(generator_kwargs)
        self.key_metric_name = key_metric_name
        self.best_metric = -math.inf
        self.best_epoch = -1
        self._saved_iteration = -1
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if self.key_metric_name is None:
            engine.add_event_handler(Events.COMPLETED, self)

    def state_dict(self) -> dict:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.best_metric = float(state_dict["best_metric"])
        self.best_epoch = int(state_dict["best_epoch"])

    def __call__(self, engine: Engine) -> None:
        extra: dict[str, Any] = {"epoch": engine.state.epoch}
        metrics = {k: as_float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float, torch.Tensor))}
        if self.key_metric_name is not None:
            if self.key_metric_name not in metrics:
                raise KeyError(f"GeneratorCheckpoint: metric '{self.key_metric_name}' not in {sorted(metrics)}.")
            value = metrics[self.key_metric_name]
            if not value > self.best_metric:
                return
            self.best_metric, self.best_epoch = value, engine.state.epoch
        else:
            if engine.state.iteration == self._saved_iteration:  # COMPLETED right after the last EPOCH_COMPLETED
                return
            self._saved_iteration = extra["iteration"] = engine.state.iteration
        extra["metrics"] = metrics
        if is_main_process():
            save_generator(self.filename, self.generator, self.generator_kwargs, extra)
            self.logger.info(f"saved generator to {self.filename} (epoch {engine.state.epoch})")


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` whose files are written to a temporary file and renamed.

    MONAI creates ignite ``DiskSaver`` objects with ``atomic=False``; this turns atomic writing on for
    all of them (same arguments as ``CheckpointSaver``), so a kill never leaves a half-written checkpoint.
    With ``n_saved >= 2`` a complete earlier checkpoint also exists while a new one is written.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler._atomic = True
