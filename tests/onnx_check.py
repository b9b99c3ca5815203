"""Shared check of an exported ONNX generator against its PyTorch original (used by the ONNX export tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


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
