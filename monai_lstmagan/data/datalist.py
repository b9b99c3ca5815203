"""The patient-level split of a dataset, written once to a decathlon-style datalist and reused.

The split is by patient (never by slice), seeded, 70/20/10 for training/test/validation as in the
paper, and is written to a decathlon-style JSON the first time; afterwards that file is reused as is,
so the split never changes between runs (delete the file to re-split).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_lstmagan.data.discovery import find_volumes
from monai_lstmagan.io.atomic import atomic_write_json
from monai_lstmagan.io.paths import split_suffix, volume_suffix

__all__ = ["SPLIT_KEYS", "split_by_patient", "load_datalist", "make_datalist"]

logger = logging.getLogger(__name__)

SPLIT_KEYS = ("training", "test", "validation")


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
        atomic_write_json({key: datalist[key] for key in ("training", "validation", "test")}, path, what="datalist")
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
