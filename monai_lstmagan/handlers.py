"""Ignite handlers for LSTMAGAN training that MONAI does not provide.

- :class:`GeneratorEMA`: exponential moving average of G (validated and exported instead of G).
- :class:`NonFiniteLossGuard`: stops training with a clear message (after saving a checkpoint) when a loss
  turns NaN/Inf, before the step that would spread it into the weights.
- :class:`CSVLogger`: per-iteration losses / D statistics and per-epoch validation metrics as CSV.
- :class:`GeneratorCheckpoint`: ``model.pt`` (latest) and ``model_best.pt`` (best validation metric) in the
  generator-only format of :mod:`monai_lstmagan.checkpoints`.
- :class:`AtomicCheckpointSaver`: MONAI ``CheckpointSaver`` whose files are written atomically.
- :class:`ForegroundMetrics`: per-volume foreground (and whole-image) PSNR / SSIM of validation outputs,
  the same numbers as the evaluation workflow (:func:`monai_lstmagan.evaluation.volume_metrics`).

Everything else (stats, TensorBoard, validation, full checkpoints, LR schedules) uses MONAI's handlers.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver
from monai.utils import AdversarialIterationEvents

from monai_lstmagan.atomic import atomic_write
from monai_lstmagan.checkpoints import atomic_save, save_generator, unwrap_module
from monai_lstmagan.evaluation import volume_metrics
from monai_lstmagan.losses import D_LOSS_KEYS, G_LOSS_KEYS, LossKeys

__all__ = [
    "GeneratorEMA",
    "NonFiniteLossGuard",
    "CSVLogger",
    "GeneratorCheckpoint",
    "AtomicCheckpointSaver",
    "ForegroundMetrics",
    "slice_pairs",
    "ITERATION_COLUMNS",
    "VALIDATION_COLUMNS",
]

#: the columns of ``iterations.csv``: epoch, iteration, then the G losses and the critic statistics.
ITERATION_COLUMNS = ("epoch", "iteration", *G_LOSS_KEYS, LossKeys.ADVERSARIAL_FEATURE, *D_LOSS_KEYS)  # feature: MedSRGAN only
VALIDATION_COLUMNS = (
    "epoch", "psnr_fg_sr", "psnr_fg_bicubic", "ssim_fg_sr", "ssim_fg_bicubic",
    "psnr_sr", "psnr_bicubic", "ssim_sr", "ssim_bicubic",
)  # fmt: skip


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _as_float(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


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
                value = _as_float(output[key])
                if not math.isfinite(value):
                    bad[key] = value
        if not bad:
            return
        iteration, epoch = engine.state.iteration, engine.state.epoch
        path = os.path.join(self.output_dir, f"nonfinite_checkpoint_iteration={iteration}.pt")
        if _is_main_process():
            atomic_save({k: v.state_dict() for k, v in self.save_dict.items()}, path)
        message = (
            f"non-finite loss at epoch {epoch}, iteration {iteration}: {bad}. Training stopped before the "
            f"optimizer step; the state at this point is saved in '{path}'. Resume from the last full "
            "checkpoint (resume.yaml) with a lower learning rate, AMP off, or a larger warm-up."
        )
        self.logger.error(message)
        raise FloatingPointError(message)


class CSVLogger:
    """Append one CSV row per iteration (trainer output) or per epoch (engine metrics).

    The file gets a header when created. On the first write of a run, rows at or after the current
    step are dropped, so a resumed run continues the file without duplicates. Only rank 0 writes.

    Args:
        filename: the CSV file (its folder is created).
        columns: column names; "epoch" and "iteration" come from ``engine.state``, the others from the
            output (``source="output"``) or ``engine.state.metrics`` (``source="metrics"``); a missing
            value is written as ``nan`` (e.g. the D columns during the G warm-up).
        source: "output" (logged every iteration) or "metrics" (logged every epoch).
        output_transform: maps ``engine.state.output`` to a dict of scalars (``source="output"`` only).
    """

    def __init__(
        self,
        filename: str,
        columns: Sequence[str],
        source: str = "output",
        output_transform: Callable[[Any], Mapping[str, Any]] = lambda output: output,
    ) -> None:
        if source not in ("output", "metrics"):
            raise ValueError(f"CSVLogger source must be 'output' or 'metrics', got {source!r}.")
        self.filename = filename
        self.columns = tuple(columns)
        self.source = source
        self.output_transform = output_transform
        self.step_column = "iteration" if source == "output" else "epoch"
        self._started = False

    def attach(self, engine: Engine) -> None:
        event = Events.ITERATION_COMPLETED if self.source == "output" else Events.EPOCH_COMPLETED
        engine.add_event_handler(event, self)

    def _drop_rows_from(self, step: int) -> None:
        """Keep only the rows of an existing file whose step is before ``step`` (rewritten atomically)."""
        if not os.path.isfile(self.filename):
            return
        with open(self.filename, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if r.get(self.step_column) and int(float(r[self.step_column])) < step]
        if len(kept) == len(rows):
            return
        with atomic_write(self.filename, "w", newline="", what="CSV log") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore", restval="nan")
            writer.writeheader()
            writer.writerows(kept)

    def __call__(self, engine: Engine) -> None:
        if not _is_main_process():
            return
        values: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        source = self.output_transform(engine.state.output) if self.source == "output" else engine.state.metrics
        for column in self.columns:
            if column not in values:
                value = source.get(column) if isinstance(source, Mapping) else None
                values[column] = "nan" if value is None else repr(_as_float(value))
        if not self._started:
            self._drop_rows_from(int(values[self.step_column]))
            self._started = True
        os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
        new_file = not os.path.isfile(self.filename) or os.path.getsize(self.filename) == 0
        with open(self.filename, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(values)


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
        metrics = {
            k: _as_float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float, torch.Tensor))
        }
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
        if _is_main_process():
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


def slice_pairs(pred_key: str, label_key: str = "label") -> Callable[[Any], tuple[torch.Tensor, torch.Tensor]]:
    """Output transform for 2D metrics (SSIM) on whole-volume validation output.

    The evaluator's decollated output items hold slice stacks ``[Z, 1, H, W]``; the returned function
    concatenates all items along the slice axis so each slice is one 2D image of the metric's batch.

    Args:
        pred_key: the output key of the prediction ("pred" for SR, "bicubic" for the baseline).
        label_key: the key of the HR reference.
    """

    def _transform(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        items = output if isinstance(output, list) else [output]
        return torch.cat([i[pred_key] for i in items]), torch.cat([i[label_key] for i in items])

    return _transform


class ForegroundMetrics:
    """Foreground PSNR / SSIM per validation volume, averaged over volumes, written to ``engine.state.metrics``.

    For every output key in ``pred_keys`` (``{"sr": "pred", "bicubic": "bicubic"}``) it records
    ``psnr_fg_<name>`` and ``ssim_fg_<name>``: :func:`monai_lstmagan.evaluation.volume_metrics` on the mask
    voxels (data range 1), the definition of the evaluation workflow, so validation and evaluation agree.
    Attach it to the evaluator BEFORE the handlers that read the metrics (stats, CSV, best-model saver):
    it fills ``engine.state.metrics`` at EPOCH_COMPLETED. The evaluator's decollated output items must hold
    the slice stacks ``[Z, 1, H, W]`` under the ``pred_keys``, ``label_key`` and ``mask_key``.
    Volumes are averaged on each rank (one process validates every volume in the bundle's configs).

    Args:
        pred_keys: ``{metric suffix: output key}``.
        label_key: the HR reference key.
        mask_key: the foreground mask key (copied into the output by the validation postprocessing).
    """

    def __init__(
        self,
        pred_keys: Mapping[str, str] | None = None,
        label_key: str = "label",
        mask_key: str = "fg_mask",
    ) -> None:
        self.pred_keys = dict(pred_keys or {"sr": "pred", "bicubic": "bicubic"})
        self.label_key, self.mask_key = label_key, mask_key
        self._values: dict[str, list[float]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.completed)

    def reset(self, engine: Engine | None = None) -> None:
        self._values = {}

    def update(self, engine: Engine) -> None:
        items = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in items:
            for name, key in self.pred_keys.items():
                metrics = volume_metrics(item[key], item[self.label_key], item[self.mask_key])["foreground"]
                self._values.setdefault(f"psnr_fg_{name}", []).append(metrics["psnr"])
                self._values.setdefault(f"ssim_fg_{name}", []).append(metrics["ssim"])

    def completed(self, engine: Engine) -> None:
        for name, values in self._values.items():
            engine.state.metrics[name] = sum(values) / len(values)
