"""The start-up scan: every volume is read once before a run, and the files that cannot be trained on are
reported, each with its problem (verdicts are cached by path, size and modification time of every file of
the scan)."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Sequence

import numpy as np

from monai_lstmagan.io.atomic import atomic_write_json
from monai_lstmagan.io.dicom import split_series
from monai_lstmagan.io.scans import BadVolumeError, read_voxels, scan_files

__all__ = ["scan_volumes", "scan_shapes", "check_volumes"]

logger = logging.getLogger(__name__)

_SCAN_VERSION = 1


def _volume_facts(path: str) -> dict:
    """What the scan needs to know about one file: ``{"error": str}`` or shape / finiteness / range."""
    try:
        voxels, axial = read_voxels(path)
    except BadVolumeError as e:
        return {"error": str(e)}
    except Exception as e:  # whatever a reader trips over: the file is reported, the scan goes on
        return {"error": f"cannot be read ({type(e).__name__}: {e})"}
    if voxels.dtype.fields is not None or np.iscomplexobj(voxels):
        return {"error": f"has {voxels.dtype} voxels: a scalar, real-valued volume is expected"}
    finite = bool(np.isfinite(voxels).all()) if np.issubdtype(voxels.dtype, np.floating) else True
    values = voxels[np.isfinite(voxels)] if not finite else voxels
    low, high = (float(values.min()), float(values.max())) if values.size else (math.nan, math.nan)
    return {
        "error": None,
        "shape": [int(n) for n in voxels.shape],
        "axial_axis": axial,
        "finite": finite,
        "min": low,
        "max": high,
    }


def _problem(facts: dict, min_slices: int, min_size: tuple[int, int]) -> tuple[str | None, str | None]:
    """(problem making the volume unusable or None, warning or None) from the facts of one file."""
    if facts["error"]:
        return facts["error"], None
    shape = list(facts["shape"])
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    warning = None
    if len(shape) > 4:
        return f"is a {len(shape)}D image (shape {facts['shape']}); a 3D volume is expected", None
    if len(shape) == 4:
        warning = f"is a 4D image (shape {facts['shape']}): only its first volume (index 0 of the 4th axis) is used"
    if len(shape) < 3 or min(shape[:3]) == 1:
        return f"is a 2D image (shape {facts['shape']}); a 3D volume with several axial slices is expected", None
    axial = facts["axial_axis"] if 0 <= facts["axial_axis"] < 3 else 2
    slices = shape[axial]
    in_plane = [n for i, n in enumerate(shape[:3]) if i != axial]
    if slices < min_slices:
        return f"has {slices} axial slices, fewer than the {min_slices} required", None
    if in_plane[0] < min_size[0] or in_plane[1] < min_size[1]:
        return f"is {in_plane[0]}x{in_plane[1]} in-plane, smaller than the {min_size[0]}x{min_size[1]} required", None
    if not facts["finite"]:
        return "contains NaN or Inf voxels", None
    if not facts["min"] < facts["max"]:
        return f"is a constant image (every voxel is {facts['min']:g})", None
    return None, warning


def _stat_key(path: str) -> list:
    """(size, mtime_ns) of every file of the scan (a MetaImage header and its data file): the cache key."""
    key = []
    for p in sorted(scan_files(path)):
        try:
            st = os.stat(p)
            key.append([st.st_size, st.st_mtime_ns])
        except OSError:
            key.append(None)
    return key


def _load_cache(cache_file: str | None) -> dict:
    if cache_file is None or not os.path.exists(cache_file):
        return {}
    try:
        with open(cache_file) as f:
            content = json.load(f)
        if content.get("version") == _SCAN_VERSION and isinstance(content.get("volumes"), dict):
            return content["volumes"]
    except (OSError, ValueError, AttributeError):
        pass
    warnings.warn(f"Ignoring unreadable volume scan cache {cache_file!r}; it is rebuilt.")
    return {}


def scan_volumes(
    items: Sequence[dict], min_slices: int = 2, min_size: tuple[int, int] = (1, 1), cache_file: str | None = None
) -> tuple[list[dict], list[dict]]:
    """Read every volume once and sort the items into usable and bad ones.

    Each file is read completely (a ``.nii.gz`` is inflated to the end so a bad gzip CRC is caught;
    a ``.mhd``'s ``.raw``/``.zraw`` is checked against the header's size) and its voxels are checked.
    A file is bad when it: cannot be read (gzip-corrupt or truncated ``.nii.gz``, ``.mhd`` whose data
    file is missing or too short, a ``.zraw`` that does not inflate completely, unreadable header), has a
    header field the readers cannot use (:func:`monai_lstmagan.io.scans.check_file`: colour or complex
    voxels, an empty image, a non-finite or singular geometry, a scaling beyond float32), is not a
    regular file, has an unsupported extension, is a 2D image (or
    a single slice), has more than 4 dimensions, has fewer than ``min_slices`` axial slices or is
    smaller in-plane than ``min_size``, has NaN/Inf voxels, or is constant.

    Policies (not bad): a 4D image is usable, only its first volume (index 0 of the 4th axis) is used
    and a warning says so. A volume with fewer axial slices than the training sequence length T, or
    smaller in-plane than the training crop, is padded by reflection in
    :class:`~monai_lstmagan.transforms.RandSliceSequenced`, so the defaults accept it.

    Verdicts are cached in ``cache_file`` (JSON), keyed by path and the (size, mtime) of the file and
    of a MetaImage's data file, so a restart re-reads only new or changed files.

    Args:
        items: datalist items with ``"image"`` paths.
        min_slices: fewest axial slices a usable volume has (2: one slice is a 2D image).
        min_size: smallest (rows, columns) in-plane size of a usable volume, e.g. ``(scale, scale)``.
        cache_file: JSON file caching the per-file verdicts (``None``: no cache).

    Returns:
        ``(good, bad)``: the items that can be used, and copies of the others with a ``"problem"``
        string saying why.
    """
    cache = _load_cache(cache_file)
    good, bad, changed = [], [], False
    for item in items:
        path = os.path.abspath(os.fspath(item["image"]))
        key = _stat_key(path)
        entry = cache.get(path)
        if entry is None or entry.get("stat") != key:
            if key[0] is None:
                facts = {"error": "does not exist"}
            elif not os.access(split_series(path)[0], os.R_OK):  # a DICOM scan may be FOLDER#SeriesInstanceUID
                facts = {"error": "cannot be read (permission denied)"}
            else:
                facts = _volume_facts(path)
            entry = {"stat": key, "facts": facts}
            if key[0] is not None:
                cache[path] = entry
                changed = True
        problem, warning = _problem(entry["facts"], min_slices, tuple(min_size))
        if problem is not None:
            bad.append({**item, "problem": problem})
            continue
        if warning is not None:
            warnings.warn(f"Volume {path!r} {warning}.")
        good.append(item)
    if cache_file is not None and changed:
        try:
            atomic_write_json({"version": _SCAN_VERSION, "volumes": cache}, cache_file, what="volume scan cache")
        except OSError as e:
            warnings.warn(f"Could not write the volume scan cache {cache_file!r}: {e}")
    return good, bad


def scan_shapes(items: Sequence[dict], cache_file: str | None) -> list[list[int]]:
    """The voxel shapes the start-up scan recorded for ``items`` (read from ``cache_file``; an item the scan
    has not seen, or without a cache file, is read with :func:`monai_lstmagan.io.scans.read_voxels`)."""
    cache = _load_cache(cache_file)
    shapes = []
    for item in items:
        path = os.path.abspath(os.fspath(item["image"]))
        entry = cache.get(path)
        facts = entry["facts"] if entry is not None and entry.get("stat") == _stat_key(path) else _volume_facts(path)
        shapes.append(facts.get("shape") or [0])
    return shapes


def check_volumes(
    items: Sequence[dict],
    min_slices: int = 2,
    min_size: tuple[int, int] = (1, 1),
    cache_file: str | None = None,
    skip_bad_files: bool = False,
) -> list[dict]:
    """Scan ``items`` with :func:`scan_volumes`; stop on bad files or skip them.

    Args:
        items, min_slices, min_size, cache_file: as in :func:`scan_volumes`.
        skip_bad_files: ``False``: raise one error listing every bad file and its problem.
            ``True``: log each bad file (warning) and return the good items.

    Returns:
        the good items.

    Raises:
        ValueError: a file is bad and ``skip_bad_files`` is False, or no good volume is left.
    """
    good, bad = scan_volumes(items, min_slices=min_slices, min_size=min_size, cache_file=cache_file)
    listing = "\n".join(f"  {b['image']}: {b['problem']}" for b in bad)
    if bad and not skip_bad_files:
        raise ValueError(
            f"{len(bad)} of {len(items)} volume(s) cannot be used "
            f"(fix or remove them, or set skip_bad_files to True):\n{listing}"
        )
    if bad:
        logger.warning("Skipping %d bad volume(s) of %d:\n%s", len(bad), len(items), listing)
    if items and not good:
        raise ValueError(f"None of the {len(items)} volume(s) can be used:\n{listing}")
    return good
