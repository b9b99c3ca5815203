"""End-to-end ``lstmagan-sr`` benchmark: seconds per volume and peak RSS of the streamed path against today's
in-memory path, on synthetic CT-like and MR-like volumes.

``python -m monai_lstmagan.bench.end_to_end [--ct 512 512 160] [--mr 256 256 150] [--scales 2 4] [--repeats 1]
[--json OUT.json]`` writes the volumes (``.nii.gz``, int16) into a temporary folder, then runs, alternated, each in
a fresh process (after an untimed warm-up run there), for each volume and scale:

- **torch** and **onnxruntime** (when the ``onnx`` extra is installed):
  :func:`~monai_lstmagan.inference.files.super_resolve_file` as ``lstmagan-sr --backend ...`` runs it (the upsampler
  in strips, the output streamed slab by slab; PyTorch in channels_last, or the cached ONNX graphs);
- **old**: :func:`reference_super_resolve_file`, the path before the change kept here for the side-by-side run:
  the eager generator in NCHW, the whole output assembled in memory, then written, with glibc's default ``malloc``
  settings (the new paths run with :func:`~monai_lstmagan.system.keep_freed_memory_for_reuse`, as ``lstmagan-sr``).

For each it reports the seconds, the peak RSS (:class:`~monai_lstmagan.bench.memory.PeakMemoryTracker`), the
seconds spent in the generator (the share of time in the network) and the achieved GFLOP/s of the generator
(:func:`~monai_lstmagan.bench.complexity.count_flops` per slice) against a 2048^3 matmul's GFLOP/s on the same
CPU (:func:`~monai_lstmagan.bench.timing.matmul_gflops`), the ratio old / this of the seconds, and the largest
voxel difference of each output from the old path's.

``python -m monai_lstmagan.bench.end_to_end --write-ct 512 512 200 PATH`` only writes a synthetic CT (for a
``/usr/bin/time -v lstmagan-sr`` run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_lstmagan.bench.complexity import count_flops
from monai_lstmagan.bench.memory import PeakMemoryTracker
from monai_lstmagan.bench.timing import matmul_gflops
from monai_lstmagan.inference import backends, in_plane
from monai_lstmagan.inference.files import keep_baseline_outside_window, super_resolve_file
from monai_lstmagan.inference.in_plane import InPlaneSR, load_in_plane_model
from monai_lstmagan.inference.onnx_backend import onnxruntime_available
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.io.atomic import atomic_files
from monai_lstmagan.io.paths import output_path_for
from monai_lstmagan.io.scans import read_scan, to_voxel_type, write_scan
from monai_lstmagan.pretrained import pretrained_model_path
from monai_lstmagan.transforms.intensity import IntensityNormalizationd
from monai_lstmagan.transforms.ops import bicubic_upsample

__all__ = [
    "synthetic_ct",
    "synthetic_mr",
    "reference_super_resolve_file",
    "NetworkTimer",
    "slice_gflop",
    "write_synthetic",
    "benchmark_modes",
    "run_end_to_end",
    "main",
]


def _ellipse(shape: Sequence[int], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """``[X, Y]`` mask of an ellipse (centre and radii in voxels)."""
    x, y = np.ogrid[: shape[0], : shape[1]]
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1.0


def synthetic_ct(shape: Sequence[int] = (512, 512, 160), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A chest-CT-like int16 volume ``[X, Y, Z]`` in HU (air, body, lungs, a spine, noise) and its RAS affine
    (0.7 x 0.7 x 2.5 mm)."""
    rng = np.random.default_rng(seed)
    x, y, z = shape
    volume = np.full(shape, -1000, dtype=np.int16)
    body = _ellipse((x, y), (x / 2, y / 2), (0.42 * x, 0.32 * y))
    lungs = _ellipse((x, y), (0.33 * x, 0.47 * y), (0.12 * x, 0.18 * y)) | _ellipse(
        (x, y), (0.67 * x, 0.47 * y), (0.12 * x, 0.18 * y)
    )
    spine = _ellipse((x, y), (x / 2, 0.74 * y), (0.04 * x, 0.04 * y))
    plane = np.where(body, 40, -1000).astype(np.int16)
    plane[lungs] = -850
    plane[spine] = 700
    for k in range(z):
        noise = rng.normal(0.0, 20.0, (x, y)).astype(np.float32)
        volume[:, :, k] = np.clip(plane + noise * body, -1024, 3071).astype(np.int16)
    return volume, np.diag([0.7, 0.7, 2.5, 1.0])


def synthetic_mr(shape: Sequence[int] = (256, 256, 150), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A brain-MR-like int16 volume ``[X, Y, Z]`` (head, brain, ventricles, a smooth bias field, noise) and its RAS
    affine (1 x 1 x 1 mm)."""
    rng = np.random.default_rng(seed)
    x, y, z = shape
    volume = np.zeros(shape, dtype=np.int16)
    head = _ellipse((x, y), (x / 2, y / 2), (0.4 * x, 0.45 * y))
    brain = _ellipse((x, y), (x / 2, y / 2), (0.34 * x, 0.39 * y))
    ventricles = _ellipse((x, y), (x / 2, 0.48 * y), (0.05 * x, 0.12 * y))
    plane = np.where(head, 300.0, 0.0)
    plane[brain] = 600.0
    plane[ventricles] = 150.0
    bias = np.linspace(0.9, 1.1, x)[:, None]
    for k in range(z):
        extent = np.sin(np.pi * (k + 0.5) / z)  # the head narrows at both ends
        values = plane * bias * extent + rng.normal(0.0, 15.0, (x, y)) * head
        volume[:, :, k] = np.clip(values, 0, 4000).astype(np.int16)
    return volume, np.eye(4)


def write_synthetic(path: str, kind: str, shape: Sequence[int], seed: int = 0) -> str:
    """Write a synthetic ``kind`` (``"ct"`` / ``"mr"``) volume of ``shape`` to ``path`` (a NIfTI, int16)."""
    volume, affine = (synthetic_ct if kind == "ct" else synthetic_mr)(shape, seed)
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)
    return path


class NetworkTimer:
    """Seconds and slices of the generator's forward passes in an end-to-end run, whichever backend runs it.

    While active (``with NetworkTimer() as timer``), every forward that
    :func:`~monai_lstmagan.inference.backends.slice_forward` builds for in-plane SR is timed; :meth:`timed` wraps
    any other forward (the reference path's eager generator).
    """

    def __init__(self) -> None:
        self.seconds, self.slices = 0.0, 0
        self._original = None

    def timed(self, forward):
        """``forward`` (``[N, 1, h, w] -> [N, 1, H, W]``) with its seconds and slices added to this timer."""

        def run(x: torch.Tensor) -> torch.Tensor:
            start = time.perf_counter()
            out = forward(x)
            self.seconds += time.perf_counter() - start
            self.slices += x.shape[0]
            return out

        return run

    def __enter__(self) -> NetworkTimer:
        self._original = in_plane.slice_forward
        in_plane.slice_forward = lambda *args, **kwargs: self.timed(self._original(*args, **kwargs))
        return self

    def __exit__(self, *exc) -> None:
        in_plane.slice_forward = self._original


def reference_super_resolve_file(
    operation: InPlaneSR, input_path: str, output_dir: str, options: InferenceOptions, timer: NetworkTimer | None = None
) -> str:
    """Today's in-plane path before streaming (kept for the side-by-side run): the eager generator (NCHW, whole
    slices), the whole output assembled in memory in the input's voxel type, then written at once."""
    scan = read_scan(input_path)
    operation.begin(scan)
    work = np.ascontiguousarray(operation.to_work(scan), dtype=np.float32)
    tensor = MetaTensor(torch.from_numpy(work)[None])
    image = IntensityNormalizationd(keys="image")({"image": tensor, "modality": "auto"})["image"]
    low, high = float(image.meta["intensity_low"]), float(image.meta["intensity_high"])
    out = np.empty(operation.output_shape(work.shape), dtype=scan.dtype)
    volume = image.as_tensor()
    for start in range(0, work.shape[2], options.slices_per_forward):
        stop = min(start + options.slices_per_forward, work.shape[2])
        lr = volume[0, :, :, start:stop].permute(2, 0, 1).unsqueeze(1).float()
        generator = operation.generator.eval() if timer is None else timer.timed(operation.generator.eval())
        with torch.inference_mode():
            sr = generator(lr).clamp(0.0, 1.0)[:, 0].permute(1, 2, 0).numpy()
        slices = torch.from_numpy(np.ascontiguousarray(work[:, :, start:stop].transpose(2, 0, 1)))[:, None]
        baseline = bicubic_upsample(slices, operation.scale)[:, 0].permute(1, 2, 0).numpy()
        values = low + sr.astype(np.float64) * (high - low)
        out[:, :, start:stop] = to_voxel_type(keep_baseline_outside_window(values, baseline, low, high), scan.dtype)
    output_path = output_path_for(input_path, output_dir)
    name = os.path.basename(output_path)
    with atomic_files(output_dir, last=name) as tmp_dir:
        write_scan(operation.to_file(scan, out), operation.output_affine(scan), os.path.join(tmp_dir, name), like=scan)
    return output_path


def _run(
    mode: str, operation: InPlaneSR, path: str, output_dir: str, options: InferenceOptions
) -> tuple[dict[str, Any], str]:
    """One end-to-end run of ``mode`` (``"old"`` or a backend): seconds, peak RSS, seconds in the network."""
    tracker = PeakMemoryTracker()
    tracker.start()
    start = time.perf_counter()
    with NetworkTimer() as timer:
        if mode == "old":
            written = reference_super_resolve_file(operation, path, output_dir, options, timer)
        else:
            written = super_resolve_file(operation, path, output_dir, "auto", None, options.with_(backend=mode))
    seconds = time.perf_counter() - start
    memory = tracker.stop()
    return {"seconds": seconds, "network_seconds": timer.seconds, "slices": timer.slices, **memory}, written


def _run_in_fresh_process(
    mode: str, scale: int, path: str, warmup: str, output_dir: str, batch_size: int | None
) -> tuple[dict[str, Any], str]:
    """:func:`_run` in this (fresh) process after an untimed run on ``warmup`` (oneDNN kernels, the ONNX export).

    Each measurement gets its own process so that one path's process state cannot speed up or slow down another's:
    the old path runs with glibc's default ``malloc`` settings, as it did, and the new ones with those that
    :func:`~monai_lstmagan.inference.backends.slice_forward` sets
    (:func:`~monai_lstmagan.system.keep_freed_memory_for_reuse`)."""
    torch.manual_seed(0)
    options = InferenceOptions(batch_size=batch_size, device="cpu")
    operation = InPlaneSR(load_in_plane_model(pretrained_model_path(scale), scale))
    os.remove(_run(mode, operation, warmup, output_dir, options)[1])
    return _run(mode, operation, path, output_dir, options)


def slice_gflop(generator: torch.nn.Module, shape: Sequence[int]) -> float:
    """GFLOP of one forward of ``generator`` on a ``[1, 1, h, w]`` slice."""
    return count_flops(generator, (1, 1, *shape)) / 1e9


def benchmark_modes() -> tuple[str, ...]:
    """What is measured: ``"old"`` (today's path before the change) and each backend installed."""
    return ("old", "torch", "onnxruntime") if onnxruntime_available() else ("old", "torch")


def run_end_to_end(
    volumes: dict[str, tuple[int, int, int]], scales: Sequence[int], repeats: int = 1, batch_size: int | None = None
) -> dict[str, Any]:
    """Measure the old path and every backend, alternated, on each synthetic volume and scale (module docstring)."""
    ceiling = matmul_gflops(torch.device("cpu"))
    modes = benchmark_modes()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for kind, shape in volumes.items():
            path = write_synthetic(os.path.join(folder, f"{kind}.nii.gz"), kind, shape)
            for scale in scales:
                gflop = slice_gflop(load_in_plane_model(pretrained_model_path(scale), scale), shape[:2])
                warmup = write_synthetic(os.path.join(folder, "warmup.nii.gz"), kind, (*shape[:2], 2))
                runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
                outputs = {}
                for _ in range(repeats):
                    for mode in modes:
                        out_dir = os.path.join(folder, mode)
                        os.makedirs(out_dir, exist_ok=True)
                        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
                            result, outputs[mode] = child.submit(
                                _run_in_fresh_process, mode, scale, path, warmup, out_dir, batch_size
                            ).result()
                        result["gflops"] = gflop * result["slices"] / result["network_seconds"]
                        runs[mode].append(result)
                old = read_scan(outputs["old"]).array.astype(np.int32)
                best = {mode: min(r["seconds"] for r in results) for mode, results in runs.items()}
                rows.append({
                    "volume": kind, "shape": list(shape), "scale": scale, "gflop_per_slice": gflop, "runs": runs,
                    "ratio_old_over": {mode: best["old"] / best[mode] for mode in modes if mode != "old"},
                    "max_abs_voxel_difference": {
                        mode: int(np.abs(read_scan(outputs[mode]).array.astype(np.int32) - old).max())
                        for mode in modes if mode != "old"
                    },
                })  # fmt: skip
                for mode in modes:
                    os.remove(outputs[mode])
    return {"matmul_gflops": ceiling, "threads": torch.get_num_threads(), "modes": list(modes), "rows": rows}


def forward_profile(
    scales: Sequence[int] = (2, 4), size: int = 256, batch_sizes: Sequence[int] = (1, 2, 4), repeats: int = 3
) -> list[dict[str, Any]]:
    """Per shipped generator, on ``size x size`` slices of a synthetic CT: seconds per slice of the eager forward
    and of :func:`~monai_lstmagan.inference.backends.slice_forward` for each batch size (alternated, best of
    ``repeats``), their largest difference, and the RSS increase of one slice_forward of one slice (what
    :data:`~monai_lstmagan.inference.in_plane.NETWORK_BYTES_PER_INPUT_PIXEL` and ``..._OUTPUT_PIXEL`` are fitted
    to)."""
    volume, _ = synthetic_ct((size, size, max(batch_sizes)))
    slices = torch.from_numpy(np.clip((volume.transpose(2, 0, 1) + 1000.0) / 1400.0, 0, 1).astype(np.float32))
    options = InferenceOptions(device="cpu")
    rows = []
    for scale in scales:
        generator = load_in_plane_model(pretrained_model_path(scale), scale).eval()
        fast = backends.slice_forward(generator, options)
        with torch.inference_mode():
            fast(slices[:1, None])  # warm-up
            tracker = PeakMemoryTracker()
            tracker.start()
            fast(slices[:1, None])
            increase = tracker.stop()["rss_increase_mib"]
            row: dict[str, Any] = {"scale": scale, "size": size, "rss_increase_mib_one_slice": increase}
            for batch in batch_sizes:
                x = slices[:batch, None]
                times: dict[str, list[float]] = {"eager": [], "fast": []}
                for _ in range(repeats):
                    for name, forward in (("eager", generator), ("fast", fast)):
                        start = time.perf_counter()
                        out = forward(x)
                        times[name].append((time.perf_counter() - start) / batch)
                        row.setdefault("outputs", {})[name] = out
                difference = float((row["outputs"]["fast"] - row["outputs"]["eager"]).abs().max())
                row[f"batch {batch}"] = {name: min(t) for name, t in times.items()} | {"max_abs_diff": difference}
            row.pop("outputs")
        rows.append(row)
    return rows


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"GEMM ceiling (2048^3 matmul): {report['matmul_gflops']:.1f} GFLOP/s, {report['threads']} threads",
        "",
        "| volume | scale | path | s/volume | peak RSS MiB | network share | GFLOP/s (% of GEMM) | old / this "
        "(max voxel diff) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        for mode in report["modes"]:
            runs = row["runs"][mode]
            best = min(runs, key=lambda r: r["seconds"])
            ratio = "" if mode == "old" else (
                f"{row['ratio_old_over'][mode]:.2f} ({row['max_abs_voxel_difference'][mode]})"
            )  # fmt: skip
            lines.append(
                f"| {row['volume']} {'x'.join(map(str, row['shape']))} | x{row['scale']} | {mode} | "
                f"{best['seconds']:.1f} | {max(r['peak_rss_mib'] for r in runs):.0f} | "
                f"{100 * best['network_seconds'] / best['seconds']:.1f} % | {best['gflops']:.1f} "
                f"({100 * best['gflops'] / report['matmul_gflops']:.1f} %) | {ratio} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_lstmagan.bench.end_to_end", description=__doc__)
    parser.add_argument("--ct", type=int, nargs=3, default=[512, 512, 160], help="CT-like volume shape")
    parser.add_argument("--mr", type=int, nargs=3, default=[256, 256, 150], help="MR-like volume shape")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=1, help="alternated runs of every path per case")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the numbers as JSON")
    parser.add_argument("--write-ct", nargs=4, metavar=("X", "Y", "Z", "PATH"), help="only write a synthetic CT")
    parser.add_argument(
        "--forward-profile", action="store_true", help="only the per-slice forward: batch sizes, eager vs fast, RSS"
    )
    args = parser.parse_args(argv)
    if args.forward_profile:
        print(json.dumps(forward_profile(), indent=2))
        return 0
    if args.write_ct:
        print(write_synthetic(args.write_ct[3], "ct", [int(v) for v in args.write_ct[:3]]))
        return 0
    report = run_end_to_end({"ct": tuple(args.ct), "mr": tuple(args.mr)}, args.scales, args.repeats, args.batch_size)
    print(_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
