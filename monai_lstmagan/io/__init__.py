"""Reading and writing volume files: :mod:`~monai_lstmagan.io.scans` (the one reader; ``write_scan``),
:mod:`~monai_lstmagan.io.writer` (the one writer, :class:`ScanWriter`, slab by slab), :mod:`~monai_lstmagan.io.dicom`
(DICOM series in and out, dispatched to by both),
:mod:`~monai_lstmagan.io.paths` (suffixes, output names, the output-folder check), :mod:`~monai_lstmagan.io.geometry`
(RAS/LPS, axis orders, super-resolved grids) and :mod:`~monai_lstmagan.io.atomic` (no half-written file)."""

from monai_lstmagan.io.atomic import atomic_files, atomic_write
from monai_lstmagan.io.geometry import upsampled_affine
from monai_lstmagan.io.paths import VOLUME_SUFFIXES, check_output_dir, output_path_for, split_suffix, volume_suffix
from monai_lstmagan.io.scans import BadVolumeError, Scan, read_scan, scan_files, write_scan
from monai_lstmagan.io.writer import ScanWriter

__all__ = [
    "atomic_files",
    "atomic_write",
    "upsampled_affine",
    "VOLUME_SUFFIXES",
    "check_output_dir",
    "output_path_for",
    "split_suffix",
    "volume_suffix",
    "BadVolumeError",
    "Scan",
    "read_scan",
    "scan_files",
    "write_scan",
    "ScanWriter",
]
