"""Per-iteration losses / critic statistics and per-epoch validation metrics as CSV files."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ignite.engine import Engine, Events

from monai_lstmagan.handlers.utils import as_float, is_main_process
from monai_lstmagan.io.atomic import atomic_write
from monai_lstmagan.losses import D_LOSS_KEYS, G_LOSS_KEYS, LossKeys

__all__ = ["CSVLogger", "ITERATION_COLUMNS", "VALIDATION_COLUMNS"]


#: the columns of ``iterations.csv``: epoch, iteration, then the G losses and the critic statistics.
ITERATION_COLUMNS = (
    "epoch",
    "iteration",
    *G_LOSS_KEYS,
    LossKeys.ADVERSARIAL_FEATURE,
    *D_LOSS_KEYS,
)  # feature: MedSRGAN only
VALIDATION_COLUMNS = (
    "epoch", "psnr_fg_sr", "psnr_fg_bicubic", "ssim_fg_sr", "ssim_fg_bicubic",
    "psnr_sr", "psnr_bicubic", "ssim_sr", "ssim_bicubic",
    "spectral_high_fg_sr", "spectral_high_fg_bicubic", "spectral_error_high_fg_sr", "hfen_fg_sr", "hfen_fg_bicubic",
)  # fmt: skip


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
        """Keep only the rows of an existing file whose step is before ``step`` (rewritten atomically); a file of
        other columns (written by an older version, resumed now) is rewritten with ``columns`` (``nan`` for new
        ones), so the rows appended next line up with its header."""
        if not os.path.isfile(self.filename):
            return
        with open(self.filename, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = tuple(reader.fieldnames or ())
        kept = [r for r in rows if r.get(self.step_column) and int(float(r[self.step_column])) < step]
        if len(kept) == len(rows) and (header == self.columns or not header):
            return
        with atomic_write(self.filename, "w", newline="", what="CSV log") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore", restval="nan")
            writer.writeheader()
            writer.writerows(kept)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        values: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        source = self.output_transform(engine.state.output) if self.source == "output" else engine.state.metrics
        for column in self.columns:
            if column not in values:
                value = source.get(column) if isinstance(source, Mapping) else None
                values[column] = "nan" if value is None else repr(as_float(value))
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
