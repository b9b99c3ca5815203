"""Training memory and speed as the dataset grows: the prepared-volume data path against today's in-RAM cache.

``python -m monai_lstmagan.bench.data_path [--volumes 1 4 16] [--shape 512 512 300] [--iterations 16]
[--paths disk memory reference] [--num-workers 0] [--memory-limit-gb 3] [--workdir DIR]`` writes synthetic
CT volumes (int16 ``.mhd``: air, an elliptic body, lungs, noise), then trains ``bundle/configs/train.yaml`` (the
demo's small generator, x2, batch 2, 16 slices of 64x64, no validation) for the same number of iterations on
the first ``n`` volumes (``samples_per_volume = 2 * iterations / n``), one process per run, and prints for each
data path and ``n``: peak RSS of the training process, seconds to the first iteration, iterations/s after it,
and the disk cache size. Data paths:

- ``disk``: ``--data_cache disk`` (prepared volumes in the disk cache; a second run reuses it: ``disk (reused)``);
- ``memory``: ``--data_cache memory`` (prepared volumes in RAM: int16 voxels, uint8 mask, int32 indices);
- ``reference``: the whole-volume ``CacheDataset(cache_rate=1.0)`` of ``train_transforms`` (the data path before
  the prepared volumes: float32 volume and mask per volume in RAM), through an overlay written to the work folder.

``--sample-timing FILE [FILE ...]`` instead times one training sample (a 16-slice 64x64 crop and its LR) of those
volumes, alternating between the data paths in one process: the prepared volume in RAM and on disk, today's
``CacheDataset`` (whole normalised volume in RAM), and MONAI's ``PersistentDataset`` (the deterministic
transforms' output of each volume pickled to disk with ``torch.save``, loaded whole for every sample).

``--memory-limit-gb`` runs each training inside a memory cgroup with that hard limit (cgroup v1 or v2 where this
process may create one, else ``systemd-run --scope -p MemoryMax=...``); a run killed by it is reported as such.
Peak RSS is ``ru_maxrss`` of the training process (``os.wait4``), which counts its resident pages, not the page
cache of the files it reads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, PersistentDataset

from monai_lstmagan.data.cache import prepare_volumes
from monai_lstmagan.data.datasets import SliceSampleDataset
from monai_lstmagan.io.scans import write_scan
from monai_lstmagan.transforms.in_plane import sample_transforms, train_transforms

__all__ = ["synthetic_ct", "write_synthetic_dataset", "train_once", "sample_timing", "main"]

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ITERATION = re.compile(r"Epoch: 1/1, Iter: (\d+)/(\d+) -- ")
_REFERENCE_OVERLAY = """# today's data path before the prepared volumes: whole normalised volumes and masks in a CacheDataset
train#transforms: "$monai_lstmagan.transforms.train_transforms(@scale, num_slices=@num_slices, crop_size=@crop_size,
  modality=@modality, foreground_prob=@foreground_prob)"
train#dataset: "$torch.utils.data.Subset(monai.data.CacheDataset(@train_datalist, @train#transforms, cache_rate=1.0,
  progress=False), list(range(len(@train_datalist))) * @samples_per_volume)"
train#batch_sampler: "$torch.utils.data.BatchSampler(@train#sampler, @batch_size, drop_last=True)"
"""


def synthetic_ct(shape: Sequence[int], seed: int) -> np.ndarray:
    """An int16 chest-CT-like volume ``[X, Y, Z]`` in HU: air, an elliptic body (40 HU), two lungs (-850), noise."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape[:2]], indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 < 1
    lungs = ((np.abs(x) - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1
    plane = np.where(body, np.where(lungs, -850.0, 40.0), -1000.0).astype(np.float32)
    volume = np.empty(tuple(shape), dtype=np.int16)
    for z in range(shape[2]):
        noise = rng.normal(0.0, 20.0, size=plane.shape).astype(np.float32)
        volume[..., z] = np.clip(plane * (1 + 0.1 * np.sin(z / 9.0 + seed)) + noise, -1024, 3071).astype(np.int16)
    return volume


def write_synthetic_dataset(folder: str, count: int, shape: Sequence[int]) -> list[str]:
    """``count`` synthetic CT ``.mhd`` files in ``folder`` (kept when they exist with that shape)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"ct{i:03d}.mhd")
        stamp = path + ".shape"
        if not (os.path.exists(path) and os.path.exists(stamp) and open(stamp).read() == repr(list(shape))):
            write_scan(synthetic_ct(shape, seed=i), np.diag([-0.7, -0.7, 1.25, 1.0]), path)
            with open(stamp, "w") as f:
                f.write(repr(list(shape)))
        paths.append(path)
    return paths


def _memory_limit_prefix(limit_gb: float | None, name: str) -> tuple[list[str], str | None]:
    """(command prefix, cgroup folder to remove) enforcing a hard memory limit on the command."""
    if not limit_gb:
        return [], None
    limit = str(int(limit_gb * 2**30))
    for root, limit_file in (("/sys/fs/cgroup/memory", "memory.limit_in_bytes"), ("/sys/fs/cgroup", "memory.max")):
        folder = os.path.join(root, f"lstmagan-bench-{os.getpid()}-{name}")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, limit_file), "w") as f:
                f.write(limit)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True) if os.path.isdir(folder) else None
            continue
        procs = os.path.join(folder, "cgroup.procs")
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"], folder
    if shutil.which("systemd-run"):
        return ["systemd-run", "--scope", "--quiet", "-p", f"MemoryMax={limit}"], None
    raise RuntimeError("no way to set a hard memory limit here (no writable memory cgroup, no systemd-run).")


def train_once(
    dataset_dir: str,
    output_dir: str,
    cache_dir: str,
    path: str,
    iterations: int,
    num_volumes: int,
    num_workers: int = 0,
    memory_limit_gb: float | None = None,
) -> dict[str, Any]:
    """One training run; returns peak RSS (MiB), seconds to the first iteration, iterations/s, cache GB."""
    samples_per_volume = max(1, 2 * iterations // num_volumes)
    configs = [os.path.join(_REPO, "bundle", "configs", "train.yaml")]
    if path == "reference":
        overlay = os.path.join(output_dir, "reference_data_path.yaml")
        os.makedirs(output_dir, exist_ok=True)
        with open(overlay, "w") as f:
            f.write(_REFERENCE_OVERLAY)
        configs.append(overlay)
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", repr(configs),
        "--bundle_root", os.path.join(_REPO, "bundle"), "--dataset_dir", dataset_dir, "--output_dir", output_dir,
        "--epochs", "1", "--samples_per_volume", str(samples_per_volume), "--validation_patients", "[]",
        "--num_workers", str(num_workers), "--data_cache", "disk" if path == "reference" else path,
        "--cache_dir", cache_dir,
    ]  # fmt: skip
    prefix, cgroup = _memory_limit_prefix(memory_limit_gb, os.path.basename(output_dir))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(prefix + command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    stamps, tail = {}, []
    for line in process.stdout:
        tail = (tail + [line])[-30:]
        match = _ITERATION.search(line)
        if match:
            stamps[int(match.group(1))] = time.perf_counter() - start
    _, status, usage = os.wait4(process.pid, 0)
    if cgroup:
        os.rmdir(cgroup) if os.path.isdir(cgroup) else None
    result: dict[str, Any] = {"path": path, "volumes": num_volumes, "iterations": len(stamps)}
    result["exit"] = os.waitstatus_to_exitcode(status)
    result["peak_rss_mib"] = usage.ru_maxrss / 1024.0
    if result["exit"] != 0:
        result["error"] = "".join(tail)[-1500:]
    if len(stamps) >= 2:
        first, last = min(stamps), max(stamps)
        result["first_iteration_s"] = stamps[first]
        result["iterations_per_s"] = (last - first) / max(stamps[last] - stamps[first], 1e-9)
    result["cache_gb"] = (
        sum(os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(cache_dir) for n in names) / 2**30
        if os.path.isdir(cache_dir)
        else 0.0
    )
    return result


def sample_timing(files: Sequence[str], workdir: str, samples: int = 20) -> list[dict[str, Any]]:
    """Median seconds per training sample of each data path for each file (alternated, one process)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for file in files:
        items = [{"image": os.path.abspath(file)}]
        cache = os.path.join(workdir, "sample-timing", os.path.basename(file).split(".")[0])
        shutil.rmtree(cache, ignore_errors=True)
        datasets: dict[str, Any] = {}
        for mode in ("memory", "disk"):
            volumes = prepare_volumes(items, os.path.join(cache, "prepared"), mode=mode, progress=False)
            datasets[f"prepared ({mode})"] = SliceSampleDataset(volumes, sample_transforms(2, 16, 64), 1)
        datasets["CacheDataset (today)"] = CacheDataset(items, train_transforms(2, 16, 64), progress=False)
        datasets["PersistentDataset"] = PersistentDataset(
            items, train_transforms(2, 16, 64), cache_dir=os.path.join(cache, "persistent")
        )
        datasets["PersistentDataset"][0]  # fills its cache
        seconds: dict[str, list[float]] = {name: [] for name in datasets}
        for k in range(samples):
            for name, dataset in datasets.items():
                start = time.perf_counter()
                dataset[(0, k, True)] if isinstance(dataset, SliceSampleDataset) else dataset[0]
                seconds[name].append(time.perf_counter() - start)
        for name, values in seconds.items():
            results.append({"file": os.path.basename(file), "path": name, "median_s": float(np.median(values))})
    return results


def _table(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| data path | volumes | exit | peak RSS (MiB) | first iteration (s) | iterations / s | disk cache (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['path']} | {r['volumes']} | {r['exit']} | {r['peak_rss_mib']:,.0f} | "
            f"{r.get('first_iteration_s', float('nan')):.1f} | {r.get('iterations_per_s', float('nan')):.2f} | "
            f"{r['cache_gb']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="python -m monai_lstmagan.bench.data_path", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--volumes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--paths", nargs="+", default=["disk", "memory", "reference"])
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--memory-limit-gb", type=float, default=None)
    parser.add_argument("--workdir", default="runs/bench_data_path")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--sample-timing", nargs="+", default=None, metavar="FILE")
    args = parser.parse_args(argv)
    if args.sample_timing:
        timing = sample_timing(args.sample_timing, args.workdir)
        print("| volume | data path | seconds / sample (median) |\n|---|---|---|")
        for r in timing:
            print(f"| {r['file']} | {r['path']} | {r['median_s']:.4f} |")
        return timing
    data = os.path.join(args.workdir, "data")
    results = []
    for n in args.volumes:
        folder = os.path.join(data, f"n{n}")
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.makedirs(folder)
        for source in write_synthetic_dataset(os.path.join(data, "all"), n, args.shape):  # the first n volumes
            for p in (source, source[: -len(".mhd")] + ".raw"):
                os.symlink(os.path.abspath(p), os.path.join(folder, os.path.basename(p)))
        for path in args.paths:
            cache = os.path.join(args.workdir, f"cache-{path}-n{n}")
            shutil.rmtree(cache, ignore_errors=True)
            runs = [path, f"{path} (reused)"] if path == "disk" else [path]
            for label in runs:
                out = os.path.join(args.workdir, f"{label.split()[0]}{'-reused' if 'reused' in label else ''}-n{n}")
                shutil.rmtree(out, ignore_errors=True)
                result = train_once(
                    folder, out, cache, path, args.iterations, n, args.num_workers, args.memory_limit_gb
                )
                result["path"] = label
                results.append(result)
                print(json.dumps(result), flush=True)
    print(_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
