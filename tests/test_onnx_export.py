"""ONNX export of the generator with dynamic batch / height / width, checked with onnxruntime.

Needs the ``onnx`` extra (onnx, onnxruntime, onnxscript); skipped, visibly, without it.
"""

from __future__ import annotations

import pytest
import torch
from onnx_check import assert_onnx_matches_torch

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
    assert_onnx_matches_torch(session, generator, [(1, 1, 16, 20), (3, 1, 9, 7)], scale=2)
