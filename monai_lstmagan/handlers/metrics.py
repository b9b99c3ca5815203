"""Foreground metrics of whole-volume validation (the definition of :mod:`monai_lstmagan.metrics`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_lstmagan.metrics import volume_metrics

__all__ = ["ForegroundMetrics", "slice_pairs"]


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
    ``psnr_fg_<name>`` and ``ssim_fg_<name>``: :func:`monai_lstmagan.metrics.volume_metrics` on the mask
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
        self, pred_keys: Mapping[str, str] | None = None, label_key: str = "label", mask_key: str = "fg_mask"
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
