"""The one reader and the one writer of volume files: integrity, voxels, geometry, voxel types.

Every entry point (the training transforms, the start-up scan of ``data.check_volumes``, inference and
evaluation) goes through this module, so a bad file gets the same error naming the file wherever it
enters, and the same formats are accepted everywhere:

- the suffixes (:data:`monai_lstmagan.io.paths.VOLUME_SUFFIXES`): NIfTI (``.nii.gz``, ``.nii``, read by
  nibabel), MetaImage (``.mhd`` with its ``.raw``/``.zraw``, ``.mha``) and NRRD (``.nrrd``, ``.nhdr``), read by ITK;
- :func:`check_file`: the file-level problems a reader may not notice: a ``.nii.gz`` whose gzip stream is
  corrupt or truncated (nibabel stops reading before the gzip trailer, so the CRC is never checked), a
  ``.mhd`` whose data file is missing or shorter than its header says;
- :func:`voxel_problem`: NaN/Inf voxels, a constant image;
- :func:`read_scan`: array + affine (RAS) + voxel type + what is needed to write the volume back;
- :func:`write_scan`: an array with its RAS affine in the format of a scan read (or a plain NIfTI / ITK file);
- :func:`scan_files`: every file a scan consists of (a ``.mhd`` and the data file its header names), so that
  no output replaces one.

The 4D rule, shared by training and inference: a 4D NIfTI image uses its first volume (index 0 of the 4th
axis), with a warning.
"""

from __future__ import annotations

import gzip
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

from monai_lstmagan.io.geometry import LPS_TO_RAS
from monai_lstmagan.io.paths import NIFTI_SUFFIXES, VOLUME_SUFFIXES, volume_suffix

__all__ = [
    "BadVolume",
    "mhd_data_file",
    "scan_files",
    "check_file",
    "read_voxels",
    "voxel_problem",
    "Scan",
    "read_scan",
    "to_voxel_type",
    "write_scan",
]


_MET_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip


class BadVolume(Exception):
    """A volume that cannot be used; the message says why, without the path (callers name the file)."""


def _mhd_header(path: str) -> dict[str, str]:
    header = {}
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("latin-1")
    except OSError as e:
        raise BadVolume(f"cannot be opened ({e.strerror})") from e
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            header[key.strip()] = value.strip()
    if "DimSize" not in header or "ElementDataFile" not in header:
        raise BadVolume("is not a MetaImage header (no DimSize / ElementDataFile)")
    return header


def mhd_data_file(path: str) -> str | None:
    """The data file of a MetaImage header (``None`` if the voxels are in the header file or a list)."""
    name = _mhd_header(path)["ElementDataFile"]
    if name in ("LOCAL", "LIST") or "%" in name:
        return None
    return os.path.join(os.path.dirname(path), name)


def _check_mhd_data(path: str) -> None:
    """Check the ``.raw``/``.zraw`` of a MetaImage exists and is as long as the header says."""
    header = _mhd_header(path)
    data_file = mhd_data_file(path)
    if data_file is None:
        return
    if not os.path.isfile(data_file):
        raise BadVolume(f"its data file {os.path.basename(data_file)!r} is missing")
    size = os.path.getsize(data_file)
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        channels = int(header.get("ElementNumberOfChannels", "1"))
        expected = math.prod(dims) * channels * _MET_BYTES[header.get("ElementType", "")]
    except (KeyError, ValueError) as e:
        raise BadVolume(f"has an unreadable MetaImage header ({e!r})") from e
    if header.get("CompressedData", "False").lower() == "true":
        compressed = header.get("CompressedDataSize")
        if compressed is not None and size < int(compressed):
            raise BadVolume(
                f"its data file {os.path.basename(data_file)!r} is too short "
                f"({size} bytes, header says {int(compressed)})"
            )
    elif size < expected + max(0, int(header.get("HeaderSize", "0"))):
        raise BadVolume(
            f"its data file {os.path.basename(data_file)!r} is too short ({size} bytes, {expected} expected)"
        )


def _inflate(path: str) -> bytes:
    """The whole decompressed content of a gzip file (so its CRC and length are checked), or :class:`BadVolume`."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise BadVolume(f"is not a valid gzip file ({type(e).__name__}: {e})") from e


def check_file(path: str, inflate: bool = True) -> None:
    """Raise :class:`BadVolume` for a file-level problem: unsupported suffix, missing file, a corrupt or
    truncated gzip stream (``.nii.gz``: the whole stream is inflated, so the CRC is checked; ``inflate=False``
    leaves that to the reader, :func:`read_voxels` / :func:`read_scan` inflate once), a ``.mhd`` whose data
    file is missing or too short."""
    suffix = volume_suffix(path)
    if suffix is None:
        raise BadVolume(f"has an unsupported extension (expected one of {', '.join(VOLUME_SUFFIXES)})")
    if not os.path.isfile(path):
        raise BadVolume("does not exist")
    if suffix == ".nii.gz" and inflate:
        try:
            with gzip.open(path, "rb") as f:  # streamed: only the check is needed here, not the content
                while f.read(1 << 24):
                    pass
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise BadVolume(f"is not a valid gzip file ({type(e).__name__}: {e})") from e
    elif suffix == ".mhd":
        _check_mhd_data(path)


def _open_nifti(path: str) -> tuple[Any, np.ndarray]:
    """The nibabel image and its voxels (scaling applied); :class:`BadVolume` when nibabel cannot read it.

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
        raise BadVolume(f"cannot be read as NIfTI ({type(e).__name__}: {e})") from e


def _open_itk(path: str) -> Any:
    """The ITK image; :class:`BadVolume` when ITK cannot read it."""
    try:
        return itk.imread(path)
    except Exception as e:
        raise BadVolume(f"cannot be read by ITK ({type(e).__name__}: {str(e).strip().splitlines()[-1]})") from e


def read_voxels(path: str) -> tuple[np.ndarray, int]:
    """Voxels of a checked volume in index order ``(x, y, z[, t])`` and the index of its axial (S-I) axis.

    Raises:
        BadVolume: see :func:`check_file`, or the reader failed.
    """
    check_file(path, inflate=False)  # a .nii.gz is inflated (and its CRC checked) by the reader
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
    """What makes these voxel values unusable, or None: NaN/Inf voxels, or a constant image.

    ``voxels``: a numpy array or torch tensor of any shape. The message is phrased to follow the file name.
    """
    values = np.asarray(voxels.detach().cpu().numpy() if hasattr(voxels, "detach") else voxels)
    if np.issubdtype(values.dtype, np.floating):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            return f"contains {bad} NaN or Inf voxels"
    if values.size == 0 or not float(values.min()) < float(values.max()):
        return f"is a constant image (every voxel is {float(values.min()) if values.size else math.nan:g})"
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
    """

    path: str
    array: np.ndarray
    affine: np.ndarray
    dtype: np.dtype
    header: Any = None
    compressed: bool = False
    scaled: bool = False


def _itk_compressed(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("latin-1")
    except OSError:
        return False
    return bool(re.search(r"CompressedData\s*=\s*True", head) or re.search(r"encoding:\s*(gz|gzip|bz2)", head))


def read_scan(path: str) -> Scan:
    """Read and check a 3D scalar volume (NIfTI via nibabel; MetaImage/NRRD via ITK).

    A 4D NIfTI image uses its first volume (warned), as in training.

    Raises:
        FileNotFoundError / ValueError: naming the file when it is missing, damaged (:func:`check_file`),
        unreadable, not a 3D scalar volume, or its voxels are unusable (:func:`voxel_problem`).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input volume '{path}' does not exist.")
    try:
        check_file(path, inflate=False)  # a .nii.gz is inflated (and its CRC checked) by the reader
        scan = _read_checked_scan(path)
    except BadVolume as e:
        raise ValueError(f"'{path}' {e}.") from e
    problem = voxel_problem(scan.array)
    if problem:
        raise ValueError(f"'{path}' {problem}.")
    return scan


def _read_checked_scan(path: str) -> Scan:
    """:func:`read_scan` after :func:`check_file`; reader failures raise :class:`BadVolume`."""
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
        dtype = np.dtype(image.get_data_dtype())
        return Scan(path, array, np.asarray(image.affine, float), dtype, image.header, scaled=scaled)
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
    return Scan(path, array, LPS_TO_RAS @ affine_lps, array.dtype, None, _itk_compressed(path))


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
    the data file its header names (parsed as the reader parses it: the ``ElementDataFile`` key itself)."""
    files = {os.path.realpath(path)}
    suffix = volume_suffix(path)
    try:
        data_file = mhd_data_file(path) if suffix == ".mhd" else _nhdr_data_file(path) if suffix == ".nhdr" else None
    except BadVolume:
        data_file = None  # not a readable header: the reader will say so; the header file itself is protected
    if data_file is not None:
        files.add(os.path.realpath(data_file))
    return files


def to_voxel_type(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` stored as ``dtype``: integer types are rounded and clipped to their range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def write_scan(array: np.ndarray, affine: np.ndarray, path: str, dtype: np.dtype | None = None, like: Scan | None = None) -> None:
    """Write ``array`` (file index order) with its RAS ``affine`` to ``path``, the format chosen by the suffix.

    Callers write into a temporary folder of :func:`monai_lstmagan.io.atomic.atomic_files` (nibabel and ITK pick
    the format from the final name).

    Args:
        array: ``[I, J, K]`` voxel values in output units.
        affine: 4x4 voxel-to-world matrix in RAS.
        path: the file to write (``.nii``/``.nii.gz`` with nibabel, ``.mhd``/``.mha``/``.nrrd`` with ITK).
        dtype: the stored voxel type (None: ``array``'s). A float ``array`` with an integer ``dtype`` and a NIfTI
            ``like`` (a scaled input) is stored with a scaling chosen by nibabel.
        like: the scan read from the input, whose header (NIfTI: codes, units, description) and compression
            (ITK formats) the output keeps; None: a plain header.
    """
    dtype = np.dtype(array.dtype if dtype is None else dtype)
    if volume_suffix(path) in NIFTI_SUFFIXES:
        if like is not None and like.header is not None:
            header = like.header.copy()
            header.set_data_dtype(dtype)
            header.set_slope_inter(np.nan, np.nan)  # nibabel picks a scaling for float data stored as integers
            image = nib.Nifti1Image(array, affine, header=header)
            sform_code, qform_code = int(like.header["sform_code"]), int(like.header["qform_code"])
            if sform_code or qform_code:
                image.set_sform(affine, code=sform_code)
                image.set_qform(affine, code=qform_code)
        else:
            image = nib.Nifti1Image(to_voxel_type(array, dtype), affine)
        nib.save(image, path)
        return
    source = like.path if like is not None else path
    try:
        image = itk.image_from_array(np.ascontiguousarray(to_voxel_type(array, dtype).transpose(2, 1, 0)))
    except Exception as e:  # ITK's Python wrapping covers a subset of voxel types
        raise ValueError(
            f"'{source}': ITK cannot write voxel type {dtype} ({type(e).__name__}); choose another output "
            "dtype (e.g. --output-dtype int16 or float32)."
        ) from e
    affine_lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine_lps[:3, 3].tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(affine_lps[:3, :3] / spacing)))
    itk.imwrite(image, path, compression=like.compressed if like is not None else False)

