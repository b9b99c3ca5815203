"""Loading, orientation, normalisation, masks, slice-sequence sampling and the bicubic operator."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset, MetaTensor
from volume_factory import TEST_SHAPE, ct_volume, mr_volume, nifti_affine, smooth_volume, write_mhd, write_nifti

from monai_lstmagan.transforms import (
    ForegroundMaskd,
    IntensityNormalizationd,
    MakeLowResolutiond,
    RandSliceSequenced,
    bicubic_downsample,
    bicubic_upsample,
    intensity_range,
    train_transforms,
    validation_transforms,
    volume_transforms,
)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / F.mse_loss(a, b)))


# ---------------------------------------------------------------- bicubic operator


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_bicubic_sizes(scale):
    hr = torch.rand(2, 3, 1, 48, 40)
    lr = bicubic_downsample(hr, scale)
    assert lr.shape == (2, 3, 1, 48 // scale, 40 // scale)
    assert bicubic_upsample(lr, scale).shape == hr.shape
    assert bicubic_downsample(torch.rand(48, 40), scale).shape == (48 // scale, 40 // scale)


def test_bicubic_bad_arguments():
    with pytest.raises(ValueError, match="not divisible by the scale 4"):
        bicubic_downsample(torch.rand(1, 1, 30, 32), 4)
    with pytest.raises(ValueError, match="floating point"):
        bicubic_downsample(torch.zeros(1, 1, 32, 32, dtype=torch.int16), 2)
    with pytest.raises(ValueError, match="positive integer"):
        bicubic_upsample(torch.rand(1, 1, 8, 8), 0)


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_smooth_image_round_trip(scale):
    hr = torch.from_numpy(smooth_volume((96, 96, 1), seed=scale)[..., 0])[None, None]
    restored = bicubic_upsample(bicubic_downsample(hr, scale), scale)
    assert _psnr(restored[..., 8:-8, 8:-8], hr[..., 8:-8, 8:-8]) > 40.0
    noise = torch.rand_like(hr)  # the same round trip on noise loses most of the signal
    assert _psnr(bicubic_upsample(bicubic_downsample(noise, scale), scale), noise) < 20.0


def test_bicubic_downsample_is_antialiased():
    # stripes of period 2.5 px (0.4 cycles/px) are above the x2 LR Nyquist frequency (0.25): they must average out
    x = torch.arange(96, dtype=torch.float32)
    hr = (0.5 + 0.5 * torch.cos(2 * torch.pi * x / 2.5)).expand(96, 96)[None, None].contiguous()
    for scale in (2, 4):
        lr = bicubic_downsample(hr, scale)
        assert float(lr.std()) < 0.03 and abs(float(lr.mean()) - 0.5) < 0.02
        aliased = F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=False, align_corners=False)
        assert float(aliased.std()) > 0.1  # without antialiasing the stripes alias into a false pattern


def test_bicubic_kernel_is_keys_a_minus_half():
    def keys(x: np.ndarray, a: float = -0.5) -> np.ndarray:
        x = np.abs(x)
        return np.where(
            x <= 1,
            (a + 2) * x**3 - (a + 3) * x**2 + 1,
            np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0),
        )

    impulse = torch.zeros(1, 1, 4, 32, dtype=torch.float64)
    impulse[..., 16] = 1.0
    up = bicubic_upsample(impulse, 2)[0, 0, 0].numpy()
    coords = (np.arange(64) + 0.5) / 2 - 0.5  # align_corners=False
    np.testing.assert_allclose(up, keys(coords - 16), atol=1e-6)
    down = bicubic_downsample(impulse, 2)[0, 0, 0].numpy()
    centres = 2 * np.arange(16) + 0.5  # LR pixel centres in HR coordinates
    stretched = keys((centres[:, None] - np.arange(32)[None, :]) / 2)  # kernel stretched by the scale
    weights = stretched[:, 16] / stretched.sum(axis=1)  # normalised to sum to 1
    np.testing.assert_allclose(down, weights, atol=1e-6)


# ---------------------------------------------------------------- normalisation


def test_intensity_range_ct_and_mr():
    ct = torch.from_numpy(ct_volume().astype(np.float32))
    assert intensity_range(ct) == (-1000.0, 400.0, "ct")
    assert intensity_range(ct, ct_window=(-1200, 600))[:2] == (-1200.0, 600.0)
    mr = torch.from_numpy(mr_volume().astype(np.float32))
    low, high, modality = intensity_range(mr)
    foreground = mr[mr > 0].numpy()
    assert modality == "mr"
    assert (low, high) == pytest.approx(tuple(np.percentile(foreground, [0.5, 99.5])))
    assert low > 150  # the zero background is not in the percentiles
    assert intensity_range(mr, "ct")[2] == "ct"
    with pytest.raises(ValueError, match="modality"):
        intensity_range(mr, "pet")


def test_ct_window_normalisation(ct_mhd):
    out = volume_transforms()({"image": ct_mhd, "modality": "ct"})
    image = out["image"]
    assert isinstance(image, MetaTensor) and image.shape == (1, *TEST_SHAPE)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert image.meta["intensity_low"] == -1000.0 and image.meta["intensity_high"] == 400.0
    assert image.meta["modality"] == "ct" and out["modality"] == "ct"
    hu = image * 1400.0 - 1000.0  # invert the mapping: the body stays ~40..70 HU
    body = out["mask"] > 0
    assert 20 < float(hu[body & (hu > -500)].mean()) < 90
    assert float(hu[~body].mean()) < -900


def test_mr_percentile_normalisation(mr_nifti):
    out = volume_transforms()({"image": mr_nifti, "modality": "auto"})
    image, mask = out["image"], out["mask"]
    assert out["modality"] == "mr" and image.meta["modality"] == "mr"
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    head = image[mask > 0]
    # 0.5 % of the foreground is above the 99.5th percentile -> clipped to 1
    assert 0.001 < float((head >= 1.0).float().mean()) < 0.02
    assert float(image[mask == 0].max()) < 0.1  # outside the head: background and the darkest rim only


def test_item_modality_wins_over_default(mr_nifti):
    out = volume_transforms("mr")({"image": mr_nifti, "modality": "ct"})
    assert out["modality"] == "ct" and out["image"].meta["intensity_low"] == -1000.0
    out = volume_transforms("ct")({"image": mr_nifti, "modality": "auto"})
    assert out["modality"] == "ct"


def test_normalisation_of_a_constant_mr_names_problem():
    image = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "flat.nii.gz"})
    image[0, 1:3, 1:3, 1:3] = 5.0
    with pytest.raises(ValueError, match="flat.nii.gz.*no contrast"):
        IntensityNormalizationd("image")({"image": image})


def test_foreground_masks(ct_mhd, mr_nifti):
    x, y, _ = np.meshgrid(*[np.linspace(-1, 1, n) for n in TEST_SHAPE], indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1.0  # lung inside included
    ct_mask = volume_transforms()({"image": ct_mhd})["mask"][0].numpy() > 0
    head = (x / 0.85) ** 2 + (y / 0.8) ** 2 < 1.0
    mr_mask = volume_transforms()({"image": mr_nifti})["mask"][0].numpy() > 0
    for mask, truth in ((ct_mask, body), (mr_mask, head)):
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.9
    # ForegroundMaskd fills holes: a dark cavity inside the head is foreground
    image = MetaTensor(torch.from_numpy(head[None].astype(np.float32)), meta={"modality": "mr"})
    image[0, 10:14, 8:12, :] = 0.0
    mask = ForegroundMaskd("image")({"image": image})["mask"]
    assert mask.shape == image.shape and mask.dtype == torch.float32
    assert bool((mask[0, 10:14, 8:12, :] == 1).all())


# ---------------------------------------------------------------- loading and orientation


def test_formats_load_the_same_voxels(tmp_path):
    array = ct_volume()
    paths = [
        write_mhd(tmp_path / "a.mhd", array, direction=None),
        write_mhd(tmp_path / "b.mhd", array, direction=None, compressed=True),
        write_nifti(tmp_path / "c.nii.gz", array, nifti_affine(direction=np.diag([-1.0, -1.0, 1.0]))),
        write_nifti(tmp_path / "d.nii", array, nifti_affine(direction=np.diag([-1.0, -1.0, 1.0]))),
    ]
    # identity ITK (LPS) direction == diag(-1, -1, 1) in RAS: all four are the same scan
    outs = [volume_transforms("ct")({"image": p})["image"] for p in paths]
    for out in outs[1:]:
        assert torch.equal(out.as_tensor(), outs[0].as_tensor())
        np.testing.assert_allclose(out.affine.numpy(), outs[0].affine.numpy(), atol=1e-5)
    # reoriented to RAS: positive diagonal, spacing kept
    np.testing.assert_allclose(np.diag(outs[0].affine.numpy())[:3], [0.7, 0.8, 2.5], atol=1e-5)


def test_last_axis_is_axial(tmp_path):
    array = ct_volume()  # (x, y, z) = (24, 20, 10)
    stored = np.transpose(array, (2, 0, 1))  # stored with the axial axis first
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 2.5, 0.7, 0.8, 1.0  # i->S, j->R, k->A
    path = write_nifti(tmp_path / "axial_first.nii.gz", stored, affine)
    image = volume_transforms("ct")({"image": path})["image"]
    assert image.shape == (1, 24, 20, 10)
    expected = volume_transforms("ct")(
        {"image": write_nifti(tmp_path / "ref.nii.gz", array, nifti_affine(direction=None))}
    )
    assert torch.equal(image.as_tensor(), expected["image"].as_tensor())


def test_rotated_direction_loads_with_shape_kept(ct_mhd, mr_nifti):
    for path in (ct_mhd, mr_nifti):
        image = volume_transforms()({"image": path})["image"]
        assert image.shape == (1, *TEST_SHAPE)
        codes = "".join(nib.orientations.aff2axcodes(image.affine.numpy()))
        assert codes == "RAS"


def test_sample_data(sample_data_dir):
    ct = volume_transforms()({"image": str(sample_data_dir / "ct" / "lung1_crop.mhd")})
    assert ct["image"].shape == (1, 256, 256, 48) and ct["modality"] == "ct"
    assert float(ct["image"].min()) == 0.0 and float(ct["image"].max()) == 1.0
    assert 0.2 < float(ct["image"].mean()) < 0.7
    assert float(ct["mask"].mean()) > 0.8  # a crop inside the chest: nearly all body, lungs included
    np.testing.assert_allclose(np.diag(ct["image"].affine.numpy())[:3], [0.5703125, 0.5703125, 5.0])
    mr = volume_transforms()({"image": str(sample_data_dir / "mr" / "brain1_t1c.nii.gz")})
    assert mr["image"].shape == (1, 256, 256, 25) and mr["modality"] == "mr"
    assert 0 < mr["image"].meta["intensity_low"] < mr["image"].meta["intensity_high"]
    assert 0.3 < float(mr["mask"].mean()) < 0.9  # the head, not the air around it
    assert float(mr["image"][mr["mask"] == 0].mean()) < 0.05


# ---------------------------------------------------------------- slice sequences and LR


def _volume(shape=(1, 24, 20, 10)) -> dict:
    image = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    return {"image": MetaTensor(image), "mask": MetaTensor(image + 0.5)}


def test_rand_slice_sequence_shapes_and_alignment():
    sampler = RandSliceSequenced(num_slices=4, crop_size=(8, 6))
    sampler.set_random_state(1)
    data = _volume()
    out = sampler(data)
    assert set(out) == {"hr", "mask"}
    assert out["hr"].shape == (4, 1, 8, 6) and type(out["hr"]) is torch.Tensor
    assert torch.equal(out["mask"], out["hr"] + 0.5)  # same block, crop and flips
    # the 4 slices are consecutive axial slices of the volume (unit steps along z)
    step = data["image"][0, 0, 0, 1] - data["image"][0, 0, 0, 0]
    assert torch.equal(torch.diff(out["hr"][:, 0, 0, 0]), torch.full((3,), float(step)))


def test_rand_slice_sequence_reflects_short_volumes():
    sampler = RandSliceSequenced(num_slices=16, crop_size=(24, 20), prob_flip=0.0)
    data = _volume((1, 24, 20, 10))
    out = sampler(data)["hr"]
    assert out.shape == (16, 1, 24, 20)
    # centred reflection without edge repeat: 3 2 1 | 0 1 ... 9 | 8 7 6
    order = [3, 2, 1, *range(10), 8, 7, 6]
    assert torch.equal(out[:, 0], data["image"][0].permute(2, 0, 1)[order])
    # one slice, or smaller in-plane than the crop: padded as well
    out = RandSliceSequenced(num_slices=4, crop_size=(32, 32))(_volume((1, 10, 12, 1)))["hr"]
    assert out.shape == (4, 1, 32, 32) and torch.equal(out[0], out[3])


def test_rand_slice_sequence_flips():
    data = _volume()
    plain, flipped = RandSliceSequenced(crop_size=(24, 20), num_slices=10, prob_flip=0.0), RandSliceSequenced(
        crop_size=(24, 20), num_slices=10, prob_flip=1.0
    )
    assert torch.equal(flipped(data)["hr"], plain(data)["hr"].flip(-1).flip(-2))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_train_transforms_lr_hr_ratio(ct_zraw, scale):
    transforms = train_transforms(scale, num_slices=4, crop_size=16)
    transforms.set_random_state(0)
    out = transforms({"image": ct_zraw, "modality": "ct"})
    assert out["hr"].shape == (4, 1, 16, 16) and out["mask"].shape == (4, 1, 16, 16)
    assert out["lr"].shape == (4, 1, 16 // scale, 16 // scale)
    for key in ("hr", "lr", "mask"):
        assert out[key].dtype == torch.float32 and 0.0 <= float(out[key].min()) <= float(out[key].max()) <= 1.0
    with pytest.raises(ValueError, match="divisible"):
        train_transforms(scale, crop_size=4 * scale + 1)


def test_make_low_resolution_is_the_clamped_bicubic_operator():
    hr = torch.rand(3, 1, 16, 16)
    lr = MakeLowResolutiond(scale=4)({"hr": hr})["lr"]
    assert torch.equal(lr, bicubic_downsample(hr, 4).clamp(0, 1))


def test_validation_transforms_whole_volume(mr_nifti):
    out = validation_transforms(8)({"image": mr_nifti})
    assert out["hr"].shape == (10, 1, 24, 16)  # 20 -> 16: centred crop to a multiple of 8
    assert out["lr"].shape == (10, 1, 3, 2) and out["mask"].shape == (10, 1, 24, 16)
    full = volume_transforms()({"image": mr_nifti})["image"]
    assert torch.equal(out["hr"][:, 0], full[0, :, 2:18].permute(2, 0, 1))


def test_dataloader_batches(ct_mhd, mr_nifti):
    data = [{"image": ct_mhd, "modality": "ct"}, {"image": mr_nifti, "modality": "mr"}]
    loader = DataLoader(Dataset(data, train_transforms(4, num_slices=4, crop_size=8)), batch_size=2, num_workers=0)
    batch = next(iter(loader))
    assert batch["hr"].shape == (2, 4, 1, 8, 8) and batch["lr"].shape == (2, 4, 1, 2, 2)
    assert batch["modality"] == ["ct", "mr"]
    val = next(iter(DataLoader(Dataset(data[:1], validation_transforms(2)), batch_size=1)))
    assert val["hr"].shape == (1, 10, 1, 24, 20) and val["lr"].shape == (1, 10, 1, 12, 10)


def test_rand_slice_sequence_centres_crops_on_the_foreground():
    """With foreground_prob p, about a fraction p of the samples (plus chance hits) hold anatomy."""
    image = torch.rand(1, 64, 64, 40)
    mask = torch.zeros(1, 64, 64, 40)
    mask[0, 50:56, 4:10, 30:34] = 1.0  # a small blob near a corner and the top slices
    data = {"image": MetaTensor(image), "mask": MetaTensor(mask)}

    def fraction_with_foreground(probability: float, draws: int = 200) -> float:
        sampler = RandSliceSequenced(num_slices=8, crop_size=16, foreground_prob=probability)
        sampler.set_random_state(0)
        return sum(float(sampler(data)["mask"].sum()) > 0 for _ in range(draws)) / draws

    assert fraction_with_foreground(1.0) == 1.0
    assert fraction_with_foreground(0.0) < 0.1  # uniform crops rarely meet a 6x6x4 blob
    assert 0.8 <= fraction_with_foreground(0.9) <= 1.0
    with pytest.raises(ValueError, match="foreground_prob"):
        RandSliceSequenced(foreground_prob=1.5)
    # an empty mask falls back to uniform sampling instead of failing
    empty = {"image": MetaTensor(image), "mask": MetaTensor(torch.zeros_like(mask))}
    assert RandSliceSequenced(num_slices=8, crop_size=16, foreground_prob=1.0)(empty)["hr"].shape == (8, 1, 16, 16)
