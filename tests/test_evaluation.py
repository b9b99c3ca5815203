"""Evaluation: metric definitions, summaries, volume selection, and a full run on the embedded sample data."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from volume_factory import ct_volume, mr_volume, write_mhd

from monai_lstmagan.checkpoints import save_generator
from monai_lstmagan.detail_metrics import (
    DETAIL_METRICS,
    LIBRARY_METRICS,
    frequency_bands,
    library_metrics,
    log_kernel,
    volume_detail_metrics,
)
from monai_lstmagan.evaluation import METRICS_COLUMNS, evaluate, select_volumes, summarize
from monai_lstmagan.metrics import SSIM_SIGMA, SSIM_WINDOW, volume_metrics
from monai_lstmagan.networks import LSTMAGANGenerator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ssim_whole_reference(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Whole-image SSIM with MONAI ``SSIMMetric`` (mean over slices); :func:`volume_metrics` must agree with it."""
    from monai.metrics import SSIMMetric

    metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=SSIM_WINDOW, kernel_sigma=SSIM_SIGMA, reduction="mean")
    return float(metric(pred.float(), target.float()).mean())


TINY = {"scale": 2, "num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 8}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        generator = LSTMAGANGenerator(**TINY)
        torch.nn.init.normal_(generator.tail.weight, std=0.01)  # an untrained residual G would just be bicubic
        paths.append(save_generator(str(folder / f"g{seed}.pt"), generator, TINY))
    return paths[0], paths[1]


def _smooth(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def test_psnr_definitions():
    target = torch.full((3, 1, 20, 20), 0.5)
    mask = torch.zeros_like(target)
    mask[:, :, 5:15, 5:15] = 1
    pred = target + 0.1  # MSE 0.01 everywhere -> 20 dB
    metrics = volume_metrics(pred, target, mask)
    assert metrics["whole"]["psnr"] == pytest.approx(20.0, abs=1e-4)
    assert metrics["foreground"]["psnr"] == pytest.approx(20.0, abs=1e-4)
    # an error outside the mask only changes the whole-image numbers
    pred = target.clone()
    pred[:, :, :3, :] += 0.2
    metrics = volume_metrics(pred, target, mask)
    assert math.isinf(metrics["foreground"]["psnr"])
    expected_mse = 0.04 * 3 / 20
    assert metrics["whole"]["psnr"] == pytest.approx(10 * math.log10(1 / expected_mse), abs=1e-3)


def test_ssim_whole_matches_monai_and_foreground_is_masked_mean():
    target = _smooth((4, 1, 32, 28))
    pred = target.clone()
    pred[:, :, 20:, :] = _smooth((4, 1, 12, 28), seed=3)  # damage the lower part only
    mask = torch.zeros_like(target)
    mask[:, :, :14, :] = 1  # foreground = the untouched upper part
    metrics = volume_metrics(pred, target, mask, chunk=3)
    assert metrics["whole"]["ssim"] == pytest.approx(ssim_whole_reference(pred, target), abs=1e-6)
    assert metrics["foreground"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["whole"]["ssim"] < 0.9
    empty = volume_metrics(pred, target, torch.zeros_like(mask))
    assert math.isnan(empty["foreground"]["psnr"]) and math.isnan(empty["foreground"]["ssim"])
    with pytest.raises(ValueError, match="shape"):
        volume_metrics(pred[:, :, :, :20], target, mask)


def _textured_volume(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """HR slices ``[6, 1, 64, 72]`` with detail up to the HR Nyquist (lightly smoothed noise) and a foreground mask."""
    g = torch.Generator().manual_seed(seed)
    hr = torch.nn.functional.avg_pool2d(torch.rand((6, 1, 64, 72), generator=g), 3, stride=1, padding=1)
    mask = torch.zeros_like(hr)
    mask[:, :, 6:58, 10:60] = 1
    return hr, mask


def _gaussian_blur(image: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    padded = torch.nn.functional.pad(image, (6, 6, 6, 6), mode="replicate")
    return torch.nn.functional.conv2d(padded, (k[:, None] * k[None, :])[None, None])


def test_detail_metrics_of_hr_against_itself_are_exact():
    hr, mask = _textured_volume()
    for region, values in volume_detail_metrics(hr, hr, mask, scale=2).result().items():
        assert set(values) == set(DETAIL_METRICS)
        assert values["spectral_high"] == pytest.approx(1.0, abs=1e-6), region
        assert values["spectral_mid"] == pytest.approx(1.0, abs=1e-6), region
        assert values["gradient_ratio"] == pytest.approx(1.0, abs=1e-6), region
        assert values["spectral_error_high"] == 0.0 and values["hfen"] == 0.0, region


@pytest.mark.parametrize("scale", [2, 4])
def test_detail_metrics_see_blur_and_do_not_reward_noise(scale):
    hr, mask = _textured_volume()
    blurred = volume_detail_metrics(_gaussian_blur(hr), hr, mask, scale).result()["foreground"]
    assert blurred["spectral_high"] < 0.3  # a blurred copy has lost most of the energy above the LR Nyquist
    assert blurred["spectral_mid"] < 1.0
    assert blurred["gradient_ratio"] < 0.8
    assert blurred["hfen"] > 0.3
    g = torch.Generator().manual_seed(1)
    noisy = hr + 0.1 * torch.randn(hr.shape, generator=g)  # invented "detail": white noise
    noise = volume_detail_metrics(noisy, hr, mask, scale).result()["foreground"]
    assert noise["spectral_high"] > 1.2  # more high-band energy than HR...
    assert noise["spectral_error_high"] > 0.2  # ... but the band-limited error sees that it is not HR's
    assert noise["hfen"] > 0.0
    weaker = volume_detail_metrics(hr + 0.03 * torch.randn(hr.shape, generator=g), hr, mask, scale).result()
    assert weaker["foreground"]["spectral_error_high"] < noise["spectral_error_high"]  # grows with the noise


def test_detail_metrics_do_not_depend_on_chunks_or_the_background():
    hr, mask = _textured_volume()
    pred = _gaussian_blur(hr, 0.8)
    whole = volume_detail_metrics(pred, hr, mask, scale=2).result()
    chunked = volume_detail_metrics(pred, hr, mask, scale=2, chunk=4).result()
    for region in whole:
        for metric in DETAIL_METRICS:
            assert chunked[region][metric] == pytest.approx(whole[region][metric], rel=1e-9)
    other_background = pred.clone()
    other_background[mask == 0] = 0.0  # outside the mask SR may be anything: the foreground numbers ignore it
    spectral = volume_detail_metrics(other_background, hr, mask, scale=2).result()["foreground"]
    assert spectral["spectral_high"] == pytest.approx(whole["foreground"]["spectral_high"], rel=1e-6)
    assert spectral["hfen"] != whole["foreground"]["hfen"]  # the LoG (15x15) sees across the mask edge: documented
    empty = volume_detail_metrics(pred, hr, torch.zeros_like(mask), scale=2).result()["foreground"]
    assert all(math.isnan(v) for v in empty.values())


def test_detail_metric_definitions():
    assert frequency_bands(4) == {"high": (0.125, 0.5), "mid": (0.0625, 0.125)}
    kernel = log_kernel()
    assert kernel.shape == (1, 1, 15, 15) and abs(float(kernel.sum())) < 1e-12
    assert float(kernel[0, 0, 7, 7]) == pytest.approx(float(kernel.min()))  # negative centre, as fspecial('log')
    with pytest.raises(ValueError, match="LR factor"):
        frequency_bands(0)
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        volume_detail_metrics(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 9), torch.zeros(2, 1, 8, 9), 2)


def test_library_metrics_are_torchmetrics_or_nan():
    hr = torch.nn.functional.avg_pool2d(
        torch.rand((2, 1, 192, 184), generator=torch.Generator().manual_seed(0)), 3, 1, 1
    )
    mask = torch.ones_like(hr)
    mask[:, :, :, :4] = 0
    blurred = library_metrics(_gaussian_blur(hr), hr, mask)
    same = library_metrics(hr, hr, mask)
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        assert all(math.isnan(v) for r in same.values() for v in r.values())
        pytest.skip("torchmetrics (the iqa extra) is not installed: ms_ssim and vif are NaN, as checked")
    for region in ("foreground", "whole"):
        assert set(same[region]) == set(LIBRARY_METRICS)
        assert same[region]["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
        assert same[region]["vif"] == pytest.approx(1.0, abs=1e-4)
        assert blurred[region]["ms_ssim"] < 0.95 and blurred[region]["vif"] < 0.8
    small = library_metrics(hr[..., :64, :64], hr[..., :64, :64], mask[..., :64, :64])
    assert math.isnan(small["whole"]["ms_ssim"]) and small["whole"]["vif"] == pytest.approx(1.0, abs=1e-4)


def test_summarize_mean_and_sample_std():
    rows = [
        {"volume": v, "method": "sr", "region": r, "psnr": p, "ssim": s}
        for v, p, s in (("a", 30.0, 0.8), ("b", 34.0, 0.9))
        for r in ("foreground", "whole")
    ] + [
        {"volume": "a", "method": "bicubic", "region": r, "psnr": 28.0, "ssim": math.nan}
        for r in ("foreground", "whole")
    ]
    summary = summarize(rows)
    assert summary["sr"]["foreground"]["psnr"] == {"mean": 32.0, "std": pytest.approx(math.sqrt(8.0)), "count": 2}
    assert summary["sr"]["whole"]["ssim"]["mean"] == pytest.approx(0.85)
    assert summary["bicubic"]["whole"]["psnr"] == {"mean": 28.0, "std": None, "count": 1}
    assert summary["bicubic"]["whole"]["ssim"] == {"mean": None, "std": None, "count": 0}


def test_select_volumes_uses_the_training_datalist_and_never_writes_one(tmp_path):
    from monai_lstmagan.data import make_datalist

    data, other = tmp_path / "data", tmp_path / "other"
    for folder in (data, other):
        folder.mkdir()
        for i in range(2):
            write_mhd(str(folder / f"ct{i}.mhd"), ct_volume((24, 24, 4), seed=i))
    datalist = str(tmp_path / "run" / "datalist.json")
    with pytest.raises(ValueError, match="'test' split .* is empty"):
        select_volumes(str(data), datalist, "test")
    assert not os.path.exists(tmp_path / "run")  # evaluation never writes a training run's files
    in_memory = select_volumes(str(data), datalist, "validation")  # the split training would write
    make_datalist(str(data), datalist)  # what training writes
    validation = select_volumes(str(data), datalist, "validation")
    training = select_volumes(None, datalist, "training")
    assert validation == in_memory
    assert len(validation) == len(training) == 1 and validation[0]["image"] != training[0]["image"]
    assert len(select_volumes(str(data), None, "all")) == 2
    with pytest.raises(ValueError, match="split must be"):
        select_volumes(str(data), datalist, "train")
    # another dataset than the datalist's: refused, saying why, instead of evaluating the datalist's volumes
    before = open(datalist).read()
    with pytest.raises(ValueError, match="outside dataset_dir .*another dataset"):
        select_volumes(str(other), datalist, "validation")
    assert open(datalist).read() == before
    assert {i["image"] for i in select_volumes(str(other), None, "all")} == {str(other / f"ct{i}.mhd") for i in (0, 1)}


def test_evaluate_extra_checkpoint_and_saved_volumes(tmp_path, tiny_models):
    data = tmp_path / "data"
    data.mkdir()
    affine = np.diag([0.8, 0.9, 4.0, 1.0])
    affine[:3, 3] = [5.0, -7.0, 11.0]
    nib.save(nib.Nifti1Image(mr_volume((33, 30, 3)), affine), str(data / "head.nii.gz"))
    out = tmp_path / "eval"
    summary = evaluate(
        tiny_models[0], str(out), dataset_dir=str(data), split="all", extra_checkpoints={"mse_only": tiny_models[1]},
        save_volumes=True, figures=False, progress=False,
    )  # fmt: skip
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["region"]) for r in rows} == {
        (m, r) for m in ("bicubic", "sr", "mse_only") for r in ("foreground", "whole")
    }
    sr = {r["region"]: float(r["psnr"]) for r in rows if r["method"] == "sr"}
    other = {r["region"]: float(r["psnr"]) for r in rows if r["method"] == "mse_only"}
    assert sr != other  # two different generators were run
    assert summary["num_volumes"] == 1 and summary["scale"] == 2
    assert tuple(rows[0]) == METRICS_COLUMNS
    for row in rows:  # the detail metrics of every method and region: finite, and in their ranges
        values = {k: float(row[k]) for k in DETAIL_METRICS}
        assert all(math.isfinite(v) for v in values.values()), row
        assert values["spectral_high"] > 0 and values["hfen"] > 0 and values["gradient_ratio"] > 0, row
    fg = {r["method"]: r for r in rows if r["region"] == "foreground"}
    assert fg["sr"]["hfen"] != fg["mse_only"]["hfen"] != fg["bicubic"]["hfen"]  # computed per method
    assert set(summary["metrics"]["mse_only"]["foreground"]) >= set(DETAIL_METRICS) | set(LIBRARY_METRICS)
    assert summary["metrics"]["sr"]["foreground"]["hfen"]["count"] == 1
    ratio = summary["radial_spectrum"]["ratio"]
    assert set(ratio) == {"bicubic", "sr", "mse_only"} and len(ratio["sr"]) + 1 == len(
        summary["radial_spectrum"]["bin_edges"]
    )
    hr = nib.load(str(out / "volumes" / "head_hr.nii.gz"))
    lr = nib.load(str(out / "volumes" / "head_lr.nii.gz"))
    assert hr.shape == (32, 30, 3) and lr.shape == (16, 15, 3)  # centre crop of 33 to a multiple of 2
    for name in ("bicubic", "sr", "mse_only"):
        saved = nib.load(str(out / "volumes" / f"head_{name}.nii.gz"))
        assert saved.shape == hr.shape
        np.testing.assert_allclose(saved.affine, hr.affine)
    # LR voxels are 2x larger in-plane and cover the same extent as the cropped HR grid
    np.testing.assert_allclose(np.linalg.norm(lr.affine[:3, :3], axis=0), [1.6, 1.8, 4.0], atol=1e-5)
    first_hr_edge = hr.affine @ [-0.5, -0.5, 0, 1]
    first_lr_edge = lr.affine @ [-0.5, -0.5, 0, 1]
    np.testing.assert_allclose(first_lr_edge, first_hr_edge, atol=1e-5)
    with pytest.raises(ValueError, match="extra checkpoint name"):
        evaluate(tiny_models[0], str(out), dataset_dir=str(data), split="all", extra_checkpoints={"sr": tiny_models[1]})


@pytest.mark.slow
def test_evaluate_bundle_on_sample_data(tmp_path, tiny_models, sample_data_dir):
    """`evaluate.yaml` on the embedded CT + MR scans writes metrics.csv, summary.json and figures."""
    out = tmp_path / "eval"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", os.path.join(REPO, "bundle", "configs", "evaluate.yaml"),
        "--bundle_root", os.path.join(REPO, "bundle"),
        "--ckpt_path", tiny_models[0], "--output_dir", str(out), "--split", "all", "--progress", "False",
        "--dataset_dir", str(sample_data_dir),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == METRICS_COLUMNS
        rows = list(reader)
    assert len(rows) == 2 * 2 * 2  # volumes x methods x regions
    assert {r["volume"] for r in rows} == {"lung1_crop", "brain1_t1c"}
    bicubic = [float(r["psnr"]) for r in rows if r["method"] == "bicubic"]
    assert min(bicubic) > 25.0  # the bicubic baseline of a x2 bicubic LR is close to HR: LR and HR are aligned
    assert all(0.0 <= float(r["ssim"]) <= 1.0 for r in rows)
    with open(out / "summary.json") as f:
        summary = json.load(f)
    assert summary["num_volumes"] == 2
    assert set(summary["metrics"]) == {"bicubic", "sr"}
    fg = summary["metrics"]["bicubic"]["foreground"]["psnr"]
    values = [float(r["psnr"]) for r in rows if r["method"] == "bicubic" and r["region"] == "foreground"]
    assert fg["mean"] == pytest.approx(np.mean(values), abs=1e-4) and fg["count"] == 2
    for name in ("lung1_crop", "brain1_t1c"):
        assert os.path.getsize(out / "figures" / f"{name}.png") > 10_000


def test_evaluate_bundle_on_another_dataset_writes_nothing_of_a_training_run(tmp_path, tiny_models):
    import subprocess
    import sys

    other = tmp_path / "other"
    other.mkdir()
    for i in range(2):
        write_mhd(str(other / f"ct{i}.mhd"), ct_volume((24, 24, 4), seed=i))
    train_dir = tmp_path / "runs" / "train"  # no training ran here
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", os.path.join(REPO, "bundle", "configs", "evaluate.yaml"),
        "--bundle_root", os.path.join(REPO, "bundle"), "--train_dir", str(train_dir), "--dataset_dir", str(other),
        "--ckpt_path", tiny_models[0], "--split", "validation", "--output_dir", str(tmp_path / "eval"),
        "--figures", "False", "--progress", "False",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "runs").exists()
    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        volumes = {r["volume"] for r in csv.DictReader(f)}
    assert len(volumes) == 1 and volumes <= {"ct0", "ct1"}  # one volume of the folder given, its validation split
