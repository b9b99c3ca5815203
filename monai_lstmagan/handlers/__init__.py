"""Ignite handlers for LSTMAGAN training that MONAI does not provide.

- :class:`GeneratorEMA`: exponential moving average of G (validated and exported instead of G).
- :class:`NonFiniteLossGuard`: stops training with a clear message (after saving a checkpoint) when a loss
  turns NaN/Inf, before the step that would spread it into the weights.
- :class:`CSVLogger`: per-iteration losses / D statistics and per-epoch validation metrics as CSV.
- :class:`GeneratorCheckpoint`: ``model.pt`` (latest) and ``model_best.pt`` (best validation metric) in the
  generator-only format of :mod:`monai_lstmagan.checkpoints`.
- :class:`AtomicCheckpointSaver`: MONAI ``CheckpointSaver`` whose files are written atomically.
- :class:`StreamingVolumeMetrics`: per-volume foreground and whole-image PSNR / SSIM of validation volumes given
  in chunks of slices, the same numbers as the evaluation workflow (:mod:`monai_lstmagan.metrics`).

Everything else (stats, TensorBoard, validation, full checkpoints, LR schedules) uses MONAI's handlers.
"""

from monai_lstmagan.handlers.checkpoint import AtomicCheckpointSaver, GeneratorCheckpoint
from monai_lstmagan.handlers.csv_logger import ITERATION_COLUMNS, VALIDATION_COLUMNS, CSVLogger
from monai_lstmagan.handlers.ema import GeneratorEMA
from monai_lstmagan.handlers.guard import NonFiniteLossGuard
from monai_lstmagan.handlers.metrics import StreamingVolumeMetrics

__all__ = [
    "GeneratorEMA",
    "NonFiniteLossGuard",
    "CSVLogger",
    "GeneratorCheckpoint",
    "AtomicCheckpointSaver",
    "StreamingVolumeMetrics",
    "ITERATION_COLUMNS",
    "VALIDATION_COLUMNS",
]
