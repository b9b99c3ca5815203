"""Offline verification of an exported bundle, every check in an isolated process that blocks the installed package.

Each process runs ``templates/bootstrap.py`` (``python -I -B -c``); the config, metadata, network and
TorchScript checks are ``templates/api_checks.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml

from monai_lstmagan.io.geometry import upsampled_affine
from monai_lstmagan.io.scans import write_scan
from monai_lstmagan.zoo.common import LARGE_FILE_MB, PACKAGE, SCHEMA_FILE, read_template
from monai_lstmagan.zoo.vendoring import absolute_package_imports

__all__ = ["verify_bundle", "run_isolated", "check_vendored", "output_tail"]


def output_tail(result: subprocess.CompletedProcess, limit: int = 3000) -> str:
    """The last ``limit`` characters of a process's stdout + stderr, without its ``ZOO_VENDORED_MODULES`` report."""
    text = (result.stdout or "") + (result.stderr or "")
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("ZOO_VENDORED_MODULES=")]
    return "".join(lines)[-limit:]


def run_isolated(bundle_dir: Path, cwd: Path, add_root: bool, mode: str, *payload: str) -> subprocess.CompletedProcess:
    """Run ``python -I -B`` (no ``__pycache__`` left in the bundle) with the installed package blocked.

    ``add_root`` puts the bundle folder on ``sys.path`` (as ``python -m`` does for the working directory).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    bootstrap = read_template("bootstrap.py")
    cmd = [sys.executable, "-I", "-B", "-c", bootstrap, str(bundle_dir), "1" if add_root else "0", mode, *payload]
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=900)


def _vendored_modules(result: subprocess.CompletedProcess) -> list[str]:
    for line in (result.stdout or "").splitlines():
        if line.startswith("ZOO_VENDORED_MODULES="):
            return json.loads(line.split("=", 1)[1])
    return []


def check_vendored(result: subprocess.CompletedProcess, bundle_dir: Path, what: str) -> list[str]:
    """A failure unless the isolated process ``result`` loaded modules of ``scripts/`` and only from this bundle."""
    modules = _vendored_modules(result)
    scripts = os.path.realpath(bundle_dir / "scripts")
    if not modules:
        return [f"{what}: no module of scripts/ was loaded"]
    outside = [m for m in modules if not m.startswith(scripts + os.sep)]
    return [f"{what}: modules loaded from outside the bundle: {outside}"] if outside else []


def check_layout(bundle: Path, large_file_mb: float) -> list[str]:
    failures = []
    required = [
        "configs/metadata.json", "configs/inference.yaml", "configs/logging.conf", "models/model.pt", "models/model.ts",
        "docs/README.md", "docs/data_license.txt", "LICENSE", "large_files.yml", "scripts/__init__.py",
        f"scripts/{PACKAGE}/__init__.py", f"scripts/{PACKAGE}/resources/{SCHEMA_FILE}",
    ]  # fmt: skip
    failures += [f"missing {name}" for name in required if not (bundle / name).is_file()]
    for path in sorted((bundle / "scripts").rglob("*.py")):
        lines = absolute_package_imports(path.read_text(encoding="utf-8"))
        if lines:
            failures.append(f"{path.relative_to(bundle)} still imports the installed {PACKAGE} (lines {lines})")
    if (bundle / "large_files.yml").is_file():
        with open(bundle / "large_files.yml") as f:
            listed = {e["path"] for e in (yaml.safe_load(f) or {}).get("large_files", [])}
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            relative = str(path.relative_to(bundle))
            if path.stat().st_size > large_file_mb * 1024 * 1024 and relative not in listed:
                failures.append(f"{relative} is over {large_file_mb:g} MB but not in large_files.yml")
    with open(bundle / "configs" / "metadata.json") as f:
        meta = json.load(f)
    if meta.get("version") not in meta.get("changelog", {}):
        failures.append("metadata.json: the changelog has no entry for the version")
    return failures


def _check_inference_run(bundle: Path, work: Path) -> list[str]:
    with open(bundle / "configs" / "metadata.json") as f:
        spatial = json.load(f)["network_data_format"]["outputs"]
    scale = int(str(next(iter(spatial.values()))["spatial_shape"][0]).split("*")[0]) // 16
    run_dir = work / "elsewhere"
    run_dir.mkdir(parents=True, exist_ok=True)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (32, 28, 3)], indexing="ij")
    head = (grid[0] / 0.8) ** 2 + (grid[1] / 0.7) ** 2 < 1
    volume = np.where(head, 300 + 500 * (1 + np.cos(4 * grid[0]) * np.sin(3 * grid[1])), 0).astype(np.int16)
    affine = np.diag([0.9, 0.8, 5.0, 1.0])
    affine[:3, 3] = [-14.0, 11.0, 30.0]
    write_scan(volume, affine, str(run_dir / "probe.nii.gz"))
    result = run_isolated(
        bundle, run_dir, False, "module", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "inference.yaml"),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--logging_file", str(bundle / "configs" / "logging.conf"), "--bundle_root", str(bundle),
        "--input", "probe.nii.gz", "--output_dir", "out", "--progress", "False", "--device", "cpu",
    )  # fmt: skip
    if result.returncode != 0:
        return [f"inference run from another working directory failed:\n{output_tail(result)}"]
    failures = check_vendored(result, bundle, "inference run")
    out = run_dir / "out" / "probe_sr.nii.gz"
    if not out.is_file():
        return failures + [f"inference run wrote no {out}"]
    image = nib.load(str(out))
    if image.shape != (32 * scale, 28 * scale, 3) or image.get_data_dtype() != np.int16:
        failures.append(f"inference output has shape {image.shape} / {image.get_data_dtype()}, expected x{scale} int16")
    elif not np.allclose(image.affine, upsampled_affine(affine, (0, 1), scale), atol=1e-5):
        failures.append(f"inference output affine {image.affine.tolist()} does not cover the input's extent")
    return failures


def verify_bundle(bundle_dir: str, large_file_mb: float = LARGE_FILE_MB) -> list[str]:
    """Verify an exported bundle offline without the installed package (see the package docstring).

    Returns:
        the failed checks, each a message (empty when everything passed).
    """
    bundle = Path(bundle_dir).resolve()
    failures = check_layout(bundle, large_file_mb)
    if failures:
        return failures
    with tempfile.TemporaryDirectory(prefix="lstmagan-zoo-check-") as tmp:
        work = Path(tmp)
        result = run_isolated(bundle, bundle, True, "code", read_template("api_checks.py"))
        if result.returncode != 0:
            failures.append(f"config/metadata/network/TorchScript checks failed:\n{output_tail(result)}")
        else:
            failures += check_vendored(result, bundle, "config/metadata/network/TorchScript checks")
        result = run_isolated(
            bundle, bundle, True, "module", "monai.bundle", "ckpt_export", "network_def",
            "--filepath", str(work / "reexport.ts"), "--ckpt_file", "models/model.pt",
            "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml", "--bundle_root", ".",
        )  # fmt: skip
        if result.returncode != 0:
            failures.append(f"ckpt_export failed:\n{output_tail(result)}")
        else:
            failures += check_vendored(result, bundle, "ckpt_export")
            shipped = torch.jit.load(str(bundle / "models" / "model.ts"))
            again = torch.jit.load(str(work / "reexport.ts"))
            x = torch.rand(1, 1, 12, 12)
            with torch.no_grad():
                if not torch.allclose(shipped(x), again(x), atol=1e-5):
                    failures.append("ckpt_export gives another network than models/model.ts")
        failures += _check_inference_run(bundle, work)
    return failures
