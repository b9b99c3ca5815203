"""How a generator is run over many slices: the fast CPU path of whole-volume inference.

:func:`slice_forward` turns a generator into the function ``[N, 1, h, w] -> [N, 1, h*s, w*s]`` that in-plane
SR, through-plane SR and the evaluation call, with the same outputs as ``generator(x)`` (within float rounding)
but faster on a CPU and with bounded memory:

- **channels_last** (NHWC) weights and input on the CPU: oneDNN's convolutions run without the layout
  conversions of NCHW (``docs/benchmark_inference.md``: 1.5-1.8x on the shipped generators, max abs difference
  below 1e-6). On CUDA the model is left as it is (AMP and cuDNN choose there);
- **strips at the output resolution** (:class:`~monai_lstmagan.networks.generator.LSTMAGANGenerator`): the
  upsampler and the 9x9 tail conv are the largest activations (x4 of a 512x512 slice: 128 maps of 1024x1024
  before the last PixelShuffle, about 1.5 GB per slice); they are local, so they run on row strips of the
  low-resolution features with a halo of :data:`STRIP_HALO` rows (more than their receptive field), at most
  :data:`STRIP_OUTPUT_PIXELS` output pixels per strip, and the strips are cut back to size: the result is that of
  the whole slice.

The model given is not changed (a copy is converted).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.networks.generator import LSTMAGANGenerator

__all__ = ["STRIP_HALO", "STRIP_OUTPUT_PIXELS", "uses_channels_last", "slice_forward", "strip_forward"]

#: Low-resolution rows added on each side of a strip: the upsampler and tail see 3 at most (x2: 3x3 conv + 9x9 tail
#: at 2x; x4: 3x3 + 3x3 at 2x + 9x9 at 4x), so the strip's kept rows are those of the whole slice.
STRIP_HALO = 4
#: Output pixels per strip of the upsampler (a 2048-wide x4 slice: 512 output rows, about 0.3 GB of activations).
STRIP_OUTPUT_PIXELS = 1 << 20


def uses_channels_last(device: torch.device) -> bool:
    """Whether :func:`slice_forward` runs the model in ``channels_last`` on ``device``: on the CPU."""
    return device.type == "cpu"


def strip_forward(generator: LSTMAGANGenerator, x: torch.Tensor, output_pixels: int = STRIP_OUTPUT_PIXELS):
    """``generator(x)`` with the upsampler and tail run on row strips (see the module docstring).

    Args:
        generator: an :class:`LSTMAGANGenerator`, in eval mode.
        x: ``[N, 1, h, w]`` slices.
        output_pixels: at most this many output pixels (``rows * s * w * s``) per strip and slice.

    Returns:
        ``[N, 1, h*s, w*s]``.
    """
    scale = generator.scale
    features = generator.head(x)
    features = features + generator.body_tail(generator.body(features))
    height, width = features.shape[-2:]
    rows = max(1, output_pixels // (scale * scale * width))
    if rows >= height:
        return generator.add_residual(generator.tail(generator.upsample(features)), x)
    out = torch.empty((x.shape[0], 1, height * scale, width * scale), dtype=features.dtype, device=features.device)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        first, last = max(0, top - STRIP_HALO), min(height, bottom + STRIP_HALO)
        strip = generator.tail(generator.upsample(features[:, :, first:last]))
        keep = strip[:, :, (top - first) * scale : (bottom - first) * scale]
        out[:, :, top * scale : bottom * scale] = keep
    return generator.add_residual(out, x)


def slice_forward(generator: torch.nn.Module, options: InferenceOptions) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fast ``[N, 1, h, w] -> [N, 1, h*s, w*s]`` of ``generator`` on ``options.torch_device`` (eval mode).

    Call it under ``torch.inference_mode()``. ``generator`` itself is not changed when a layout conversion is made
    (a copy is converted).
    """
    device = options.torch_device
    model = generator.to(device).eval()
    channels_last = uses_channels_last(device)
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    strips = isinstance(model, LSTMAGANGenerator) and model.scale > 1

    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = strip_forward(model, x) if strips else model(x)
        return out.contiguous()

    return forward
