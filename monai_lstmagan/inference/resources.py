"""The memory and disk a run needs, checked before any work: a run that cannot fit is refused with the numbers.

From each input's header alone (:func:`~monai_lstmagan.io.scans.read_scan_header`: no voxels are read), the output
grid of the operation and the voxel types:

- **memory** (the largest need of one volume; volumes are processed one after the other): the input and its
  float32 working copies (:data:`BYTES_PER_INPUT_VOXEL`), the output voxels of one chunk in flight
  (:data:`BYTES_PER_CHUNK_VOXEL` each; in-plane SR: ``batch_size`` slices, the output is streamed to disk; an
  operation that yields its whole output at once holds all of it) and the model's activations and whole-volume
  arrays (:meth:`~monai_lstmagan.inference.files.VolumeOperation.model_bytes`), against the memory
  available: ``MemAvailable`` of ``/proc/meminfo`` or, when lower, what a cgroup (container) limit of the process
  leaves (:func:`monai_lstmagan.system.available_memory`);
- **disk** (the sum over the run's outputs): each output's voxels in its stored type (the uncompressed size: a
  safe bound for ``.nii.gz`` / ``.zraw``), plus a spool of the whole output in its in-memory type where the
  writer needs one (:func:`~monai_lstmagan.io.writer.spool_needed`), against the free space of the output folder.

The estimates are upper bounds measured on the shipped generators (``docs/benchmark_inference.md``), not exact.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.io.geometry import SlabPlacement
from monai_lstmagan.io.paths import output_path_for
from monai_lstmagan.io.scans import read_scan_header
from monai_lstmagan.io.writer import spool_needed
from monai_lstmagan.system import available_memory, format_bytes, free_disk

if TYPE_CHECKING:  # files imports this module
    from monai_lstmagan.inference.files import VolumeOperation

__all__ = ["BYTES_PER_INPUT_VOXEL", "BYTES_PER_CHUNK_VOXEL", "volume_needs", "check_resources"]

#: Per input voxel, besides the input itself: the float32 work copy, the normalised float32 copy and one float32
#: temporary of the normalisation.
BYTES_PER_INPUT_VOXEL = 12
#: Per output voxel of a chunk in flight: the model output, the baseline and the masks (float32), the values in
#: float64 and the stored voxels with their copy in the file's axis order.
BYTES_PER_CHUNK_VOXEL = 48


def volume_needs(
    operation: VolumeOperation, path: str, output_dir: str, output_dtype: str | None, options: InferenceOptions
) -> tuple[int, int, str]:
    """``(memory bytes, disk bytes, how the memory adds up)`` of super-resolving ``path`` (header only)."""
    scan = read_scan_header(path)
    operation.begin(scan)
    work_shape = operation.to_work(scan).shape
    out_shape = operation.output_shape(work_shape)
    dtype = np.dtype(output_dtype) if output_dtype is not None else scan.dtype
    memory_dtype = np.dtype(np.float32) if scan.scaled and output_dtype is None else dtype
    input_voxels, out_slice = math.prod(work_shape), out_shape[0] * out_shape[1]
    chunk = min(out_shape[2], operation.chunk_slices(out_shape, options))
    parts = {
        "input": input_voxels * (scan.dtype.itemsize + BYTES_PER_INPUT_VOXEL),
        f"{chunk} output slices in flight": chunk * out_slice * BYTES_PER_CHUNK_VOXEL,
        "model": operation.model_bytes(work_shape, options),
    }
    out_voxels = math.prod(out_shape)
    disk = out_voxels * dtype.itemsize
    in_order = SlabPlacement(lambda work: operation.to_file(scan, work), out_shape).in_order
    if spool_needed(output_path_for(path, output_dir, options.output_format), memory_dtype, dtype, scan, in_order):
        disk += out_voxels * memory_dtype.itemsize
    detail = " + ".join(f"{format_bytes(v)} {k}" for k, v in parts.items() if v)
    return sum(parts.values()), disk, detail


def check_resources(
    operation: VolumeOperation,
    paths: Sequence[str],
    output_dir: str,
    output_dtype: str | None = None,
    options: InferenceOptions | None = None,
) -> None:
    """Refuse a run, before any work, whose volume needs more memory than is available, or whose outputs need more
    disk than the output folder has free.

    Raises:
        MemoryError: naming the volume, what it needs (and how that adds up) and what is available.
        OSError: (``ENOSPC``) naming the output, what the outputs need and what is free.
    """
    options = options or InferenceOptions()
    memory, source = available_memory()
    disk_free, disk_total = free_disk(output_dir), 0
    for path in paths:
        need, disk, detail = volume_needs(operation, path, output_dir, output_dtype, options)
        if need > memory:
            raise MemoryError(
                f"'{path}' needs about {format_bytes(need)} of memory ({detail}) but {format_bytes(memory)} is "
                f"available ({source}); nothing was written. Use a smaller --batch-size or --tile, or a machine with "
                "more memory."
            )
        disk_total += disk
        if disk_total > disk_free:
            out = output_path_for(path, output_dir, options.output_format)
            earlier = f" (with the outputs before it: {format_bytes(disk_total)})" if disk_total > disk else ""
            error = OSError(
                f"cannot write the output '{out}': it needs up to {format_bytes(disk)} of disk{earlier} but "
                f"'{output_dir}' has {format_bytes(disk_free)} free; nothing was written. Free space or choose "
                "another --output-dir."
            )
            error.errno = errno.ENOSPC
            raise error
