"""Export of the bundle's generator: TorchScript via ckpt_export, ONNX with dynamic shapes, metadata checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from monai_lstmagan.checkpoints import load_generator, save_generator
from monai_lstmagan.networks import LSTMAGANGenerator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO, "bundle")
INFERENCE = os.path.join(BUNDLE, "configs", "inference.yaml")
METADATA = os.path.join(BUNDLE, "configs", "metadata.json")
SCHEMA = os.path.join(REPO, "monai_lstmagan", "resources", "meta_schema_20240725.json")
TINY = {"scale": 2, "num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 8, "norm": "batch"}


def assert_onnx_matches_torch(
    session, model: Callable[[torch.Tensor], torch.Tensor], shapes: Iterable[tuple[int, int, int, int]], scale: int
) -> None:
    """Run ``session`` (onnxruntime, input "lr", output "sr") on random ``[N, 1, h, w]`` inputs of each shape
    and check the ``[N, 1, h*scale, w*scale]`` output against ``model`` in PyTorch."""
    for shape in shapes:
        x = torch.rand(shape)
        (out,) = session.run(["sr"], {"lr": x.numpy()})
        with torch.no_grad():
            expected = model(x)
        assert out.shape == (shape[0], 1, shape[2] * scale, shape[3] * scale)
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    generator = LSTMAGANGenerator(**TINY)
    # non-trivial BatchNorm statistics, so eval-mode export is really checked
    generator.body_tail[1].running_mean.uniform_(-0.1, 0.1)
    generator.body_tail[1].running_var.uniform_(0.5, 1.5)
    torch.nn.init.normal_(generator.tail.weight, std=0.01)  # a trained tail: the output is more than bicubic
    return save_generator(str(tmp_path_factory.mktemp("model") / "model.pt"), generator, TINY)


def test_network_def_is_the_architecture_of_its_checkpoint():
    """inference.yaml's network_def is the generator recorded in models/model.pt (pretrain.yaml's)."""
    train = ConfigParser()
    train.read_config([os.path.join(BUNDLE, "configs", n) for n in ("train.yaml", "pretrain.yaml")])
    inference = ConfigParser()
    inference.read_config(INFERENCE)
    inference["bundle_root"] = BUNDLE
    trained = train.get_parsed_content("generator_def")
    exported = inference.get_parsed_content("network_def").generator
    assert {k: v.shape for k, v in trained.state_dict().items()} == {
        k: v.shape for k, v in exported.state_dict().items()
    }
    assert trained.scale == exported.scale


def test_metadata_passes_the_shipped_schema_offline(tmp_path):
    verify_metadata(meta_file=METADATA, filepath=SCHEMA)
    with open(METADATA) as f:
        meta = json.load(f)
    del meta["network_data_format"]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(Exception, match="network_data_format"):
        verify_metadata(meta_file=str(broken), filepath=SCHEMA)


def test_verify_net_in_out(tmp_path):
    verify_net_in_out(
        net_id="network_def", meta_file=METADATA, config_file=INFERENCE, bundle_root=BUNDLE, device="cpu", n=2
    )
    # the check is real (MONAI checks channels and dtype, not the output size): 3 output channels are rejected
    with open(METADATA) as f:
        wrong = json.load(f)
    wrong["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
    wrong_file = tmp_path / "metadata.json"
    wrong_file.write_text(json.dumps(wrong))
    with pytest.raises(ValueError):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(wrong_file),
            config_file=INFERENCE,
            bundle_root=BUNDLE,
            device="cpu",
            n=2,
        )


def test_ckpt_export_torchscript_equals_eager(tmp_path, tiny_model):
    target = str(tmp_path / "model.ts")
    ckpt_export(
        net_id="network_def", filepath=target, ckpt_file=tiny_model, meta_file=METADATA,
        config_file=INFERENCE, bundle_root=BUNDLE,
    )  # fmt: skip
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(target, _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"]
    assert "network_def" in json.loads(extra["inference.json"])
    eager, _ = load_generator(tiny_model)
    for shape in [(1, 1, 16, 16), (3, 1, 9, 14)]:
        x = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), eager(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_ckpt_export_command_line(tmp_path, tiny_model):
    """The exact command of the README with MONAI's default arguments, on a model of another architecture than
    the shipped one (network_def rebuilds itself as the checkpoint's)."""
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(tmp_path / "m.ts"),
        "--ckpt_file", tiny_model, "--meta_file", METADATA,
        "--config_file", INFERENCE, "--bundle_root", BUNDLE,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.jit.load(str(tmp_path / "m.ts"))(torch.rand(1, 1, 8, 8)).shape == (1, 1, 16, 16)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_onnx_export_dynamic_batch_and_size(tmp_path, tiny_model):
    """`monai.bundle onnx_export` of the bundle's network with dynamic batch/H/W, checked with onnxruntime."""
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install .[onnx]")
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install .[onnx]")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed: pip install .[onnx]")
    from monai.bundle import onnx_export

    target = str(tmp_path / "model.onnx")
    axes = {0: "batch", 2: "height", 3: "width"}
    onnx_export(
        net_id="network_def", filepath=target, ckpt_file=tiny_model, meta_file=METADATA,
        config_file=INFERENCE, bundle_root=BUNDLE, input_shape=[1, 1, 16, 16],
        converter_kwargs={"dynamic_axes": {"lr": axes, "sr": axes}, "input_names": ["lr"], "output_names": ["sr"]},
    )  # fmt: skip
    session = ort.InferenceSession(target, providers=["CPUExecutionProvider"])
    eager, _ = load_generator(tiny_model)
    assert_onnx_matches_torch(session, eager, [(2, 1, 9, 13), (1, 1, 20, 16)], scale=2)
