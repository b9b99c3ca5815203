"""DICOM in and out: a series (a folder, a single multi-frame file or a DICOMDIR) read as one volume, and a new
DICOM series written beside it in the same frame of reference.

A DICOM *scan* is named by a path that is not a volume suffix:

- a folder holding the files of one series (the files directly inside it, any name; a folder with several series
  needs a selector, below);
- a single file: a multi-frame (enhanced) image, or a classic image of a series whose other files are in its folder
  are not read (give the folder);
- a ``DICOMDIR``: the images it references;
- any of these followed by ``#<SeriesInstanceUID>`` (:data:`SERIES_SEPARATOR`): that series only.

Reading uses pydicom (headers, pixel decoding, transfer syntaxes); the geometry comes from
ImagePositionPatient / ImageOrientationPatient / PixelSpacing (per frame for a multi-frame file, from its
functional groups), the slices sorted along the slice normal (never by InstanceNumber or file name), and the pixels
are rescaled to real units (RescaleSlope / RescaleIntercept: HU for CT). The volume's axes are ``[I, J, K]`` =
(columns, rows, slices along the normal); its affine maps them to RAS. What cannot be one regular volume is refused
with :class:`DicomError` saying why (the caller names the folder or file): mixed orientations, missing slices
(spacing uneven beyond :data:`SPACING_TOLERANCE`), two slices at one position, gantry tilt (slices sheared against
their normal), a compressed transfer syntax no installed decoder reads, colour images and secondary captures, a single
slice, differing Rows / Columns / PixelSpacing / pixel types.

Writing (:class:`DicomSeriesStream`, used by :class:`monai_lstmagan.io.writer.ScanWriter` for a DICOM output): one
classic single-frame file per output slice, streamed slab by slab, with a new SeriesInstanceUID and new
SOPInstanceUIDs, the patient, study, equipment and frame-of-reference modules of the input kept, ImageType
``DERIVED\\SECONDARY``, SeriesDescription marked, DerivationDescription saying what was done, the new Rows / Columns /
PixelSpacing / ImagePositionPatient / SliceThickness / SpacingBetweenSlices, and the pixels stored in the input's
pixel type with its RescaleSlope / RescaleIntercept and window (explicit VR little endian, uncompressed).
"""

from __future__ import annotations

import copy
import datetime
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monai_lstmagan.io.geometry import LPS_TO_RAS

__all__ = [
    "DICOM_FORMAT",
    "SERIES_SEPARATOR",
    "SPACING_TOLERANCE",
    "DicomError",
    "DicomSeries",
    "split_series",
    "is_dicom_file",
    "is_dicom",
    "list_series",
    "expand_series",
    "open_series",
    "read_series",
    "DicomSeriesStream",
]

#: The name of the DICOM output format (``--output-format dicom``): a folder of one file per slice.
DICOM_FORMAT = "dicom"
#: Between a DICOM folder / DICOMDIR and the SeriesInstanceUID of the series to read: ``DIR#1.2.840...``.
SERIES_SEPARATOR = "#"
#: How far (relative to the median spacing, at least 0.01 mm) a slice may lie from a regular grid along the normal
#: before the series is refused as having missing (or extra) slices.
SPACING_TOLERANCE = 0.02
#: How far (cosine units) two slices' orientations, or a slice's offset from the normal, may differ.
ORIENTATION_TOLERANCE = 1e-4

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame variants .7.1 .. .7.4
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_CLASSIC_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
_ENHANCED_CLASS = {
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.2.2": "CT",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.4": "MR",  # Legacy Converted Enhanced MR
}
# attributes of the input not carried into the derived series (they describe the input's instances or pixels)
_NOT_KEPT = (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "SOPInstanceUID", "SeriesInstanceUID", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "SliceLocation", "Rows", "Columns", "NumberOfFrames", "SmallestImagePixelValue", "LargestImagePixelValue",
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "DimensionIndexSequence",
    "DimensionOrganizationSequence", "IconImageSequence", "SourceImageSequence", "ReferencedImageSequence",
    "DerivationDescription", "DerivationCodeSequence", "ImageType", "FrameIncrementPointer", "LossyImageCompression",
    "LossyImageCompressionRatio", "LossyImageCompressionMethod", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber",
    "ImagesInAcquisition", "WindowCenterWidthExplanation", "NumberOfTemporalPositions", "TemporalPositionIdentifier",
)  # fmt: skip


class DicomError(Exception):
    """A DICOM input that cannot be one volume; the message says why, without the path (callers name it)."""


def split_series(path: str | os.PathLike) -> tuple[str, str | None]:
    """``(folder or file, SeriesInstanceUID or None)`` of a DICOM scan name (``DIR#UID`` or ``DIR``)."""
    path = os.fspath(path)
    base, sep, uid = path.rpartition(SERIES_SEPARATOR)
    if sep and uid and not os.path.exists(path) and os.path.exists(base):
        return base, uid
    return path, None


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a regular file that starts like a DICOM Part 10 file (128-byte preamble, ``DICM``) or is named
    ``DICOMDIR``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    if os.path.basename(path).upper() == "DICOMDIR":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _folder_files(folder: str) -> list[str]:
    """The DICOM files directly inside ``folder`` (hidden files and a DICOMDIR left out), sorted by name."""
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError as e:
        raise DicomError(f"cannot be listed ({e.strerror})") from e
    return [p for p in (os.path.join(folder, n) for n in names) if n_is_image(p)]


def n_is_image(path: str) -> bool:
    """A DICOM file that is not a DICOMDIR nor a volume file (``.nii.gz``, ...: not opened), by its first bytes."""
    from monai_lstmagan.io.paths import volume_suffix  # paths imports this module

    name = os.path.basename(path)
    return name.upper() != "DICOMDIR" and volume_suffix(name) is None and is_dicom_file(path)


def is_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` names a DICOM scan: a DICOM file, a DICOMDIR, or a folder holding DICOM files directly
    (each with an optional ``#<SeriesInstanceUID>``)."""
    base, _ = split_series(path)
    if os.path.isdir(base):
        try:
            names = sorted(n for n in os.listdir(base) if not n.startswith("."))
        except OSError:
            return False
        return any(n_is_image(os.path.join(base, n)) for n in names)
    return is_dicom_file(base)


def _dicomdir_files(path: str) -> list[str]:
    """The image files a DICOMDIR references (its IMAGE records), as paths beside it."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as e:
        raise DicomError(f"cannot be read as a DICOMDIR ({type(e).__name__}: {e})") from e
    root = os.path.dirname(os.path.abspath(path))
    files = []
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if record.get("DirectoryRecordType") == "IMAGE" and file_id:
            parts = [file_id] if isinstance(file_id, str) else list(file_id)
            files.append(os.path.join(root, *parts))
    if not files:
        raise DicomError("is a DICOMDIR that references no image")
    return files


def _source_files(base: str) -> list[str]:
    """The DICOM files of a scan name without its selector: a folder's, a DICOMDIR's, or the file itself."""
    if os.path.isdir(base):
        files = _folder_files(base)
        if not files:
            raise DicomError("holds no DICOM file")
        return files
    if not os.path.exists(base):
        raise DicomError("does not exist")
    if os.path.basename(base).upper() == "DICOMDIR":
        return _dicomdir_files(base)
    return [base]


def _headers(files: Sequence[str]) -> list[tuple[str, Any]]:
    """``(file, pydicom dataset without pixels)`` of every file; DicomError naming a file pydicom cannot read."""
    import pydicom

    out = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:
            raise DicomError(f"holds '{path}', which pydicom cannot read ({type(e).__name__}: {e})") from e
        if str(getattr(ds.file_meta, "MediaStorageSOPClassUID", ds.get("SOPClassUID", ""))) == _DICOMDIR_CLASS:
            continue
        out.append((path, ds))
    return out


def _series_groups(base: str) -> dict[str, list[tuple[str, Any]]]:
    groups: dict[str, list[tuple[str, Any]]] = {}
    for path, ds in _headers(_source_files(base)):
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    return groups


def list_series(path: str | os.PathLike) -> list[dict]:
    """The series of a DICOM folder / DICOMDIR / file: ``[{"uid", "number", "description", "modality", "files",
    "patient"}, ...]`` sorted by SeriesNumber then UID.

    Raises:
        DicomError: nothing readable there.
    """
    base, _ = split_series(path)
    out = []
    for uid, members in _series_groups(base).items():
        ds = members[0][1]
        out.append(
            {
                "uid": uid,
                "number": ds.get("SeriesNumber"),
                "description": str(ds.get("SeriesDescription", "")),
                "modality": str(ds.get("Modality", "")),
                "patient": str(ds.get("PatientID", "")),
                "files": len(members),
            }
        )
    return sorted(out, key=lambda s: (s["number"] is None, s["number"] or 0, s["uid"]))


def _listing(series: Sequence[dict]) -> str:
    return "; ".join(
        f"{s['uid']} (series {s['number']}, {s['modality']} {s['description']!r}, {s['files']} files)" for s in series
    )


def expand_series(path: str | os.PathLike, series: str | None = None) -> list[str]:
    """The DICOM scan names of ``path``: itself when it holds one series (or names one with ``#UID``); with several
    series, ``series="all"`` gives every ``path#UID``, ``series=UID`` that one, and None refuses, listing them.

    Raises:
        ValueError: naming ``path``: several series and no choice, or the chosen series is not there.
    """
    path = os.fspath(path)
    base, selected = split_series(path)
    try:
        found = list_series(base)
    except DicomError as e:
        raise ValueError(f"'{path}' {e}.") from e
    uids = [s["uid"] for s in found]
    wanted = selected or (series if series not in (None, "all") else None)
    if wanted is not None:
        if wanted not in uids:
            raise ValueError(f"'{base}' holds no series {wanted}; it holds {_listing(found)}.")
        return [base if len(uids) == 1 else f"{base}{SERIES_SEPARATOR}{wanted}"]
    if len(uids) == 1:
        return [base]
    if series == "all":
        return [f"{base}{SERIES_SEPARATOR}{uid}" for uid in uids]
    raise ValueError(
        f"'{base}' holds {len(uids)} DICOM series: {_listing(found)}. Choose one with --series UID (or "
        f"'{base}{SERIES_SEPARATOR}UID'), or --series all to process each."
    )


# ---------------------------------------------------------------------------------------------- geometry / header


def _functional(ds: Any, frame: int | None, sequence: str, attribute: str) -> Any:
    """An attribute of a multi-frame file's functional groups (per frame first, then shared), or of the dataset."""
    if frame is not None:
        for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            items = ds.get(groups)
            if not items:
                continue
            item = items[frame] if groups.startswith("PerFrame") else items[0]
            inner = item.get(sequence)
            if inner and attribute in inner[0]:
                return inner[0].get(attribute)
    return ds.get(attribute)


@dataclass
class _Slice:
    file: str
    frame: int | None  # index of the frame in a multi-frame file
    position: np.ndarray  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray  # ImageOrientationPatient (row cosines, column cosines)
    spacing: tuple[float, float]  # PixelSpacing (between rows, between columns)
    slope: float
    intercept: float


@dataclass
class DicomSeries:
    """One DICOM series as a volume, from its headers (:func:`open_series`).

    Attributes:
        name: the scan name (folder / file / DICOMDIR, with ``#UID`` when one was given).
        files: every file read (sorted, unique).
        slices: per slice along the normal: ``(file, frame index or None)``.
        shape: ``(I, J, K)`` = (Columns, Rows, slices).
        affine: 4x4 RAS voxel-to-world matrix of ``[I, J, K]``.
        stored_dtype: the pixel type on disk (BitsAllocated, PixelRepresentation).
        dtype: the type that holds the rescaled values exactly (int16 / int32, float32 for a fractional rescale).
        slope, intercept: per slice RescaleSlope / RescaleIntercept (1 / 0 when absent).
        template: the pydicom dataset of the first slice (no pixels): patient, study, series modules.
        multiframe: whether the series is one multi-frame file.
    """

    name: str
    files: list[str]
    slices: list[tuple[str, int | None]]
    shape: tuple[int, int, int]
    affine: np.ndarray
    stored_dtype: np.dtype
    dtype: np.dtype
    slope: np.ndarray
    intercept: np.ndarray
    template: Any
    multiframe: bool = False
    bits_stored: int = 16
    thickness: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def modality(self) -> str:
        """``"ct"``, ``"mr"`` or ``"auto"`` from the Modality attribute."""
        return {"CT": "ct", "MR": "mr"}.get(str(self.template.get("Modality", "")).upper(), "auto")


def _check_image(ds: Any) -> None:
    """Refuse what is not a grey-value image with patient geometry (colour, secondary capture, no pixels)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class.startswith(_SECONDARY_CAPTURE):
        raise DicomError(
            "is a secondary capture (SOP class {}): a picture of an image, without the patient geometry a volume "
            "needs".format(sop_class)
        )
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise DicomError(
            f"is a colour image (SamplesPerPixel = {samples}, PhotometricInterpretation = {photometric}): a grey-value "
            "CT / MR series is expected"
        )
    if "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
        raise DicomError("has no image pixels (Rows / Columns / BitsAllocated missing)")
    syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise DicomError(
                f"has compressed pixel data ({syntax.name}, {syntax}) that no installed decoder reads: install one "
                "(e.g. pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm) or decompress "
                "it first (gdcmconv --raw, dcmdjpeg)"
            )


def _slices_of(path: str, ds: Any) -> list[_Slice]:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    multi = frames > 1 or "PerFrameFunctionalGroupsSequence" in ds
    out = []
    for frame in range(frames) if multi else [None]:
        position = _functional(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _functional(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _functional(ds, frame, "PixelMeasuresSequence", "PixelSpacing")
        where = f"'{path}'" + (f" frame {frame + 1}" if frame is not None else "")
        if position is None or orientation is None or spacing is None:
            missing = [n for n, v in (("ImagePositionPatient", position), ("ImageOrientationPatient", orientation),
                                      ("PixelSpacing", spacing)) if v is None]  # fmt: skip
            raise DicomError(f"has no patient geometry in {where} ({', '.join(missing)} missing)")
        slope = _functional(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
        out.append(
            _Slice(
                path, frame, np.array([float(v) for v in position]), np.array([float(v) for v in orientation]),
                (float(spacing[0]), float(spacing[1])), 1.0 if slope is None else float(slope),
                0.0 if intercept is None else float(intercept),
            )
        )  # fmt: skip
    return out


def _rescaled_dtype(stored: np.dtype, bits: int, slopes: np.ndarray, intercepts: np.ndarray) -> np.dtype:
    """The smallest of int16 / int32 holding every rescaled value of ``bits`` stored bits, float32 otherwise."""
    integral = np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts))
    if not integral:
        return np.dtype(np.float32)
    signed = np.issubdtype(stored, np.signedinteger)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = np.concatenate([low * slopes + intercepts, high * slopes + intercepts])
    for dtype in (np.int16, np.int32):
        if np.iinfo(dtype).min <= ends.min() and ends.max() <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.float32)


def open_series(path: str | os.PathLike) -> DicomSeries:
    """The headers of a DICOM scan as one regular volume (no pixels read).

    Raises:
        DicomError: the reason the scan is not one volume (see the module docstring); the caller names ``path``.
    """
    name = os.fspath(path)
    base, uid = split_series(name)
    groups = _series_groups(base)
    if not groups:
        raise DicomError("holds no DICOM image")
    if uid is None and len(groups) > 1:
        raise DicomError(
            f"holds {len(groups)} DICOM series ({_listing(list_series(base))}): choose one with "
            f"'{base}{SERIES_SEPARATOR}UID' or --series"
        )
    if uid is not None and uid not in groups:
        raise DicomError(f"holds no series {uid}")
    members = groups[uid] if uid is not None else next(iter(groups.values()))
    for _, ds in members:
        _check_image(ds)
    template = members[0][1]
    multiframe = len(members) == 1 and int(template.get("NumberOfFrames", 1) or 1) > 1
    slices = [s for path_, ds in members for s in _slices_of(path_, ds)]
    if len(slices) < 2:
        raise DicomError("holds a single image (one slice): a 3D volume of several slices is expected")
    for key in ("Rows", "Columns", "BitsAllocated", "PixelRepresentation", "BitsStored"):
        values = sorted({str(ds.get(key)) for _, ds in members})
        if len(values) > 1:
            raise DicomError(f"has slices with different {key} ({', '.join(values)}): not one volume")
    orientations = np.array([s.orientation for s in slices])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        distinct = np.unique(np.round(orientations, 3), axis=0)
        raise DicomError(
            f"has slices of {len(distinct)} different orientations (ImageOrientationPatient "
            f"{' / '.join(str(o.tolist()) for o in distinct[:3])}): mixed orientations (e.g. a localizer) are not "
            "one volume; pick the files of one orientation"
        )
    spacings = np.array([s.spacing for s in slices])
    if np.abs(spacings - spacings[0]).max() > 1e-4:
        raise DicomError(f"has slices with different PixelSpacing ({np.unique(spacings, axis=0).tolist()})")
    row, column = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, column)
    if abs(np.linalg.norm(normal) - 1.0) > 1e-3 or abs(float(row @ column)) > 1e-3:
        raise DicomError(f"has a non-orthonormal ImageOrientationPatient ({orientations[0].tolist()})")
    positions = np.array([s.position for s in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices, positions, along = [slices[i] for i in order], positions[order], along[order]
    steps = np.diff(along)
    if np.any(steps < 1e-3):
        k = int(np.argmax(steps < 1e-3))
        raise DicomError(
            f"has two slices at the same position ({along[k]:.3f} mm along the normal: '{slices[k].file}' and "
            f"'{slices[k + 1].file}'): several acquisitions or time points in one series are not one volume"
        )
    offsets = positions - positions[0] - np.outer(along - along[0], normal)
    shear = float(np.linalg.norm(offsets, axis=1).max())
    if shear > max(1e-2, ORIENTATION_TOLERANCE * float(along[-1] - along[0])):
        tilt = np.degrees(np.arctan2(np.linalg.norm(offsets[-1]), along[-1] - along[0]))
        raise DicomError(
            f"has a gantry tilt (slices shifted {shear:.2f} mm sideways against their normal, about {tilt:.1f} "
            "degrees): a sheared grid is not a volume; resample it first (e.g. dcm2niix corrects tilt)"
        )
    step = float(np.median(steps))
    deviation = np.abs(along - along[0] - step * np.arange(len(along)))
    if deviation.max() > max(1e-2, SPACING_TOLERANCE * step):
        k = int(np.argmax(np.abs(steps - step) > max(1e-2, SPACING_TOLERANCE * step)))
        raise DicomError(
            f"has uneven slice spacing: {steps[k]:.3f} mm between '{slices[k].file}' and '{slices[k + 1].file}' "
            f"where the series' spacing is {step:.3f} mm (missing slices?); tolerance {SPACING_TOLERANCE:.0%}"
        )
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row * spacings[0][1]  # I: along a row, the column spacing
    affine_lps[:3, 1] = column * spacings[0][0]  # J: down a column, the row spacing
    affine_lps[:3, 2] = normal * (along[-1] - along[0]) / (len(along) - 1)
    affine_lps[:3, 3] = positions[0]
    bits = int(template.get("BitsAllocated"))
    signed = int(template.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32):
        raise DicomError(f"has {bits} bits per pixel (8, 16 or 32 expected)")
    stored = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    slope = np.array([s.slope for s in slices])
    intercept = np.array([s.intercept for s in slices])
    bits_stored = int(template.get("BitsStored", bits))
    thickness = _functional(template, 0 if multiframe else None, "PixelMeasuresSequence", "SliceThickness")
    return DicomSeries(
        name=name,
        files=sorted({s.file for s in slices}),
        slices=[(s.file, s.frame) for s in slices],
        shape=(int(template.Columns), int(template.Rows), len(slices)),
        affine=LPS_TO_RAS @ affine_lps,
        stored_dtype=stored,
        dtype=_rescaled_dtype(stored, bits_stored, slope, intercept),
        slope=slope,
        intercept=intercept,
        template=template,
        multiframe=multiframe,
        bits_stored=bits_stored,
        thickness=None if thickness is None else float(thickness),
    )


def read_series(path: str | os.PathLike) -> tuple[DicomSeries, np.ndarray]:
    """The series and its voxels ``[I, J, K]`` in real units (rescaled; HU for CT) as :attr:`DicomSeries.dtype`.

    Raises:
        DicomError: see :func:`open_series`, or a file's pixels cannot be decoded.
    """
    import pydicom

    series = open_series(path)
    volume = np.empty(series.shape, dtype=series.dtype)
    cache: dict[str, np.ndarray] = {}
    for k, (file, frame) in enumerate(series.slices):
        if file not in cache:
            try:
                ds = pydicom.dcmread(file)
                pixels = ds.pixel_array
            except Exception as e:
                raise DicomError(f"holds '{file}', whose pixels cannot be decoded ({type(e).__name__}: {e})") from e
            cache = {file: pixels}  # a multi-frame file is decoded once; single frames are not kept
        pixels = cache[file] if frame is None else cache[file][frame]
        if pixels.shape != (series.shape[1], series.shape[0]):
            raise DicomError(f"holds '{file}' with {pixels.shape} pixels where Rows x Columns is {series.shape[1::-1]}")
        values = pixels.astype(np.float64) * series.slope[k] + series.intercept[k]
        volume[:, :, k] = values.T if series.dtype.kind == "f" else np.rint(values).T
    return series, volume


# ---------------------------------------------------------------------------------------------- writing


class DicomSeriesStream:
    """Write a volume ``[I, J, K]`` as a new DICOM series, one file per slice ``k``, slab by slab in order.

    Args:
        folder: the output folder (created; one ``IM<k>.dcm`` per slice).
        shape: ``(I, J, K)`` of the output.
        affine: its 4x4 RAS voxel-to-world matrix (columns: I, J along the slice plane, K along the normal).
        like: the input series (:class:`DicomSeries`): patient / study modules, pixel type, rescale and window.
        description: what was done, for DerivationDescription and SeriesDescription (e.g. ``"in-plane SR x2"``).
    """

    def __init__(
        self, folder: str, shape: Sequence[int], affine: np.ndarray, like: DicomSeries, description: str = ""
    ) -> None:
        from pydicom.uid import generate_uid

        self.folder, self.shape, self.like = folder, tuple(int(s) for s in shape), like
        slopes, intercepts = np.unique(like.slope), np.unique(like.intercept)
        if slopes.size > 1 or intercepts.size > 1:
            raise DicomError(
                "has a RescaleSlope / RescaleIntercept that changes from slice to slice: its rescale cannot be kept "
                "for new slices; write another format (--output-format nii.gz)"
            )
        self.slope, self.intercept = float(slopes[0]), float(intercepts[0])
        info = np.iinfo(like.stored_dtype)
        bits = like.bits_stored
        self.low, self.high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if info.min < 0 else (0, 2**bits - 1)
        affine_lps = LPS_TO_RAS @ np.asarray(affine, float)
        self.spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
        self.axes = affine_lps[:3, :3] / self.spacing
        self.origin = affine_lps[:3, 3]
        self.description = description or "super-resolved"
        self.series_uid = generate_uid()
        self.now = datetime.datetime.now()
        self.written = 0
        self.files: list[str] = []
        os.makedirs(folder)

    def _dataset(self, k: int, pixels: np.ndarray) -> Any:
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        like = self.like.template
        ds = Dataset()
        for element in like:
            if element.tag.is_private or element.keyword in _NOT_KEPT or element.tag.group == 0x0002:
                continue
            ds.add(copy.deepcopy(element))
        modality = str(like.get("Modality", "")).upper()
        if self.like.multiframe or str(like.get("SOPClassUID", "")) in _ENHANCED_CLASS:
            if modality not in _CLASSIC_CLASS:
                raise DicomError(f"is a multi-frame {modality} image: only CT and MR can be written as a DICOM series")
            ds.SOPClassUID = _CLASSIC_CLASS[modality]
            for key in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
                value = _functional(like, 0, _GROUP_OF[key], key)
                if value is not None:
                    setattr(ds, key, value)
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = self.series_uid
        kind = [str(v) for v in (like.get("ImageType") or [])]
        ds.ImageType = ["DERIVED", "SECONDARY"] + [v for v in kind[2:3] if v] or ["DERIVED", "SECONDARY"]
        ds.SeriesDescription = f"{like.get('SeriesDescription', '')} [LSTMAGAN {self.description}]".strip()[:64]
        ds.DerivationDescription = (
            f"{self.description} by monai_lstmagan (LSTMAGAN generator) of series {like.get('SeriesInstanceUID', '')}"
        )[:1024]
        if "SeriesNumber" in like and like.SeriesNumber is not None:
            ds.SeriesNumber = int(like.SeriesNumber) + 1000
        ds.InstanceNumber = k + 1
        ds.ContentDate, ds.ContentTime = self.now.strftime("%Y%m%d"), self.now.strftime("%H%M%S")
        ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
        ds.PixelSpacing = [f"{self.spacing[1]:.10g}", f"{self.spacing[0]:.10g}"]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in np.concatenate([self.axes[:, 0], self.axes[:, 1]])]
        position = self.origin + self.axes[:, 2] * self.spacing[2] * k
        ds.ImagePositionPatient = [f"{v:.10g}" for v in position]
        ds.SpacingBetweenSlices = f"{self.spacing[2]:.10g}"
        step = float(np.linalg.norm(self.like.affine[:3, 2]))
        same = abs(step - self.spacing[2]) < 1e-6 and self.like.thickness is not None
        ds.SliceThickness = f"{(self.like.thickness if same else self.spacing[2]):.10g}"
        ds.RescaleSlope, ds.RescaleIntercept = f"{self.slope:.10g}", f"{self.intercept:.10g}"
        if "RescaleType" not in ds and modality == "CT":
            ds.RescaleType = "HU"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, str(like.get("PhotometricInterpretation", "MONOCHROME2"))
        ds.BitsAllocated = self.like.stored_dtype.itemsize * 8
        ds.BitsStored, ds.HighBit = self.like.bits_stored, self.like.bits_stored - 1
        ds.PixelRepresentation = int(np.issubdtype(self.like.stored_dtype, np.signedinteger))
        ds.PixelData = np.ascontiguousarray(pixels.astype(self.like.stored_dtype.newbyteorder("<"))).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        return ds

    def write(self, values: np.ndarray) -> None:
        """Write the next slices ``values`` ``[I, J, n]`` (real units: HU for CT), stored with the input's rescale."""
        stored = np.clip(np.rint((np.asarray(values, np.float64) - self.intercept) / self.slope), self.low, self.high)
        for n in range(stored.shape[2]):
            k = self.written
            path = os.path.join(self.folder, f"IM{k + 1:06d}.dcm")
            self._dataset(k, stored[:, :, n].T).save_as(path, enforce_file_format=True)
            self.files.append(path)
            self.written += 1

    def close(self) -> None:
        """Check every slice was written."""
        if self.written != self.shape[2]:
            raise ValueError(f"'{self.folder}': {self.written} of {self.shape[2]} slices were written.")

    def abort(self) -> None:
        """Remove the folder and what was written."""
        shutil.rmtree(self.folder, ignore_errors=True)


_GROUP_OF = {
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "WindowCenter": "FrameVOILUTSequence",
    "WindowWidth": "FrameVOILUTSequence",
}
