"""Validation metrics of whole volumes streamed in chunks (the definition of :mod:`monai_lstmagan.metrics`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events

from monai_lstmagan.detail_metrics import DetailMetricAccumulator
from monai_lstmagan.metrics import VolumeMetricAccumulator

__all__ = ["StreamingVolumeMetrics", "VALIDATION_DETAIL_METRICS"]

#: the detail metrics (:mod:`monai_lstmagan.detail_metrics`) logged during validation, on the foreground.
VALIDATION_DETAIL_METRICS = ("spectral_high", "spectral_error_high", "hfen", "gradient_ratio")


class StreamingVolumeMetrics:
    """Validation metrics of whole volumes given as chunks of slices, written to ``engine.state.metrics``.

    The evaluator's output items (decollated) hold a chunk's slices ``[n, 1, H, W]`` under ``pred_keys``,
    ``label_key`` and ``mask_key``, and ``volume_key`` (which volume the chunk belongs to: the dataset's
    ``"volume"``, copied into the output by the validation postprocessing); chunks of a
    volume may come in any number (:class:`~monai_lstmagan.data.datasets.ValidationChunkDataset`). At
    EPOCH_COMPLETED, for every ``name`` of ``pred_keys``:

    - ``psnr_<name>``: whole-volume PSNR, averaged over volumes (MONAI's ``PeakSignalToNoiseRatio`` handler on
      whole volumes);
    - ``ssim_<name>``: mean 2D SSIM over all validation slices (MONAI's SSIM handler on the slices);
    - ``psnr_fg_<name>``, ``ssim_fg_<name>``: foreground PSNR / SSIM per volume
      (:class:`~monai_lstmagan.metrics.VolumeMetricAccumulator`), averaged over volumes;
    - with ``scale``: ``<metric>_fg_<name>`` for each of :data:`VALIDATION_DETAIL_METRICS` (the SR/HR spectral
      energy ratio above the LR Nyquist, its band-limited error, HFEN, the gradient ratio), foreground, per volume
      (:class:`~monai_lstmagan.detail_metrics.DetailMetricAccumulator`), averaged over volumes: what the
      adversarial term adds (or invents), which PSNR does not show.

    Only the running sums are kept, so validation memory is one chunk whatever the volume and dataset size.
    Attach it BEFORE the handlers that read the metrics (stats, CSV, best-model saver).

    Args:
        pred_keys: ``{metric suffix: output key}``.
        label_key: the HR reference key.
        mask_key: the foreground mask key.
        volume_key: the key of the volume number (an item without it is a whole volume of its own).
        scale: the LR factor of the validation data; ``None``: no detail metrics.
    """

    def __init__(
        self,
        pred_keys: Mapping[str, str] | None = None,
        label_key: str = "label",
        mask_key: str = "fg_mask",
        volume_key: str = "volume_index",
        scale: int | None = None,
    ) -> None:
        self.pred_keys = dict(pred_keys or {"sr": "pred", "bicubic": "bicubic"})
        self.label_key, self.mask_key, self.volume_key = label_key, mask_key, volume_key
        self.scale = None if scale is None else int(scale)
        self._volumes: dict[tuple[str, int], VolumeMetricAccumulator] = {}
        self._details: dict[tuple[str, int], DetailMetricAccumulator] = {}
        self._whole_volumes = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.completed)

    def reset(self, engine: Engine | None = None) -> None:
        self._volumes, self._details, self._whole_volumes = {}, {}, 0

    def update(self, engine: Engine) -> None:
        items = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in items:
            if self.volume_key in item:
                volume = int(torch.as_tensor(item[self.volume_key]).reshape(-1)[0])
            else:
                volume, self._whole_volumes = -1 - self._whole_volumes, self._whole_volumes + 1
            for name, key in self.pred_keys.items():
                accumulator = self._volumes.setdefault((name, volume), VolumeMetricAccumulator())
                accumulator.update(item[key], item[self.label_key], item[self.mask_key])
                if self.scale is not None:
                    detail = self._details.setdefault((name, volume), DetailMetricAccumulator(self.scale))
                    detail.update(item[key], item[self.label_key], item[self.mask_key])

    def completed(self, engine: Engine) -> None:
        for name in self.pred_keys:
            accumulators = [a for (n, _), a in sorted(self._volumes.items()) if n == name]
            if not accumulators:
                continue
            results = [a.result() for a in accumulators]
            engine.state.metrics[f"psnr_{name}"] = sum(r["whole"]["psnr"] for r in results) / len(results)
            engine.state.metrics[f"ssim_{name}"] = sum(a.slice_ssim_sum for a in accumulators) / sum(
                a.num_slices for a in accumulators
            )
            for metric in ("psnr", "ssim"):
                values = [r["foreground"][metric] for r in results]
                engine.state.metrics[f"{metric}_fg_{name}"] = sum(values) / len(values)
            details = [a.result()["foreground"] for (n, _), a in sorted(self._details.items()) if n == name]
            for metric in VALIDATION_DETAIL_METRICS if details else ():
                values = [d[metric] for d in details]
                engine.state.metrics[f"{metric}_fg_{name}"] = sum(values) / len(values)
