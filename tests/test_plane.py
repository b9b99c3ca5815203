"""The perception-distortion plane (``monai_lstmagan.evaluation.plane``) from evaluate's metrics.csv files."""

from __future__ import annotations

import csv

import pytest

from monai_lstmagan.evaluation.plane import critic_table, main, read_critic_statistics, read_points

HEADER = ["volume", "method", "region", "psnr", "ssim", "spectral_high", "spectral_mid", "spectral_error_high"]


def _write_metrics(folder, rows) -> str:
    folder.mkdir(parents=True)
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for volume, method, region, psnr, high in rows:
            writer.writerow([volume, method, region, psnr, 0.9, high, 0.9, 0.5])
    return str(folder)


def test_plane_reads_points_aggregates_seeds_and_draws_the_figure(tmp_path, capsys):
    bicubic = ("ct", "bicubic", "foreground", 30.5, 0.13)
    a = _write_metrics(tmp_path / "a", [bicubic, ("ct", "sr", "foreground", 34.0, 0.7), ("ct", "sr", "whole", 1, 1)])
    b = _write_metrics(tmp_path / "b", [bicubic, ("ct", "sr", "foreground", 33.0, 1.0)])
    c = _write_metrics(tmp_path / "c", [bicubic, ("ct", "sr", "foreground", 32.0, 1.2)])
    points = read_points([("psnr", a, "sr"), ("gan", b, "sr"), ("gan", c, "sr")])
    assert [(p["label"], p["psnr"], p["spectral_high"]) for p in points] == [
        ("bicubic", 30.5, 0.13), ("psnr", 34.0, 0.7), ("gan", 33.0, 1.0), ("gan", 32.0, 1.2)
    ]  # fmt: skip
    out, table = tmp_path / "plane.png", tmp_path / "plane.md"
    assert main(["--runs", f"psnr={a}", f"gan={b}:sr", f"gan={c}", "--out", str(out), "--table", str(table)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    rows = table.read_text().splitlines()
    assert "| ct | gan | 2 | 32.500 +- 0.707 |" in "\n".join(rows) and "| ct | psnr | 1 | 34.000 |" in rows[3]
    with pytest.raises(ValueError, match=r"no foreground rows of 'mse_only' \(\['bicubic', 'sr'\]\)"):
        read_points([("x", a, "mse_only")])
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        read_points([("x", str(tmp_path), "sr")])


def _write_iterations(folder, rows) -> str:
    folder.mkdir(parents=True)
    with open(folder / "iterations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "iteration", "loss", "d_real", "d_fake", "d_accuracy"])
        for iteration, d_real, d_fake, accuracy in rows:
            writer.writerow([1, iteration, 0.01, d_real, d_fake, accuracy])
    return str(folder)


def test_critic_statistics_average_the_last_critic_steps_and_join_the_table(tmp_path, capsys):
    nan = float("nan")
    # iteration 1 is warm-up (no critic step: NaN), then the estimate grows; the last 2 have W = 2 and 4
    a = _write_iterations(
        tmp_path / "a", [(1, nan, nan, nan), (2, 0.5, 0.5, 0.5), (3, 1.0, -1.0, 1.0), (4, 3.0, -1.0, 0.5)]
    )
    b = _write_iterations(tmp_path / "b", [(1, 1.0, 0.0, 1.0), (2, 2.0, 0.0, 1.0), (3, 1.0, 0.0, 0.0)])
    stats = read_critic_statistics([("gan", a), ("gan", b)], last=2)
    assert [(s["iterations"], s["wasserstein"], s["accuracy"]) for s in stats] == [(4, 3.0, 0.75), (3, 1.5, 0.5)]
    assert "| gan | 2 | 3/4 | 2.250 +- 1.061 | 0.625 +- 0.177 |" in critic_table(stats, 2)
    with pytest.raises(ValueError, match="no iteration with a critic step"):
        read_critic_statistics([("mse", _write_iterations(tmp_path / "c", [(1, nan, nan, nan)]))])
    with pytest.raises(FileNotFoundError, match="iterations.csv"):
        read_critic_statistics([("x", str(tmp_path))])
    evaluated = _write_metrics(
        tmp_path / "e", [("ct", "bicubic", "foreground", 30.5, 0.13), ("ct", "sr", "foreground", 33, 1)]
    )
    table = tmp_path / "plane.md"
    argv = ["--runs", f"gan={evaluated}", "--out", str(tmp_path / "p.png"), "--table", str(table)]
    assert main(argv + ["--critics", f"gan={a}", "--critic-last", "2"]) == 0
    assert "| gan | 1 | 4 | 3.000 | 0.750 |" in table.read_text() and "| ct | gan | 1 | 33.000 |" in table.read_text()


def test_plane_with_many_labels_gets_a_legend_panel(tmp_path):
    """More labels than fit inside a panel: the legend has a panel of its own, so the figure is one panel wider."""
    from PIL import Image

    from monai_lstmagan.evaluation.plane import LEGEND_INSIDE, plot_plane

    few = [{"label": f"m{i}", "volume": "ct", "psnr": 30.0 + i, "spectral_high": 0.1 * i} for i in range(3)]
    many = [
        {"label": f"m{i}", "volume": "ct", "psnr": 30.0 + i, "spectral_high": 0.1 * i} for i in range(LEGEND_INSIDE + 4)
    ]
    widths = [Image.open(plot_plane(p, str(tmp_path / f"{len(p)}.png"))).size[0] for p in (few, many)]
    assert widths[1] > 1.8 * widths[0]
