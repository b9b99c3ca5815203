"""The inference workflow of bundle/configs/inference.yaml, and the MONAI model zoo's CI steps on an export."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from monai_lstmagan import zoo
from monai_lstmagan.checkpoints import save_generator
from monai_lstmagan.inference import run_inference
from monai_lstmagan.io.scans import read_scan, write_scan
from monai_lstmagan.networks import LSTMAGANGenerator
from monai_lstmagan.zoo.ci import DEFAULT_STEPS, run_ci

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
TINY = {"scale": 2, "num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 8, "attention": True}
ZOO_TOOLS = ("black", "isort", "flake8", "bugbear", "pep8ext_naming", "pre_commit_hooks")


def write_head(path: Path, shape=(40, 36, 5), dtype=np.int16) -> str:
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (grid[0] / 0.8) ** 2 + (grid[1] / 0.7) ** 2 < 1
    volume = np.where(head, 300 + 500 * (1 + np.cos(4 * grid[0]) * np.sin(3 * grid[1])), 0).astype(dtype)
    affine = np.diag([0.9, 0.8, 5.0, 1.0])
    affine[:3, 3] = [-14.0, 11.0, 30.0]
    write_scan(volume, affine, str(path))
    return str(path)


def test_inference_workflow_writes_what_lstmagan_sr_writes(tmp_path):
    """`monai.bundle run` of the workflow and the command line's pipeline: the same voxels, type and geometry."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_head(inputs / "head.nii.gz")
    write_head(inputs / "body.nii.gz", shape=(33, 30, 3), dtype=np.float32)  # odd size, float voxels
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.yaml"),
        "--bundle_root", str(BUNDLE), "--dataset_dir", str(inputs), "--output_dir", str(tmp_path / "workflow"),
        "--device", "cpu", "--progress", "False",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    expected = run_inference(str(BUNDLE / "models" / "model.pt"), str(tmp_path / "cli"), [str(inputs)], progress=False)
    assert len(expected) == 2
    for path in expected:
        ours, theirs = read_scan(str(tmp_path / "workflow" / Path(path).name)), read_scan(path)
        assert ours.array.shape == theirs.array.shape and ours.dtype == theirs.dtype
        assert np.allclose(ours.affine, theirs.affine, atol=1e-6)
        assert np.abs(ours.array.astype(np.float64) - theirs.array).max() <= 1.0  # equal up to the int rounding
        assert np.abs(ours.array.astype(np.float64) - theirs.array).mean() < 1e-3


def test_inference_workflow_has_the_infer_properties_and_refuses_an_input_as_output(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_head(inputs / "head.nii.gz", shape=(24, 20, 2))
    configs = BUNDLE / "configs"
    workflow = ConfigWorkflow(
        workflow_type="infer", config_file=str(configs / "inference.yaml"), meta_file=str(configs / "metadata.json"),
        bundle_root=str(BUNDLE), dataset_dir=str(inputs), output_dir=str(tmp_path / "out"), progress=False,
    )  # fmt: skip
    workflow.initialize()
    assert workflow.check_properties() == []
    for name in ("dataset", "dataloader", "preprocessing", "inferer", "postprocessing", "evaluator", "handlers"):
        assert name in workflow.parser, name
    workflow.run()
    workflow.finalize()
    out = nib.load(str(tmp_path / "out" / "head_sr.nii.gz"))
    assert out.shape == (48, 40, 2) and out.get_data_dtype() == np.int16
    # an output folder holding the input with its output name: refused before anything is written
    (tmp_path / "in" / "head_sr.nii.gz").write_bytes(b"keep me")
    clash = ConfigWorkflow(
        workflow_type="infer", config_file=str(configs / "inference.yaml"), bundle_root=str(BUNDLE),
        input=[str(inputs / "head_sr.nii.gz"), str(inputs / "head.nii.gz")], output_dir=str(inputs), progress=False,
    )  # fmt: skip
    clash.initialize()
    with pytest.raises(Exception) as raised:
        clash.run()
    messages, error = [], raised.value
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    assert any("would replace the input file" in m and "head_sr.nii.gz" in m for m in messages), messages
    assert (tmp_path / "in" / "head_sr.nii.gz").read_bytes() == b"keep me"


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    missing = [name for name in ZOO_TOOLS if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the model zoo's CI checks need the zoo extra (pip install '.[zoo]'); missing: {missing}")
    root = tmp_path_factory.mktemp("zoo_ci")
    torch.manual_seed(0)
    ckpt = save_generator(str(root / "model.pt"), LSTMAGANGenerator(**TINY), TINY, extra={"epoch": 1})
    out = root / "ct_mri_lstmagan_super_resolution"
    failures = zoo.export_bundle(ckpt, str(out), changelog="tiny test export", version="0.2.1")
    assert failures == []
    return out


@pytest.mark.slow
def test_the_model_zoo_ci_passes_on_an_export(tiny_export):
    results = {r.name: r for r in run_ci(str(tiny_export), DEFAULT_STEPS)}
    assert list(results) == list(DEFAULT_STEPS)
    for name, result in results.items():
        assert result.status == "passed", f"{name}: {result.detail}"
    assert "TorchScript module is verified correctly" in results["verify_full"].detail
    assert "ct1_sr.nii.gz" in results["unit_infer"].detail
    configs = sorted(p.name for p in (tiny_export / "configs").iterdir())
    assert configs == ["evaluate.yaml", "inference.yaml", "logging.conf", "metadata.json", "train.yaml"]
    assert not (tiny_export / "scripts" / "monai_lstmagan" / "zoo").exists()
    assert not (tiny_export / "scripts" / "monai_lstmagan" / "bench").exists()
    readme = (tiny_export / "docs" / "README.md").read_text()
    for heading in ("# Model Overview", "## Data", "## Training configuration", "### Input", "### Output",
                    "## Performance", "#### TensorRT", "## MONAI Bundle Commands", "# References", "# License"):  # fmt: skip
        assert heading in readme, heading


@pytest.mark.slow
def test_the_model_zoo_checks_can_fail(tiny_export, tmp_path):
    broken = tmp_path / tiny_export.name
    subprocess.run(["cp", "-r", str(tiny_export), str(broken)], check=True)
    (broken / "configs" / "extra.json").write_text('{"a": [1, 2]}')  # inline array, no final newline
    module = broken / "scripts" / "monai_lstmagan" / "metrics.py"
    module.write_text('import os\n"""a docstring after code"""\nx = 1   \n' + module.read_text())
    os.symlink("../LICENSE", broken / "docs" / "LICENSE")
    results = {r.name: r for r in run_ci(str(broken), ("files", "code_format", "pre_commit"))}
    assert results["files"].status == "failed" and "docs/LICENSE" in results["files"].detail
    assert results["code_format"].status == "failed" and "metrics.py" in results["code_format"].detail
    detail = results["pre_commit"].detail
    assert results["pre_commit"].status == "failed"
    for hook in ("pretty-format-json", "end-of-file-fixer", "trailing-whitespace", "check-docstring-first"):
        assert f"{hook}:" in detail, hook
    assert zoo.main(["ci", str(broken), "--steps", "files"]) == 1
    assert zoo.main(["ci", str(tiny_export), "--steps", "files"]) == 0


def test_the_committed_bundle_passes_the_zoo_directory_and_metadata_checks():
    """bundle/ as committed: real files (models/ too) and verify_bundle.py -m min (directory, changelog, schema)."""
    results = {r.name: r for r in run_ci(str(BUNDLE), ("files", "verify_min"))}
    assert results["files"].status == "passed", results["files"].detail
    assert results["verify_min"].status == "passed", results["verify_min"].detail
    assert "directory is verified correctly" in results["verify_min"].detail
