"""Find volumes on disk, split them by patient into a datalist written once, and scan them for bad files.

Three layouts are understood:

- ``"luna16"``: ``<dataset_dir>/**/subset<k>/<SeriesUID>.mhd`` (+ ``.raw``); one patient = one
  series UID; modality ``"ct"``. Other ``.mhd`` files (e.g. ``seg-lungs-LUNA16/``) are ignored.
- ``"brats"``: ``<dataset_dir>/**/BraTS2021_XXXXX/BraTS2021_XXXXX_<modality>.nii.gz``; one patient =
  one case folder; modality ``"mr"``; ``brats_modality`` picks the sequence (default ``"flair"``).
- ``"folder"``: every ``.nii``, ``.nii.gz``, ``.mhd`` or ``.nrrd`` under ``dataset_dir`` (recursive);
  one file = one patient, named by its path relative to ``dataset_dir`` without the extension.

``"auto"`` picks ``luna16`` if a ``subset<k>/`` folder holds ``.mhd`` files, else ``brats`` if a
``BraTS*_<id>/`` case folder holds the requested sequence, else ``folder``.

The split is by patient (never by slice), seeded, 70/20/10 for training/test/validation as in the
paper, and is written to a decathlon-style JSON the first time; afterwards that file is reused as is,
so the split never changes between runs (delete the file to re-split).

:func:`scan_volumes` / :func:`check_volumes` read every volume once at start-up (verdicts are cached
by path, size and modification time) and report the files that cannot be trained on, each with the
problem, before any run starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_lstmagan.atomic import atomic_write
from monai_lstmagan.volumes import VOLUME_SUFFIXES, BadVolume, mhd_data_file, read_voxels, split_suffix, volume_suffix

__all__ = [
    "VOLUME_SUFFIXES",
    "BRATS_MODALITIES",
    "find_volumes",
    "split_by_patient",
    "make_datalist",
    "load_datalist",
    "scan_volumes",
    "check_volumes",
]

logger = logging.getLogger(__name__)


BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
"""BraTS2021 sequences that can be selected with ``brats_modality``."""

SPLIT_KEYS = ("training", "test", "validation")
_MODALITIES = ("ct", "mr", "auto")
_LUNA_SUBSET = re.compile(r"subset\d+")
_BRATS_CASE = re.compile(r"BraTS\d*_\d+")


def _check_dataset_dir(dataset_dir: str | os.PathLike) -> Path:
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset_dir {os.fspath(root)!r} does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset_dir {os.fspath(root)!r} is not a folder.")
    if not any(root.iterdir()):
        raise ValueError(f"dataset_dir {os.fspath(root)!r} is empty: no volumes to train on.")
    return root.resolve()


def _files(root: Path) -> list[Path]:
    """Every non-hidden regular file under ``root``, sorted (hidden files and folders are skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
    return out


def _luna16(files: list[Path]) -> list[tuple[str, Path]]:
    return [
        (p.name[: -len(".mhd")], p)
        for p in files
        if p.name.lower().endswith(".mhd") and _LUNA_SUBSET.fullmatch(p.parent.name)
    ]


def _brats(files: list[Path], brats_modality: str) -> list[tuple[str, Path]]:
    return [
        (p.parent.name, p)
        for p in files
        if _BRATS_CASE.fullmatch(p.parent.name) and p.name == f"{p.parent.name}_{brats_modality}.nii.gz"
    ]


def _detect_layout(files: list[Path], brats_modality: str) -> str:
    if _luna16(files):
        return "luna16"
    if _brats(files, brats_modality):
        return "brats"
    return "folder"


def find_volumes(
    dataset_dir: str | os.PathLike, layout: str = "auto", modality: str = "auto", brats_modality: str = "flair"
) -> list[dict]:
    """List the volumes of a dataset folder, one item per volume, sorted by patient.

    Args:
        dataset_dir: the dataset folder.
        layout: ``"luna16"``, ``"brats"``, ``"folder"`` or ``"auto"`` (see the module docstring).
        modality: ``"ct"``, ``"mr"`` or ``"auto"`` (decided from the intensities when loading). The
            LUNA16 layout is ``"ct"`` and BraTS ``"mr"`` unless a modality is given here.
        brats_modality: BraTS sequence to use, one of :data:`BRATS_MODALITIES`.

    Returns:
        ``[{"image": absolute path, "patient": patient id, "modality": "ct" | "mr" | "auto"}, ...]``.

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
        ValueError: the folder is empty, holds no volume of the layout, two volumes belong to the
            same patient, or an argument is not one of its choices.
        PermissionError: a volume cannot be opened for reading.
    """
    if layout not in ("auto", "luna16", "brats", "folder"):
        raise ValueError(f"layout must be 'auto', 'luna16', 'brats' or 'folder', got {layout!r}.")
    if modality not in _MODALITIES:
        raise ValueError(f"modality must be one of {_MODALITIES}, got {modality!r}.")
    if brats_modality not in BRATS_MODALITIES:
        raise ValueError(f"brats_modality must be one of {BRATS_MODALITIES}, got {brats_modality!r}.")
    root = _check_dataset_dir(dataset_dir)
    files = _files(root)
    if layout == "auto":
        layout = _detect_layout(files, brats_modality)

    if layout == "luna16":
        found, default_modality = _luna16(files), "ct"
        expected = "subset<k>/<SeriesUID>.mhd files"
    elif layout == "brats":
        found, default_modality = _brats(files, brats_modality), "mr"
        expected = f"BraTS2021_<id>/BraTS2021_<id>_{brats_modality}.nii.gz files"
        cases = {p.parent for p in files if _BRATS_CASE.fullmatch(p.parent.name)}
        missing = sorted(os.fspath(c) for c in cases - {p.parent for _, p in found})
        if missing:
            warnings.warn(
                f"{len(missing)} BraTS case folder(s) have no {brats_modality!r} volume and are left out: {missing}"
            )
    else:
        found, default_modality = [], "auto"
        expected = "files ending in " + ", ".join(VOLUME_SUFFIXES)
        for p in files:
            suffix = volume_suffix(p.name)
            if suffix is not None:  # the patient id: the path below root without the suffix
                found.append((p.relative_to(root).as_posix()[: -len(suffix)], p))
    if not found:
        raise ValueError(f"No volume found in {os.fspath(root)!r} with layout {layout!r}: expected {expected}.")

    by_patient: dict[str, list[Path]] = {}
    for patient, path in found:
        by_patient.setdefault(patient, []).append(path)
    duplicates = {k: v for k, v in by_patient.items() if len(v) > 1}
    if duplicates:
        listing = "; ".join(f"{k}: {', '.join(map(os.fspath, v))}" for k, v in sorted(duplicates.items()))
        raise ValueError(f"Duplicate patients in {os.fspath(root)!r} (one volume per patient expected): {listing}.")

    items = []
    for patient, (path,) in sorted(by_patient.items()):
        if not os.access(path, os.R_OK):
            raise PermissionError(f"Volume {os.fspath(path)!r} cannot be read (permission denied).")
        items.append(
            {
                "image": os.fspath(path),
                "patient": patient,
                "modality": modality if modality != "auto" else default_modality,
            }
        )
    return items


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Patients per split (largest remainder), with 2 -> (1, 0, 1) and >= 3 -> every split >= 1."""
    if n == 1:
        return [1, 0, 0]
    if n == 2:
        return [1, 0, 1]
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        while counts[i] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts


def split_by_patient(items: Sequence[dict], fractions: Sequence[float] = (0.7, 0.2, 0.1), seed: int = 0) -> dict:
    """Split ``items`` by patient into training / test / validation, seeded.

    All items of a patient go to the same split. Patients are sorted then shuffled with
    ``numpy.random.RandomState(seed)`` (a generator whose stream numpy keeps stable), so the same
    patients and seed give the same split on any machine. With 2 patients the split is 1 training +
    1 validation; with 3 or more every split gets at least one patient; with 1 it is training only.

    Args:
        items: dicts with at least ``"patient"``.
        fractions: (training, test, validation) fractions, non-negative, summing to 1
            (paper order train/test/validation = 70/20/10).
        seed: random seed of the shuffle.

    Returns:
        ``{"training": [...], "test": [...], "validation": [...]}``, each list in the input order.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be three non-negative numbers (training, test, validation) summing to 1, got {fractions}."
        )
    if not items:
        raise ValueError("split_by_patient got no items to split.")
    patients = sorted({str(item["patient"]) for item in items})
    order = np.random.RandomState(seed).permutation(len(patients))
    shuffled = [patients[i] for i in order]
    counts = _split_counts(len(patients), fractions)
    bounds = np.cumsum([0] + counts)
    split_of = {p: key for key, lo, hi in zip(SPLIT_KEYS, bounds[:-1], bounds[1:]) for p in shuffled[lo:hi]}
    if len(patients) == 1:
        warnings.warn("Only one patient: it goes to training and there is no validation or test volume.")
    return {key: [dict(item) for item in items if split_of[str(item["patient"])] == key] for key in SPLIT_KEYS}


def _write_json_atomic(obj: Any, path: Path) -> None:
    with atomic_write(path, "w", what="datalist") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def load_datalist(datalist_file: str | os.PathLike, modality: str = "auto") -> dict:
    """Read a decathlon-style datalist (``training`` / ``validation`` / ``test`` lists of ``{"image": path}``).

    Relative paths are taken relative to the datalist's folder; items without ``"patient"`` get the
    file name without extension and items without ``"modality"`` get ``modality``.

    Raises:
        ValueError: the file is not valid JSON, lacks a ``training`` list, or a patient is in two splits.
    """
    path = Path(datalist_file)
    try:
        with open(path) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"Datalist {os.fspath(path)!r} is not valid JSON ({e}); fix it or delete it to re-split."
        ) from e
    if not isinstance(content, dict) or not isinstance(content.get("training"), list):
        raise ValueError(f"Datalist {os.fspath(path)!r} has no 'training' list; fix it or delete it to re-split.")
    datalist: dict[str, list[dict]] = {}
    for key in SPLIT_KEYS:
        datalist[key] = []
        for item in content.get(key, []):
            item = {"image": item} if isinstance(item, str) else dict(item)
            if "image" not in item:
                raise ValueError(f"Datalist {os.fspath(path)!r}: an item of {key!r} has no 'image': {item}.")
            image = Path(item["image"]).expanduser()
            item["image"] = os.fspath(image if image.is_absolute() else (path.parent / image).resolve())
            name = os.path.basename(item["image"])  # an unsupported suffix is reported by check_volumes
            item.setdefault("patient", split_suffix(name)[0] if volume_suffix(name) else name)
            item.setdefault("modality", modality)
            datalist[key].append(item)
    seen: dict[str, str] = {}
    for key in SPLIT_KEYS:
        for item in datalist[key]:
            other = seen.setdefault(str(item["patient"]), key)
            if other != key:
                raise ValueError(
                    f"Datalist {os.fspath(path)!r}: patient {item['patient']!r} is in both {other!r} and {key!r}."
                )
    return datalist


def make_datalist(
    dataset_dir: str | os.PathLike,
    datalist_file: str | os.PathLike,
    layout: str = "auto",
    modality: str = "auto",
    brats_modality: str = "flair",
    fractions: Sequence[float] = (0.7, 0.2, 0.1),
    seed: int = 0,
    validation_patients: Sequence[str] | None = None,
) -> dict:
    """Write the patient-level split of ``dataset_dir`` to ``datalist_file`` once, and reuse it afterwards.

    If ``datalist_file`` exists it is read and returned, never re-split: files it lists that no longer
    exist are left out of the returned lists (the file is untouched) with a warning, and volumes of
    ``dataset_dir`` that it does not list are reported with a warning (delete the file to re-split).
    Otherwise the volumes are found with :func:`find_volumes`, split with :func:`split_by_patient`
    and written atomically as JSON ``{"training": [...], "validation": [...], "test": [...]}`` with
    absolute paths.

    Args:
        dataset_dir: the dataset folder.
        datalist_file: the JSON file to write or reuse (its folder is created).
        layout, modality, brats_modality: as in :func:`find_volumes`.
        fractions, seed: as in :func:`split_by_patient`.
        validation_patients: a fixed split instead of the random one: these patients (``"patient"`` ids of
            :func:`find_volumes`, e.g. ``"ct/lung1_crop"``) are the validation split, every other patient is
            training, and there is no test split; ``[]`` trains on every patient (no validation). Used for
            leave-one-patient-out runs and for the shipped models. Unknown ids are an error.

    Returns:
        the datalist: ``{"training": [items], "validation": [items], "test": [items]}``, items as in
        :func:`find_volumes`.
    """
    path = Path(datalist_file).expanduser()
    if not path.exists():
        items = find_volumes(dataset_dir, layout, modality, brats_modality)
        if validation_patients is None:
            datalist = split_by_patient(items, fractions, seed)
        else:
            held_out = {str(p) for p in validation_patients}
            unknown = held_out - {str(i["patient"]) for i in items}
            if unknown:
                raise ValueError(
                    f"validation_patients {sorted(unknown)} are not patients of {os.fspath(dataset_dir)!r} "
                    f"(found {sorted({str(i['patient']) for i in items})})."
                )
            datalist = {
                "training": [i for i in items if str(i["patient"]) not in held_out],
                "validation": [i for i in items if str(i["patient"]) in held_out],
                "test": [],
            }
        _write_json_atomic({key: datalist[key] for key in ("training", "validation", "test")}, path)
        logger.info("Wrote datalist %s: %s", path, ", ".join(f"{len(datalist[k])} {k}" for k in SPLIT_KEYS))
        return datalist

    datalist = load_datalist(path, modality)
    gone = [item["image"] for key in SPLIT_KEYS for item in datalist[key] if not os.path.exists(item["image"])]
    if gone:
        warnings.warn(
            f"{len(gone)} volume(s) listed in datalist {os.fspath(path)!r} no longer exist and are left out "
            f"(the split is kept; delete the file to re-split): {gone}"
        )
        datalist = {key: [i for i in datalist[key] if os.path.exists(i["image"])] for key in SPLIT_KEYS}
    if not datalist["training"]:
        raise ValueError(
            f"Datalist {os.fspath(path)!r} has no existing training volume; delete it to re-split {dataset_dir!r}."
        )
    try:
        on_disk = find_volumes(dataset_dir, layout, modality, brats_modality)
    except (OSError, ValueError) as e:
        warnings.warn(
            f"Reusing datalist {os.fspath(path)!r}; could not list {os.fspath(dataset_dir)!r} "
            f"to look for new volumes: {e}"
        )
        return datalist
    listed = {os.path.realpath(i["image"]) for key in SPLIT_KEYS for i in datalist[key]}
    new = [i["image"] for i in on_disk if os.path.realpath(i["image"]) not in listed]
    if new:
        warnings.warn(
            f"{len(new)} volume(s) in {os.fspath(dataset_dir)!r} are not in datalist {os.fspath(path)!r} and are not "
            f"used (the split is kept; delete the file to re-split): {new}"
        )
    return datalist


# ----------------------------------------------------------------------------------------------
# bad-input scan
# ----------------------------------------------------------------------------------------------

_SCAN_VERSION = 1


def _volume_facts(path: str) -> dict:
    """What the scan needs to know about one file: ``{"error": str}`` or shape / finiteness / range."""
    try:
        voxels, axial = read_voxels(path)
    except BadVolume as e:
        return {"error": str(e)}
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
    """(size, mtime_ns) of the file and, for a MetaImage, of its data file: the cache key."""
    key = []
    paths = [path]
    if volume_suffix(path) == ".mhd":
        try:
            data_file = mhd_data_file(path)
        except BadVolume:
            data_file = None
        if data_file is not None:
            paths.append(data_file)
    for p in paths:
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
    file is missing or too short, unreadable header), has an unsupported extension, is a 2D image (or
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
            elif not os.access(path, os.R_OK):
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
            _write_json_atomic({"version": _SCAN_VERSION, "volumes": cache}, Path(cache_file))
        except OSError as e:
            warnings.warn(f"Could not write the volume scan cache {cache_file!r}: {e}")
    return good, bad


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
