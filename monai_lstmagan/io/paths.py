"""File names of the project: the volume suffixes, output names and the output-folder check (one place each).

A scan is a file with one of :data:`VOLUME_SUFFIXES`, or a DICOM scan (:mod:`monai_lstmagan.io.dicom`: a folder of
one series, a multi-frame file, a DICOMDIR, each with an optional ``#<SeriesInstanceUID>``), recognised by its
content rather than its name: :func:`scan_format` says which, for every caller.
"""

from __future__ import annotations

import os
import tempfile
import warnings

from monai_lstmagan.io.atomic import remove_stale_temporaries
from monai_lstmagan.io.dicom import DICOM_FORMAT, is_dicom, split_series

__all__ = [
    "NIFTI_SUFFIXES",
    "ITK_SUFFIXES",
    "VOLUME_SUFFIXES",
    "OUTPUT_TAG",
    "OUTPUT_FORMATS",
    "volume_suffix",
    "scan_format",
    "split_suffix",
    "volume_stem",
    "output_path_for",
    "output_files",
    "is_output_of_this",
    "check_output_dir",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nhdr")
#: File name endings read as volumes, everywhere (training, evaluation, inference).
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
#: What ``--output-format`` accepts: a volume suffix or ``"dicom"`` (a folder of DICOM files).
OUTPUT_FORMATS = VOLUME_SUFFIXES + (DICOM_FORMAT,)
#: What a super-resolved file adds to its input's name: ``<name>_sr<ext>``.
OUTPUT_TAG = "_sr"


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The volume suffix of ``path`` (lower case, e.g. ``".nii.gz"``) or None."""
    name = os.fspath(path).lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def scan_format(path: str | os.PathLike) -> str | None:
    """What ``path`` is as a scan: its volume suffix (``".nii.gz"``, ...), :data:`DICOM_FORMAT` for a DICOM scan
    (a folder of DICOM files, a DICOM file or DICOMDIR, optionally ``#<SeriesInstanceUID>``), or None."""
    suffix = volume_suffix(path)
    if suffix is not None and os.path.basename(os.fspath(path)).lower() != suffix:
        return suffix
    return DICOM_FORMAT if is_dicom(path) else None


def _dicom_stem(path: str) -> str:
    """The name of a DICOM scan: its folder's (a DICOMDIR: the folder holding it), a file's without ``.dcm``, with
    ``_<SeriesInstanceUID>`` when a series is selected."""
    base, uid = split_series(path)
    base = os.path.abspath(base)
    name = os.path.basename(base)
    if os.path.isdir(base):
        stem = name
    elif name.upper() == "DICOMDIR":
        stem = os.path.basename(os.path.dirname(base))
    else:
        stem = name[:-4] if name.lower().endswith(".dcm") else name
    return f"{stem}_{uid}" if uid else stem


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """``(stem, suffix)`` of a volume file's name, the suffix as written (a DICOM scan: its name and ``""``);
    ValueError naming the file otherwise."""
    name = os.path.basename(os.fspath(path))
    suffix = volume_suffix(name)
    if suffix is None or name.lower() == suffix:
        if is_dicom(path):
            return _dicom_stem(os.fspath(path)), ""
        raise ValueError(
            f"'{os.fspath(path)}': unsupported file type, expected one of {', '.join(VOLUME_SUFFIXES)} or DICOM (a "
            "folder of one series, a DICOM file, a DICOMDIR)."
        )
    return name[: -len(suffix)], name[-len(suffix) :]


def volume_stem(path: str | os.PathLike) -> str:
    """The file name of a volume without its volume suffix (``a.nii.gz`` -> ``a``; other names unchanged)."""
    name = os.path.basename(os.fspath(path))
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else name


def output_path_for(input_path: str, output_dir: str, output_format: str | None = None) -> str:
    """``output_dir/<name>_sr<ext>`` for an input ``<name><ext>``: the input's format, or ``output_format`` (one of
    :data:`OUTPUT_FORMATS`); a DICOM output is the folder ``output_dir/<name>_sr``."""
    stem, suffix = split_suffix(input_path)
    if output_format is not None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output format {output_format!r}: expected one of {', '.join(OUTPUT_FORMATS)}.")
        suffix = "" if output_format == DICOM_FORMAT else output_format
    return os.path.join(output_dir, f"{stem}{OUTPUT_TAG}{suffix}")


def output_files(output_path: str) -> set[str]:
    """The real paths a writer creates for ``output_path``: the file itself and, for a MetaImage header
    (``.mhd``), the ``.raw`` / ``.zraw`` data file ITK writes beside it."""
    files = {os.path.realpath(output_path)}
    if volume_suffix(output_path) == ".mhd":
        stem = output_path[: -len(".mhd")]
        files |= {os.path.realpath(stem + ".raw"), os.path.realpath(stem + ".zraw")}
    return files


def is_output_of_this(path: str, output_dir: str) -> bool:
    """True for a ``<name>_sr<ext>`` file inside ``output_dir`` (a result of an earlier run, not an input)."""
    same_folder = os.path.dirname(os.path.realpath(path)) == os.path.realpath(output_dir)
    return same_folder and split_suffix(path)[0].endswith(OUTPUT_TAG)


def check_output_dir(output_dir: str) -> str:
    """Create ``output_dir`` if needed and prove it is writable; a clear error otherwise. The temporary folders an
    earlier run of this tool left there when it was killed outright are removed (with a warning;
    :func:`monai_lstmagan.io.atomic.remove_stale_temporaries`).

    Returns:
        the absolute folder path.
    """
    output_dir = os.path.abspath(output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise PermissionError(f"output folder '{output_dir}' cannot be created or written: {e}") from e
    for folder in remove_stale_temporaries(output_dir):
        warnings.warn(f"removed '{folder}', the temporary folder of an earlier run that was killed.")
    return output_dir
