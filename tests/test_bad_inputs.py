"""Bad volumes: the start-up scan names each bad file and its problem; the loader refuses them too."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re

import numpy as np
import pytest
from volume_factory import ct_volume, mr_volume, write_mhd, write_nifti

import monai_lstmagan.data.checks as data_module
from monai_lstmagan.data import check_volumes, scan_volumes
from monai_lstmagan.transforms import volume_transforms


def _error_text(excinfo: pytest.ExceptionInfo) -> str:
    """Messages of the exception and its causes (MONAI's Compose wraps errors in a RuntimeError)."""
    texts, error = [], excinfo.value
    while error is not None:
        texts.append(str(error))
        error = error.__cause__
    return " | ".join(texts)


def _nifti_bytes(tmp_path) -> bytes:
    return open(write_nifti(tmp_path / "source.nii.gz", mr_volume()), "rb").read()


def _bad_cases(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (path, regex the problem must match)."""
    cases: dict[str, tuple[str, str]] = {}
    payload = _nifti_bytes(tmp_path)

    corrupt = bytearray(payload)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\0" * 64
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    cases["gzip-corrupt"] = (str(tmp_path / "corrupt.nii.gz"), "not a valid gzip file")

    (tmp_path / "truncated.nii.gz").write_bytes(payload[: len(payload) // 2])
    cases["truncated nii.gz"] = (str(tmp_path / "truncated.nii.gz"), "not a valid gzip file.*(ended|EOF)")

    (tmp_path / "plain.nii.gz").write_bytes(gzip.decompress(payload))  # not gzip at all
    cases["not gzip"] = (str(tmp_path / "plain.nii.gz"), "not a valid gzip file")

    missing = write_mhd(tmp_path / "missing.mhd", ct_volume())
    os.remove(tmp_path / "missing.raw")
    cases["raw missing"] = (missing, "data file 'missing.raw' is missing")

    short = write_mhd(tmp_path / "short.mhd", ct_volume())
    with open(tmp_path / "short.raw", "r+b") as f:
        f.truncate(1000)
    cases["raw too short"] = (short, r"'short.raw' is too short \(1000 bytes, 9600 expected\)")

    zshort = write_mhd(tmp_path / "zshort.mhd", ct_volume(), compressed=True)
    with open(tmp_path / "zshort.zraw", "r+b") as f:
        f.truncate(100)
    cases["zraw too short"] = (zshort, "'zshort.zraw' is too short")

    cases["2D nifti"] = (write_nifti(tmp_path / "flat.nii.gz", mr_volume()[:, :, 5]), "2D image")
    cases["2D mhd"] = (write_mhd(tmp_path / "flat.mhd", ct_volume()[:, :, 5]), "2D image")
    cases["one slice"] = (write_nifti(tmp_path / "slice.nii.gz", mr_volume()[:, :, 5:6]), "2D image")
    cases["5D"] = (write_nifti(tmp_path / "five.nii.gz", np.random.rand(6, 5, 4, 2, 2).astype(np.float32)), "5D image")

    nan = mr_volume().astype(np.float32)
    nan[3, 4, 5] = np.nan
    cases["NaN"] = (write_nifti(tmp_path / "nan.nii.gz", nan), "NaN or Inf")
    inf = ct_volume().astype(np.float32)
    inf[1, 2, 3] = np.inf
    cases["Inf"] = (write_mhd(tmp_path / "inf.mhd", inf), "NaN or Inf")

    cases["constant"] = (
        write_nifti(tmp_path / "constant.nii.gz", np.full((24, 20, 10), 7, np.int16)),
        "constant image.*7",
    )

    (tmp_path / "volume.txt").write_text("not an image")
    cases["wrong extension"] = (str(tmp_path / "volume.txt"), "unsupported extension")
    (tmp_path / "nifti_named.mhd").write_bytes(gzip.decompress(payload))
    cases["NIfTI named .mhd"] = (str(tmp_path / "nifti_named.mhd"), "not a MetaImage header")

    cases["does not exist"] = (str(tmp_path / "gone.nii.gz"), "does not exist")
    return cases


def test_scan_reports_every_bad_case(tmp_path):
    cases = _bad_cases(tmp_path)
    good_paths = [
        write_mhd(tmp_path / "good.mhd", ct_volume()),
        write_mhd(tmp_path / "good_z.mhd", ct_volume(), compressed=True),
        write_nifti(tmp_path / "good.nii.gz", mr_volume()),
        write_nifti(tmp_path / "few_slices.nii.gz", mr_volume((24, 20, 3))),  # Z < T: padded, not bad
        write_nifti(tmp_path / "small.nii.gz", mr_volume((8, 6, 10))),  # smaller than the crop: padded
    ]
    items = [{"image": p, "patient": str(i)} for i, p in enumerate(good_paths)]
    items += [{"image": path, "patient": name} for name, (path, _) in cases.items()]
    good, bad = scan_volumes(items)
    assert [g["image"] for g in good] == good_paths
    assert len(bad) == len(cases)
    problems = {b["patient"]: b["problem"] for b in bad}
    for name, (path, pattern) in cases.items():
        assert name in problems, name
        assert re.search(pattern, problems[name]), (name, problems[name])


def test_4d_is_used_with_a_warning(tmp_path):
    path = write_nifti(tmp_path / "four.nii.gz", np.stack([mr_volume(seed=s) for s in range(3)], axis=-1))
    with pytest.warns(UserWarning, match="four.nii.gz.*4D.*first volume"):
        good, bad = scan_volumes([{"image": path}])
    assert len(good) == 1 and not bad
    with pytest.warns(UserWarning, match="four.nii.gz.*4D"):
        out = volume_transforms()({"image": path})
    assert out["image"].shape == (1, 24, 20, 10)
    expected = volume_transforms()({"image": write_nifti(tmp_path / "first.nii.gz", mr_volume(seed=0))})["image"]
    assert np.array_equal(out["image"].numpy(), expected.numpy())


def test_size_thresholds(tmp_path):
    few = write_nifti(tmp_path / "few.nii.gz", mr_volume((24, 20, 3)))
    small = write_mhd(tmp_path / "small.mhd", ct_volume((6, 20, 10)))
    _, bad = scan_volumes([{"image": few}, {"image": small}], min_slices=4, min_size=(8, 8))
    problems = {os.path.basename(b["image"]): b["problem"] for b in bad}
    assert problems["few.nii.gz"] == "has 3 axial slices, fewer than the 4 required"
    assert problems["small.mhd"] == "is 6x20 in-plane, smaller than the 8x8 required"


def test_axial_axis_follows_the_orientation(tmp_path):
    # 3 axial slices stored on the first index axis; 24 x 20 in-plane
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 2.5, 0.7, 0.8, 1.0
    path = write_nifti(tmp_path / "axial_first.nii.gz", np.transpose(mr_volume((24, 20, 3)), (2, 0, 1)), affine)
    _, bad = scan_volumes([{"image": path}], min_slices=4)
    assert bad and "3 axial slices" in bad[0]["problem"]


def test_scan_cache_reuses_and_refreshes_verdicts(tmp_path, monkeypatch):
    good = write_nifti(tmp_path / "good.nii.gz", mr_volume())
    bad = write_nifti(tmp_path / "nan.nii.gz", np.full((24, 20, 10), np.nan, np.float32))
    items = [{"image": good}, {"image": bad}]
    cache_file = str(tmp_path / "cache" / "scan.json")
    first = scan_volumes(items, cache_file=cache_file)
    cached = json.loads(open(cache_file).read())["volumes"]
    assert set(cached) == {good, bad}

    reads = []
    real = data_module._volume_facts
    monkeypatch.setattr(data_module, "_volume_facts", lambda path: reads.append(path) or real(path))
    assert scan_volumes(items, cache_file=cache_file) == first
    assert reads == []  # nothing re-read
    write_nifti(bad, mr_volume(seed=5))  # the file is fixed: new size / mtime
    os.utime(bad, ns=(0, 1))
    good_items, bad_items = scan_volumes(items, cache_file=cache_file)
    assert reads == [bad] and len(good_items) == 2 and not bad_items


def test_check_volumes_lists_all_bad_files_or_skips_them(tmp_path, caplog):
    good = write_nifti(tmp_path / "good.nii.gz", mr_volume())
    constant = write_nifti(tmp_path / "constant.nii.gz", np.zeros((24, 20, 10), np.int16))
    missing = write_mhd(tmp_path / "lost.mhd", ct_volume())
    os.remove(tmp_path / "lost.raw")
    items = [{"image": good}, {"image": constant}, {"image": missing}]
    with pytest.raises(ValueError) as excinfo:
        check_volumes(items)
    message = str(excinfo.value)
    assert "2 of 3 volume(s) cannot be used" in message and "skip_bad_files" in message
    assert f"{constant}: is a constant image" in message
    assert f"{missing}: its data file 'lost.raw' is missing" in message
    assert good not in message

    with caplog.at_level(logging.WARNING, logger="monai_lstmagan.data"):
        kept = check_volumes(items, skip_bad_files=True)
    assert kept == [{"image": good}]
    assert "Skipping 2 bad volume(s)" in caplog.text and "constant.nii.gz" in caplog.text and "lost.mhd" in caplog.text

    with pytest.raises(ValueError, match="None of the 2 volume"):
        check_volumes(items[1:], skip_bad_files=True)


@pytest.mark.parametrize(
    "name, make, pattern",
    [
        ("flat.nii.gz", lambda p: write_nifti(p, mr_volume()[:, :, 4]), "flat.nii.gz.*2D image"),
        ("one_slice.mhd", lambda p: write_mhd(p, ct_volume()[:, :, 4:5]), "one_slice.mhd.*2D image"),
        (
            "nan.nii.gz",
            lambda p: write_nifti(p, np.where(mr_volume() > 600, np.nan, 1.0).astype(np.float32)),
            "nan.nii.gz.*NaN or Inf",
        ),
        (
            "constant.mhd",
            lambda p: write_mhd(p, np.full((24, 20, 10), -1000, np.int16)),
            "constant.mhd.*constant image",
        ),
    ],
)
def test_loader_names_the_file_and_problem(tmp_path, name, make, pattern):
    path = make(tmp_path / name)
    with pytest.raises(Exception) as excinfo:
        volume_transforms()({"image": path})
    assert re.search(pattern, _error_text(excinfo)), _error_text(excinfo)


def test_loader_names_an_unreadable_file(tmp_path):
    payload = _nifti_bytes(tmp_path)
    (tmp_path / "truncated.nii.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(Exception) as excinfo:
        volume_transforms()({"image": str(tmp_path / "truncated.nii.gz")})
    assert "truncated.nii.gz' is not a valid gzip file" in _error_text(excinfo)  # caught before the reader


_INFERENCE_WORDING = {  # where lstmagan-sr words a problem differently from the training scan
    "2D nifti": "not a 3D scalar volume", "2D mhd": "not a 3D scalar volume",
    "5D": "not a 3D scalar volume", "wrong extension": "unsupported file type",
}  # fmt: skip
_INFERENCE_ACCEPTS = ("one slice",)  # in-plane SR of a single-slice volume is meaningful; training needs slice blocks


def test_every_bad_case_through_lstmagan_sr_names_the_file_and_writes_nothing(tmp_path, capsys):
    import torch

    from monai_lstmagan.checkpoints import save_generator
    from monai_lstmagan.cli import main
    from monai_lstmagan.networks import LSTMAGANGenerator

    kwargs = {"scale": 2, "num_blocks": 1, "channels": 4, "dense_layers": 1, "growth": 4}
    torch.manual_seed(0)
    model = save_generator(tmp_path / "model.pt", LSTMAGANGenerator(**kwargs), kwargs)
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    for name, (path, pattern) in _bad_cases(cases_dir).items():
        if name in _INFERENCE_ACCEPTS:
            continue
        out = tmp_path / "out" / re.sub(r"\W", "_", name)
        assert main([path, "-o", str(out), "--model", model, "--no-progress"]) == 1, name
        error = capsys.readouterr().err
        assert os.path.basename(path) in error and re.search(_INFERENCE_WORDING.get(name, pattern), error), (
            name,
            error,
        )
        assert not out.exists() or not list(out.iterdir()), (name, list(out.iterdir()))  # nothing partial


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nii.gz"])
def test_every_advertised_format_round_trips_through_lstmagan_sr(tmp_path, suffix):
    import itk
    import torch

    from monai_lstmagan.checkpoints import save_generator
    from monai_lstmagan.cli import main
    from monai_lstmagan.io.scans import read_scan
    from monai_lstmagan.networks import LSTMAGANGenerator

    kwargs = {"scale": 2, "num_blocks": 1, "channels": 4, "dense_layers": 1, "growth": 4}
    torch.manual_seed(0)
    model = save_generator(tmp_path / "model.pt", LSTMAGANGenerator(**kwargs), kwargs)
    values = ct_volume().astype(np.int16)  # [X, Y, Z] in HU
    path = str(tmp_path / f"scan{suffix}")
    if suffix == ".nii.gz":
        write_nifti(path, values)
    else:
        image = itk.image_from_array(np.ascontiguousarray(values.transpose(2, 1, 0)))  # ITK wants [z, y, x]
        image.SetSpacing((0.7, 0.8, 3.0))
        image.SetOrigin((-10.0, 5.0, 2.0))
        itk.imwrite(image, path)
    source = read_scan(path)
    assert main([path, "-o", str(tmp_path / "out"), "--model", model, "--no-progress"]) == 0
    result = read_scan(str(tmp_path / "out" / f"scan_sr{suffix}"))
    assert result.array.shape == (values.shape[0] * 2, values.shape[1] * 2, values.shape[2])
    assert result.dtype == source.dtype
    np.testing.assert_allclose(
        np.abs(np.diag(result.affine)[:3]), np.abs(np.diag(source.affine)[:3]) / [2, 2, 1], rtol=1e-5
    )
