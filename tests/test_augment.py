"""The training augmentation (issue 26): off is the unaugmented sample, each transform does what it says, and the
samples are reproducible from their seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_lstmagan.transforms import AugmentationSettings, RandSliceAugmentd, RandStoredLevelsd, sample_transforms

FULL = AugmentationSettings(
    rotate_prob=1.0, zoom_prob=1.0, gamma_prob=1.0, window_prob=1.0, bias_prob=1.0, levels_prob=1.0, noise_prob=0.0
)


def _volume(seed: int = 0) -> dict:
    """A ``[1, 48, 40, 20]`` smooth random volume in [0, 1] with a foreground mask."""
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.random((1, 12, 10, 20), dtype=np.float32))
    image = torch.nn.functional.interpolate(image[None], size=(48, 40, 20), mode="trilinear")[0]
    return {"image": image, "mask": (image > 0.3).float()}


def _sample(augment, seed: int, scale: int = 2) -> dict:
    transforms = sample_transforms(scale, num_slices=4, crop_size=24, augment=augment)
    transforms.set_random_state(seed)
    return transforms(_volume())


def test_no_augmentation_is_the_plain_sample():
    plain, off = _sample(None, 3), _sample(AugmentationSettings(), 3)
    assert len(sample_transforms(2, augment=AugmentationSettings()).transforms) == 2
    for key in ("hr", "lr", "mask"):
        assert torch.equal(plain[key], off[key])


def test_full_augmentation_keeps_shapes_and_range_and_is_seeded():
    a, b, c = _sample(FULL, 5), _sample(FULL, 5), _sample(FULL, 6)
    assert a["hr"].shape == a["mask"].shape == (4, 1, 24, 24) and a["lr"].shape == (4, 1, 12, 12)
    for key in ("hr", "lr"):
        assert float(a[key].min()) >= 0.0 and float(a[key].max()) <= 1.0
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["hr"], c["hr"])
    assert set(torch.unique(a["mask"]).tolist()) <= {0.0, 1.0}


def test_rotation_moves_image_and_mask_together():
    pattern = torch.zeros(2, 1, 16, 16)
    pattern[..., 2:5, 3:12] = 1.0  # a bar off centre: every rotation differs
    augment = RandSliceAugmentd(AugmentationSettings(rotate_prob=1.0), (16, 16))
    augment.set_random_state(0)
    out = augment({"hr": pattern.clone(), "mask": pattern.clone()})
    assert torch.equal(out["hr"], out["mask"])
    assert any(torch.equal(out["hr"], torch.rot90(pattern, k, dims=(-2, -1))) for k in (1, 2, 3))


def test_zoom_changes_the_pixel_size():
    period, zoom, size = 8.0, 1.25, 64
    x = torch.arange(round(size * zoom) + 4, dtype=torch.float32)
    stripes = (0.5 + 0.4 * torch.cos(2 * np.pi * x / period))[None, :].repeat(len(x), 1)[None, None]
    augment = RandSliceAugmentd(AugmentationSettings(zoom_prob=1.0, zoom_range=(zoom, zoom)), (size, size))
    out = augment({"hr": stripes})["hr"][0, 0]
    spectrum = np.abs(np.fft.rfft(out.mean(0).numpy() - float(out.mean())))
    measured_period = size / int(np.argmax(spectrum))
    assert measured_period == pytest.approx(period / zoom, rel=0.05)  # coarser pixels: fewer pixels per stripe


def test_stored_levels_round_the_lr():
    lr = torch.rand(3, 1, 20, 20)
    rounding = RandStoredLevelsd(AugmentationSettings(levels_prob=1.0, levels=(16,)))
    out = rounding({"lr": lr})["lr"]
    assert len(torch.unique(out)) <= 16
    assert float((out - lr).abs().max()) <= 0.5 / 15 + 1e-6


def test_intensity_changes_stay_in_range_and_change_the_image():
    hr = torch.rand(2, 1, 16, 16)
    for settings in (
        AugmentationSettings(gamma_prob=1.0),
        AugmentationSettings(window_prob=1.0),
        AugmentationSettings(bias_prob=1.0, bias_strength=0.2),
    ):
        augment = RandSliceAugmentd(settings, (16, 16))
        augment.set_random_state(1)
        out = augment({"hr": hr.clone()})["hr"]
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert float((out - hr).abs().mean()) > 1e-3


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="rotate_prob"):
        AugmentationSettings(rotate_prob=1.5)
    with pytest.raises(ValueError, match="levels"):
        AugmentationSettings(levels=(1,))
