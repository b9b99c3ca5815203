"""The one writer of volume files, slab by slab: :class:`ScanWriter` (and :func:`to_voxel_type`).

A super-resolved volume can be far larger than its input (x4 of a 512x512x400 CT: 2048x2048x400 voxels, 3.4 GB
as int16), so it is written as it is produced, one slab of slices along the last file axis ``K`` at a time,
instead of being assembled in memory first. Every format the package writes stores those slabs contiguously
(``i`` fastest, ``k`` slowest), so most outputs are a header followed by a stream of slabs:

- NIfTI (``.nii``; ``.nii.gz`` as one gzip stream): nibabel's header, then the voxels written by nibabel's own
  array writer per slab (same byte order, rounding and clipping as ``nib.save``);
- MetaImage (``.mhd`` + ``.raw``, or ``.zraw`` as one zlib stream when the input was compressed; ``.mha`` with the
  voxels after the header): the header is written when the data is complete (its ``CompressedDataSize`` is then
  known; a ``.mha`` reserves the space for it);
- NRRD (``.nrrd``, raw or gzip encoding as the input);
- DICOM (an output path without a volume suffix, for a DICOM input): a folder of one file per slice ``k``
  (:class:`monai_lstmagan.io.dicom.DicomSeriesStream`), a new series of the input's study in its pixel type and
  rescale.

Slabs that cannot go straight to the stream are kept in a *spool*, a memory-mapped raw file beside the output
(removed on close), and streamed out when the volume is complete: slabs along another axis or out of order (a
file whose axial axis is not its last one, or runs from head to feet), and float voxels stored as integers with
a NIfTI scaling (``scl_slope`` / ``scl_inter``, chosen by nibabel from the range of the whole volume). A detached
NRRD header (``.nhdr``) is written by ITK from the complete volume.

The writer writes where it is told: callers put the files in the temporary folder of
:func:`monai_lstmagan.io.atomic.atomic_files`, which moves them into place together (or removes them) and holds
signals while it does; a failed write (``OSError``: a full disk, a file size limit) names the output there.
:func:`monai_lstmagan.io.scans.write_scan` is :class:`ScanWriter` given the whole volume as one slab.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import IO, TYPE_CHECKING, Any

import itk
import nibabel as nib
import numpy as np
from nibabel.arraywriters import ArrayWriter, SlopeInterArrayWriter, get_slope_inter, make_array_writer

from monai_lstmagan.io.dicom import DICOM_FORMAT, DicomSeriesStream
from monai_lstmagan.io.geometry import LPS_TO_RAS
from monai_lstmagan.io.paths import NIFTI_SUFFIXES, volume_suffix

if TYPE_CHECKING:  # the reader's Scan; no import at run time (scans imports this module)
    from monai_lstmagan.io.scans import Scan

__all__ = ["to_voxel_type", "ScanWriter", "STREAMED_SUFFIXES", "spool_needed"]

#: Output formats written slab by slab (``.nhdr``: by ITK from the whole volume; ``"dicom"``: a file per slice).
STREAMED_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", DICOM_FORMAT)

_MET_TYPES = {
    "int8": "MET_CHAR", "uint8": "MET_UCHAR", "int16": "MET_SHORT", "uint16": "MET_USHORT", "int32": "MET_INT",
    "uint32": "MET_UINT", "int64": "MET_LONG_LONG", "uint64": "MET_ULONG_LONG", "float32": "MET_FLOAT",
    "float64": "MET_DOUBLE",
}  # fmt: skip
_NRRD_TYPES = {
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16", "int32": "int32", "uint32": "uint32",
    "int64": "int64", "uint64": "uint64", "float32": "float", "float64": "double",
}  # fmt: skip
_GZIP_LEVEL = 1  # nibabel's default for .nii.gz: the fastest level, most of the gain
_ZLIB_LEVEL = 6  # ITK's MetaImage writer's default
_SIZE_FIELD = 20  # characters reserved for CompressedDataSize in a .mha header
_SPOOL_SLAB_BYTES = 1 << 26  # bytes of spooled voxels streamed out at a time


def to_voxel_type(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` stored as ``dtype``: integer types are rounded and clipped to their range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _nifti_scaled(path: str, values_dtype: np.dtype, dtype: np.dtype, like: Scan | None) -> bool:
    """Whether nibabel chooses a scaling: a NIfTI written like a NIfTI input, with values of another type."""
    has_header = like is not None and like.header is not None
    return volume_suffix(path) in NIFTI_SUFFIXES and has_header and np.dtype(values_dtype) != np.dtype(dtype)


def spool_needed(path: str, values_dtype: np.dtype, dtype: np.dtype, like: Scan | None, in_order: bool) -> bool:
    """Whether :class:`ScanWriter` keeps the whole volume in a spool file beside ``path`` before writing it: slabs
    not in order along the last axis (``in_order=False``), a NIfTI scaling chosen from the whole volume, or a format
    that is not streamed (``.nhdr``). Used to size the disk a write needs."""
    streamed = _output_format(path) in STREAMED_SUFFIXES
    return not in_order or not streamed or _nifti_scaled(path, values_dtype, dtype, like)


def _output_format(path: str) -> str:
    """The format an output path is written in: its volume suffix, else DICOM (a folder of slices)."""
    return volume_suffix(path) or DICOM_FORMAT


def _lps_geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(spacing, direction [3, 3], origin)`` in ITK's LPS world of a RAS ``affine``."""
    affine_lps = LPS_TO_RAS @ np.asarray(affine, float)
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    return spacing, affine_lps[:3, :3] / spacing, affine_lps[:3, 3]


def _numbers(values) -> str:
    return " ".join(repr(float(v)) for v in np.ravel(values))


class ScanWriter:
    """Write a 3D volume ``[I, J, K]`` (file index order) to ``path`` as it is produced, slab by slab along ``K``.

    ``with ScanWriter(...) as writer: writer.write(slab, start)`` for ``start = 0, n, 2n, ...``; on a clean exit
    the file is complete (every voxel must have been written), on an error the partial files are removed.

    Args:
        path: the file to write (``.nii``/``.nii.gz``, ``.mhd``/``.mha``, ``.nrrd``: streamed; ``.nhdr``: by ITK).
        shape: ``(I, J, K)`` of the whole volume.
        affine: 4x4 voxel-to-world matrix in RAS.
        dtype: the stored voxel type.
        like: the scan read from the input, whose header (NIfTI: codes, units, description) and compression (the
            other formats) the output keeps; None: a plain header, uncompressed unless ``.nii.gz``.
        values_dtype: the type of the slabs given (None: ``dtype``). With a NIfTI ``like``, values of another type
            than ``dtype`` are stored with a scaling chosen by nibabel from the whole volume (a scaled input keeps
            its real units); otherwise they are rounded and clipped (:func:`to_voxel_type`).
        description: what made the volume, recorded in a DICOM output (DerivationDescription, SeriesDescription).

    A ``path`` without a volume suffix is a DICOM output (a folder), for a DICOM ``like`` only: its pixels are
    stored in the input's pixel type and rescale (``dtype`` is not used).
    """

    def __init__(
        self,
        path: str,
        shape: tuple[int, int, int],
        affine: np.ndarray,
        dtype: np.dtype,
        like: Scan | None = None,
        values_dtype: np.dtype | None = None,
        description: str = "",
    ) -> None:
        self.path, self.shape, self.affine, self.like = path, tuple(int(s) for s in shape), np.asarray(affine), like
        self.dtype = np.dtype(dtype)
        self.values_dtype = self.dtype if values_dtype is None else np.dtype(values_dtype)
        self.suffix = _output_format(path)
        self.description = description
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"'{path}': a 3D volume with voxels is expected, got shape {self.shape}.")
        if self.suffix == DICOM_FORMAT and (like is None or like.dicom is None):
            source = like.path if like is not None else path
            raise ValueError(
                f"'{source}': a DICOM output is written from a DICOM input only (its patient and study are kept); "
                "choose another --output-format (e.g. nii.gz)."
            )
        self.scaled = _nifti_scaled(path, self.values_dtype, self.dtype, like)
        unwritable = self.suffix not in NIFTI_SUFFIXES + (".nhdr", DICOM_FORMAT) and self.dtype.name not in _MET_TYPES
        if unwritable:
            source = like.path if like is not None else path
            raise ValueError(
                f"'{source}': cannot write voxel type {self.dtype} to {self.suffix}; choose another output dtype "
                "(e.g. --output-dtype int16 or float32)."
            )
        self.compressed = self.suffix == ".nii.gz" or (
            self.suffix not in NIFTI_SUFFIXES + (DICOM_FORMAT,) and like is not None and like.compressed
        )
        self._next = 0  # slices streamed so far
        self._spooled = 0  # voxels in the spool
        self._whole: np.ndarray | None = None  # one write of the whole volume, kept instead of a spool
        self._spool: np.ndarray | None = None
        self._spool_path = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.spool")
        self._range = [np.inf, -np.inf]
        self._files: list[IO] = []
        self._raw: IO | None = None  # the file the voxel bytes go to
        self._stream: Any = None  # what the voxel bytes are written to (the file, or a compressor on it)
        self._data_start = 0
        self._nifti_header: Any = None
        self._finished = False

    # ------------------------------------------------------------------ slabs in

    def write(self, values: np.ndarray, start: int, stop: int | None = None, axis: int = 2) -> None:
        """Write ``values``, the voxels ``start:stop`` along ``axis`` (default the last, ``K``) of the volume.

        Args:
            values: ``[I, J, stop - start]`` for ``axis=2`` (the full extent of the other axes), in
                ``values_dtype``'s units.
            start, stop: the slab's index range along ``axis`` (``stop`` default: ``start + values.shape[axis]``).
            axis: the file axis the slab is cut along.
        """
        values = np.asarray(values)
        stop = start + values.shape[axis] if stop is None else stop
        expected = list(self.shape)
        expected[axis] = stop - start
        if tuple(values.shape) != tuple(expected) or start < 0 or stop > self.shape[axis]:
            raise ValueError(
                f"'{self.path}': a slab of shape {tuple(values.shape)} at {start}:{stop} along axis {axis} does "
                f"not fit a volume of shape {self.shape}."
            )
        if self.scaled:
            self._range = [min(self._range[0], float(values.min())), max(self._range[1], float(values.max()))]
        streams = axis == 2 and start == self._next and self._spool is None and self._whole is None
        if streams and not spool_needed(self.path, self.values_dtype, self.dtype, self.like, True):
            if self._stream is None:
                self._open_stream()
            self._stream_slab(values)
            self._next = stop
            return
        if self._spool is None and self._whole is None and self._next == 0 and values.shape == self.shape:
            self._whole = values  # the whole volume in one write: nothing to spool
            self._spooled = values.size
            return
        if self._spool is None:
            self._open_spool()
        index = [slice(None)] * 3
        index[axis] = slice(start, stop)
        self._spool[tuple(index)] = values
        self._spooled += values.size

    def _open_spool(self) -> None:
        """The memory-mapped spool of the whole volume (Fortran order: ``K`` slabs contiguous), with what was
        streamed so far copied back into it (only before the header is written: nothing is streamed then)."""
        if self._next:  # slabs already streamed, then one out of order: stream nothing more, restart from a spool
            raise ValueError(
                f"'{self.path}': slabs must come in order along the last axis once streaming has begun (got one "
                f"out of order after {self._next} slices)."
            )
        self._spool = np.memmap(self._spool_path, dtype=self.values_dtype, mode="w+", shape=self.shape, order="F")

    # ------------------------------------------------------------------ bytes out

    def _open(self, path: str, mode: str = "wb") -> IO:
        f = open(path, mode)
        self._files.append(f)
        return f

    def _data_path(self) -> str:
        """The file the voxels go to: the output itself, or the ``.raw`` / ``.zraw`` beside a ``.mhd``."""
        if self.suffix != ".mhd":
            return self.path
        return self.path[: -len(".mhd")] + (".zraw" if self.compressed else ".raw")

    def _open_stream(self, scaling: tuple[float, float] | None = None) -> None:
        """Open the output, write what comes before the voxels and set up the voxel stream."""
        if self.suffix == DICOM_FORMAT:
            self._stream = DicomSeriesStream(self.path, self.shape, self.affine, self.like.dicom, self.description)
            return
        self._raw = self._open(self._data_path())
        if self.suffix in NIFTI_SUFFIXES:
            header = self._make_nifti_header(scaling)
            if self.compressed:
                self._stream = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0)
            else:
                self._stream = self._raw
            header.write_to(self._stream)
            offset = int(header.get_data_offset())
            written = 348 + 4 + header.extensions.get_sizeondisk()
            self._stream.write(b"\x00" * max(0, offset - written))
            self._nifti_header = header
            return
        if self.suffix == ".mha":
            self._raw.write(self._metaimage_header("LOCAL", reserve=self.compressed).encode("latin-1"))
            self._data_start = self._raw.tell()
        elif self.suffix == ".nrrd":
            self._raw.write(self._nrrd_header().encode("latin-1"))
        if self.compressed and self.suffix == ".nrrd":
            self._stream = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=_ZLIB_LEVEL, mtime=0)
        elif self.compressed:
            self._stream = _ZlibStream(self._raw, _ZLIB_LEVEL)
        else:
            self._stream = self._raw

    def _make_nifti_header(self, scaling: tuple[float, float] | None) -> Any:
        """nibabel's header of the output, as ``write_scan`` made it before (codes and units of ``like``)."""
        template = np.broadcast_to(np.zeros((), self.dtype), self.shape)  # no voxels allocated
        if self.like is not None and self.like.header is not None:
            header = self.like.header.copy()
            header.set_data_dtype(self.dtype)
            image = nib.Nifti1Image(template, self.affine, header=header)
            sform_code, qform_code = int(self.like.header["sform_code"]), int(self.like.header["qform_code"])
            if sform_code or qform_code:
                image.set_sform(self.affine, code=sform_code)
                image.set_qform(self.affine, code=qform_code)
        else:
            image = nib.Nifti1Image(template, self.affine)
        image.update_header()
        header = image.header
        header.set_data_shape(self.shape)
        header.set_data_offset(0)  # nibabel sets the smallest offset after the extensions
        header.set_slope_inter(*(scaling if scaling is not None else (1.0, 0.0)))
        return header

    def _metaimage_header(self, data_file: str, reserve: bool = False, compressed_size: int | None = None) -> str:
        spacing, direction, origin = _lps_geometry(self.affine)
        lines = [
            "ObjectType = Image",
            "NDims = 3",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = False",
            f"CompressedData = {'True' if self.compressed else 'False'}",
        ]
        if self.compressed:
            size = "" if compressed_size is None else str(compressed_size)
            lines.append(f"CompressedDataSize = {size.ljust(_SIZE_FIELD) if reserve else size}")
        lines += [
            f"TransformMatrix = {_numbers(direction.T)}",  # MetaIO: the direction matrix by columns
            f"Offset = {_numbers(origin)}",
            "CenterOfRotation = 0 0 0",
            f"ElementSpacing = {_numbers(spacing)}",
            f"DimSize = {' '.join(str(s) for s in self.shape)}",
            f"ElementType = {_MET_TYPES[self.dtype.name]}",
            f"ElementDataFile = {data_file}",
        ]
        return "\n".join(lines) + "\n"

    def _nrrd_header(self) -> str:
        spacing, direction, origin = _lps_geometry(self.affine)
        axes = direction * spacing
        vectors = " ".join("(" + ",".join(repr(float(v)) for v in axes[:, a]) + ")" for a in range(3))
        return "\n".join(
            [
                "NRRD0004",
                f"type: {_NRRD_TYPES[self.dtype.name]}",
                "dimension: 3",
                "space: left-posterior-superior",
                f"sizes: {' '.join(str(s) for s in self.shape)}",
                f"space directions: {vectors}",
                "kinds: domain domain domain",
                "endian: little",
                f"encoding: {'gzip' if self.compressed else 'raw'}",
                "space origin: (" + ",".join(repr(float(v)) for v in origin) + ")",
                "",
                "",
            ]
        )

    def _stream_slab(self, values: np.ndarray, scaling: tuple[float, float] | None = None) -> None:
        """Append a ``[I, J, n]`` slab to the voxel stream in the stored type."""
        if self.suffix == DICOM_FORMAT:
            self._stream.write(values)
            return
        if self.suffix in NIFTI_SUFFIXES:
            out_dtype = self._nifti_header.get_data_dtype()
            if scaling is None:
                writer = ArrayWriter(values, out_dtype, check_scaling=False)
            else:
                writer = SlopeInterArrayWriter(values, out_dtype, calc_scale=False)
                writer.slope, writer.inter = scaling
            writer.to_fileobj(self._stream, order="F")
            return
        voxels = to_voxel_type(values, self.dtype.newbyteorder("<"))
        self._stream.write(np.asfortranarray(voxels).tobytes(order="F"))

    # ------------------------------------------------------------------ finish

    def close(self) -> None:
        """Finish the file(s): stream the spool out, end the compressed streams, write a header that comes last.

        Raises:
            ValueError: not every voxel was written.
        """
        if self._finished:
            return
        total = int(np.prod(self.shape))
        done = self._next * self.shape[0] * self.shape[1] + self._spooled
        if done != total:
            raise ValueError(f"'{self.path}': {done} of {total} voxels were written; the volume is incomplete.")
        if self.suffix == ".nhdr":
            self._write_with_itk(self._whole if self._whole is not None else self._spool)
        elif self._whole is not None or self._spool is not None:
            self._stream_spooled(self._whole if self._whole is not None else self._spool)
        if self._stream is not None and self._stream is not self._raw:
            self._stream.close()  # the gzip / zlib trailer
        if self.compressed and self.suffix == ".mha":
            size = self._raw.tell() - self._data_start
            self._raw.seek(0)
            self._raw.write(self._metaimage_header("LOCAL", reserve=True, compressed_size=size).encode("latin-1"))
        if self.suffix == ".mhd":
            size = self._raw.tell()
            with self._open(self.path, "w") as header:
                header.write(self._metaimage_header(os.path.basename(self._data_path()), compressed_size=size))
        for f in self._files:
            f.close()
        self._remove_spool()
        self._finished = True

    def _stream_spooled(self, volume: np.ndarray) -> None:
        """Stream a complete volume (the spool, or one whole write) out in slabs, with the scaling of the whole."""
        scaling = None
        if self.scaled:
            sample = np.array(self._range, dtype=self.values_dtype)  # nibabel's scaling depends on the range only
            chosen = make_array_writer(sample, self._make_nifti_header(None).get_data_dtype(), True, True)
            slope, inter = get_slope_inter(chosen)
            scaling = None if slope is None else (float(slope), float(0.0 if inter is None else inter))
        self._open_stream(scaling)
        per_slice = max(1, self.shape[0] * self.shape[1] * volume.dtype.itemsize)
        step = max(1, _SPOOL_SLAB_BYTES // per_slice)
        for start in range(0, self.shape[2], step):
            self._stream_slab(np.asarray(volume[:, :, start : start + step]), scaling)

    def _write_with_itk(self, volume: np.ndarray) -> None:
        """A format not streamed here (a detached NRRD header): ITK writes the whole volume."""
        spacing, direction, origin = _lps_geometry(self.affine)
        image = itk.image_from_array(np.ascontiguousarray(to_voxel_type(np.asarray(volume), self.dtype).T))
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(origin.tolist())
        image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
        itk.imwrite(image, self.path, compression=self.compressed)

    def _remove_spool(self) -> None:
        self._spool = None  # unmapped when the last view goes
        if os.path.exists(self._spool_path):
            os.remove(self._spool_path)

    def abort(self) -> None:
        """Close and remove the files this writer made (after an error)."""
        for f in self._files:
            try:
                f.close()
            except OSError:
                pass
            if os.path.exists(f.name):
                os.remove(f.name)
        if isinstance(self._stream, DicomSeriesStream):
            self._stream.abort()
        self._spool = None
        if os.path.exists(self._spool_path):
            os.remove(self._spool_path)
        self._finished = True

    def __enter__(self) -> ScanWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


class _ZlibStream:
    """A write-only zlib stream (MetaImage's compressed data: ``CompressedData = True``) on a binary file."""

    def __init__(self, raw: IO, level: int) -> None:
        self.raw, self.compressor = raw, zlib.compressobj(level)

    def write(self, data: bytes) -> None:
        self.raw.write(self.compressor.compress(data))

    def close(self) -> None:
        self.raw.write(self.compressor.flush())
