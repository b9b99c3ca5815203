"""The one reader of volume files (integrity, voxels, geometry, voxel types) and :func:`write_scan`, the whole
volume as one slab of the one writer, :class:`monai_lstmagan.io.writer.ScanWriter`.

Every entry point (the training transforms, the start-up scan of ``data.check_volumes``, inference and
evaluation) goes through this module, so a bad file gets the same error naming the file wherever it
enters, and the same formats are accepted everywhere:

- the suffixes (:data:`monai_lstmagan.io.paths.VOLUME_SUFFIXES`): NIfTI (``.nii.gz``, ``.nii``, read by
  nibabel), MetaImage (``.mhd`` with its ``.raw``/``.zraw``, ``.mha``) and NRRD (``.nrrd``, ``.nhdr``), read by ITK;
- DICOM (:mod:`monai_lstmagan.io.dicom`, read by pydicom): a folder of one series, a multi-frame file, a DICOMDIR
  (``#<SeriesInstanceUID>`` selects a series), rescaled to real units (HU), sorted along the slice normal; what is
  not one regular volume (missing slices, mixed orientations, gantry tilt, ...) is refused with the reason;
- :func:`check_file`: the file-level problems a reader may not notice: a ``.nii.gz`` whose gzip stream is
  corrupt or truncated (nibabel stops reading before the gzip trailer, so the CRC is never checked), a
  ``.mhd`` whose data file is missing or shorter than its header says;
- :func:`voxel_problem`: NaN/Inf voxels, a constant image;
- :func:`read_scan`: array + affine (RAS) + voxel type + what is needed to write the volume back;
- :func:`read_scan_header`: the shape, geometry and voxel type from the header alone (to size the work);
- :func:`write_scan`: an array with its RAS affine in the format of a scan read (or a plain NIfTI / ITK file);
- :func:`scan_files`: every file a scan consists of (a ``.mhd`` and the data file its header names), so that
  no output replaces one.

The 4D rule, shared by training and inference: a 4D NIfTI image uses its first volume (index 0 of the 4th
axis), with a warning.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import itk
import nibabel as nib
import numpy as np

from monai_lstmagan.io.dicom import DICOM_FORMAT, DicomError, open_series, read_series, split_series
from monai_lstmagan.io.geometry import LPS_TO_RAS, axial_axis
from monai_lstmagan.io.paths import NIFTI_SUFFIXES, VOLUME_SUFFIXES, scan_format, volume_suffix
from monai_lstmagan.io.writer import ScanWriter, to_voxel_type

__all__ = [
    "BadVolumeError",
    "mhd_data_file",
    "scan_files",
    "check_file",
    "read_voxels",
    "voxel_problem",
    "Scan",
    "read_scan",
    "read_scan_header",
    "to_voxel_type",
    "write_scan",
]


_MET_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip


class BadVolumeError(Exception):
    """A volume that cannot be used; the message says why, without the path (callers name the file)."""


_FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model and the training transforms work in float32
_INFLATE_CHUNK = 1 << 24  # bytes of a compressed stream inflated at a time (memory stays bounded)
_MHD_SPACING_KEYS = ("ElementSpacing", "ElementSize")
_MHD_ORIGIN_KEYS = ("Offset", "Origin", "Position")
_MHD_DIRECTION_KEYS = ("TransformMatrix", "Rotation", "Orientation")
_NIFTI_VECTOR_INTENTS = {1006, 1007, 2003, 2004}  # displacement vector, vector, RGB vector, RGBA vector


def _metaimage_header(path: str) -> tuple[dict[str, str], int]:
    """The keys of a MetaImage header up to its ``ElementDataFile`` (where MetaIO stops reading too: a ``.mha``
    holds the voxels right after it) and the byte offset of the line after it.

    Keys are matched exactly as MetaIO matches them (``Old_ElementDataFile`` is another key), values are the rest
    of the line (a data file name may hold spaces).
    """
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("latin-1")
    except OSError as e:
        raise BadVolumeError(f"cannot be opened ({e.strerror})") from e
    header: dict[str, str] = {}
    offset = 0
    for line in text.splitlines(keepends=True):
        offset += len(line)
        key, sep, value = line.partition("=")
        if not sep:
            continue
        header.setdefault(key.strip(), value.strip())
        if key.strip() == "ElementDataFile":
            break
    if "DimSize" not in header or "ElementDataFile" not in header:
        raise BadVolumeError("is not a MetaImage header (no DimSize / ElementDataFile)")
    return header, offset


def _mhd_header(path: str) -> dict[str, str]:
    return _metaimage_header(path)[0]


def mhd_data_file(path: str) -> str | None:
    """The data file of a MetaImage header (``None`` if the voxels are in the header file or a list)."""
    name = _mhd_header(path)["ElementDataFile"]
    if name in ("LOCAL", "LIST") or "%" in name:
        return None
    return os.path.join(os.path.dirname(path), name)


def _singular(matrix: np.ndarray) -> bool:
    """True for a (finite) square matrix without full rank (numpy's default tolerance)."""
    return int(np.linalg.matrix_rank(matrix)) < matrix.shape[0]


def _numbers(header: dict[str, str], key: str, count: int) -> np.ndarray | None:
    """The ``count`` numbers of a MetaImage key (None when absent); BadVolumeError naming the key when they are not
    ``count`` finite numbers (MetaIO reads ``nan`` / ``inf`` as 0 or stops there, so the geometry would be wrong)."""
    if key not in header:
        return None
    try:
        values = np.array([float(v) for v in header[key].split()], dtype=float)
    except ValueError as e:
        raise BadVolumeError(f"has an unreadable {key} ({header[key]!r}: {count} numbers expected)") from e
    if values.size != count:
        raise BadVolumeError(f"has {values.size} numbers in {key} ({header[key]!r}), {count} expected")
    if not np.isfinite(values).all():
        raise BadVolumeError(f"has a non-finite {key} ({header[key]})")
    return values


def _check_metaimage_header(header: dict[str, str]) -> int:
    """Check the fields of a MetaImage header (``.mhd`` / ``.mha``) a reader relies on; the expected data size.

    Returns:
        the number of bytes of voxel data the header promises.
    """
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        ndim = int(header.get("NDims", len(dims)))
    except ValueError as e:
        raise BadVolumeError(f"has an unreadable DimSize / NDims ({header['DimSize']!r})") from e
    if not dims or len(dims) != ndim or min(dims) < 0:
        raise BadVolumeError(f"has an invalid DimSize ({header['DimSize']!r} for NDims = {ndim})")
    if min(dims) == 0:
        raise BadVolumeError(f"is an empty image (DimSize = {header['DimSize']}: no voxels)")
    element_type = header.get("ElementType", "")
    channels_text = header.get("ElementNumberOfChannels", "1")
    try:
        channels = int(channels_text)
    except ValueError as e:
        raise BadVolumeError(f"has an unreadable ElementNumberOfChannels ({channels_text!r})") from e
    if channels != 1 or element_type.endswith("_ARRAY"):
        raise BadVolumeError(
            f"has {channels} values per voxel (ElementNumberOfChannels = {channels_text}, ElementType = "
            f"{element_type}): a scalar (grey-value) volume is expected, not a colour or vector image"
        )
    if element_type not in _MET_BYTES:
        raise BadVolumeError(
            f"has the unsupported ElementType {element_type!r} (expected one of {', '.join(_MET_BYTES)})"
        )
    for key in _MHD_SPACING_KEYS:
        spacing = _numbers(header, key, ndim)
        if spacing is not None and not np.all(spacing != 0):
            raise BadVolumeError(f"has a zero voxel size in {key} ({header[key]})")
    for key in _MHD_ORIGIN_KEYS:
        _numbers(header, key, ndim)
    for key in _MHD_DIRECTION_KEYS:
        direction = _numbers(header, key, ndim * ndim)
        if direction is not None and _singular(direction.reshape(ndim, ndim)):
            raise BadVolumeError(f"has a singular {key} ({header[key]}): its axes do not span the space")
    return math.prod(dims) * _MET_BYTES[element_type]


def _check_inflated_size(data_file: str, offset: int, expected: int) -> None:
    """Inflate the zlib (or gzip) stream of a compressed MetaImage from ``offset`` to its end and check it holds at
    least ``expected`` bytes. ITK only prints "Uncompress failed" for a bad stream and returns an uninitialised
    buffer, so this is where a random, truncated or too short ``.zraw`` is caught."""
    name = os.path.basename(data_file)
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, as MetaIO accepts
    total = 0
    try:
        with open(data_file, "rb") as f:
            f.seek(offset)
            while total <= expected and not inflater.eof:
                chunk = f.read(_INFLATE_CHUNK)
                if not chunk:
                    break
                total += len(inflater.decompress(chunk, _INFLATE_CHUNK))
                while inflater.unconsumed_tail and total <= expected:
                    total += len(inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK))
    except zlib.error as e:
        raise BadVolumeError(f"its compressed data {name!r} is not a valid zlib stream ({e})") from e
    except OSError as e:
        raise BadVolumeError(f"its data file {name!r} cannot be read ({e.strerror})") from e
    if total < expected:
        ends = "ends early (truncated)" if not inflater.eof else "is complete but too short"
        raise BadVolumeError(f"its compressed data {name!r} {ends}: {total} bytes inflated, {expected} expected")
    if total <= expected and not inflater.eof:
        raise BadVolumeError(f"its compressed data {name!r} is truncated (the stream has no end)")


def _check_metaimage(path: str) -> None:
    """Check a MetaImage (``.mhd`` header + ``.raw``/``.zraw``, or ``.mha`` with its voxels after the header): the
    header fields, that the data file exists and is as long as the header says, and that compressed data inflates
    completely to that length."""
    header, header_end = _metaimage_header(path)
    expected = _check_metaimage_header(header)
    if header["ElementDataFile"] == "LOCAL":
        data_file, offset = path, header_end
    else:
        data_file, offset = mhd_data_file(path), 0
        if data_file is None:
            return  # a list or a pattern of slice files: ITK checks them
        name = os.path.basename(data_file)
        if not os.path.exists(data_file):
            raise BadVolumeError(f"its data file {name!r} is missing")
        if not os.path.isfile(data_file):
            raise BadVolumeError(f"its data file {name!r} is not a regular file")
    size = os.path.getsize(data_file) - offset
    name = os.path.basename(data_file)
    if header.get("CompressedData", "False").lower() == "true":
        compressed = header.get("CompressedDataSize")
        try:
            compressed_size = None if compressed is None else int(compressed)
        except ValueError as e:
            raise BadVolumeError(f"has an unreadable CompressedDataSize ({compressed!r})") from e
        if compressed_size is not None and size < compressed_size:
            raise BadVolumeError(f"its data file {name!r} is too short ({size} bytes, header says {compressed_size})")
        _check_inflated_size(data_file, offset, expected)
        return
    try:
        skip = max(0, int(header.get("HeaderSize", "0")))
    except ValueError as e:
        raise BadVolumeError(f"has an unreadable HeaderSize ({header['HeaderSize']!r})") from e
    if size < expected + skip:
        raise BadVolumeError(f"its data file {name!r} is too short ({size} bytes, {expected} expected)")


def _check_itk_header(path: str) -> None:
    """Check what ITK reads from the header of an NRRD (``.nrrd`` / ``.nhdr``): sizes, voxel type, spacing, origin
    and directions."""
    try:
        image_io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
        if image_io is None:
            raise BadVolumeError("cannot be read by ITK (no reader recognises the file)")
        image_io.SetFileName(path)
        image_io.ReadImageInformation()
    except BadVolumeError:
        raise
    except Exception as e:
        raise BadVolumeError(f"cannot be read by ITK ({type(e).__name__}: {str(e).strip().splitlines()[-1]})") from e
    ndim = image_io.GetNumberOfDimensions()
    sizes = [int(image_io.GetDimensions(i)) for i in range(ndim)]
    if min(sizes, default=0) == 0:
        raise BadVolumeError(f"is an empty image (sizes {' '.join(map(str, sizes))}: no voxels)")
    pixel = image_io.GetPixelTypeAsString(image_io.GetPixelType())
    component = image_io.GetComponentTypeAsString(image_io.GetComponentType())
    if image_io.GetNumberOfComponents() != 1 or pixel != "scalar":
        raise BadVolumeError(
            f"has {image_io.GetNumberOfComponents()} {component} values per voxel (pixel type {pixel}): a scalar "
            "(grey-value) volume is expected, not a colour, vector or complex image"
        )
    spacing = np.array([image_io.GetSpacing(i) for i in range(ndim)], float)
    origin = np.array([image_io.GetOrigin(i) for i in range(ndim)], float)
    direction = np.array([image_io.GetDirection(i) for i in range(ndim)], float)
    if not np.isfinite(spacing).all() or not np.all(spacing != 0):
        raise BadVolumeError(f"has an unusable voxel size (spacings / space directions: {spacing.tolist()})")
    if not np.isfinite(origin).all():
        raise BadVolumeError(f"has a non-finite origin (space origin: {origin.tolist()})")
    if not np.isfinite(direction).all() or _singular(direction):
        raise BadVolumeError(f"has non-finite or singular axis directions (space directions: {direction.tolist()})")


def _nifti_header(path: str) -> Any:
    """The header of a NIfTI-1 or NIfTI-2 file (only its first bytes are read; a ``.nii.gz`` is inflated that far)."""
    compressed = volume_suffix(path) == ".nii.gz"
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            head = f.read(540)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        if compressed:
            raise BadVolumeError(f"is not a valid gzip file ({type(e).__name__}: {e})") from e
        raise BadVolumeError(f"cannot be opened ({e})") from e
    nifti2 = head[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # sizeof_hdr 540, either endianness
    if len(head) < (540 if nifti2 else 348):
        raise BadVolumeError(f"is too short for a NIfTI header ({len(head)} bytes)")
    try:
        return (nib.Nifti2Header if nifti2 else nib.Nifti1Header).from_fileobj(io.BytesIO(head))
    except Exception as e:
        raise BadVolumeError(f"cannot be read as NIfTI ({type(e).__name__}: {e})") from e


def _check_nifti_header(path: str) -> None:
    """Check the fields of a NIfTI header that the readers rely on: the voxel type (scalar, real), the sizes, the
    voxel size (``pixdim``), each transform that is in use (``sform`` rows, ``qform`` quaternion and offsets:
    finite, not singular) and the scaling (``scl_slope`` / ``scl_inter``: finite, inside the float32 range the
    model works in)."""
    header = _nifti_header(path)
    code = int(header["datatype"])
    try:
        dtype = np.dtype(header.get_data_dtype())
    except Exception as e:
        raise BadVolumeError(f"has an unknown NIfTI datatype ({code})") from e
    label = nib.nifti1.data_type_codes.label.get(code, str(dtype))
    if dtype.fields is not None:
        raise BadVolumeError(
            f"has {label} colour voxels (datatype = {code}): a scalar (grey-value) volume is expected; convert it "
            "to grey values first"
        )
    if dtype.kind == "c":
        raise BadVolumeError(
            f"has complex voxels ({label}, datatype = {code}): refused rather than silently dropping the imaginary "
            "part; save the magnitude (or the real part) as a real-valued volume"
        )
    dim = [int(v) for v in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise BadVolumeError(f"has an invalid dim[0] = {ndim} (1..7 expected)")
    for i in range(1, ndim + 1):
        if dim[i] <= 0:
            raise BadVolumeError(
                f"is an empty image (dim[{i}] = {dim[i]}, shape {tuple(dim[1 : ndim + 1])}: no voxels)"
            )
    intent = int(header["intent_code"])
    if ndim >= 5 and dim[5] > 1 and intent in _NIFTI_VECTOR_INTENTS:
        raise BadVolumeError(
            f"has {dim[5]} values per voxel (dim[5] = {dim[5]}, intent_code = {intent}): a scalar (grey-value) "
            "volume is expected, not a vector image"
        )
    pixdim = [float(v) for v in header["pixdim"]]
    for i in range(1, min(3, ndim) + 1):
        if not math.isfinite(pixdim[i]):
            raise BadVolumeError(f"has a non-finite voxel size pixdim[{i}] = {pixdim[i]}")
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0:
        for row in ("srow_x", "srow_y", "srow_z"):
            values = np.asarray(header[row], float)
            if not np.isfinite(values).all():
                raise BadVolumeError(f"has a non-finite sform: {row} = {values.tolist()} (sform_code = {sform_code})")
        if _singular(np.asarray(header.get_sform())[:3, :3]):
            raise BadVolumeError(
                f"has a singular sform (srow_x/y/z: its axes do not span the space; sform_code = {sform_code})"
            )
    if qform_code > 0:
        for field in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
            if not math.isfinite(float(header[field])):
                raise BadVolumeError(
                    f"has a non-finite qform: {field} = {float(header[field])} (qform_code = {qform_code})"
                )
    affine = np.asarray(header.get_best_affine(), float)
    source = "sform" if sform_code > 0 else "qform (quatern_*, pixdim)" if qform_code > 0 else "pixdim"
    if not np.isfinite(affine).all() or _singular(affine[:3, :3]):
        raise BadVolumeError(
            f"has a non-finite or singular voxel-to-world affine (from its {source}: {affine[:3].tolist()})"
        )
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if math.isinf(slope):
        raise BadVolumeError(f"has an infinite scl_slope ({slope})")
    if slope != 0 and math.isfinite(slope):
        if not math.isfinite(inter):
            raise BadVolumeError(f"has scl_slope = {slope:g} with a non-finite scl_inter ({inter})")
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            peak = max(abs(float(info.min)), abs(float(info.max))) * abs(slope) + abs(inter)
        else:
            peak = abs(inter)
        if peak > _FLOAT32_MAX:
            raise BadVolumeError(
                f"has scl_slope = {slope:g}, scl_inter = {inter:g}: its {dtype} voxels scale to values up to "
                f"{peak:.3g}, beyond the float32 range ({_FLOAT32_MAX:.3g})"
            )


def _inflate(path: str) -> bytes:
    """The whole decompressed content of a gzip file (so its CRC and length are checked), or :class:`BadVolumeError`."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise BadVolumeError(f"is not a valid gzip file ({type(e).__name__}: {e})") from e


def check_file(path: str, inflate: bool = True) -> None:
    """Raise :class:`BadVolumeError` for a file-level problem, before a reader sees the file.

    - the name: an unsupported suffix; the file: missing, or not a regular file (a folder, a device, a pipe);
    - a ``.nii.gz`` whose gzip stream is corrupt or truncated: the whole stream is inflated, so the CRC is
      checked (``inflate=False`` leaves that to the reader: :func:`read_voxels` / :func:`read_scan` inflate once);
    - the NIfTI header: colour (RGB) or complex voxels, an empty image (``dim`` 0), a non-finite ``pixdim``, a
      non-finite or singular ``sform`` / ``qform``, a non-finite ``scl_slope``/``scl_inter`` or one scaling the
      voxel type beyond the float32 range;
    - a MetaImage (``.mhd``, ``.mha``): its header fields (``DimSize`` 0: an empty image, several channels, an
      unknown ``ElementType``, a non-finite or zero ``ElementSpacing``, a non-finite ``Offset``, a non-finite or
      singular ``TransformMatrix``), a data file that is missing or shorter than the header says, and compressed
      data (``CompressedData = True``) that does not inflate completely to that length (always inflated here:
      ITK does not report a bad stream);
    - an NRRD: what ITK reads from its header (sizes, voxel type, spacing, origin, directions).
    """
    suffix = volume_suffix(path)
    if scan_format(path) == DICOM_FORMAT:
        _open_dicom(path)
        return
    if suffix is None:
        raise BadVolumeError(
            f"has an unsupported extension (expected one of {', '.join(VOLUME_SUFFIXES)}) and is not DICOM"
        )
    if not os.path.exists(path):
        raise BadVolumeError("does not exist")
    if not os.path.isfile(path):
        raise BadVolumeError("is not a regular file")
    if suffix == ".nii.gz" and inflate:
        try:
            with gzip.open(path, "rb") as f:  # streamed: only the check is needed here, not the content
                while f.read(_INFLATE_CHUNK):
                    pass
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise BadVolumeError(f"is not a valid gzip file ({type(e).__name__}: {e})") from e
    if suffix in NIFTI_SUFFIXES:
        _check_nifti_header(path)
    elif suffix in (".mhd", ".mha"):
        _check_metaimage(path)
    else:
        _check_itk_header(path)


def _open_dicom(path: str, voxels: bool = False) -> Any:
    """The DICOM series of ``path`` (:func:`monai_lstmagan.io.dicom.open_series`; with ``voxels``:
    ``(series, array)`` of :func:`~monai_lstmagan.io.dicom.read_series`); :class:`BadVolumeError` with the reason."""
    try:
        return read_series(path) if voxels else open_series(path)
    except DicomError as e:
        raise BadVolumeError(str(e)) from e


def _open_nifti(path: str) -> tuple[Any, np.ndarray]:
    """The nibabel image and its voxels (scaling applied); :class:`BadVolumeError` when nibabel cannot read it.

    A ``.nii.gz`` is inflated once, completely (nibabel alone stops before the gzip trailer and so never
    checks the CRC), and parsed from memory.
    """
    raw = _inflate(path) if volume_suffix(path) == ".nii.gz" else None
    try:
        if raw is None:
            image = nib.load(path)
        else:
            nifti2 = raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # sizeof_hdr 540, either endianness
            image = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(raw)
        return image, np.asanyarray(image.dataobj)
    except Exception as e:
        raise BadVolumeError(f"cannot be read as NIfTI ({type(e).__name__}: {e})") from e


def _open_itk(path: str) -> Any:
    """The ITK image; :class:`BadVolumeError` when ITK cannot read it."""
    try:
        return itk.imread(path)
    except Exception as e:
        raise BadVolumeError(f"cannot be read by ITK ({type(e).__name__}: {str(e).strip().splitlines()[-1]})") from e


def read_voxels(path: str) -> tuple[np.ndarray, int]:
    """Voxels of a checked volume in index order ``(x, y, z[, t])`` and the index of its axial (S-I) axis.

    Raises:
        BadVolumeError: see :func:`check_file`, or the reader failed.
    """
    check_file(path, inflate=False)  # a .nii.gz is inflated (and its CRC checked) by the reader
    if scan_format(path) == DICOM_FORMAT:
        series, voxels = _open_dicom(path, voxels=True)
        return voxels, axial_axis(series.affine)
    if volume_suffix(path) in NIFTI_SUFFIXES:
        image, voxels = _open_nifti(path)
        codes = nib.orientations.aff2axcodes(image.affine)
        axial = next((i for i, c in enumerate(codes) if c in ("S", "I")), 2)
        return voxels, axial
    image = _open_itk(path)
    voxels = itk.array_from_image(image)  # index order reversed: ([t,] z, y, x[, components])
    ndim = image.GetImageDimension()
    if voxels.ndim > ndim:  # vector pixels: components last -> treat as an extra (4th) axis
        voxels = np.moveaxis(voxels, -1, 0)
    voxels = voxels.transpose(tuple(range(voxels.ndim))[::-1])
    direction = np.asarray(image.GetDirection()).reshape(ndim, ndim)
    axial = int(np.argmax(np.abs(direction[min(2, ndim - 1), :3]))) if ndim >= 3 else 2
    return voxels, axial


def voxel_problem(voxels: Any) -> str | None:
    """What makes these voxel values unusable, or None: no voxels, NaN/Inf voxels, values beyond the float32 range
    the model works in, or a constant image.

    ``voxels``: a numpy array or torch tensor of any shape. The message is phrased to follow the file name.
    """
    values = np.asarray(voxels.detach().cpu().numpy() if hasattr(voxels, "detach") else voxels)
    if values.size == 0:
        return f"is an empty image (shape {tuple(values.shape)}: no voxels)"
    if np.issubdtype(values.dtype, np.floating):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            return f"contains {bad} NaN or Inf voxels"
        peak = float(np.abs(values).max())
        if peak > _FLOAT32_MAX:
            return f"has voxel values up to {peak:.3g}, beyond the float32 range ({_FLOAT32_MAX:.3g})"
    if not float(values.min()) < float(values.max()):
        return f"is a constant image (every voxel is {float(values.min()):g})"
    return None


@dataclass
class Scan:
    """A volume as read from disk: the array in the file's own axis order plus what is needed to write it back.

    Attributes:
        path: the file.
        array: ``[I, J, K]`` voxel values in the file's units (scaling of NIfTI applied), file index order.
        affine: 4x4 voxel-to-world matrix in RAS (``affine @ [i, j, k, 1]``), as MONAI's readers give it.
        dtype: the voxel type of the input (NIfTI: the on-disk type).
        header: ``nibabel`` header (NIfTI) or ``None`` (ITK formats).
        compressed: ITK formats: whether the pixel data was compressed.
        scaled: NIfTI: the stored values are scaled (``scl_slope``/``scl_inter``), so ``array`` is in
            real units while ``dtype`` is the stored type.
        dicom: DICOM: the series (:class:`monai_lstmagan.io.dicom.DicomSeries`: its headers, stored pixel type and
            rescale); ``array`` is then in real units (HU) and ``dtype`` the type that holds them exactly.
    """

    path: str
    array: np.ndarray
    affine: np.ndarray
    dtype: np.dtype
    header: Any = None
    compressed: bool = False
    scaled: bool = False
    dicom: Any = None


def _itk_compressed(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("latin-1")
    except OSError:
        return False
    return bool(re.search(r"CompressedData\s*=\s*True", head) or re.search(r"encoding:\s*(gz|gzip|bz2)", head))


def read_scan(path: str) -> Scan:
    """Read and check a 3D scalar volume (NIfTI via nibabel; MetaImage/NRRD via ITK; DICOM via pydicom).

    A 4D NIfTI image uses its first volume (warned), as in training.

    Raises:
        FileNotFoundError: naming the file when it does not exist.
        ValueError: naming the file when it is not a regular file, damaged or has a bad header
            (:func:`check_file`), unreadable, not a 3D scalar volume, or its voxels are unusable
            (:func:`voxel_problem`).
    """
    if not os.path.exists(split_series(path)[0]):
        raise FileNotFoundError(f"input volume '{path}' does not exist.")
    try:
        check_file(path, inflate=False)  # a .nii.gz is inflated (and its CRC checked) by the reader
        scan = _read_checked_scan(path)
    except BadVolumeError as e:
        raise ValueError(f"'{path}' {e}.") from e
    problem = voxel_problem(scan.array)
    if problem:
        raise ValueError(f"'{path}' {problem}.")
    return scan


_ITK_COMPONENT_TYPES = {
    "unsigned_char": np.uint8, "char": np.int8, "unsigned_short": np.uint16, "short": np.int16,
    "unsigned_int": np.uint32, "int": np.int32, "unsigned_long": np.uint64, "long": np.int64,
    "unsigned_long_long": np.uint64, "long_long": np.int64, "float": np.float32, "double": np.float64,
}  # fmt: skip


def read_scan_header(path: str) -> Scan:
    """What the header of a volume says, without reading its voxels: a :class:`Scan` whose ``array`` is a voxel-less
    placeholder of the volume's shape (``np.broadcast_to``), with its affine and voxel type, to size the work on it.

    A 4D NIfTI gives the shape of its first volume (as :func:`read_scan`).

    Raises:
        ValueError: naming the file when its header cannot be read (:func:`check_file` without inflating).
    """
    try:
        if scan_format(path) == DICOM_FORMAT:
            series = _open_dicom(path)
            placeholder = np.broadcast_to(np.zeros((), series.dtype), series.shape)
            return Scan(path, placeholder, series.affine, series.dtype, dicom=series)
        check_file(path, inflate=False)
        if volume_suffix(path) in NIFTI_SUFFIXES:
            header = _nifti_header(path)
            shape = tuple(int(v) for v in header.get_data_shape()[:3])
            shape += (1,) * (3 - len(shape))
            slope, inter = header.get_slope_inter()
            scaled = (slope is not None and slope != 1.0) or (inter is not None and inter != 0.0)
            dtype, affine = np.dtype(header.get_data_dtype()), np.asarray(header.get_best_affine(), float)
            return Scan(path, np.broadcast_to(np.zeros((), dtype), shape), affine, dtype, header, scaled=scaled)
        image_io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
        image_io.SetFileName(path)
        image_io.ReadImageInformation()
    except BadVolumeError as e:
        raise ValueError(f"'{path}' {e}.") from e
    ndim = image_io.GetNumberOfDimensions()
    shape = tuple(int(image_io.GetDimensions(i)) for i in range(min(ndim, 3))) + (1,) * max(0, 3 - ndim)
    component = image_io.GetComponentTypeAsString(image_io.GetComponentType())
    dtype = np.dtype(_ITK_COMPONENT_TYPES.get(component, np.float64))
    affine_lps = np.eye(4)
    for axis in range(min(ndim, 3)):
        direction = np.array(image_io.GetDirection(axis), float)[:3]
        affine_lps[: len(direction), axis] = direction * image_io.GetSpacing(axis)
        affine_lps[axis, 3] = image_io.GetOrigin(axis)
    array = np.broadcast_to(np.zeros((), dtype), shape)
    return Scan(path, array, LPS_TO_RAS @ affine_lps, dtype, None, _itk_compressed(path))


def _read_checked_scan(path: str) -> Scan:
    """:func:`read_scan` after :func:`check_file`; reader failures raise :class:`BadVolumeError`."""
    try:
        return _read_scan_voxels(path)
    except (BadVolumeError, ValueError):
        raise
    except Exception as e:  # whatever a reader trips over: still one line naming the file
        raise BadVolumeError(f"cannot be read ({type(e).__name__}: {e})") from e


def _read_scan_voxels(path: str) -> Scan:
    if scan_format(path) == DICOM_FORMAT:
        series, array = _open_dicom(path, voxels=True)
        return Scan(path, array, _checked_affine(series.affine), series.dtype, dicom=series)
    if volume_suffix(path) in NIFTI_SUFFIXES:
        image, array = _open_nifti(path)
        if array.ndim == 4:
            if array.shape[3] > 1:
                warnings.warn(f"Volume '{path}' is 4D ({array.shape[3]} volumes): only the first one is used.")
            array = array[..., 0]
        if array.ndim != 3:
            raise ValueError(f"'{path}' is not a 3D scalar volume (shape {array.shape}).")
        # nibabel moves scl_slope/scl_inter from the loaded header into the data proxy
        slope, inter = getattr(image.dataobj, "slope", 1.0), getattr(image.dataobj, "inter", 0.0)
        scaled = bool(slope != 1.0 or inter != 0.0)
        if scaled and array.size and np.isfinite(array).all() and float(np.abs(array).max()) > _FLOAT32_MAX:
            raise BadVolumeError(
                f"has scl_slope = {slope:g}, scl_inter = {inter:g}: its voxels scale to values up to "
                f"{float(np.abs(array).max()):.3g}, beyond the float32 range ({_FLOAT32_MAX:.3g})"
            )
        dtype = np.dtype(image.get_data_dtype())
        return Scan(path, array, _checked_affine(np.asarray(image.affine, float)), dtype, image.header, scaled=scaled)
    image = _open_itk(path)
    if image.GetImageDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"'{path}' is not a 3D scalar volume ({image.GetImageDimension()}D, "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel)."
        )
    array = np.asarray(itk.array_from_image(image)).transpose(2, 1, 0)  # ITK [k, j, i] -> [i, j, k]
    direction = np.asarray(itk.array_from_matrix(image.GetDirection()), float)
    spacing = np.asarray(image.GetSpacing(), float)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * spacing
    affine_lps[:3, 3] = np.asarray(image.GetOrigin(), float)
    return Scan(path, array, _checked_affine(LPS_TO_RAS @ affine_lps), array.dtype, None, _itk_compressed(path))


def _checked_affine(affine: np.ndarray) -> np.ndarray:
    """``affine`` when it is finite and not singular (the header checks name the field; this is the last guard)."""
    if not np.isfinite(affine).all() or _singular(affine[:3, :3]):
        raise BadVolumeError(f"has a non-finite or singular voxel-to-world affine ({affine[:3].tolist()})")
    return affine


def _nhdr_data_file(path: str) -> str | None:
    """The data file of a detached NRRD header (``data file:`` / ``datafile:``), or None."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("latin-1")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("data file", "datafile") and value.strip():
            name = value.strip()
            return None if name.startswith("LIST") or "%" in name else os.path.join(os.path.dirname(path), name)
    return None


def scan_files(path: str) -> set[str]:
    """The real paths of every file a scan is made of: the file itself and, for a ``.mhd`` / ``.nhdr`` header,
    the data file its header names (parsed as the reader parses it: the ``ElementDataFile`` key itself); a DICOM
    scan: the files of its series."""
    if scan_format(path) == DICOM_FORMAT:
        try:
            return {os.path.realpath(f) for f in open_series(path).files}
        except DicomError:  # not one readable series: the reader will say so; its folder / file is protected
            return {os.path.realpath(split_series(path)[0])}
    files = {os.path.realpath(path)}
    suffix = volume_suffix(path)
    try:
        data_file = mhd_data_file(path) if suffix == ".mhd" else _nhdr_data_file(path) if suffix == ".nhdr" else None
    except BadVolumeError:
        data_file = None  # not a readable header: the reader will say so; the header file itself is protected
    if data_file is not None:
        files.add(os.path.realpath(data_file))
    return files


def write_scan(
    array: np.ndarray, affine: np.ndarray, path: str, dtype: np.dtype | None = None, like: Scan | None = None
) -> None:
    """Write ``array`` (file index order) with its RAS ``affine`` to ``path``, the format chosen by the suffix: the
    whole volume as one slab of :class:`~monai_lstmagan.io.writer.ScanWriter`.

    Callers write into a temporary folder of :func:`monai_lstmagan.io.atomic.atomic_files`.

    Args:
        array: ``[I, J, K]`` voxel values in output units.
        affine: 4x4 voxel-to-world matrix in RAS.
        path: the file to write (``.nii``/``.nii.gz``, ``.mhd``/``.mha``, ``.nrrd``/``.nhdr``).
        dtype: the stored voxel type (None: ``array``'s). A float ``array`` with an integer ``dtype`` and a NIfTI
            ``like`` (a scaled input) is stored with a scaling chosen by nibabel.
        like: the scan read from the input, whose header (NIfTI: codes, units, description) and compression
            (the other formats) the output keeps; None: a plain header.
    """
    array = np.asarray(array)
    dtype = np.dtype(array.dtype if dtype is None else dtype)
    with ScanWriter(path, array.shape, affine, dtype, like=like, values_dtype=array.dtype) as writer:
        writer.write(array, 0)
