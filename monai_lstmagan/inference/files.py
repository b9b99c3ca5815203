"""The one scan-in / scan-out pipeline of both SR modes: read -> normalise -> operation -> keep the baseline
outside the window -> back to the file's units, type and axis order -> write atomically.

An operation (:class:`VolumeOperation`: in-plane SR, :class:`~monai_lstmagan.inference.in_plane.InPlaneSR`, or
through-plane SR, :class:`~monai_lstmagan.inference.through_plane.ThroughPlaneSR`) says how the file's array is
laid out for it (its *work* layout ``[A, B, N]``), what grid it produces, and yields the result in chunks along
the last work axis. Everything else is here, once:

- the output path ``OUT/<name>_sr<ext>`` (:func:`~monai_lstmagan.io.paths.output_path_for`; ``OUT/<name>_sr/``
  for a DICOM series, in the input's format or ``options.output_format``), never one of the input's files
  (:func:`~monai_lstmagan.io.scans.scan_files`: a ``.mhd`` and its data file, a DICOM series' files);
- intensities: the generator only sees (and only produces) intensities inside the normalisation window (CT:
  -1000..400 HU by default; MR: the 0.5..99.5 foreground percentiles). Where the interpolation baseline of the
  input lies outside that window (bone, metal, the brightest MR voxels), the output keeps the baseline value
  instead of a value clipped to the window edge, so nothing the scanner measured is flattened;
- the voxel type of the input (or ``output_dtype``), integer types rounded and clipped; a scaled NIfTI keeps its
  real units and gets a new scaling;
- the file's own format, axis order and header, written slab by slab as the operation yields them
  (:class:`~monai_lstmagan.io.writer.ScanWriter`: the output is never assembled in memory), atomically (temporary
  folder, rename).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from tqdm import tqdm

from monai_lstmagan.data.discovery import collect_inputs
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.inference.resources import check_resources
from monai_lstmagan.io.atomic import atomic_files
from monai_lstmagan.io.geometry import SlabPlacement
from monai_lstmagan.io.paths import check_output_dir, output_files, output_path_for
from monai_lstmagan.io.scans import Scan, read_scan, scan_files, to_voxel_type
from monai_lstmagan.io.writer import ScanWriter
from monai_lstmagan.transforms.intensity import IntensityNormalizationd

__all__ = [
    "VolumeOperation",
    "keep_baseline_outside_window",
    "super_resolve_file",
    "check_run_outputs",
    "super_resolve_files",
]


class VolumeOperation:
    """What one SR mode does to a volume; :func:`super_resolve_file` does the rest.

    Subclasses implement :meth:`to_work`, :meth:`to_file`, :meth:`work_affine`, :meth:`output_shape`,
    :meth:`output_affine` and :meth:`chunks`, and may set :attr:`info` (reported per volume).
    """

    info: dict[str, Any]

    def begin(self, scan: Scan) -> None:
        """Called first for every scan (e.g. to find its slice axis); default: nothing."""
        self.info = {}

    def describe(self) -> str:
        """What the operation did to the last scan begun, in words (a DICOM output's DerivationDescription)."""
        return "super-resolution"

    def to_work(self, scan: Scan) -> np.ndarray:
        """``scan.array`` in the work layout ``[A, B, N]`` (float32, input units)."""
        raise NotImplementedError

    def to_file(self, scan: Scan, work: np.ndarray) -> np.ndarray:
        """An output array in the work layout back in the file's axis order."""
        raise NotImplementedError

    def work_affine(self, scan: Scan) -> np.ndarray | None:
        """The affine of the work array given to the normaliser (its spacing), or None."""
        return None

    def output_shape(self, work_shape: Sequence[int]) -> tuple[int, int, int]:
        """The output grid ``[A', B', N']`` in the work layout."""
        raise NotImplementedError

    def output_affine(self, scan: Scan) -> np.ndarray:
        """The RAS affine of the output grid in the file's axis order (same physical extent)."""
        raise NotImplementedError

    def chunk_slices(self, out_shape: Sequence[int], options: InferenceOptions) -> int:
        """Output slices (along the last work axis) per chunk of :meth:`chunks`, to size the memory a volume needs;
        default: all of them (the whole output at once)."""
        return int(out_shape[2])

    def model_bytes(self, work_shape: Sequence[int], options: InferenceOptions) -> int:
        """Memory of running the model over a volume of ``work_shape`` (its activations, and the whole-volume arrays
        of an operation that needs them), to size the need; default 0."""
        return 0

    def chunks(
        self, image: MetaTensor, work: np.ndarray, options: InferenceOptions
    ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """Yield ``(start, stop, sr, baseline)`` along the last output axis: ``sr`` ``[A', B', stop - start]`` in
        [0, 1] and its interpolation ``baseline`` in input units, from ``image`` ``[1, A, B, N]`` (normalised,
        its meta holds ``intensity_low/high``) and ``work`` ``[A, B, N]`` (input units)."""
        raise NotImplementedError


def keep_baseline_outside_window(sr: np.ndarray, baseline: np.ndarray, low: float, high: float) -> np.ndarray:
    """SR where the interpolation baseline lies inside the normalisation window ``[low, high]``, the baseline
    outside it (bone, metal, the brightest MR voxels keep the value measured instead of the window edge).

    Args:
        sr: super-resolved voxels in the input's units (inside ``[low, high]``).
        baseline: the interpolation of the input on the same grid (bicubic in-plane, cubic along the slice
            axis), in the input's units, same shape.
        low, high: the normalisation window in the input's units.
    """
    outside = (baseline < low) | (baseline > high)
    return np.where(outside, baseline, sr)


def super_resolve_file(
    operation: VolumeOperation,
    input_path: str,
    output_dir: str,
    modality: str = "auto",
    output_dtype: str | None = None,
    options: InferenceOptions | None = None,
    protected: Sequence[str] = (),
    check_needs: bool = True,
) -> str:
    """Super-resolve one volume file and write ``output_dir/<name>_sr<ext>`` atomically.

    Args:
        operation: the SR mode.
        input_path: ``.nii``/``.nii.gz`` (nibabel) or ``.mhd``/``.mha``/``.nrrd`` (ITK) 3D scalar volume, or a DICOM
            scan (:mod:`monai_lstmagan.io.dicom`).
        output_dir: existing, writable folder.
        modality: ``"ct"``, ``"mr"`` or ``"auto"``: picks the intensity normalisation.
        output_dtype: voxel type of the output, e.g. ``"float32"``; None keeps the input's.
        options: how the generator runs (:class:`InferenceOptions`).
        protected: further files that must not be replaced (the other inputs of the run).
        check_needs: first refuse the volume when its memory or disk need does not fit
            (:func:`~monai_lstmagan.inference.resources.check_resources`; :func:`super_resolve_files` checks all
            volumes up front).

    Returns:
        the path written.
    """
    options = options or InferenceOptions()
    output_path = output_path_for(input_path, output_dir, options.output_format)
    protected = set(scan_files(input_path)) | {os.path.realpath(p) for p in protected}
    replaced = sorted(output_files(output_path) & protected)
    if replaced:
        raise ValueError(
            f"refusing to overwrite the input file '{replaced[0]}' with the output of '{input_path}': choose another "
            "output folder."
        )
    if check_needs:
        check_resources(operation, [input_path], output_dir, output_dtype, options)
    scan = read_scan(input_path)
    operation.begin(scan)
    work = np.ascontiguousarray(operation.to_work(scan), dtype=np.float32)
    affine = operation.work_affine(scan)
    tensor = MetaTensor(torch.from_numpy(work)[None], affine=None if affine is None else torch.as_tensor(affine))
    normaliser = IntensityNormalizationd(keys="image", default_modality=modality)
    image = normaliser({"image": tensor, "modality": modality})["image"]
    low, high = float(image.meta["intensity_low"]), float(image.meta["intensity_high"])

    dtype = np.dtype(output_dtype) if output_dtype is not None else scan.dtype
    # a scaled NIfTI keeps real units in memory; nibabel stores them in the input's type with a new scaling
    memory_dtype = np.dtype(np.float32) if scan.scaled and output_dtype is None else dtype
    out_shape = operation.output_shape(work.shape)
    placement = SlabPlacement(lambda work: operation.to_file(scan, work), out_shape)
    name = os.path.basename(output_path)
    chunks = operation.chunks(image, work, options)
    try:
        with atomic_files(output_dir, last=name, protected=protected) as tmp_dir:
            with ScanWriter(
                os.path.join(tmp_dir, name), placement.file_shape, operation.output_affine(scan), dtype, like=scan,
                values_dtype=memory_dtype, description=operation.describe(),
            ) as writer:  # fmt: skip
                for start, stop, sr, baseline in _computed(chunks):
                    if sr.shape[:2] != out_shape[:2]:
                        raise ValueError(
                            f"'{input_path}': the model produced slices of {tuple(sr.shape[:2])} where "
                            f"{tuple(out_shape[:2])} were expected: it is not a model of this scale."
                        )
                    values = low + sr.astype(np.float64) * (high - low)
                    slab = to_voxel_type(keep_baseline_outside_window(values, baseline, low, high), memory_dtype)
                    writer.write(operation.to_file(scan, slab), *placement.file_range(start, stop), placement.axis)
    except _ComputeError as e:  # not a failed write: the error of the model as it is
        raise e.error from None
    return output_path


class _ComputeError(Exception):
    """An error of the model while the output is being written (kept apart from the writer's errors)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _computed(chunks: Iterator) -> Iterator:
    """``chunks`` with its ``OSError`` / ``RuntimeError`` (e.g. the allocator's) wrapped as :class:`_ComputeError`,
    so that :func:`~monai_lstmagan.io.atomic.atomic_files` does not report them as a failed write."""
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except (OSError, RuntimeError) as e:
            raise _ComputeError(e) from e
        yield chunk


def check_run_outputs(inputs: Sequence[str], output_dir: str, output_format: str | None = None) -> None:
    """Refuse a run, before anything is written, where an output would replace a file of any input (a header's
    data file included) or two inputs would give the same output name.

    Raises:
        ValueError: naming the inputs and the file.
    """
    input_files = {f: path for path in inputs for f in scan_files(path)}
    produced: dict[str, str] = {}
    for path in inputs:
        for f in sorted(output_files(output_path_for(path, output_dir, output_format))):
            if f in input_files:
                raise ValueError(
                    f"the output of '{path}' would replace the input file '{f}' (of '{input_files[f]}'): choose "
                    "another output folder."
                )
            if f in produced and produced[f] != path:
                raise ValueError(
                    f"'{produced[f]}' and '{path}' would both be written to '{f}': give inputs with distinct names "
                    "or run them into separate output folders."
                )
            produced[f] = path


def super_resolve_files(
    operation: VolumeOperation,
    output_dir: str,
    inputs: str | Sequence[str],
    modality: str = "auto",
    output_dtype: str | None = None,
    options: InferenceOptions | None = None,
    report=None,
) -> list[str]:
    """Run :func:`super_resolve_file` over files and/or every volume of folders.

    The output folder is checked, the inputs are collected and the memory and disk the run needs are checked
    (:func:`~monai_lstmagan.inference.resources.check_resources`) before any voxel is read.

    Args:
        operation: the SR mode (its model loaded once).
        output_dir: where ``<name>_sr<ext>`` files are written (created if needed).
        inputs: volume files or folders.
        modality, output_dtype, options: see :func:`super_resolve_file`.
        report: called as ``report(input, output, operation.info)`` after each volume (e.g. a progress line).

    Returns:
        the paths written, in input order.
    """
    options = options or InferenceOptions()
    output_dir = check_output_dir(output_dir)
    items = collect_inputs([inputs] if isinstance(inputs, str) else list(inputs), modality, output_dir, options.series)
    check_run_outputs([path for path, _ in items], output_dir, options.output_format)
    check_resources(operation, [path for path, _ in items], output_dir, output_dtype, options)
    protected = set().union(*(scan_files(path) for path, _ in items)) if items else set()
    written = []
    for path, item_modality in tqdm(
        items, desc="volumes", unit="volume", disable=not options.progress or len(items) < 2
    ):
        written.append(
            super_resolve_file(
                operation, path, output_dir, item_modality, output_dtype, options, protected, check_needs=False
            )
        )
        if report is not None:
            report(path, written[-1], operation.info)
    return written
