"""Figures: training curves from the training CSVs, comparison panels."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

from monai_lstmagan.plots import choose_inset, plot_comparison, plot_training_curves, read_epoch_means

ITERATION_COLUMNS = "epoch,iteration,loss,mse,perceptual,adversarial,d_loss,gradient_penalty,d_real,d_fake,d_accuracy"
VALIDATION_COLUMNS = "epoch,psnr_sr,psnr_bicubic,ssim_sr,ssim_bicubic"  # whole image only: fg panels are left out


def _write_csv(path, header: str, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header.split(","))
        writer.writerows(rows)


def test_epoch_means_skip_missing_values(tmp_path):
    path = tmp_path / "iterations.csv"
    # epoch 1 is MSE-only pre-training: no adversarial values yet
    _write_csv(path, ITERATION_COLUMNS, [[1, 0, 2.0, 1.0, 0.5, "", 0.7, 0.0, 1, 0, 0.5], [1, 1, 4.0, 1.0, 0.5, "", 0.7, 0.0, 1, 0, 0.5],
                                         [2, 2, 1.0, 0.5, 0.2, 0.3, 0.6, 0.1, 1, 0, 0.75]])  # fmt: skip
    means = read_epoch_means(str(path), ("loss", "adversarial", "not_a_column"))
    np.testing.assert_array_equal(means["epoch"], [1, 2])
    np.testing.assert_allclose(means["loss"], [3.0, 1.0])
    assert np.isnan(means["adversarial"][0]) and means["adversarial"][1] == pytest.approx(0.3)
    assert "not_a_column" not in means


def test_training_curves_written_and_missing_csv_skipped(tmp_path):
    _write_csv(
        tmp_path / "iterations.csv",
        ITERATION_COLUMNS,
        [[e, e * 10 + i, 1 / e, 0.5 / e, 0.1, 0.3, 0.7, 0.01, 1.0, -1.0, 0.6] for e in (1, 2, 3) for i in range(2)],
    )
    with pytest.warns(UserWarning, match="validation.csv"):
        written = plot_training_curves(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["curves_d_accuracy.png", "curves_losses.png"]
    _write_csv(tmp_path / "validation.csv", VALIDATION_COLUMNS, [[e, 30 + e, 31.0, 0.8, 0.82] for e in (1, 2)])
    written = plot_training_curves(str(tmp_path))
    assert os.path.basename(written[-1]) == "curves_validation.png"
    assert all(os.path.getsize(p) > 5_000 for p in written)


def test_training_curves_empty_csvs(tmp_path):
    (tmp_path / "iterations.csv").write_text("")
    _write_csv(tmp_path / "validation.csv", VALIDATION_COLUMNS, [])
    with pytest.warns(UserWarning):
        assert plot_training_curves(str(tmp_path)) == []


def test_comparison_panel(tmp_path):
    # flat grey with one checkerboard region of the same mean: a window straddling its edge has less
    # variance than one inside it, so the inset must land inside the detail
    hr = torch.full((40, 36), 0.5)
    rows, cols = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    hr[20:32, 4:16] = ((rows + cols) % 2).float()
    inset = choose_inset(hr.numpy())
    row, col, h, w = inset
    overlap = max(0, min(row + h, 32) - max(row, 20)) * max(0, min(col + w, 16) - max(col, 4))
    assert overlap > 0.5 * h * w  # the inset lands on the detail, not on the flat background
    out = plot_comparison(
        hr, hr * 0.9, hr + 0.05, str(tmp_path / "fig" / "case.png"), title="case", extra={"mse_only": hr}
    )
    assert os.path.getsize(out) > 10_000
    with pytest.raises(ValueError, match="shape"):
        plot_comparison(hr, hr[:-1], hr, str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="inset"):
        plot_comparison(hr, hr, hr, str(tmp_path / "bad.png"), inset=(35, 0, 10, 10))
