"""Whole-volume inference at clinical sizes (issue 22): the streamed writer, the fast CPU forward, the up-front
memory and disk check."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from volume_factory import ct_volume, write_nifti

import monai_lstmagan.inference.resources as resources
from monai_lstmagan.bench.end_to_end import reference_super_resolve_file
from monai_lstmagan.cli import main
from monai_lstmagan.inference.backends import slice_forward, strip_forward
from monai_lstmagan.inference.files import super_resolve_file
from monai_lstmagan.inference.in_plane import InPlaneSR, load_in_plane_model
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.io.scans import read_scan, write_scan
from monai_lstmagan.io.writer import ScanWriter
from monai_lstmagan.networks import LSTMAGANGenerator

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd")
CPU = InferenceOptions(batch_size=2, device="cpu")


def _rotated_affine() -> np.ndarray:
    affine = np.array([[0.8, -0.6, 0, 5.0], [0.6, 0.8, 0, -20.0], [0, 0, 1, 30.5], [0, 0, 0, 1]])
    return affine @ np.diag([0.7, 0.9, 2.5, 1.0])


@pytest.mark.parametrize("suffix", SUFFIXES + (".nhdr",))
@pytest.mark.parametrize("order", ["in order", "reversed", "along axis 0"])
def test_slabs_give_the_file_of_one_write(tmp_path, suffix, order):
    like = read_scan(write_nifti(tmp_path / "like.nii", ct_volume((12, 10, 7))))
    volume = ct_volume((12, 10, 7), seed=3)
    write_scan(volume, _rotated_affine(), str(tmp_path / f"whole{suffix}"), like=like)
    path = str(tmp_path / f"slabs{suffix}")
    with ScanWriter(path, volume.shape, _rotated_affine(), volume.dtype, like=like) as writer:
        if order == "along axis 0":
            for start in range(0, 12, 5):
                writer.write(volume[start : start + 5], start, axis=0)
        else:
            starts = range(0, 7, 3) if order == "in order" else reversed(range(0, 7, 3))
            for start in starts:
                writer.write(volume[:, :, start : start + 3], start)
    whole, slabs = read_scan(str(tmp_path / f"whole{suffix}")), read_scan(path)
    assert slabs.array.dtype == whole.array.dtype == np.int16
    np.testing.assert_array_equal(slabs.array, volume)
    np.testing.assert_allclose(slabs.affine, whole.affine, atol=1e-6)
    np.testing.assert_allclose(slabs.affine, _rotated_affine(), atol=1e-6)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".spool")]


def test_a_scaled_nifti_gets_the_scaling_nibabel_chooses_for_the_whole_volume(tmp_path):
    values = np.random.default_rng(0).normal(100.0, 30.0, (9, 8, 6)).astype(np.float32)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    nib.save(nib.Nifti1Image(values, np.eye(4), header), tmp_path / "scaled.nii")
    like = read_scan(str(tmp_path / "scaled.nii"))
    assert like.scaled
    write_scan(values * 3.0, like.affine, str(tmp_path / "whole.nii.gz"), np.int16, like=like)
    path = str(tmp_path / "slabs.nii.gz")
    with ScanWriter(path, values.shape, like.affine, np.int16, like=like, values_dtype=np.float32) as writer:
        for start in range(0, 6, 4):
            writer.write(values[:, :, start : start + 4] * 3.0, start)
    whole, slabs = nib.load(str(tmp_path / "whole.nii.gz")), nib.load(path)
    assert slabs.header.get_slope_inter() == whole.header.get_slope_inter() != (1.0, 0.0)
    np.testing.assert_array_equal(np.asanyarray(slabs.dataobj), np.asanyarray(whole.dataobj))


def test_an_incomplete_volume_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="incomplete"):
        with ScanWriter(str(tmp_path / "a.mhd"), (4, 4, 6), np.eye(4), np.int16) as writer:
            writer.write(np.zeros((4, 4, 3), np.int16), 0)
    assert os.listdir(tmp_path) == []


def _flipped(affine: np.ndarray) -> np.ndarray:
    """The same grid stored feet-to-head the other way (the axial axis runs I instead of S)."""
    return affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1.0]])


@pytest.mark.parametrize("scale, model", [(2, "model.pt"), (4, "model_x4.pt")])
def test_streamed_output_equals_the_in_memory_path_on_the_sample_scans(tmp_path, sample_data_dir, scale, model):
    operation = InPlaneSR(load_in_plane_model(str(REPO / "bundle" / "models" / model)))
    ct, mr = read_scan(str(sample_data_dir / "ct/lung1_crop.mhd")), read_scan(
        str(sample_data_dir / "mr/brain1_t1c.nii.gz")
    )
    crops = {"ct": (ct, ct.array[96:128, 96:128, 20:23]), "mr": (mr, mr.array[100:132, 100:132, 10:13])}
    for index, suffix in enumerate(SUFFIXES):
        name, (scan, crop) = list(crops.items())[index % 2]
        folder = tmp_path / suffix.strip(".")
        for sub in ("in", "old", "new"):
            (folder / sub).mkdir(parents=True)
        affine = _flipped(scan.affine) if suffix == ".nii" else scan.affine  # one of them through the spool
        source = str(folder / "in" / f"{name}{suffix}")
        write_scan(np.ascontiguousarray(crop), affine, source, like=scan)
        old = read_scan(reference_super_resolve_file(operation, source, str(folder / "old"), CPU))
        new = read_scan(super_resolve_file(operation, source, str(folder / "new"), options=CPU))
        assert new.array.dtype == old.array.dtype == np.int16 and new.array.shape == (32 * scale, 32 * scale, 3)
        assert np.abs(new.array.astype(np.int32) - old.array).max() <= 1, suffix  # the voxel type's rounding
        np.testing.assert_allclose(new.affine, old.affine, atol=1e-6)
        assert sorted(os.listdir(folder / "new")) == sorted(os.listdir(folder / "old"))


@pytest.mark.parametrize("scale", [2, 4])
def test_the_fast_forward_equals_the_eager_generator(scale):
    torch.manual_seed(scale)
    generator = LSTMAGANGenerator(scale=scale, num_blocks=1, channels=8, dense_layers=2, growth=4).eval()
    torch.nn.init.normal_(generator.tail.weight, std=0.05)  # not the zero tail of an untrained bicubic residual
    x = torch.rand(3, 1, 21, 17)
    with torch.inference_mode():
        eager = generator(x)
        strips = strip_forward(generator, x, output_pixels=scale * scale * 17 * 4)  # 4 rows per strip
        fast = slice_forward(generator, InferenceOptions(device="cpu"))(x)
    assert (strips - eager).abs().max() < 1e-5
    assert (fast - eager).abs().max() < 1e-4
    assert generator.head[0].weight.is_contiguous()  # the model given is not converted


def test_the_allocator_setting_is_in_effect_on_glibc_and_harmless_to_repeat():
    import ctypes
    import platform

    from monai_lstmagan.system import keep_freed_memory_for_reuse

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory_for_reuse() is glibc
    assert keep_freed_memory_for_reuse() is glibc  # once per process; a repeat changes nothing
    if glibc:  # freed blocks of 64 MB stay in the heap: a second allocation of that size reuses them
        libc = ctypes.CDLL(None)
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        libc.malloc_usable_size.restype, libc.malloc_usable_size.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        block = libc.malloc(64 << 20)
        # glibc marks mmapped chunks with bit 1 of the size word before the block; heap chunks have it cleared
        size_word = ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value
        libc.free(block)
        assert not size_word & 2, "a 64 MB block was mapped afresh instead of taken from the heap"


def _tiny_scan(tmp_path: Path) -> tuple[str, Path]:
    folder = tmp_path / "d"
    folder.mkdir()
    return write_nifti(folder / "a.nii.gz", ct_volume((24, 20, 4))), tmp_path / "out"


def test_a_memory_need_above_what_is_available_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    scan, out = _tiny_scan(tmp_path)
    monkeypatch.setattr(resources, "available_memory", lambda: (10_000, "MemAvailable"))
    assert main([scan, "-o", str(out), "--scale", "2", "--no-progress", "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert f"'{scan}' needs about" in error and "10.0 kB is available (MemAvailable)" in error, error
    assert "input" in error and "model" in error and "nothing was written" in error
    assert list(out.iterdir()) == []


def test_a_full_disk_is_refused_before_any_work_with_the_numbers(tmp_path, capsys, monkeypatch):
    scan, out = _tiny_scan(tmp_path)
    monkeypatch.setattr(resources, "free_disk", lambda folder: 999)
    assert main([scan, "-o", str(out), "--scale", "4", "--no-progress", "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    needed = 24 * 4 * 20 * 4 * 4 * 2  # int16 output voxels
    assert f"'{out / 'a_sr.nii.gz'}'" in error and f"needs up to {needed / 1e3:.1f} kB of disk" in error, error
    assert "has 999 B free" in error
    assert list(out.iterdir()) == []


def test_the_check_passes_when_the_run_fits(tmp_path, monkeypatch):
    scan, out = _tiny_scan(tmp_path)
    out.mkdir()
    operation = InPlaneSR(load_in_plane_model(str(REPO / "bundle" / "models" / "model.pt")))
    memory, disk, detail = resources.volume_needs(operation, scan, str(out), None, CPU)
    monkeypatch.setattr(resources, "available_memory", lambda: (memory, "test"))
    monkeypatch.setattr(resources, "free_disk", lambda folder: disk)
    assert read_scan(super_resolve_file(operation, scan, str(out), options=CPU)).array.shape == (48, 40, 4)
