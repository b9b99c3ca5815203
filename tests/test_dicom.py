"""DICOM in, DICOM out (issue 25): series made here from the sample scans by pydicom (an independent writer), read by
the one reader, super-resolved by ``lstmagan-sr`` and read back by ITK and pydicom."""

from __future__ import annotations

import os
import random
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai_lstmagan.checkpoints import save_generator
from monai_lstmagan.cli import main
from monai_lstmagan.data.cache import build_disk_entry
from monai_lstmagan.data.checks import check_volumes
from monai_lstmagan.data.discovery import find_volumes
from monai_lstmagan.io.dicom import expand_series, open_series
from monai_lstmagan.io.geometry import LPS_TO_RAS
from monai_lstmagan.io.scans import read_scan
from monai_lstmagan.networks import LSTMAGANGenerator
from monai_lstmagan.transforms.intensity import load_transforms

SAMPLES = Path(__file__).resolve().parents[1] / "bundle" / "sample_data"
TINY = {"scale": 2, "num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 8}
CT_CLASS, MR_CLASS, ENHANCED_MR = (
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.4.1",
)


def _crop(path: Path, start, size) -> tuple[np.ndarray, np.ndarray]:
    """``(array [I, J, K], RAS affine)`` of a crop of a sample scan (read by ITK / nibabel, not by the package)."""
    if path.suffix == ".mhd":
        image = itk.imread(str(path))
        array = itk.array_from_image(image).transpose(2, 1, 0)
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(image.GetDirection()) * np.asarray(image.GetSpacing())
        lps[:3, 3] = np.asarray(image.GetOrigin())
        affine = LPS_TO_RAS @ lps
    else:
        image = nib.load(str(path))
        array, affine = np.asarray(image.dataobj), image.affine
    shift = np.eye(4)
    shift[:3, 3] = start
    index = tuple(slice(s, s + n) for s, n in zip(start, size))
    return np.ascontiguousarray(array[index]).astype(np.int16), affine @ shift


@pytest.fixture(scope="module")
def ct():
    return _crop(SAMPLES / "ct" / "lung1_crop.mhd", (96, 96, 20), (48, 40, 6))


@pytest.fixture(scope="module")
def mr():
    return _crop(SAMPLES / "mr" / "brain1_t1c.nii.gz", (100, 100, 10), (40, 36, 5))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return save_generator(str(tmp_path_factory.mktemp("model") / "model.pt"), LSTMAGANGenerator(**TINY), TINY)


def _geometry(affine: np.ndarray):
    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return lps, spacing, lps[:3, :3] / spacing


def _base(modality: str, study: str, series: str, patient: str = "P001") -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", patient, "19700101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = (
        study,
        "20240101",
        "120000",
        "1",
        "",
    )
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription, ds.Modality = series, 3, "test series", modality
    ds.FrameOfReferenceUID, ds.Manufacturer = generate_uid(), "pydicom"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    return ds


def _save(ds: Dataset, path: str, sop_class: str, syntax=ExplicitVRLittleEndian) -> None:
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = (
        sop_class,
        ds.SOPInstanceUID,
        syntax,
    )
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def write_series(
    folder, array, affine, modality="CT", slope=1.0, intercept=0.0, unsigned=False, order="shuffled", skip=None,
    study=None, series=None, tilt=0.0, orientation=None, photometric=None,
) -> str:  # fmt: skip
    """A classic single-frame series of ``array`` (real units) in ``folder``, one file per slice, written in
    ``order`` (``"shuffled"``, ``"reversed"``; file names and InstanceNumbers in that order, not along the normal)."""
    os.makedirs(folder, exist_ok=True)
    study, series = study or generate_uid(), series or generate_uid()
    lps, spacing, axes = _geometry(affine)
    stored = np.rint((array.astype(np.float64) - intercept) / slope)
    dtype = np.uint16 if unsigned else np.int16
    assert stored.min() >= np.iinfo(dtype).min and stored.max() <= (4095 if unsigned else np.iinfo(dtype).max)
    ks = [k for k in range(array.shape[2]) if k != skip]
    ks = ks[::-1] if order == "reversed" else random.Random(1).sample(ks, len(ks)) if order == "shuffled" else ks
    template = _base(modality, study, series)
    for n, k in enumerate(ks):
        ds = Dataset()
        ds.update(template)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = n + 1
        position = lps[:3, 3] + lps[:3, 2] * k + (axes[:, 0] * tilt * k)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        iop = np.concatenate([axes[:, 0], axes[:, 1]]) if orientation is None or k % 2 else orientation
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.PixelSpacing = [f"{spacing[1]:.8f}", f"{spacing[0]:.8f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12 if unsigned else 16, 11 if unsigned else 15
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        if photometric:
            ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = photometric, 3, 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = np.zeros((array.shape[1], array.shape[0], 3), np.uint8).tobytes()
        else:
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype(dtype)).tobytes()
        _save(ds, os.path.join(folder, f"slice{n:03d}.dcm"), CT_CLASS if modality == "CT" else MR_CLASS)
    return str(folder)


def write_multiframe(path, array, affine, slope=1.0, intercept=0.0) -> str:
    """One Enhanced MR Image file of ``array`` with its geometry in the functional groups (frames shuffled)."""
    lps, spacing, axes = _geometry(affine)
    ds = _base("MR", generate_uid(), generate_uid())
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = array.shape[1], array.shape[0], array.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures, plane, rescale = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [f"{spacing[1]:.8f}", f"{spacing[0]:.8f}"], f"{spacing[2]:.6f}"
    plane.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([axes[:, 0], axes[:, 1]])]
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = f"{slope:g}", f"{intercept:g}", "US"
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [plane]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    order = random.Random(2).sample(range(array.shape[2]), array.shape[2])
    frames = []
    for k in order:
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + lps[:3, 2] * k]
        item.PlanePositionSequence = [position]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    stored = np.rint((array.astype(np.float64) - intercept) / slope).astype(np.int16)
    ds.PixelData = np.ascontiguousarray(np.stack([stored[:, :, k].T for k in order])).tobytes()
    _save(ds, str(path), ENHANCED_MR)
    return str(path)


def _canonical(array: np.ndarray, affine: np.ndarray):
    """The volume reoriented to RAS (nibabel), to compare scans whose slices run the other way."""
    return nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array, np.float32), affine))


def _itk_series(folder: str):
    """``(array [I, J, K], RAS affine)`` of a DICOM folder read by ITK's GDCM series reader."""
    names = itk.GDCMSeriesFileNames.New(Directory=folder)
    reader = itk.ImageSeriesReader[itk.Image[itk.F, 3]].New(FileNames=names.GetInputFileNames())
    reader.SetImageIO(itk.GDCMImageIO.New())
    reader.Update()
    image = reader.GetOutput()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()) * np.asarray(image.GetSpacing())
    lps[:3, 3] = np.asarray(image.GetOrigin())
    return itk.array_from_image(image).transpose(2, 1, 0), LPS_TO_RAS @ lps


# --------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    "variant",
    [dict(order="shuffled"), dict(order="reversed", slope=0.5), dict(unsigned=True, intercept=-1024.0)],
    ids=["shuffled", "reversed-slope-0.5", "unsigned"],
)
def test_series_read_as_the_source_scan_and_as_itk_reads_it(tmp_path, ct, variant):
    array, affine = ct
    folder = write_series(tmp_path / "ct", array, affine, **variant)
    scan = read_scan(folder)
    np.testing.assert_array_equal(scan.array, array)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)
    assert scan.dtype == (np.float32 if variant.get("slope") == 0.5 else np.int16)
    itk_array, itk_affine = _itk_series(folder)  # a second, maintained reader
    np.testing.assert_allclose(itk_array, array, atol=1e-3)
    np.testing.assert_allclose(itk_affine, scan.affine, atol=1e-5)


def test_dicomdir_is_read_through_its_records(tmp_path, ct):
    from pydicom.fileset import FileSet

    array, affine = ct
    folder = write_series(tmp_path / "series", array, affine)
    fileset = FileSet()
    for name in os.listdir(folder):
        fileset.add(os.path.join(folder, name))
    fileset.write(tmp_path / "media")  # its own folder tree, file names that say nothing of the order
    scan = read_scan(str(tmp_path / "media" / "DICOMDIR"))
    np.testing.assert_array_equal(scan.array, array)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)


def test_multiframe_and_training_path_read_the_same(tmp_path, mr):
    array, affine = mr
    path = write_multiframe(tmp_path / "mr.dcm", array, affine, slope=0.25, intercept=-10.0)
    scan = read_scan(path)  # the slices run along the normal (row x column cosines): here from head to feet
    assert np.linalg.det(scan.affine[:3, :3]) * np.linalg.det(affine[:3, :3]) < 0
    same, source = _canonical(scan.array, scan.affine), _canonical(array, affine)
    np.testing.assert_array_equal(same.get_fdata(), source.get_fdata())
    np.testing.assert_allclose(same.affine, source.affine, atol=1e-5)
    nifti = str(tmp_path / "mr.nii.gz")
    nib.save(nib.Nifti1Image(array, affine), nifti)
    from_dicom, from_nifti = (load_transforms()({"image": p})["image"] for p in (path, nifti))  # training's loader
    np.testing.assert_array_equal(from_dicom.numpy(), from_nifti.numpy())
    np.testing.assert_allclose(from_dicom.affine.numpy(), from_nifti.affine.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    "variant, reason",
    [
        (dict(skip=3), "uneven slice spacing"),
        (dict(orientation=np.array([1.0, 0, 0, 0, 0, -1.0])), "different orientations"),
        (dict(tilt=0.3), "gantry tilt"),
        (dict(photometric="RGB"), "colour image"),
    ],
    ids=["missing-slice", "mixed-orientations", "gantry-tilt", "rgb"],
)
def test_what_is_not_one_volume_is_refused_naming_folder_and_reason(tmp_path, ct, variant, reason):
    folder = write_series(tmp_path / "bad", *ct, **variant)
    with pytest.raises(ValueError, match=reason) as error:
        read_scan(folder)
    assert folder in str(error.value)


@pytest.mark.parametrize("change", ["jpeg-ls", "secondary-capture"])
def test_compressed_without_decoder_and_secondary_capture_are_refused(tmp_path, ct, change):
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if change == "jpeg-ls" and get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    folder = write_series(tmp_path / change, ct[0][:, :, :2], ct[1])
    for name in sorted(os.listdir(folder)):
        ds = pydicom.dcmread(os.path.join(folder, name))
        if change == "jpeg-ls":
            ds.file_meta.TransferSyntaxUID = JPEGLSLossless
            ds.PixelData = encapsulate([b"\xff\xd8 not decoded here \xff\xd9"])
        else:
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.save_as(os.path.join(folder, name))
    with pytest.raises(ValueError, match="JPEG-LS.*no installed decoder|secondary capture") as error:
        read_scan(folder)
    assert folder in str(error.value)


def test_two_series_in_one_folder_are_listed_picked_or_each_and_found_for_training(tmp_path, ct):
    array, affine = ct
    folder = tmp_path / "data" / "patient"
    one, two = generate_uid(), generate_uid()
    write_series(folder, array, affine, series=one)
    other = write_series(tmp_path / "other", array[:, :, :4], affine, series=two)
    for name in os.listdir(other):
        os.rename(os.path.join(other, name), folder / f"b_{name}")
    with pytest.raises(ValueError, match=f"holds 2 DICOM series: .*{one}") as error:
        expand_series(str(folder))
    assert str(folder) in str(error.value)
    assert expand_series(str(folder), two) == [f"{folder}#{two}"]
    assert read_scan(f"{folder}#{two}").array.shape == (48, 40, 4)
    items = find_volumes(tmp_path / "data")  # auto: the dicom layout, each series a volume of patient P001
    assert sorted(i["image"] for i in items) == sorted([f"{folder}#{one}", f"{folder}#{two}"])
    assert {i["patient"] for i in items} == {"P001"} and {i["modality"] for i in items} == {"ct"}
    write_series(tmp_path / "data" / "gap", array, affine, skip=2)  # the start-up check reports it, names it
    items = find_volumes(tmp_path / "data")
    good = check_volumes(items, skip_bad_files=True)
    assert len(items) == 3 and sorted(i["image"] for i in good) == sorted([f"{folder}#{one}", f"{folder}#{two}"])
    volume = build_disk_entry(good[0], str(tmp_path / "cache"))  # the preparation cache, through LoadVolumed
    assert tuple(volume.shape) in {(48, 40, 6), (48, 40, 4), (6, 48, 40), (4, 48, 40)}


# --------------------------------------------------------------------------------------------- end to end


def _run(inputs, out, model, *extra) -> None:
    assert main([*inputs, "-o", str(out), "--model", model, "--no-progress", "--batch-size", "2", *extra]) == 0


def test_lstmagan_sr_dicom_series_out_matches_the_nifti_path(tmp_path, ct, tiny_model):
    array, affine = ct
    folder = write_series(tmp_path / "in" / "ct", array, affine, order="shuffled", intercept=-1024.0, unsigned=True)
    nifti = str(tmp_path / "nifti" / "ct.nii.gz")
    os.makedirs(os.path.dirname(nifti))
    nib.save(nib.Nifti1Image(array, affine), nifti)
    _run([folder], tmp_path / "out", tiny_model, "--modality", "ct")
    _run([nifti], tmp_path / "out_nifti", tiny_model, "--modality", "ct")
    _run([folder], tmp_path / "out_as_nifti", tiny_model, "--modality", "ct", "--output-format", ".nii.gz")
    out = str(tmp_path / "out" / "ct_sr")
    reference = nib.load(str(tmp_path / "out_nifti" / "ct_sr.nii.gz"))
    expected = np.asarray(reference.dataobj)
    assert expected.shape == (96, 80, 6)

    sr = read_scan(out)  # the one reader; unsigned 12-bit pixels with intercept -1024 hold -1024..3071 HU only
    np.testing.assert_array_equal(sr.array, np.clip(expected, -1024, 3071))
    np.testing.assert_allclose(sr.affine, reference.affine, atol=1e-3)
    itk_array, itk_affine = _itk_series(out)  # ITK's GDCM reader
    np.testing.assert_allclose(itk_array, sr.array, atol=1e-3)
    np.testing.assert_allclose(itk_affine, reference.affine, atol=1e-3)
    as_nifti = nib.load(str(tmp_path / "out_as_nifti" / "ct_sr.nii.gz"))
    np.testing.assert_array_equal(np.asarray(as_nifti.dataobj), expected)

    source = [pydicom.dcmread(os.path.join(folder, n)) for n in sorted(os.listdir(folder))]
    written = [pydicom.dcmread(os.path.join(out, n)) for n in sorted(os.listdir(out))]
    assert len(written) == 6
    lps = LPS_TO_RAS @ reference.affine
    for k, ds in enumerate(written):
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], lps[:3, 3] + lps[:3, 2] * k, atol=1e-3)
        assert (ds.Rows, ds.Columns) == (80, 96) and ds.PixelRepresentation == 0 and ds.BitsStored == 12
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.570312 / 2] * 2, abs=1e-5)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (-600.0, 1500.0)
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and "LSTMAGAN" in ds.SeriesDescription
        assert "in-plane super-resolution x2" in ds.DerivationDescription
        assert ds.StudyInstanceUID == source[0].StudyInstanceUID and ds.PatientID == source[0].PatientID
        assert ds.FrameOfReferenceUID == source[0].FrameOfReferenceUID
        assert ds.SeriesInstanceUID != source[0].SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in written} | {ds.SOPInstanceUID for ds in source}) == 12
    assert len({ds.SeriesInstanceUID for ds in written}) == 1

    _run([folder], tmp_path / "out", tiny_model, "--modality", "ct")  # a rerun replaces the series folder whole
    assert len(os.listdir(out)) == 6 and not [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]


def test_lstmagan_sr_multiframe_mr_and_through_plane(tmp_path, mr, tiny_model):
    array, affine = mr
    path = write_multiframe(tmp_path / "mr.dcm", array, affine)
    _run([path], tmp_path / "out", tiny_model, "--modality", "mr")
    sr = read_scan(str(tmp_path / "out" / "mr_sr"))
    assert sr.array.shape == (80, 72, 5)
    assert pydicom.dcmread(sorted((tmp_path / "out" / "mr_sr").iterdir())[0]).SOPClassUID == MR_CLASS
    assert main(
        [path, "-o", str(tmp_path / "tp"), "--through-plane", "--factor", "2", "--fine-tune-iterations", "0",
         "--no-progress"]
    ) == 0  # fmt: skip
    series = open_series(str(tmp_path / "tp" / "mr_sr"))
    assert series.shape == (40, 36, 10)
    assert float(series.template.SpacingBetweenSlices) == pytest.approx(np.linalg.norm(affine[:3, 2]) / 2, abs=1e-4)
    assert "through-plane" in series.template.DerivationDescription


def test_refusals_through_the_command_line(tmp_path, ct, mr, tiny_model, capsys):
    array, affine = ct
    folder = write_series(tmp_path / "gap", array, affine, skip=2)
    assert main([folder, "-o", str(tmp_path / "o"), "--model", tiny_model, "--no-progress"]) == 1
    message = capsys.readouterr().err
    assert folder in message and "uneven slice spacing" in message
    two = tmp_path / "two"
    uids = [generate_uid(), generate_uid()]
    for n, uid in enumerate(uids):
        for name in os.listdir(write_series(tmp_path / f"s{n}", array[:, :, : 3 + n], affine, series=uid)):
            os.renames(tmp_path / f"s{n}" / name, two / f"{n}_{name}")
    assert main([str(two), "-o", str(tmp_path / "o2"), "--model", tiny_model, "--no-progress"]) == 1
    message = capsys.readouterr().err
    assert str(two) in message and "holds 2 DICOM series" in message and all(uid in message for uid in uids)
    _run([str(two)], tmp_path / "o2", tiny_model, "--series", "all")
    assert sorted(os.listdir(tmp_path / "o2")) == sorted(f"two_{uid}_sr" for uid in uids)
    nifti = str(tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(mr[0], mr[1]), nifti)
    assert main([nifti, "-o", str(tmp_path / "o"), "--model", tiny_model, "--output-format", "dicom"]) == 1
    assert "DICOM output is written from a DICOM input only" in capsys.readouterr().err
    assert not [n for n in os.listdir(tmp_path / "o") if not n.startswith(".")]
