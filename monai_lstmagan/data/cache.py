"""Prepared volumes: the deterministic part of the training pipeline, run once per volume, in RAM or on disk.

Loading, RAS orientation, intensity normalisation and the foreground mask
(:func:`monai_lstmagan.transforms.intensity.volume_transforms`) cost seconds per CT and give the same result
every epoch, so they run once per volume. What is kept of a volume (:class:`PreparedVolume`):

- the voxels after orientation, slice-major ``[Z, X, Y]``, in the smallest type that holds them exactly
  (``int16`` for a CT: half the bytes of float32), normalised when read with the recorded ``low`` / ``high``
  (the same float32 arithmetic as :class:`~monai_lstmagan.transforms.intensity.IntensityNormalizationd`, so a
  crop is bit-identical to the crop of the normalised volume);
- the foreground mask ``[Z, X, Y]`` (``uint8``) and the flat indices of its voxels in ``[X, Y, Z]`` order (the
  order :func:`~monai_lstmagan.transforms.sampling.foreground_voxel` draws from).

Two stores with one interface: :class:`MemoryVolume` (arrays in RAM, for small data such as the demo) and
:class:`DiskVolume` (files in a cache folder, read with ``os.pread``: a block of ``T`` consecutive slices is
one contiguous read, and nothing is mapped into the process, so the resident memory does not grow with the
dataset). A disk entry is a folder ``<cache_dir>/<stem>-<key>`` holding ``image.bin``, ``mask.bin``,
``foreground.bin`` and ``entry.json``; the key hashes the source path, the (size, mtime) of every file of the
scan and the preprocessing (:data:`PREPROCESSING_VERSION`, modality, CT window, MR percentiles), so a changed
source file or preprocessing gets a new entry. Every slice read is checked against the CRC-32 recorded when
the entry was written; a mismatch (a corrupt entry) raises :class:`CorruptCacheEntryError`, and the datasets
rebuild the entry from the source before using it (:func:`rebuild`).

:func:`prepare_volumes` chooses the store (``mode="auto"``: RAM when the estimated size of the prepared
volumes fits ``ram_budget_gb``, else disk), logs the choice, and builds what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import Compose
from monai.utils import convert_to_tensor
from tqdm import tqdm

from monai_lstmagan.data.checks import scan_shapes
from monai_lstmagan.io.atomic import atomic_write_json, default_file_mode, remove_stale_temporaries, temporary_folder
from monai_lstmagan.io.scans import scan_files
from monai_lstmagan.system import available_memory
from monai_lstmagan.transforms.intensity import CT_WINDOW, MR_PERCENTILES, load_transforms, normalize_transforms

__all__ = [
    "PREPROCESSING_VERSION",
    "CACHE_MODES",
    "CorruptCacheEntryError",
    "PreparedVolume",
    "MemoryVolume",
    "DiskVolume",
    "preprocess",
    "entry_key",
    "build_disk_entry",
    "open_disk_entry",
    "rebuild",
    "prepare_volumes",
    "estimated_bytes",
    "cache_summary",
    "VolumeChannel",
    "ForegroundIndices",
    "apply_sample_transforms",
]

logger = logging.getLogger(__name__)

#: Bump when :func:`preprocess` changes what it stores: every disk entry is rebuilt.
PREPROCESSING_VERSION = 1
CACHE_MODES = ("auto", "memory", "disk")
_STORED_TYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32)
_ENTRY_FILES = ("image.bin", "mask.bin", "foreground.bin", "entry.json")


class CorruptCacheEntryError(Exception):
    """A disk cache entry whose files do not match what was recorded when it was written."""


def _stored_type(voxels: np.ndarray) -> np.dtype:
    """The smallest type of :data:`_STORED_TYPES` that represents the float32 ``voxels`` exactly."""
    finite_min, finite_max = float(voxels.min()), float(voxels.max())
    for dtype in _STORED_TYPES[:-1]:
        info = np.iinfo(dtype)
        if info.min <= finite_min and finite_max <= info.max:
            if all(np.array_equal(plane.astype(dtype), plane) for plane in voxels):  # a plane at a time
                return np.dtype(dtype)
    return np.dtype(np.float32)


@dataclass
class PreparedVolume:
    """A preprocessed volume; subclasses say where its arrays live.

    Attributes:
        source: the volume file.
        shape: spatial shape ``(X, Y, Z)`` (RAS, Z axial).
        low, high: the normalisation ``clip((v - low) / (high - low), 0, 1)``.
        modality: ``"ct"`` or ``"mr"``.
        affine: the RAS affine ``[4, 4]``.
        foreground_count: number of foreground voxels.
    """

    source: str
    shape: tuple[int, int, int]
    low: float
    high: float
    modality: str
    affine: list = field(default_factory=list)
    foreground_count: int = 0

    def read_slices(self, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw voxels and mask of the axial slices ``z0 .. z1 - 1``: ``[z1 - z0, X, Y]`` each."""
        raise NotImplementedError

    def foreground_index(self, position: int) -> int:
        """The flat ``[X, Y, Z]`` index of foreground voxel number ``position`` (``0 <= position < count``)."""
        raise NotImplementedError

    def normalize(self, raw: np.ndarray) -> torch.Tensor:
        """Raw voxels -> float32 in [0, 1], the arithmetic of ``IntensityNormalizationd``."""
        return ((torch.from_numpy(raw.astype(np.float32, copy=False)) - self.low) / (self.high - self.low)).clamp_(
            0.0, 1.0
        )

    def stack(self, ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image and mask at the index windows: ``[len(iz), 1, len(ix), len(iy)]`` float32 each.

        Reads only the slices ``min(iz) .. max(iz)`` (one contiguous block for consecutive slices).
        """
        z0, z1 = int(iz.min()), int(iz.max()) + 1
        raw, mask = self.read_slices(z0, z1)
        rows, cols, planes = torch.as_tensor(ix), torch.as_tensor(iy), torch.as_tensor(iz - z0)
        image = self.normalize(raw[planes.numpy()])[:, rows][:, :, cols]
        mask = torch.from_numpy(mask[planes.numpy()])[:, rows][:, :, cols].float()
        return image.unsqueeze(1).contiguous(), mask.unsqueeze(1).contiguous()

    @property
    def bytes(self) -> int:
        """Bytes of the prepared arrays."""
        raise NotImplementedError


class MemoryVolume(PreparedVolume):
    """A prepared volume held in RAM (the arrays of :func:`preprocess`)."""

    def __init__(self, meta: dict, image: np.ndarray, mask: np.ndarray, foreground: np.ndarray) -> None:
        super().__init__(**_volume_fields(meta))
        self.image, self.mask, self.foreground = image, mask, foreground

    def read_slices(self, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
        return self.image[z0:z1], self.mask[z0:z1]

    def foreground_index(self, position: int) -> int:
        return int(self.foreground[position])

    @property
    def bytes(self) -> int:
        return self.image.nbytes + self.mask.nbytes + self.foreground.nbytes


def _volume_fields(meta: dict) -> dict:
    return {
        "source": meta["source"],
        "shape": tuple(int(n) for n in meta["shape"]),
        "low": float(meta["low"]),
        "high": float(meta["high"]),
        "modality": meta["modality"],
        "affine": meta["affine"],
        "foreground_count": int(meta["foreground_count"]),
    }


def _pread(path: str, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    if len(data) != size:
        raise CorruptCacheEntryError(f"cache file '{path}' is truncated ({len(data)} of {size} bytes at {offset}).")
    return data


class DiskVolume(PreparedVolume):
    """A prepared volume in a disk cache entry (see the module docstring); slices are read and CRC-checked."""

    def __init__(self, folder: str, meta: dict) -> None:
        super().__init__(**_volume_fields(meta))
        self.folder = folder
        self.dtype = np.dtype(meta["dtype"])
        self.index_dtype = np.dtype(meta["index_dtype"])
        self.crc = meta["crc"]
        self.requested_modality = meta["requested_modality"]
        self.plane = self.shape[0] * self.shape[1]

    def _slices(self, name: str, dtype: np.dtype, z0: int, z1: int) -> np.ndarray:
        path = os.path.join(self.folder, name)
        step = self.plane * dtype.itemsize
        data = _pread(path, z0 * step, (z1 - z0) * step)
        crcs = self.crc[name]
        for z in range(z0, z1):
            if zlib.crc32(data[(z - z0) * step : (z - z0 + 1) * step]) != crcs[z]:
                raise CorruptCacheEntryError(f"cache file '{path}': slice {z} does not match its checksum.")
        return np.frombuffer(data, dtype=dtype).reshape(z1 - z0, self.shape[0], self.shape[1])

    def read_slices(self, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
        return self._slices("image.bin", self.dtype, z0, z1), self._slices("mask.bin", np.dtype(np.uint8), z0, z1)

    def foreground_index(self, position: int) -> int:
        path = os.path.join(self.folder, "foreground.bin")
        size = self.index_dtype.itemsize
        index = int(np.frombuffer(_pread(path, position * size, size), dtype=self.index_dtype)[0])
        if not 0 <= index < self.plane * self.shape[2]:
            raise CorruptCacheEntryError(f"cache file '{path}': foreground index {index} is outside the volume.")
        return index

    @property
    def bytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.folder, n)) for n in _ENTRY_FILES)


def _flat_indices(mask: np.ndarray, dtype: type) -> np.ndarray:
    """``np.flatnonzero(mask)`` as ``dtype``, an X-plane at a time (no int64 array of the whole volume)."""
    plane = mask.shape[1] * mask.shape[2]
    parts = [np.flatnonzero(mask[x]).astype(dtype) + dtype(x * plane) for x in range(mask.shape[0])]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def preprocess(item: dict, modality: str = "auto") -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Run the deterministic pipeline on one datalist item.

    Returns:
        ``(meta, image, mask, foreground)``: ``image`` ``[Z, X, Y]`` raw voxels after RAS orientation in their
        exact stored type, ``mask`` ``[Z, X, Y]`` uint8, ``foreground`` the flat ``[X, Y, Z]`` indices of the
        mask voxels (int32, or int64 for volumes of 2**31 voxels or more); ``meta`` the fields of
        :class:`PreparedVolume` plus ``dtype`` and ``index_dtype``.
    """
    loaded = load_transforms()(dict(item))
    raw = convert_to_tensor(loaded["image"], track_meta=False).numpy()[0]  # [X, Y, Z] float32
    prepared = normalize_transforms(modality)(loaded)
    image_meta = prepared["image"].meta
    mask = convert_to_tensor(prepared.pop("mask"), track_meta=False).numpy()[0] > 0.5  # [X, Y, Z]
    del prepared, loaded  # the normalised volume and the float mask: only raw voxels, mask and indices are kept
    index_dtype = np.int32 if raw.size < 2**31 else np.int64
    indices = _flat_indices(mask, index_dtype)
    stored = _stored_type(raw)
    meta = {
        "source": os.path.abspath(os.fspath(item["image"])),
        "shape": [int(n) for n in raw.shape],
        "low": float(image_meta["intensity_low"]),
        "high": float(image_meta["intensity_high"]),
        "modality": image_meta["modality"],
        "affine": np.asarray(image_meta["affine"], dtype=np.float64).tolist(),
        "foreground_count": int(indices.size),
        "dtype": stored.name,
        "index_dtype": np.dtype(index_dtype).name,
        "requested_modality": _requested_modality(item, modality),
    }
    image = np.ascontiguousarray(raw.transpose(2, 0, 1).astype(stored))
    del raw
    return meta, image, np.ascontiguousarray(mask.transpose(2, 0, 1).astype(np.uint8)), indices


def _requested_modality(item: dict, modality: str) -> str:
    """The modality the preprocessing is asked for: the item's when "ct" or "mr", else ``modality``."""
    requested = item.get("modality", "auto")
    return requested if requested in ("ct", "mr") else modality


def entry_key(item: dict, modality: str = "auto") -> str:
    """Hex key of an item's disk entry: source path, (size, mtime) of its files, preprocessing."""
    path = os.path.abspath(os.fspath(item["image"]))
    stats = []
    for p in sorted(scan_files(path)):
        st = os.stat(p)
        stats.append([p, st.st_size, st.st_mtime_ns])
    signature = {
        "version": PREPROCESSING_VERSION,
        "files": stats,
        "modality": _requested_modality(item, modality),
        "ct_window": list(CT_WINDOW),
        "mr_percentiles": list(MR_PERCENTILES),
    }
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:20]


def _entry_folder(cache_dir: str, item: dict, modality: str) -> str:
    stem = os.path.basename(os.fspath(item["image"])).split(".")[0][:40] or "volume"
    return os.path.join(cache_dir, f"{stem}-{entry_key(item, modality)}")


def _slice_crcs(array: np.ndarray) -> list[int]:
    return [zlib.crc32(array[z].tobytes()) for z in range(array.shape[0])]


def build_disk_entry(item: dict, cache_dir: str, modality: str = "auto") -> DiskVolume:
    """Preprocess ``item`` into a new disk entry (written in a temporary folder, then renamed into place)."""
    folder = _entry_folder(cache_dir, item, modality)
    meta, image, mask, foreground = preprocess(item, modality)
    meta["crc"] = {
        "image.bin": _slice_crcs(image),
        "mask.bin": _slice_crcs(mask),
        "foreground.bin": zlib.crc32(foreground.tobytes()),
    }
    os.makedirs(cache_dir, exist_ok=True)
    tmp = temporary_folder(cache_dir)
    try:
        for name, array in (("image.bin", image), ("mask.bin", mask), ("foreground.bin", foreground)):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(array.tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(os.path.join(tmp, name), default_file_mode())
        atomic_write_json(meta, os.path.join(tmp, "entry.json"), what="cache entry")
        file_mode = default_file_mode()
        os.chmod(tmp, file_mode | (file_mode & 0o444) >> 2)  # rw-r--r-- -> rwxr-xr-x
        if os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process renamed its copy of the same entry first
            if not os.path.isfile(os.path.join(folder, "entry.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_disk_entry(folder)


def open_disk_entry(folder: str, verify: bool = False) -> DiskVolume:
    """Open an entry, checking its files' sizes (and, with ``verify``, every checksum).

    Raises:
        CorruptCacheEntryError: a file is missing, has the wrong size or (``verify``) a wrong checksum.
    """
    try:
        with open(os.path.join(folder, "entry.json")) as f:
            meta = json.load(f)
        volume = DiskVolume(folder, meta)
        x, y, z = volume.shape
        expected = {
            "image.bin": x * y * z * volume.dtype.itemsize,
            "mask.bin": x * y * z,
            "foreground.bin": volume.foreground_count * volume.index_dtype.itemsize,
        }
        for name, size in expected.items():
            actual = os.path.getsize(os.path.join(folder, name))
            if actual != size:
                raise CorruptCacheEntryError(
                    f"cache file '{os.path.join(folder, name)}' has {actual} bytes, not {size}."
                )
            if len(volume.crc["image.bin"]) != z or len(volume.crc["mask.bin"]) != z:
                raise CorruptCacheEntryError(f"cache entry '{folder}' has {len(volume.crc['image.bin'])} checksums.")
    except CorruptCacheEntryError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptCacheEntryError(f"cache entry '{folder}' cannot be opened ({type(e).__name__}: {e}).") from e
    if verify:
        volume.read_slices(0, z)
        with open(os.path.join(folder, "foreground.bin"), "rb") as f:
            if zlib.crc32(f.read()) != volume.crc["foreground.bin"]:
                raise CorruptCacheEntryError(f"cache file '{os.path.join(folder, 'foreground.bin')}' is corrupt.")
    return volume


def rebuild(volume: PreparedVolume) -> PreparedVolume:
    """A fresh copy of a (corrupt) disk entry in its folder, preprocessed again from its source as it was first
    (same requested modality); a memory volume as it is."""
    if not isinstance(volume, DiskVolume):
        return volume
    logger.warning("Rebuilding the corrupt cache entry '%s' from '%s'.", volume.folder, volume.source)
    item = {"image": volume.source, "modality": volume.requested_modality}
    return build_disk_entry(item, os.path.dirname(volume.folder), volume.requested_modality)


def estimated_bytes(shape: Sequence[int]) -> int:
    """Bytes of a prepared volume of spatial ``shape``, at most: float32 voxels, a mask, int32 indices."""
    return int(np.prod(shape)) * (4 + 1 + 4)


def prepare_volumes(
    items: Sequence[dict],
    cache_dir: str,
    mode: str = "auto",
    modality: str = "auto",
    ram_budget_gb: float = 4.0,
    scan_cache_file: str | None = None,
    verify: bool = False,
    progress: bool = True,
    what: str = "training",
) -> list[PreparedVolume]:
    """Prepared volumes of ``items`` (datalist items checked by :func:`~monai_lstmagan.data.checks.check_volumes`).

    Args:
        items: ``{"image": path, "modality": ..., ...}`` items.
        cache_dir: the disk cache folder (entries are reused across runs; stale ones are left for the user to
            delete: each is named by the volume's file stem).
        mode: ``"memory"``, ``"disk"`` or ``"auto"`` (memory when :func:`estimated_bytes` of all volumes, from the
            start-up scan's shapes, fits ``ram_budget_gb`` and half of the memory available now
            (:func:`monai_lstmagan.system.available_memory`: ``MemAvailable`` or a cgroup limit); the choice is
            logged).
        modality: as in :func:`~monai_lstmagan.transforms.intensity.volume_transforms`.
        ram_budget_gb: the RAM the prepared volumes may take in ``"auto"`` mode.
        scan_cache_file: the start-up scan's cache (its recorded shapes give the estimate).
        verify: check every checksum of the existing entries (a full read of the cache) instead of their sizes.
        progress: a progress bar while volumes are prepared.
        what: the name of the set in the log.
    """
    if mode not in CACHE_MODES:
        raise ValueError(f"data cache mode must be one of {CACHE_MODES}, got {mode!r}.")
    if mode == "auto":
        shapes = scan_shapes(items, scan_cache_file)
        need = sum(estimated_bytes(s) for s in shapes)
        available, source = available_memory()
        budget = min(ram_budget_gb * 2**30, available / 2)
        mode = "memory" if need <= budget else "disk"
        logger.info(
            "Data cache for %d %s volume(s): %s (estimated %.2f GB prepared; RAM budget %.2f GB, half of the "
            "%.2f GB available (%s) %.2f GB).",
            len(items),
            what,
            mode,
            need / 2**30,
            ram_budget_gb,
            available / 2**30,
            source,
            available / 2**31,
        )
    if mode == "disk" and os.path.isdir(cache_dir):
        remove_stale_temporaries(cache_dir)  # the half-written entries of killed preparations
    volumes: list[PreparedVolume] = []
    built = 0
    for item in tqdm(items, desc=f"preparing {what} volumes ({mode})", disable=not progress or not items):
        if mode == "memory":
            volumes.append(MemoryVolume(*preprocess(item, modality)))
            continue
        folder = _entry_folder(cache_dir, item, modality)
        try:
            volumes.append(open_disk_entry(folder, verify=verify))
            continue
        except CorruptCacheEntryError as e:
            if os.path.exists(folder):
                logger.warning("Cache entry rebuilt: %s", e)
        volumes.append(build_disk_entry(item, cache_dir, modality))
        built += 1
    if mode == "disk":
        size = sum(v.bytes for v in volumes)
        logger.info(
            "Disk cache '%s': %d %s volume(s), %d prepared now, %.2f GB.",
            cache_dir,
            len(volumes),
            what,
            built,
            size / 2**30,
        )
    return volumes


def apply_sample_transforms(transforms: Compose, volume: PreparedVolume, item: dict) -> dict:
    """The random sample transforms on a prepared volume: ``{"image": volume, "mask": volume mask view, ...}``."""
    reader = _StackReader(volume)
    return transforms({**item, "image": VolumeChannel(reader, "image"), "mask": VolumeChannel(reader, "mask")})


class _StackReader:
    """Reads a volume's image and mask at index windows once for both channels (the last windows are kept)."""

    def __init__(self, volume: PreparedVolume) -> None:
        self.volume = volume
        self._last: tuple | None = None

    def stack(self, ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        key = (ix.tobytes(), iy.tobytes(), iz.tobytes())
        if self._last is None or self._last[0] != key:
            self._last = (key, self.volume.stack(ix, iy, iz))
        return self._last[1]


class VolumeChannel:
    """The image or the mask of a :class:`PreparedVolume`, as the samplers see a ``[1, X, Y, Z]`` volume.

    :func:`~monai_lstmagan.transforms.sampling.as_stack` reads it with :meth:`stack`;
    :func:`~monai_lstmagan.transforms.sampling.foreground_indices` with :meth:`foreground_indices`.
    """

    def __init__(self, reader: _StackReader, channel: str) -> None:
        self.reader, self.channel = reader, channel
        self.shape = (1, *reader.volume.shape)
        self.meta = {"filename_or_obj": reader.volume.source}

    def stack(self, ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> torch.Tensor:
        """``[len(iz), 1, len(ix), len(iy)]`` float32 (normalised image, or mask)."""
        image, mask = self.reader.stack(ix, iy, iz)
        return image if self.channel == "image" else mask

    def foreground_indices(self) -> ForegroundIndices:
        """The volume's foreground indices (read one at a time)."""
        return ForegroundIndices(self.reader.volume)


class ForegroundIndices:
    """The foreground indices of a prepared volume as a sequence: ``size`` and ``indices[position]``."""

    def __init__(self, volume: PreparedVolume) -> None:
        self.volume = volume
        self.size = volume.foreground_count

    def __getitem__(self, position: int) -> int:
        return self.volume.foreground_index(int(position))


def cache_summary(volumes: Sequence[PreparedVolume], num_items: int, cache_dir: str) -> dict:
    """Log and return what a preparation gave: ``{"volumes", "bad_files", "memory_gb", "disk_gb", "cache_dir"}``.

    Args:
        volumes: the prepared volumes (training and validation).
        num_items: the number of datalist items they came from (the difference: bad files skipped).
        cache_dir: the disk cache folder.
    """
    on_disk = [v for v in volumes if isinstance(v, DiskVolume)]
    summary = {
        "volumes": len(volumes),
        "bad_files": int(num_items) - len(volumes),
        "memory_gb": sum(v.bytes for v in volumes if not isinstance(v, DiskVolume)) / 2**30,
        "disk_gb": sum(v.bytes for v in on_disk) / 2**30,
        "cache_dir": cache_dir,
    }
    logger.info(
        "Prepared %d volume(s) (%d bad file(s) skipped): %.2f GB in the disk cache '%s', %.2f GB in RAM.",
        summary["volumes"],
        summary["bad_files"],
        summary["disk_gb"],
        cache_dir,
        summary["memory_gb"],
    )
    return summary
