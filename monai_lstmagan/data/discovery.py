"""Find the volumes of a dataset folder, and the volumes named on a command line.

Four layouts are understood:

- ``"luna16"``: ``<dataset_dir>/**/subset<k>/<SeriesUID>.mhd`` (+ ``.raw``); one patient = one
  series UID; modality ``"ct"``. Other ``.mhd`` files (e.g. ``seg-lungs-LUNA16/``) are ignored.
- ``"brats"``: ``<dataset_dir>/**/BraTS2021_XXXXX/BraTS2021_XXXXX_<modality>.nii.gz``; one patient =
  one case folder; modality ``"mr"``; ``brats_modality`` picks the sequence (default ``"flair"``).
- ``"folder"``: every ``.nii``, ``.nii.gz``, ``.mhd`` or ``.nrrd`` under ``dataset_dir`` (recursive);
  one file = one patient, named by its path relative to ``dataset_dir`` without the extension.
- ``"dicom"``: every DICOM series under ``dataset_dir`` (the DICOM files of each folder, grouped by
  SeriesInstanceUID; DICOMDIR files are not followed, their folders are walked anyway): one series = one volume
  (``FOLDER`` or, when the folder holds several series, ``FOLDER#<SeriesInstanceUID>``), its patient the PatientID
  (a patient may have several series: they go to the same split); modality from the Modality attribute (CT, MR).

``"auto"`` picks ``luna16`` if a ``subset<k>/`` folder holds ``.mhd`` files, else ``brats`` if a
``BraTS*_<id>/`` case folder holds the requested sequence, else ``folder`` if any file has a volume suffix, else
``dicom`` if DICOM files are there.

Folders are walked following symbolic links, each real folder once (a link back to a parent is a loop,
skipped with a warning).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from monai_lstmagan.io.dicom import (
    SERIES_SEPARATOR,
    DicomError,
    expand_series,
    is_dicom,
    is_dicom_file,
    list_series,
    split_series,
)
from monai_lstmagan.io.paths import VOLUME_SUFFIXES, is_output_of_this, split_suffix, volume_suffix
from monai_lstmagan.transforms.intensity import MODALITIES

__all__ = ["BRATS_MODALITIES", "LAYOUTS", "find_volumes", "collect_inputs"]

#: BraTS2021 sequences that can be selected with ``brats_modality``.
BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
LAYOUTS = ("auto", "luna16", "brats", "folder", "dicom")

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
    """Every non-hidden regular file under ``root``, sorted (hidden files and folders are skipped).

    Symbolic links are followed, but every real folder is entered once: a link to a folder already walked
    (a loop such as ``ln -s .. loop``, or a second link to the same folder) is skipped with a warning.
    """
    out = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            warnings.warn(f"'{dirpath}' is a link to a folder already searched ('{real}'): skipped.")
            dirnames[:] = []
            continue
        seen.add(real)
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


def _dicom_folders(files: list[Path]) -> list[Path]:
    """The folders holding DICOM image files (sorted, each once)."""
    folders: dict[Path, None] = {}
    for p in files:
        if p.parent not in folders and volume_suffix(p.name) is None and p.name.upper() != "DICOMDIR":
            if is_dicom_file(p):
                folders[p.parent] = None
    return sorted(folders)


def _modality_of(dicom_modality: str) -> str:
    return {"CT": "ct", "MR": "mr"}.get(dicom_modality.upper(), "auto")


def _selected_series(entry: str | os.PathLike, series: str | None) -> list[tuple[str, dict]]:
    """``(scan name, series info of list_series)`` of the series of a DICOM input that ``series`` selects."""
    try:
        listed = {s["uid"]: s for s in list_series(entry)}
    except DicomError as e:
        raise ValueError(f"'{entry}' {e}.") from e
    return [(name, listed[split_series(name)[1] or next(iter(listed))]) for name in expand_series(entry, series)]


def _dicom(files: list[Path], root: Path, series: str | None = "all") -> list[tuple[str, Path, str]]:
    """``(patient, scan name, modality)`` of every DICOM series under ``root`` (one series = one volume)."""
    found = []
    for folder in _dicom_folders(files):
        for name, info in _selected_series(folder, series):
            patient = info["patient"] or folder.relative_to(root).as_posix()
            found.append((patient, Path(name), _modality_of(info["modality"])))
    return found


def _detect_layout(files: list[Path], brats_modality: str) -> str:
    if _luna16(files):
        return "luna16"
    if _brats(files, brats_modality):
        return "brats"
    if not any(volume_suffix(p.name) for p in files) and _dicom_folders(files):
        return "dicom"
    return "folder"


def find_volumes(
    dataset_dir: str | os.PathLike,
    layout: str = "auto",
    modality: str = "auto",
    brats_modality: str = "flair",
    series: str | None = "all",
) -> list[dict]:
    """List the volumes of a dataset folder, one item per volume, sorted by patient.

    Args:
        dataset_dir: the dataset folder.
        layout: ``"luna16"``, ``"brats"``, ``"folder"``, ``"dicom"`` or ``"auto"`` (see the module docstring).
        modality: ``"ct"``, ``"mr"`` or ``"auto"`` (decided from the intensities when loading). The
            LUNA16 layout is ``"ct"`` and BraTS ``"mr"`` unless a modality is given here.
        brats_modality: BraTS sequence to use, one of :data:`BRATS_MODALITIES`.
        series: DICOM folders holding several series: ``"all"`` (each is a volume), a SeriesInstanceUID, or None
            (refused, listing them).

    Returns:
        ``[{"image": absolute path, "patient": patient id, "modality": "ct" | "mr" | "auto"}, ...]``.

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
        ValueError: the folder is empty, holds no volume of the layout, two volumes belong to the
            same patient, or an argument is not one of its choices.
        PermissionError: a volume cannot be opened for reading.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}.")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
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
    elif layout == "dicom":
        dicom = _dicom(files, root, series)
        found, default_modality = [(patient, path) for patient, path, _ in dicom], "auto"
        modalities = {os.fspath(path): m for _, path, m in dicom}
        expected = "folders of DICOM files"
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
    if duplicates and layout != "dicom":  # DICOM: a patient's series are volumes of one patient
        listing = "; ".join(f"{k}: {', '.join(map(os.fspath, v))}" for k, v in sorted(duplicates.items()))
        raise ValueError(f"Duplicate patients in {os.fspath(root)!r} (one volume per patient expected): {listing}.")

    items = []
    for patient, paths in sorted(by_patient.items()):
        for path in paths:
            if not os.access(split_series(path)[0], os.R_OK):
                raise PermissionError(f"Volume {os.fspath(path)!r} cannot be read (permission denied).")
            own = modalities.get(os.fspath(path), "auto") if layout == "dicom" else default_modality
            items.append(
                {"image": os.fspath(path), "patient": patient, "modality": modality if modality != "auto" else own}
            )
    return items


def collect_inputs(
    inputs: Sequence[str], modality: str, output_dir: str, series: str | None = None
) -> list[tuple[str, str]]:
    """The volumes of a command line: files as given, folders searched with :func:`find_volumes` (any layout),
    leaving out the ``<name>_sr<ext>`` results of an earlier run in ``output_dir``. A DICOM input (a folder of
    DICOM files, a DICOM file, a DICOMDIR, ``FOLDER#<SeriesInstanceUID>``) is one volume per series: ``series``
    picks one (a SeriesInstanceUID) or ``"all"``; None refuses an input with several series, listing them.

    Args:
        inputs: volume files or folders.
        modality: ``"ct"``, ``"mr"`` or ``"auto"`` (a folder's layout may set it: LUNA16 is CT, BraTS MR, DICOM
            its Modality).
        output_dir: the output folder of the run.

    Returns:
        ``[(absolute path, modality), ...]`` in the order given (a folder's volumes sorted by patient).

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no volume.
        ValueError: a file has an unsupported suffix, or an input is neither a regular file nor a folder.
    """
    found: list[tuple[str, str]] = []
    for entry in inputs:
        if is_dicom(entry):
            for name, info in _selected_series(entry, series):
                own = _modality_of(info["modality"])
                base, selected = split_series(name)
                name = os.path.abspath(base) + (SERIES_SEPARATOR + selected if selected else "")
                found.append((name, modality if modality != "auto" else own))
        elif os.path.isdir(entry):
            items = find_volumes(entry, layout="auto", modality=modality, series=series)
            volumes = [
                (item["image"], item.get("modality", modality))
                for item in items
                if not is_output_of_this(item["image"], output_dir)
            ]
            if not volumes:
                raise FileNotFoundError(f"no volumes ({', '.join(VOLUME_SUFFIXES)}) found in '{entry}'.")
            found += volumes
        elif os.path.isfile(entry):
            split_suffix(entry)
            found.append((os.path.abspath(entry), modality))
        elif os.path.exists(entry):
            raise ValueError(f"input '{entry}' is not a regular file or a folder (a device, a pipe or a socket).")
        else:
            raise FileNotFoundError(f"input '{entry}' does not exist (neither a file nor a folder).")
    return found
