"""Datasets on disk: :mod:`~monai_lstmagan.data.discovery` (LUNA16 / BraTS / folder layouts, command-line
inputs), :mod:`~monai_lstmagan.data.datalist` (the patient split, written once) and
:mod:`~monai_lstmagan.data.checks` (the start-up scan for bad files), :mod:`~monai_lstmagan.data.cache` (volumes
prepared once, in RAM or in a disk cache) and :mod:`~monai_lstmagan.data.datasets` (training samples and
validation chunks read from them)."""

from monai_lstmagan.data.cache import (
    CACHE_MODES,
    CorruptCacheEntryError,
    DiskVolume,
    MemoryVolume,
    PreparedVolume,
    prepare_volumes,
)
from monai_lstmagan.data.checks import check_volumes, scan_shapes, scan_volumes
from monai_lstmagan.data.datalist import SPLIT_KEYS, load_datalist, make_datalist, split_by_patient
from monai_lstmagan.data.datasets import SliceSampleDataset, ValidationChunkDataset
from monai_lstmagan.data.discovery import BRATS_MODALITIES, LAYOUTS, collect_inputs, find_volumes

__all__ = [
    "BRATS_MODALITIES",
    "LAYOUTS",
    "SPLIT_KEYS",
    "find_volumes",
    "collect_inputs",
    "split_by_patient",
    "make_datalist",
    "load_datalist",
    "scan_volumes",
    "check_volumes",
    "scan_shapes",
    "CACHE_MODES",
    "CorruptCacheEntryError",
    "PreparedVolume",
    "MemoryVolume",
    "DiskVolume",
    "prepare_volumes",
    "SliceSampleDataset",
    "ValidationChunkDataset",
]
