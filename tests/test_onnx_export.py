"""ONNX export of the generator with dynamic batch / height / width, checked with onnxruntime.

Needs the ``onnx`` extra (onnx, onnxruntime, onnxscript); skipped, visibly, without it.
"""

from __future__ import annotations

import pytest
import torch

from monai_lstmagan.networks import LSTMAGANGenerator

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install .[onnx]")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install .[onnx]")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed: pip install .[onnx]")


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_generator_onnx_export_with_dynamic_shapes(tmp_path):
    torch.manual_seed(0)
    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, dense_layers=2, growth=4).eval()
    path = tmp_path / "generator.onnx"
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    torch.onnx.export(
        generator,
        (torch.rand(2, 1, 12, 10),),
        str(path),
        dynamo=True,
        input_names=["lr"],
        output_names=["sr"],
        dynamic_shapes=(dims,),
    )
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 16, 20), (3, 1, 9, 7)]:
        x = torch.rand(shape)
        (out,) = session.run(["sr"], {"lr": x.numpy()})
        with torch.no_grad():
            expected = generator(x)
        assert out.shape == (shape[0], 1, shape[2] * 2, shape[3] * 2)
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-5)
