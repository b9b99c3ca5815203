"""The ONNX Runtime backend (issue 22): the same output as eager PyTorch on real slices, cached graphs that serve
only their own weights, the backend choice, and ``lstmagan-sr --backend``."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import monai_lstmagan.inference.onnx_backend as onnx_backend
from monai_lstmagan.cli import main
from monai_lstmagan.inference.backends import resolve_backend, slice_forward
from monai_lstmagan.inference.in_plane import load_in_plane_model
from monai_lstmagan.inference.onnx_backend import MAX_ABS_DIFFERENCE, OnnxGenerator, generator_fingerprint
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.io.scans import read_scan
from monai_lstmagan.networks import LSTMAGANGenerator
from monai_lstmagan.networks.medsrgan import MedSRGANGenerator
from monai_lstmagan.pretrained import pretrained_model_path

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CPU = InferenceOptions(device="cpu")


@pytest.fixture(autouse=True)
def graph_cache(tmp_path, monkeypatch) -> str:
    """Every test exports into its own cache (``$MONAI_LSTMAGAN_CACHE``), never into the home folder."""
    monkeypatch.setenv("MONAI_LSTMAGAN_CACHE", str(tmp_path / "cache"))
    return str(tmp_path / "cache" / "onnx")


def _sample_ct_slices(sample_data_dir, count: int = 2) -> torch.Tensor:
    """``[count, 1, 256, 256]`` central axial slices of the sample CT in the training window, in [0, 1]."""
    array = read_scan(str(sample_data_dir / "ct" / "lung1_crop.mhd")).array.astype(np.float32)
    middle = array.shape[2] // 2
    slices = np.clip((array[:, :, middle : middle + count] + 1000.0) / 1400.0, 0.0, 1.0).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(slices))[:, None]


@pytest.mark.parametrize("scale", [2, 4])
def test_shipped_models_match_eager_pytorch_on_real_slices(sample_data_dir, scale):
    generator = load_in_plane_model(pretrained_model_path(scale))
    slices = _sample_ct_slices(sample_data_dir)
    runner = slice_forward(generator, CPU.with_(backend="onnxruntime"))
    assert isinstance(runner, OnnxGenerator)
    with torch.inference_mode():
        expected = generator(slices)
        whole = runner(slices)
        runner.output_pixels = 64 * 64  # many strips of the upsampler, each with its halo
        strips = runner(slices)
    assert whole.shape == expected.shape == (2, 1, 256 * scale, 256 * scale)
    assert float((whole - expected).abs().max()) < MAX_ABS_DIFFERENCE
    assert float((strips - expected).abs().max()) < MAX_ABS_DIFFERENCE
    assert float((whole - torch.nn.functional.interpolate(slices, scale_factor=scale)).abs().max()) > 0.05


def test_graphs_are_exported_once_per_set_of_weights(graph_cache, monkeypatch):
    exports = []
    export = onnx_backend.export_generator_graphs
    monkeypatch.setattr(
        onnx_backend, "export_generator_graphs", lambda g, folder: exports.append(folder) or export(g, folder)
    )
    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    OnnxGenerator(generator)
    OnnxGenerator(generator)
    assert len(exports) == 1
    assert os.listdir(graph_cache) == [generator_fingerprint(generator)]
    with torch.no_grad():
        generator.tail.weight.add_(0.01)  # retrained weights: other graphs
    x = torch.rand(1, 1, 20, 18)
    runner = OnnxGenerator(generator)
    assert len(exports) == 2 and len(os.listdir(graph_cache)) == 2
    with torch.inference_mode():
        assert float((runner(x) - generator(x)).abs().max()) < MAX_ABS_DIFFERENCE


@pytest.mark.parametrize("damage", ["truncated", "other weights"])
def test_a_damaged_or_replaced_cached_graph_is_exported_again(graph_cache, damage):
    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    torch.nn.init.normal_(generator.tail.weight, std=0.05)
    folder = OnnxGenerator(generator).folder
    trunk = os.path.join(folder, "trunk.onnx")
    if damage == "truncated":
        with open(trunk, "r+b") as f:
            f.truncate(os.path.getsize(trunk) // 2)
    else:
        other = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
        onnx_backend.export_generator_graphs(other, folder)  # the graphs of another model under this fingerprint
    x = torch.rand(2, 1, 16, 16)
    runner = OnnxGenerator(generator)
    with torch.inference_mode():
        assert float((runner(x) - generator(x)).abs().max()) < MAX_ABS_DIFFERENCE


def test_an_unwritable_cache_exports_for_the_process_only(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MONAI_LSTMAGAN_CACHE", str(blocker))
    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    runner = OnnxGenerator(generator)
    assert runner.folder is None
    x = torch.rand(1, 1, 12, 12)
    with torch.inference_mode():
        assert float((runner(x) - generator(x)).abs().max()) < MAX_ABS_DIFFERENCE


def test_auto_runs_onnx_runtime_for_large_slices_only(graph_cache):
    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    torch.nn.init.normal_(generator.tail.weight, std=0.05)
    forward = slice_forward(generator, CPU)
    small, large = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 384, 384)
    with torch.inference_mode():
        assert float((forward(small) - generator(small)).abs().max()) < MAX_ABS_DIFFERENCE
        assert not os.path.isdir(graph_cache)  # PyTorch ran it: no graph exported
        assert float((forward(large) - generator(large)).abs().max()) < MAX_ABS_DIFFERENCE
    assert os.listdir(graph_cache) == [generator_fingerprint(generator)]


def test_backend_choice():
    lstmagan = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, growth=4, dense_layers=2)
    other = MedSRGANGenerator(scale=2, num_groups=1, blocks_per_group=1, channels=8)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", lstmagan, cpu) == "onnxruntime"
    assert resolve_backend("auto", lstmagan, cpu, amp=True) == "torch"
    assert resolve_backend("auto", lstmagan, cuda) == "torch"
    assert resolve_backend("auto", other, cpu) == "torch"
    assert resolve_backend("torch", lstmagan, cpu) == "torch"
    with pytest.raises(ValueError, match="MedSRGANGenerator"):
        resolve_backend("onnxruntime", other, cpu)
    with pytest.raises(ValueError, match="backend"):
        InferenceOptions(backend="tensorrt")


def test_cli_backends_give_the_same_file(tmp_path, ct_mhd):
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main([ct_mhd, "-o", str(out), "--scale", "2", "--backend", backend, "--no-progress"]) == 0
        (name,) = [n for n in os.listdir(out) if n.endswith(".mhd")]
        outputs[backend] = read_scan(str(out / name))
    torch_out, onnx_out = outputs["torch"], outputs["onnxruntime"]
    assert np.allclose(torch_out.affine, onnx_out.affine) and torch_out.dtype == onnx_out.dtype
    difference = np.abs(torch_out.array.astype(np.int32) - onnx_out.array.astype(np.int32))
    assert difference.max() <= 1  # within the int16 rounding of the same float result


def test_auto_runs_x4_generators_in_pytorch(graph_cache):
    """x4: as fast in PyTorch, with half the peak memory (backends.ONNX_MAX_SCALE)."""
    generator = LSTMAGANGenerator(scale=4, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    torch.nn.init.normal_(generator.tail.weight, std=0.05)
    large = torch.rand(1, 1, 200, 200)
    with torch.inference_mode():
        assert float((slice_forward(generator, CPU)(large) - generator(large)).abs().max()) < MAX_ABS_DIFFERENCE
    assert not os.path.isdir(graph_cache)  # no graph exported
