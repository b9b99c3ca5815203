"""Whole-volume super-resolution that keeps the scanner geometry.

- :mod:`~monai_lstmagan.inference.options`: :class:`InferenceOptions` (batch size, device, amp, tiles, progress);
- :mod:`~monai_lstmagan.inference.files`: the one scan-in / scan-out pipeline of both SR modes;
- :mod:`~monai_lstmagan.inference.in_plane`: in-plane SR slice by slice (:func:`run_inference`, used by
  ``bundle/configs/inference.yaml``);
- :mod:`~monai_lstmagan.inference.through_plane`: through-plane SR of thick-slice scans (SMORE-style,
  :func:`run_through_plane`).

The console command ``lstmagan-sr`` is :func:`monai_lstmagan.cli.main`.
"""

from monai_lstmagan.inference.files import (
    VolumeOperation,
    keep_baseline_outside_window,
    super_resolve_file,
    super_resolve_files,
)
from monai_lstmagan.inference.in_plane import InPlaneSR, iter_super_resolved_slices, run_inference, super_resolve_volume
from monai_lstmagan.inference.options import InferenceOptions, default_batch_size, resolve_device
from monai_lstmagan.inference.through_plane import ThroughPlaneSR, default_refiner, load_refiner, run_through_plane

__all__ = [
    "InferenceOptions",
    "default_batch_size",
    "resolve_device",
    "VolumeOperation",
    "keep_baseline_outside_window",
    "super_resolve_file",
    "super_resolve_files",
    "InPlaneSR",
    "iter_super_resolved_slices",
    "super_resolve_volume",
    "run_inference",
    "ThroughPlaneSR",
    "default_refiner",
    "load_refiner",
    "run_through_plane",
]
