"""Volume discovery (LUNA16, BraTS, folder layouts), patient-level split, datalist written once."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from volume_factory import ct_volume, make_brats_tree, mr_volume, write_mhd, write_nifti

from monai_lstmagan.data import find_volumes, load_datalist, make_datalist, split_by_patient

SPLITS = ("training", "test", "validation")


def _patients(split: dict) -> dict[str, set[str]]:
    return {k: {i["patient"] for i in split[k]} for k in SPLITS}


def test_luna16_layout(luna16_dir):
    items = find_volumes(luna16_dir)
    assert len(items) == 5  # the seg-lungs-LUNA16 mask is not a volume of the layout
    for item in items:
        assert os.path.isabs(item["image"]) and item["image"].endswith(item["patient"] + ".mhd")
        assert item["patient"].startswith("1.3.6.1.4.1.14519")
        assert item["modality"] == "ct"
        assert os.path.basename(os.path.dirname(item["image"])).startswith("subset")
    assert items == find_volumes(luna16_dir, layout="luna16")
    assert [i["patient"] for i in items] == sorted(i["patient"] for i in items)


def test_brats_layout_and_modality_choice(brats_dir):
    items = find_volumes(brats_dir)
    assert [i["patient"] for i in items] == [
        f"BraTS2021_{c}" for c in ("00000", "00002", "00003", "00005", "00006", "00008")
    ]
    assert all(i["image"].endswith("_flair.nii.gz") and i["modality"] == "mr" for i in items)
    t1 = find_volumes(brats_dir, layout="brats", brats_modality="t1")
    assert all(i["image"].endswith("_t1.nii.gz") for i in t1)
    with pytest.raises(ValueError, match="No volume found.*t2"), pytest.warns(UserWarning, match="no 't2' volume"):
        find_volumes(brats_dir, layout="brats", brats_modality="t2")
    with pytest.raises(ValueError, match="brats_modality"):
        find_volumes(brats_dir, brats_modality="seg")


def test_brats_case_without_modality_warns(brats_dir):
    os.remove(brats_dir / "BraTS2021_00003" / "BraTS2021_00003_flair.nii.gz")
    with pytest.warns(UserWarning, match="BraTS2021_00003"):
        items = find_volumes(brats_dir, layout="brats")
    assert "BraTS2021_00003" not in {i["patient"] for i in items}


def test_folder_layout(folder_dir):
    items = find_volumes(folder_dir)
    assert [i["patient"] for i in items] == ["ct/a", "ct/b", "mr/c", "mr/d"]
    assert all(i["modality"] == "auto" for i in items)
    assert {os.path.splitext(i["image"])[1] for i in items} == {".mhd", ".gz", ".nii"}
    assert all(i["modality"] == "mr" for i in find_volumes(folder_dir, modality="mr"))
    assert find_volumes(folder_dir, layout="folder") == items


def test_auto_layout_on_sample_data(sample_data_dir):
    items = find_volumes(sample_data_dir)
    assert [i["patient"] for i in items] == ["ct/lung1_crop", "mr/brain1_t1c"]


def test_missing_empty_and_no_volume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_volumes(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty.*is empty"):
        find_volumes(empty)
    (empty / "readme.txt").write_text("x")
    (empty / "lung.raw").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="No volume found in .*empty"):
        find_volumes(empty)
    with pytest.raises(ValueError, match="layout"):
        find_volumes(empty, layout="decathlon")
    with pytest.raises(NotADirectoryError, match="readme.txt"):
        find_volumes(empty / "readme.txt")


def test_duplicate_patients(tmp_path, luna16_dir):
    # the same SeriesUID in two subsets
    uid = os.path.basename(find_volumes(luna16_dir)[0]["image"])[: -len(".mhd")]
    write_mhd(luna16_dir / "subset2" / f"{uid}.mhd", ct_volume())
    with pytest.raises(ValueError, match=f"Duplicate patients.*{uid}.*subset0.*subset2"):
        find_volumes(luna16_dir)
    # the same BraTS case in two folders
    brats = tmp_path / "brats"
    make_brats_tree(brats / "train", ["00001"], modalities=("flair",))
    make_brats_tree(brats / "extra", ["00001"], modalities=("flair",))
    with pytest.raises(ValueError, match="Duplicate patients.*BraTS2021_00001"):
        find_volumes(brats)
    # a.nii and a.nii.gz side by side in a plain folder
    folder = tmp_path / "plain"
    folder.mkdir()
    write_nifti(folder / "a.nii", mr_volume())
    write_nifti(folder / "a.nii.gz", mr_volume())
    with pytest.raises(ValueError, match="Duplicate patients.*a.nii"):
        find_volumes(folder)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(folder_dir):
    target = folder_dir / "mr" / "c.nii.gz"
    os.chmod(target, 0)
    try:
        with pytest.raises(PermissionError, match="c.nii.gz"):
            find_volumes(folder_dir)
    finally:
        os.chmod(target, 0o644)


def _items(n: int, per_patient: int = 1) -> list[dict]:
    return [
        {"image": f"/data/p{p:03d}_{k}.nii.gz", "patient": f"p{p:03d}", "modality": "mr"}
        for p in range(n)
        for k in range(per_patient)
    ]


@pytest.mark.parametrize("n", [3, 7, 10, 23, 100])
def test_split_fractions_and_no_leak(n):
    items = _items(n, per_patient=2)
    split = split_by_patient(items, seed=3)
    assert list(split) == list(SPLITS)
    patients = _patients(split)
    assert not (patients["training"] & patients["test"]) and not (patients["training"] & patients["validation"])
    assert not (patients["test"] & patients["validation"])
    assert sum(len(v) for v in patients.values()) == n
    assert sum(len(split[k]) for k in SPLITS) == 2 * n  # both items of a patient stay together
    assert all(len(v) >= 1 for v in patients.values())
    if n == 100:
        assert [len(patients[k]) for k in SPLITS] == [70, 20, 10]


def test_split_is_seeded_and_order_independent():
    items = _items(30)
    a = split_by_patient(items, seed=0)
    assert a == split_by_patient(items, seed=0)
    assert _patients(a) == _patients(split_by_patient(list(reversed(items)), seed=0))
    assert _patients(a) != _patients(split_by_patient(items, seed=1))


def test_split_small_datasets():
    two = split_by_patient(_items(2))
    assert [len(two[k]) for k in SPLITS] == [1, 0, 1]
    with pytest.warns(UserWarning, match="one patient"):
        one = split_by_patient(_items(1))
    assert [len(one[k]) for k in SPLITS] == [1, 0, 0]
    with pytest.raises(ValueError, match="fractions"):
        split_by_patient(_items(5), fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="no items"):
        split_by_patient([])


def test_make_datalist_written_once_and_reused(luna16_dir, tmp_path):
    datalist_file = tmp_path / "out" / "datalist.json"
    first = make_datalist(luna16_dir, datalist_file)
    assert datalist_file.exists()
    on_disk = json.loads(datalist_file.read_text())
    assert set(on_disk) == {"training", "validation", "test"}
    assert [len(first[k]) for k in SPLITS] == [3, 1, 1]
    assert all(set(i) == {"image", "patient", "modality"} for k in SPLITS for i in on_disk[k])
    assert on_disk["training"] == first["training"]

    # another seed would split differently, but the existing file wins
    assert make_datalist(luna16_dir, datalist_file, seed=123) == first
    # a hand-edited (but consistent) file is reused as it is, never re-split
    on_disk["training"], on_disk["validation"] = on_disk["validation"], on_disk["training"]
    datalist_file.write_text(json.dumps(on_disk))
    reused = make_datalist(luna16_dir, datalist_file)
    assert reused["training"] == first["validation"] and reused["validation"] == first["training"]


def test_make_datalist_split_stable_across_fresh_runs(brats_dir, tmp_path):
    a = make_datalist(brats_dir, tmp_path / "a.json", seed=7)
    b = make_datalist(brats_dir, tmp_path / "b.json", seed=7)
    assert a == b
    patients = _patients(a)
    assert sum(len(v) for v in patients.values()) == 6 and all(patients.values())


def test_make_datalist_with_changed_folder_warns_and_keeps_split(folder_dir, tmp_path):
    datalist_file = tmp_path / "datalist.json"
    first = make_datalist(folder_dir, datalist_file)
    removed = first["training"][0]["image"]
    os.remove(removed)
    write_nifti(folder_dir / "mr" / "new.nii.gz", mr_volume(seed=9))
    with pytest.warns(UserWarning) as record:
        second = make_datalist(folder_dir, datalist_file)
    messages = " ".join(str(w.message) for w in record)
    assert "no longer exist" in messages and os.path.basename(removed) in messages
    assert "not in datalist" in messages and "new.nii.gz" in messages
    assert second["training"] == [i for i in first["training"] if i["image"] != removed]
    assert second["validation"] == first["validation"] and second["test"] == first["test"]
    assert json.loads(datalist_file.read_text())["training"] == first["training"]  # file untouched


def test_make_datalist_with_two_volumes(sample_data_dir, tmp_path):
    datalist = make_datalist(sample_data_dir, tmp_path / "datalist.json")
    assert [len(datalist[k]) for k in SPLITS] == [1, 0, 1]


def test_bad_existing_datalists(folder_dir, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        make_datalist(folder_dir, broken)
    leaking = tmp_path / "leak.json"
    path = find_volumes(folder_dir)[0]["image"]
    leaking.write_text(json.dumps({"training": [{"image": path}], "validation": [{"image": path}]}))
    with pytest.raises(ValueError, match="leak.json.*in both 'training' and 'validation'"):
        make_datalist(folder_dir, leaking)


def test_load_decathlon_datalist_with_relative_paths(folder_dir, tmp_path):
    shutil.copytree(folder_dir, tmp_path / "copy")
    datalist_file = tmp_path / "copy" / "datalist.json"
    datalist_file.write_text(json.dumps({"training": [{"image": "ct/a.mhd"}], "validation": ["mr/c.nii.gz"]}))
    datalist = load_datalist(datalist_file, modality="ct")
    assert datalist["training"] == [
        {"image": str(tmp_path / "copy" / "ct" / "a.mhd"), "patient": "a", "modality": "ct"}
    ]
    assert datalist["validation"][0]["image"] == str(tmp_path / "copy" / "mr" / "c.nii.gz")
    assert datalist["test"] == []


def test_datalist_item_with_an_unsupported_suffix_is_left_to_the_volume_check(tmp_path):
    """Patient ids come from the file name without its volume suffix; a file of another type is not refused while
    the datalist is read (so ``skip_bad_files`` can skip it later), its id is its name."""
    datalist = tmp_path / "datalist.json"
    datalist.write_text('{"training": ["ct/a.nii.gz", "notes.txt"], "validation": [], "test": []}')
    items = load_datalist(datalist)["training"]
    assert [item["patient"] for item in items] == ["a", "notes.txt"]
