"""The perception-distortion plane (Blau & Michaeli, CVPR 2018): foreground PSNR against the high-band energy ratio,
one point per run and test volume, read from the ``metrics.csv`` files that ``evaluate.yaml`` wrote.

``python -m monai_lstmagan.evaluation.plane --runs LABEL=EVAL_DIR[:METHOD] ... --out plane.png [--table plane.md]
[--critics LABEL=TRAIN_DIR ...]``

- ``LABEL``: the name of the model or recipe (e.g. ``Model 4 w1e-4``); runs that share a label (other seeds) are one
  row of the table, mean +- sample std over them;
- ``EVAL_DIR``: an ``evaluate`` output folder (its ``metrics.csv``); ``METHOD`` the row of it to read (default
  ``sr``; e.g. ``mse_only`` for an ``--extra_checkpoints`` entry). Bicubic (every folder's ``bicubic`` rows) is
  drawn once per volume.

x axis: ``spectral_high`` (SR energy above the LR Nyquist / HR's, :mod:`monai_lstmagan.detail_metrics`; 1 = HR's
fine detail), y axis: foreground PSNR; one panel per test volume (their PSNR scales differ). Up and towards 1 is
better; a GAN moves right and, as the plane predicts, down.

``--critics``: the critic statistics next to the plane, from each training run's ``iterations.csv`` (the trainer's
per-iteration log): the Wasserstein estimate ``d_real - d_fake`` and the paired accuracy (share of sequences
where the critic scores HR above SR) averaged over the last ``--critic-last`` iterations of each run, then
mean +- std over the runs of a label.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from monai_lstmagan.plots import save_figure  # sets matplotlib's Agg backend

__all__ = [
    "PLANE_COLUMNS",
    "read_points",
    "plane_table",
    "plot_plane",
    "read_critic_statistics",
    "critic_table",
    "main",
]

#: the metrics.csv columns each point carries (foreground region).
PLANE_COLUMNS = ("psnr", "ssim", "spectral_high", "spectral_error_high")
#: up to this many labels the legend sits inside the last panel.
LEGEND_INSIDE = 6


def read_points(runs: Sequence[tuple[str, str, str]]) -> list[dict]:
    """``[(label, eval_dir, method)]`` -> one dict per (run, volume) with ``label``, ``volume``, ``method`` and the
    :data:`PLANE_COLUMNS` of the foreground, plus the ``bicubic`` points (label ``"bicubic"``, once per volume).

    Raises:
        FileNotFoundError: a folder has no ``metrics.csv``.
        ValueError: ``method`` has no foreground row there (the message lists the methods it has).
    """
    points, bicubic = [], OrderedDict()
    for label, folder, method in runs:
        path = os.path.join(folder, "metrics.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"perception-distortion plane: '{path}' does not exist (an evaluate output folder?)"
            )
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["region"] == "foreground"]
        chosen = [r for r in rows if r["method"] == method]
        if not chosen:
            methods = sorted({r["method"] for r in rows})
            raise ValueError(f"perception-distortion plane: '{path}' has no foreground rows of {method!r} ({methods})")
        points += [_point(label, r) for r in chosen]
        for r in rows:
            if r["method"] == "bicubic":
                bicubic.setdefault(r["volume"], _point("bicubic", r))
    return list(bicubic.values()) + points


def _point(label: str, row: dict) -> dict:
    """One plane point of a foreground row of metrics.csv."""
    return {"label": label, "volume": row["volume"], "method": row["method"],
            **{c: float(row[c]) for c in PLANE_COLUMNS}}  # fmt: skip


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} +- {np.std(values, ddof=1):.3f}"


def plane_table(points: Sequence[dict]) -> str:
    """A markdown table: one row per (volume, label), mean +- sample std over the runs of that label, and ``n``."""
    groups: OrderedDict[tuple[str, str], list[dict]] = OrderedDict()
    for p in sorted(points, key=lambda p: p["volume"]):
        groups.setdefault((p["volume"], p["label"]), []).append(p)
    lines = ["| test volume | model | n | fg PSNR | fg SSIM | spectral_high | spectral_error_high |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (volume, label), group in groups.items():
        cells = [_mean_std([p[c] for p in group]) for c in PLANE_COLUMNS]
        lines.append(f"| {volume} | {label} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_critic_statistics(runs: Sequence[tuple[str, str]], last: int = 32) -> list[dict]:
    """``[(label, train_dir)]`` -> one dict per run: ``label``, ``iterations`` (the last iteration logged),
    ``wasserstein`` (mean ``d_real - d_fake``) and ``accuracy`` (mean ``d_accuracy``) over its last ``last``
    iterations that have a critic step (rows whose ``d_real`` is not NaN).

    Raises:
        FileNotFoundError: a folder has no ``iterations.csv``.
        ValueError: the run has no iteration with a critic step (an MSE-only run, or still in warm-up).
    """
    if last < 1:
        raise ValueError(f"critic statistics: last must be >= 1, not {last}")
    stats = []
    for label, folder in runs:
        path = os.path.join(folder, "iterations.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"critic statistics: '{path}' does not exist (a training output folder?)")
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if math.isfinite(float(r.get("d_real") or "nan"))]
        if not rows:
            raise ValueError(f"critic statistics: '{path}' has no iteration with a critic step")
        tail = rows[-last:]
        stats.append({"label": label, "iterations": int(tail[-1]["iteration"]),
                      "wasserstein": float(np.mean([float(r["d_real"]) - float(r["d_fake"]) for r in tail])),
                      "accuracy": float(np.mean([float(r["d_accuracy"]) for r in tail]))})  # fmt: skip
    return stats


def critic_table(stats: Sequence[dict], last: int) -> str:
    """A markdown table: one row per label, mean +- sample std over its runs, and ``n``."""
    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for s in stats:
        groups.setdefault(s["label"], []).append(s)
    lines = [f"| model | n | iterations | Wasserstein estimate (last {last}) | paired accuracy (last {last}) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for label, group in groups.items():
        iterations = sorted({s["iterations"] for s in group})
        lines.append(f"| {label} | {len(group)} | {'/'.join(map(str, iterations))} | "
                     f"{_mean_std([s['wasserstein'] for s in group])} | {_mean_std([s['accuracy'] for s in group])} |")  # fmt: skip
    return "\n".join(lines)


def plot_plane(points: Sequence[dict], path: str) -> str:
    """One panel per test volume: ``spectral_high`` (x) against fg PSNR (y), a marker per point, HR's ratio 1 dashed;
    with more than :data:`LEGEND_INSIDE` labels the legend gets a panel of its own."""
    volumes = list(OrderedDict.fromkeys(p["volume"] for p in points))
    labels = list(OrderedDict.fromkeys(p["label"] for p in points))
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colours = {label: palette(i % palette.N) for i, label in enumerate(labels)}
    markers = ("o", "s", "^", "D", "v")
    legend_panel = len(labels) > LEGEND_INSIDE
    panels = len(volumes) + legend_panel
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8 + 0.12 * legend_panel * len(labels)), squeeze=False)
    handles: OrderedDict[str, object] = OrderedDict()
    for ax, volume in zip(axes[0], volumes):
        for i, label in enumerate(labels):
            mine = [p for p in points if p["volume"] == volume and p["label"] == label]
            if mine:
                handles[label] = ax.scatter([p["spectral_high"] for p in mine], [p["psnr"] for p in mine],
                                            color=colours[label], label=label,
                                            marker="x" if label == "bicubic" else markers[i % len(markers)])  # fmt: skip
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(volume)
        ax.set_xlabel("SR / HR energy above the LR Nyquist")
        ax.set_ylabel("foreground PSNR [dB]")
        ax.grid(alpha=0.3)
    if legend_panel:
        axes[0][-1].axis("off")
        axes[0][-1].legend(list(handles.values()), list(handles), fontsize=7, loc="center left")
    else:
        axes[0][-1].legend(fontsize=7, loc="best")
    save_figure(fig, path)
    return path


def _parse_run(text: str) -> tuple[str, str, str]:
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"--runs takes LABEL=EVAL_DIR[:METHOD], not {text!r}")
    folder, _, method = rest.rpartition(":") if ":" in rest else (rest, "", "sr")
    return label, folder, method or "sr"


def _parse_critic(text: str) -> tuple[str, str]:
    label, sep, folder = text.partition("=")
    if not sep or not label or not folder:
        raise argparse.ArgumentTypeError(f"--critics takes LABEL=TRAIN_DIR, not {text!r}")
    return label, folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_lstmagan.evaluation.plane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--runs", nargs="+", type=_parse_run, required=True, help="LABEL=EVAL_DIR[:METHOD]")
    parser.add_argument("--out", required=True, help="the figure (.png)")
    parser.add_argument("--table", default=None, help="also write the markdown table(s) to this file")
    parser.add_argument("--critics", nargs="+", type=_parse_critic, default=[], help="LABEL=TRAIN_DIR")
    parser.add_argument("--critic-last", type=int, default=32, help="iterations averaged per run (default 32)")
    args = parser.parse_args(argv)
    points = read_points(args.runs)
    if any(not math.isfinite(p["spectral_high"]) for p in points):
        print("note: some spectral_high values are NaN (volumes too small for a spectrum); those points are not drawn")
    plot_plane(points, args.out)
    table = plane_table(points)
    if args.critics:
        table += "\n\n" + critic_table(read_critic_statistics(args.critics, args.critic_last), args.critic_last)
    print(table)
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
