"""How a generator is run over many slices: the fast CPU path of whole-volume inference.

:func:`slice_forward` turns a generator into the function ``[N, 1, h, w] -> [N, 1, h*s, w*s]`` that in-plane
SR, through-plane SR and the evaluation call, with the same outputs as ``generator(x)`` (within float rounding)
but faster on a CPU and with bounded memory:

- **channels_last** (NHWC) weights and input on the CPU: oneDNN's convolutions run without the layout
  conversions of NCHW (``docs/benchmark_inference.md``: 1.5-1.8x on the shipped generators, max abs difference
  below 1e-6). On CUDA the model is left as it is (AMP and cuDNN choose there);
- **strips at the output resolution** (:mod:`monai_lstmagan.inference.strips`): the upsampler and the tail of an
  :class:`~monai_lstmagan.networks.generator.LSTMAGANGenerator` run on row strips with a halo, so memory is
  bounded at x4 and the result is that of the whole slice;
- **the tail folded into the last PixelShuffle** (:mod:`monai_lstmagan.networks.folding`): the same function as a
  5x5 conv to 4 sub-pixel maps on the grid before the shuffle, 2.5-3x faster than the 9x9 one-map conv;
- **malloc that reuses freed memory** (:func:`~monai_lstmagan.system.keep_freed_memory_for_reuse`, glibc): the
  activations are reused instead of mapped and zero-filled afresh for every forward, 2x faster on 512x512 slices;
- **ONNX Runtime** (``backend="onnxruntime"``, the default on the CPU when the ``onnx`` extra is installed):
  the generator's trunk exported once to a cached graph (:mod:`monai_lstmagan.inference.onnx_backend`), the same
  strips, within 1e-4 of eager PyTorch (checked after every export).

The model given is not changed (a copy is converted).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from monai_lstmagan.inference.onnx_backend import OnnxGenerator, onnxruntime_available
from monai_lstmagan.inference.options import BACKENDS, InferenceOptions
from monai_lstmagan.inference.strips import STRIP_HALO, STRIP_OUTPUT_PIXELS, run_in_strips
from monai_lstmagan.networks.folding import upsampler_and_tail
from monai_lstmagan.networks.generator import LSTMAGANGenerator
from monai_lstmagan.system import keep_freed_memory_for_reuse

__all__ = [
    "STRIP_HALO",
    "STRIP_OUTPUT_PIXELS",
    "ONNX_MIN_SLICE_PIXELS",
    "ONNX_MAX_SCALE",
    "uses_channels_last",
    "run_in_strips",
    "strip_forward",
    "resolve_backend",
    "slice_forward",
]


#: ``backend="auto"`` runs ONNX Runtime for slices of at least this many pixels, PyTorch for smaller ones: measured
#: per slice on this project's CPU (``docs/benchmark_inference.md``), ONNX Runtime was 1.05-1.15x faster than
#: PyTorch's channels_last on 256x256 and 512x512 slices at x2 and as fast at x4, and 0.9-1.0x as fast on 128x128.
ONNX_MIN_SLICE_PIXELS = 192 * 192
#: ``backend="auto"`` runs x4 (and larger) generators in PyTorch: as fast end to end as ONNX Runtime at x4 (3.5 vs
#: 3.6x the old path on a 512x512 CT) with half the peak memory (1.2 vs 2.1-2.4 GB: ONNX Runtime's buffers and
#: PyTorch's x4 upsampler strips fragment the heap; ``docs/benchmark_inference.md``).
ONNX_MAX_SCALE = 2


def uses_channels_last(device: torch.device) -> bool:
    """Whether :func:`slice_forward` runs the model in ``channels_last`` on ``device``: on the CPU."""
    return device.type == "cpu"


def strip_forward(generator: LSTMAGANGenerator, x: torch.Tensor, output_pixels: int = STRIP_OUTPUT_PIXELS):
    """``generator(x)`` (``[N, 1, h, w] -> [N, 1, h*s, w*s]``) with the upsampler and tail on row strips, the tail
    folded into the last PixelShuffle (:func:`~monai_lstmagan.networks.folding.upsampler_and_tail`)."""
    tail = upsampler_and_tail(generator)
    return run_in_strips(generator.features, tail, generator.add_residual, generator.scale, x, output_pixels)


def resolve_backend(backend: str, generator: torch.nn.Module, device: torch.device, amp: bool = False) -> str:
    """The backend that runs ``generator``: ``"torch"`` or ``"onnxruntime"``.

    ``auto``: ONNX Runtime when it is installed (the ``onnx`` extra), the device is the CPU, the model is an
    :class:`LSTMAGANGenerator` and no autocast is asked for (comparison models, CUDA and ``amp`` run in
    PyTorch). An explicit ``onnxruntime`` that cannot run raises a ValueError saying why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    supported = device.type == "cpu" and isinstance(generator, LSTMAGANGenerator)
    if backend == "auto":
        return "onnxruntime" if supported and not amp and onnxruntime_available() else "torch"
    if backend == "onnxruntime" and not supported:
        raise ValueError(
            f"the onnxruntime backend runs LSTMAGAN generators on the CPU; got {type(generator).__name__} on "
            f"{device}: use --backend torch."
        )
    return backend


def slice_forward(
    generator: torch.nn.Module, options: InferenceOptions, cache_graphs: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fast ``[N, 1, h, w] -> [N, 1, h*s, w*s]`` of ``generator`` on ``options.torch_device`` (eval mode).

    ``options.backend`` chooses PyTorch (channels_last on the CPU, strips, the folded tail) or ONNX Runtime
    (:class:`~monai_lstmagan.inference.onnx_backend.OnnxGenerator`, the same strips); see :func:`resolve_backend`.
    With ``auto`` and ONNX Runtime available, slices below :data:`ONNX_MIN_SLICE_PIXELS` and generators of a scale
    above :data:`ONNX_MAX_SCALE` run in PyTorch.
    ``cache_graphs=False`` keeps ONNX graphs of weights used once out of the cache. Call it under
    ``torch.inference_mode()``. ``generator`` itself is not changed (a copy is converted).
    """
    device = options.torch_device
    if device.type == "cpu":
        keep_freed_memory_for_reuse()  # large activations reused, not mapped afresh per forward (2x on 512x512)
    model = generator.to(device).eval()
    backend = resolve_backend(options.backend, model, device, options.amp)
    if backend == "onnxruntime" and options.amp:
        raise ValueError("--amp (autocast) runs in PyTorch: use it with --backend torch or auto.")
    if backend == "onnxruntime" and options.backend == "onnxruntime":
        return OnnxGenerator(model, cache=cache_graphs)
    torch_forward = _torch_forward(model, device)
    if backend == "torch" or getattr(model, "scale", 1) > ONNX_MAX_SCALE:
        return torch_forward
    runners: list[OnnxGenerator] = []  # auto: the graph is made at the first slice large enough to use it

    def auto_forward(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] < ONNX_MIN_SLICE_PIXELS:
            return torch_forward(x)
        if not runners:
            runners.append(OnnxGenerator(model, cache=cache_graphs))
        return runners[0](x)

    return auto_forward


def _torch_forward(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The PyTorch path of :func:`slice_forward`: channels_last on the CPU, strips and the folded tail."""
    channels_last = uses_channels_last(device)
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    if not isinstance(model, LSTMAGANGenerator):
        return lambda x: model(x.contiguous(memory_format=torch.channels_last) if channels_last else x).contiguous()
    tail = upsampler_and_tail(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return run_in_strips(model.features, tail, model.add_residual, model.scale, x).contiguous()

    return forward
