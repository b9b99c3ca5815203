"""Row strips of the upsampler: the largest activations of a generator, computed a few rows at a time.

The upsampler and the 9x9 tail conv of an :class:`~monai_lstmagan.networks.generator.LSTMAGANGenerator` are its
largest activations (x4 of a 512x512 slice: 128 maps of 1024x1024 before the last PixelShuffle, about 1.5 GB per
slice); they are local, so they run on row strips of the low-resolution features with a halo of
:data:`STRIP_HALO` rows (more than their receptive field), at most :data:`STRIP_OUTPUT_PIXELS` output pixels per
strip, and the strips are cut back to size: the result is that of the whole slice. Both backends (PyTorch,
:mod:`monai_lstmagan.inference.backends`; ONNX Runtime, :mod:`monai_lstmagan.inference.onnx_backend`) use
:func:`run_in_strips`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["STRIP_HALO", "STRIP_OUTPUT_PIXELS", "run_in_strips"]

#: Low-resolution rows added on each side of a strip: the upsampler and tail see 3 at most (x2: 3x3 conv + 9x9 tail
#: at 2x; x4: 3x3 + 3x3 at 2x + 9x9 at 4x), so the strip's kept rows are those of the whole slice.
STRIP_HALO = 4
#: Output pixels per strip of the upsampler (a 2048-wide x4 slice: 512 output rows, about 0.3 GB of activations).
STRIP_OUTPUT_PIXELS = 1 << 20


def run_in_strips(
    trunk: Callable[[torch.Tensor], torch.Tensor],
    upsample_tail: Callable[[torch.Tensor], torch.Tensor],
    add_residual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scale: int,
    x: torch.Tensor,
    output_pixels: int = STRIP_OUTPUT_PIXELS,
) -> torch.Tensor:
    """A generator split in three parts, with the upsampler and tail run on row strips (module docstring).

    Args:
        trunk: ``[N, 1, h, w] -> [N, C, h, w]`` features.
        upsample_tail: ``[N, C, r, w] -> [N, 1, r*s, w*s]`` (local: every output row depends on the feature rows
            within :data:`STRIP_HALO`).
        add_residual: ``(out [N, 1, h*s, w*s], x) -> out + residual``.
        scale: ``s``.
        x: ``[N, 1, h, w]`` slices.
        output_pixels: at most this many output pixels (``rows * s * w * s``) per strip and slice.

    Returns:
        ``[N, 1, h*s, w*s]``, the same as the three parts on the whole slice.
    """
    features = trunk(x)
    height, width = features.shape[-2:]
    rows = max(1, output_pixels // (scale * scale * width))
    if rows >= height:
        return add_residual(upsample_tail(features), x)
    out = torch.empty((x.shape[0], 1, height * scale, width * scale), dtype=features.dtype, device=features.device)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        first, last = max(0, top - STRIP_HALO), min(height, bottom + STRIP_HALO)
        strip = upsample_tail(features[:, :, first:last])
        out[:, :, top * scale : bottom * scale] = strip[:, :, (top - first) * scale : (bottom - first) * scale]
    return add_residual(out, x)
