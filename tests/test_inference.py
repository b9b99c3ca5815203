"""Whole-volume inference: geometry, units, dtype, orientation, batching, tiling, CLI and bundle run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import itk
import nibabel as nib
import numpy as np
import pytest
import torch
from volume_factory import ct_volume, mr_volume, write_mhd

from monai_lstmagan.checkpoints import load_generator, load_interpolated_generator, save_generator
from monai_lstmagan.cli import main
from monai_lstmagan.inference import (
    InferenceOptions,
    InPlaneSR,
    default_batch_size,
    run_inference,
    super_resolve_file,
    super_resolve_volume,
)
from monai_lstmagan.io.geometry import upsampled_affine
from monai_lstmagan.io.paths import output_path_for
from monai_lstmagan.io.scans import read_scan
from monai_lstmagan.networks import LSTMAGANGenerator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"scale": 2, "num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 8}


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# oblique direction (tilted about x, then about z), with the file's first axis the head-foot axis
OBLIQUE = _rotation(2, 25.0) @ _rotation(0, 12.0) @ np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])


class NearestUpsample(torch.nn.Module):
    """Stand-in generator: nearest-neighbour x``scale`` upsampling, so every output value is known."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("model") / "model.pt")
    return save_generator(path, LSTMAGANGenerator(**TINY), TINY)


def _extent_corners(affine: np.ndarray, shape) -> np.ndarray:
    """World coordinates of the 8 outer corners of the voxel grid (voxel edges at index -0.5 and n - 0.5)."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ corners).T + affine[:3, 3]


def _deep_inside(array: np.ndarray, low: float, high: float, axes=(0, 1)) -> np.ndarray:
    """Voxels whose 5x5 in-plane neighbourhood lies inside ``[low, high]`` (bicubic cannot leave the window there)."""
    from scipy.ndimage import maximum_filter, minimum_filter

    size = [5 if a in axes else 1 for a in range(array.ndim)]
    return (minimum_filter(array, size=size) > low) & (maximum_filter(array, size=size) < high)


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_upsampled_affine_keeps_extent_and_refines_voxels():
    affine = np.eye(4)
    affine[:3, :3] = OBLIQUE @ np.diag([0.7, 0.9, 3.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    shape = (6, 8, 5)
    new = upsampled_affine(affine, (0, 1), 4)
    new_shape = (24, 32, 5)
    np.testing.assert_allclose(_extent_corners(new, new_shape), _extent_corners(affine, shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(new[:3, :3], axis=0), [0.175, 0.225, 3.0])
    np.testing.assert_allclose(new[:3, 2], affine[:3, 2])
    # the first new voxel centre is a quarter old voxel - 1/8 ... i.e. at index -3/8 of the old grid
    np.testing.assert_allclose(new[:3, 3], affine[:3, :3] @ [-0.375, -0.375, 0.0] + affine[:3, 3])
    # coarsening back is the inverse
    np.testing.assert_allclose(upsampled_affine(new, (0, 1), 0.25), affine, atol=1e-12)


def test_nifti_oblique_geometry_units_and_orientation(tmp_path):
    """MR NIfTI whose first file axis is head-foot: only the two in-plane axes are refined, values land in place."""
    volume = mr_volume((24, 20, 10)).transpose(2, 0, 1)  # file axes: (S, x, y) -> slice axis is axis 0
    affine = np.eye(4)
    affine[:3, :3] = OBLIQUE @ np.diag([3.0, 0.7, 0.9])
    affine[:3, 3] = [12.0, -30.0, 40.0]
    path = str(tmp_path / "head.nii.gz")
    nib.save(nib.Nifti1Image(volume, affine), path)

    (tmp_path / "out").mkdir()
    out_path = super_resolve_file(InPlaneSR(NearestUpsample(2)), path, str(tmp_path / "out"), modality="mr")
    assert out_path == str(tmp_path / "out" / "head_sr.nii.gz")
    out = nib.load(out_path)
    assert out.shape == (10, 48, 40)
    assert out.get_data_dtype() == np.int16
    np.testing.assert_allclose(_extent_corners(out.affine, out.shape), _extent_corners(affine, volume.shape), atol=1e-4)
    directions = out.affine[:3, :3] / np.linalg.norm(out.affine[:3, :3], axis=0)
    np.testing.assert_allclose(directions, OBLIQUE, atol=1e-6)
    np.testing.assert_allclose(out.header.get_zooms(), (3.0, 0.35, 0.45), atol=1e-6)
    # nearest x2 in-plane: every output voxel well inside the MR normalisation window is its source voxel
    scan = read_scan(path)
    data = np.asarray(out.dataobj)
    src = scan.array.astype(float)
    inside = _deep_inside(src, np.percentile(src[src > 0], 1), np.percentile(src[src > 0], 99), axes=(1, 2))
    assert inside.sum() > 100
    np.testing.assert_allclose(data[:, ::2, ::2][inside], src[inside], atol=1.0)
    np.testing.assert_array_equal(data[:, 1::2, 1::2][inside], data[:, ::2, ::2][inside])


def test_mhd_ct_rotated_geometry_hu_and_dtype(tmp_path):
    """CT MetaImage with a rotated direction and anisotropic spacing: output in HU, int16, same extent."""
    volume = ct_volume((24, 20, 10))
    volume[6:12, 7:13] = 1200  # bone: above the -1000..400 HU window the generator works in
    direction = _rotation(2, 30.0) @ _rotation(1, 10.0)
    spacing, origin = (0.7, 0.8, 2.5), (-50.0, 20.0, -300.0)
    path = write_mhd(
        str(tmp_path / "chest.mhd"), volume, spacing=spacing, direction=direction, origin=origin, compressed=True
    )
    before = _sha(path), _sha(str(tmp_path / "chest.zraw"))

    out_path = super_resolve_file(InPlaneSR(NearestUpsample(2)), path, str(tmp_path), modality="auto")
    assert out_path == str(tmp_path / "chest_sr.mhd")
    assert (_sha(path), _sha(str(tmp_path / "chest.zraw"))) == before, "the input was modified"
    image = itk.imread(out_path)
    assert image.GetLargestPossibleRegion().GetSize() == (48, 40, 10)
    np.testing.assert_allclose(image.GetSpacing(), (0.35, 0.4, 2.5), atol=1e-6)
    np.testing.assert_allclose(itk.array_from_matrix(image.GetDirection()), direction, atol=1e-6)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing)
    lps[:3, 3] = origin
    out_lps = np.eye(4)
    out_lps[:3, :3] = itk.array_from_matrix(image.GetDirection()) @ np.diag(image.GetSpacing())
    out_lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(_extent_corners(out_lps, (48, 40, 10)), _extent_corners(lps, volume.shape), atol=1e-4)
    data = itk.array_from_image(image).transpose(2, 1, 0)
    assert data.dtype == np.int16
    inside = _deep_inside(volume, -1000, 400)  # the CT window of the normalisation: the generator's values
    assert inside.sum() > 100
    np.testing.assert_allclose(data[::2, ::2][inside], volume[inside], atol=1)
    # outside the window the bicubic upsampling of the input is kept, not a value clipped to 400 HU
    np.testing.assert_allclose(data[16:20, 18:22], 1200, atol=1)
    assert data.max() > 1100


def test_scaled_nifti_keeps_real_units(tmp_path):
    """A NIfTI stored as uint16 with scl_inter -1024 (as converted from DICOM): the output is in HU too."""
    hu = ct_volume((16, 12, 3)).astype(np.float64)
    image = nib.Nifti1Image((hu + 1024).astype(np.uint16), np.diag([0.7, 0.7, 3.0, 1.0]))
    image.header.set_data_dtype(np.uint16)
    image.header.set_slope_inter(1.0, -1024.0)
    path = str(tmp_path / "scaled.nii.gz")
    nib.save(image, path)
    np.testing.assert_allclose(nib.load(path).get_fdata(), hu)
    out = nib.load(super_resolve_file(InPlaneSR(NearestUpsample(2)), path, str(tmp_path), modality="ct"))
    assert out.get_data_dtype() == np.uint16
    inside = _deep_inside(hu, -1000, 400)
    assert inside.sum() > 20
    np.testing.assert_allclose(out.get_fdata()[::2, ::2][inside], hu[inside], atol=1.0)
    assert out.get_fdata().min() < -1000  # air noise below the window is kept (bicubic), not clipped


def test_output_dtype_override_and_output_name(tmp_path):
    volume = mr_volume((16, 16, 4))
    path = str(tmp_path / "a.nii")
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    out = super_resolve_file(InPlaneSR(NearestUpsample(2)), path, str(tmp_path), output_dtype="float32")
    assert out == output_path_for(path, str(tmp_path)) == str(tmp_path / "a_sr.nii")
    assert nib.load(out).get_data_dtype() == np.float32


def test_batches_do_not_change_the_result(tiny_model):
    from monai_lstmagan.checkpoints import load_generator

    generator, _ = load_generator(tiny_model)
    volume = torch.rand(1, 12, 10, 5)
    one = super_resolve_volume(generator, volume, 2, InferenceOptions(batch_size=1))
    many = super_resolve_volume(generator, volume, 2, InferenceOptions(batch_size=4))
    assert one.shape == (1, 24, 20, 5)
    torch.testing.assert_close(one, many, atol=1e-5, rtol=0)
    assert float(one.min()) >= 0.0 and float(one.max()) <= 1.0


def test_tiling_places_tiles_where_they_belong():
    volume = torch.rand(1, 23, 17, 3)
    whole = super_resolve_volume(NearestUpsample(4), volume, 4, InferenceOptions(batch_size=2))
    tiled = super_resolve_volume(
        NearestUpsample(4), volume, 4, InferenceOptions(batch_size=2, tile=8, tile_overlap=0.5)
    )
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="x2"):
        super_resolve_volume(NearestUpsample(4), volume, 2)


def test_unwritable_output_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="output folder"):
        run_inference(str(tmp_path / "missing_model.pt"), str(blocker / "out"), inputs=[str(blocker)])


def test_bad_inputs_name_the_file(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        run_inference(tiny_model, str(tmp_path / "out"), inputs=[str(tmp_path / "nope.nii.gz")])
    flat = str(tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), flat)
    with pytest.raises(ValueError, match="flat.nii.gz"):
        run_inference(tiny_model, str(tmp_path / "out"), inputs=[flat])


@pytest.fixture(scope="module")
def psnr_and_gan_models(tmp_path_factory) -> tuple[str, str]:
    """Two generators of one architecture with different weights (a stand-in PSNR model and GAN model)."""
    folder = tmp_path_factory.mktemp("interpolation")
    paths = []
    for seed, name in ((1, "psnr.pt"), (2, "gan.pt")):
        torch.manual_seed(seed)
        generator = LSTMAGANGenerator(**TINY)
        torch.nn.init.normal_(generator.tail.weight, std=0.05)  # not the zero-initialised tail: outputs differ
        paths.append(save_generator(str(folder / name), generator, TINY))
    return paths[0], paths[1]


def test_network_interpolation_weights(psnr_and_gan_models):
    psnr_path, gan_path = psnr_and_gan_models
    psnr, gan = load_generator(psnr_path)[0].state_dict(), load_generator(gan_path)[0].state_dict()
    for alpha, expected in ((0.0, psnr), (1.0, gan)):
        state = load_interpolated_generator(psnr_path, gan_path, alpha)[0].state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in state)  # exactly the end model
    mid, info = load_interpolated_generator(psnr_path, gan_path, 0.5)
    assert info["interpolation"] == {"alpha": 0.5, "psnr_model": psnr_path, "gan_model": gan_path}
    for k, v in mid.state_dict().items():
        torch.testing.assert_close(v, (psnr[k] + gan[k]) / 2, rtol=0, atol=1e-6)
    assert any(not torch.equal(psnr[k], gan[k]) for k in psnr)  # the two models do differ
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="must be a number in \\[0, 1\\]"):
            load_interpolated_generator(psnr_path, gan_path, bad)


def test_network_interpolation_refuses_different_generators(tmp_path, psnr_and_gan_models):
    psnr_path = psnr_and_gan_models[0]
    for name, kwargs in (("x4.pt", {**TINY, "scale": 4}), ("wide.pt", {**TINY, "channels": 12})):
        other = save_generator(str(tmp_path / name), LSTMAGANGenerator(**kwargs), kwargs)
        with pytest.raises(ValueError, match=f"'{psnr_path}' and '{other}': they are different generators"):
            load_interpolated_generator(psnr_path, other, 0.5)


def test_perceptual_knob_runs_the_interpolated_model(tmp_path, psnr_and_gan_models):
    psnr_path, gan_path = psnr_and_gan_models
    scan = str(tmp_path / "head.nii.gz")
    nib.save(nib.Nifti1Image(mr_volume((20, 18, 2)), np.diag([0.9, 0.9, 4.0, 1.0])), scan)

    def run(out, model, **kwargs):
        [path] = run_inference(model, str(tmp_path / out), inputs=[scan], output_dtype="float32", progress=False,
                               backend="torch", **kwargs)  # fmt: skip
        return np.asarray(nib.load(path).dataobj)

    psnr, gan = run("psnr", psnr_path), run("gan", gan_path)
    assert not np.array_equal(psnr, gan)
    np.testing.assert_array_equal(run("a0", psnr_path, gan_model=gan_path, perceptual=0.0), psnr)
    np.testing.assert_array_equal(run("a1", psnr_path, gan_model=gan_path, perceptual=1.0), gan)
    half = run("a05", psnr_path, gan_model=gan_path, perceptual=0.5)
    assert not np.array_equal(half, psnr) and not np.array_equal(half, gan)
    with pytest.raises(ValueError, match="--perceptual 0.5 needs a GAN-trained model"):
        run("no_gan", psnr_path, perceptual=0.5)
    out = str(tmp_path / "cli")
    assert main([scan, "-o", out, "--model", psnr_path, "--gan-model", gan_path, "--perceptual", "1", "--no-progress",
                 "--backend", "torch", "--output-dtype", "float32"]) == 0  # fmt: skip
    np.testing.assert_array_equal(np.asarray(nib.load(os.path.join(out, "head_sr.nii.gz")).dataobj), gan)
    assert main([scan, "-o", out, "--model", psnr_path, "--perceptual", "2", "--gan-model", gan_path]) == 1
    assert main([scan, "-o", out, "--model", psnr_path, "--perceptual", "0.3"]) == 1
    assert main([scan, "-o", out, "--through-plane", "--perceptual", "0.3", "--gan-model", gan_path]) == 1


def test_console_command_on_a_folder(tmp_path, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    nib.save(nib.Nifti1Image(mr_volume((16, 12, 3)), np.diag([0.9, 0.9, 4.0, 1.0])), str(data / "b.nii.gz"))
    write_mhd(str(data / "c.mhd"), ct_volume((12, 16, 3)))
    # writing into the input folder: earlier outputs (*_sr) are not taken as inputs on a second run
    for _ in range(2):
        assert main([str(data), "-o", str(data), "--model", tiny_model, "--no-progress", "--batch-size", "2"]) == 0
    assert sorted(os.listdir(data)) == ["b.nii.gz", "b_sr.nii.gz", "c.mhd", "c.raw", "c_sr.mhd", "c_sr.raw"]
    assert nib.load(str(data / "b_sr.nii.gz")).shape == (32, 24, 3)
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "--model", tiny_model]) == 1


@pytest.mark.slow
def test_bundle_run_single_input(tmp_path, tiny_model):
    volume = str(tmp_path / "one.nii.gz")
    nib.save(nib.Nifti1Image(mr_volume((16, 16, 3)), np.diag([0.8, 0.8, 5.0, 1.0])), volume)
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", os.path.join(REPO, "bundle", "configs", "inference.yaml"),
        "--bundle_root", os.path.join(REPO, "bundle"),
        "--input", volume, "--ckpt_path", tiny_model, "--output_dir", str(tmp_path / "out"), "--progress", "False",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = nib.load(str(tmp_path / "out" / "one_sr.nii.gz"))
    assert out.shape == (32, 32, 3) and out.get_data_dtype() == np.int16


def test_default_batch_size_per_device(tiny_model):
    """No batch size given: one slice per forward on CPU (measured faster there), 8 on CUDA; same result as explicit."""
    assert default_batch_size(torch.device("cpu")) == 1
    assert default_batch_size(torch.device("cuda")) == 8
    generator, _ = load_generator(tiny_model)
    volume = torch.rand(1, 8, 6, 3)
    torch.testing.assert_close(
        super_resolve_volume(generator, volume, 2, InferenceOptions(device="cpu")),
        super_resolve_volume(generator, volume, 2, InferenceOptions(batch_size=3, device="cpu")),
    )
