"""The ONNX Runtime backend of whole-volume inference: the trunk of an LSTMAGAN generator as a cached ONNX graph.

An :class:`~monai_lstmagan.networks.generator.LSTMAGANGenerator` is run in three parts:

- ``trunk.onnx``: ``x [N, 1, h, w] -> features [N, C, h, w]`` (head and the attention-gated dense blocks, without
  concatenations: :class:`~monai_lstmagan.networks.folding.SplitConvTrunk`), exported once per set of weights with
  dynamic batch, height and width and run by ONNX Runtime on the CPU (1.2-1.25x faster than PyTorch's channels_last
  on 256x256 and 512x512 slices: its NCHWc convolutions, fused activations);
- the upsampler and tail, in PyTorch (channels_last, the tail folded into the last PixelShuffle:
  :func:`~monai_lstmagan.networks.folding.upsampler_and_tail`), on row strips with a halo
  (:func:`~monai_lstmagan.inference.strips.run_in_strips`): measured faster there than in ONNX Runtime (0.34 vs
  0.41 s at x2 on 512x512; ``docs/benchmark_inference.md``), and the strips bound the memory at x4;
- the global bicubic residual (:meth:`LSTMAGANGenerator.add_residual`), the one bicubic operator of the package.

The graph lives in a cache folder (:func:`onnx_cache_dir`: ``$MONAI_LSTMAGAN_CACHE``, else
``$XDG_CACHE_HOME/monai_lstmagan``, else ``~/.cache/monai_lstmagan``) under ``onnx/<fingerprint>/``, the fingerprint
being a SHA-256 of the architecture, every weight, the torch version, the opset and :data:`GRAPH_FORM`, so a
retrained model gets a new graph and a cached graph never serves other weights. It is written into a temporary
folder and renamed (atomic); an unwritable cache falls back to a temporary folder of the process. Every time a
runner is made the result is checked against the eager generator on a random input (:data:`MAX_ABS_DIFFERENCE`);
a cached graph that fails the check, or does not load, is exported again once.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings

import numpy as np
import torch

from monai_lstmagan.inference.strips import STRIP_OUTPUT_PIXELS, run_in_strips
from monai_lstmagan.io.atomic import temporary_folder
from monai_lstmagan.networks.folding import inference_trunk, upsampler_and_tail
from monai_lstmagan.networks.generator import LSTMAGANGenerator

__all__ = [
    "MAX_ABS_DIFFERENCE",
    "OPSET",
    "GRAPH_FORM",
    "onnxruntime_available",
    "onnx_cache_dir",
    "generator_fingerprint",
    "export_generator_graphs",
    "OnnxGenerator",
]

logger = logging.getLogger(__name__)

#: Largest absolute difference from the eager generator accepted after an export (outputs are in [0, 1]).
MAX_ABS_DIFFERENCE = 1e-4
#: ONNX opset of the exported graphs.
OPSET = 17
_GRAPHS = ("trunk.onnx",)
#: Changes whenever what the graphs compute changes (a cached graph of an older form is not reused).
GRAPH_FORM = "split-conv trunk, v2"
_CHECK_SIZE = 24  # the random input of the post-export check: [2, 1, 24, 24]


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` (for the export) can be imported (the ``onnx`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def onnx_cache_dir() -> str:
    """The folder of the cached graphs: ``$MONAI_LSTMAGAN_CACHE/onnx``, else ``$XDG_CACHE_HOME/monai_lstmagan/onnx``,
    else ``~/.cache/monai_lstmagan/onnx``."""
    root = os.environ.get("MONAI_LSTMAGAN_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "monai_lstmagan")
    return os.path.join(root, "onnx")


def generator_fingerprint(generator: LSTMAGANGenerator) -> str:
    """SHA-256 (hex, 24 characters) of the module structure, every parameter and buffer, torch, the opset and
    :data:`GRAPH_FORM`."""
    digest = hashlib.sha256()
    digest.update(f"{torch.__version__}|opset{OPSET}|{GRAPH_FORM}|{generator!r}".encode())
    for name, tensor in generator.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:24]


def export_generator_graphs(generator: LSTMAGANGenerator, folder: str) -> None:
    """Write ``trunk.onnx`` of ``generator`` (eval mode, CPU, float32) into ``folder``.

    Dynamic axes: batch, height and width. The TorchScript-based exporter (``dynamo=False``) is used: it exports
    the convolutions, PReLU, PixelShuffle and the attention gates with symbolic sizes in about a second.
    """
    trunk = inference_trunk(generator.cpu().eval())
    x = torch.rand(1, 1, _CHECK_SIZE, _CHECK_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        torch.onnx.export(
            trunk, (x,), os.path.join(folder, _GRAPHS[0]), input_names=["x"], output_names=["features"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "features": {0: "n", 2: "h", 3: "w"}},
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip


def _cached_graphs(generator: LSTMAGANGenerator, cache_dir: str | None) -> str | None:
    """The folder holding the two graphs of ``generator``, exported there first when missing; None when the cache
    cannot be written."""
    root = cache_dir or onnx_cache_dir()
    folder = os.path.join(root, generator_fingerprint(generator))
    if all(os.path.isfile(os.path.join(folder, name)) for name in _GRAPHS):
        return folder
    try:
        os.makedirs(root, exist_ok=True)
        work = temporary_folder(root)
    except OSError as e:  # a read-only home: the caller exports for this process only
        logger.warning("cannot write the ONNX cache %s (%s); exporting to a temporary folder", root, e)
        return None
    try:
        export_generator_graphs(generator, work)
        with open(os.path.join(work, "graphs.json"), "w") as f:
            json.dump({"torch": torch.__version__, "opset": OPSET, "generator": repr(generator)}, f)
        try:
            os.replace(work, folder)
        except OSError:  # another process finished the same export first
            if not os.path.isdir(folder):
                raise
    finally:
        if os.path.isdir(work):
            shutil.rmtree(work, ignore_errors=True)
    return folder


def _sessions(folder: str, threads: int) -> tuple:
    """ONNX Runtime sessions of the graphs in ``folder`` (CPU, ``threads`` intra-op threads)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # idle ORT threads sleep instead of spinning: the upsampler runs in PyTorch right after, on the same cores
    # (spinning made a 256x256 x2 slice 1.2x slower: docs/benchmark_inference.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = False  # the arena keeps the peak of every input size: +0.5 GB at x2 512^2
    providers = ["CPUExecutionProvider"]
    return tuple(
        onnxruntime.InferenceSession(os.path.join(folder, name), options, providers=providers) for name in _GRAPHS
    )


class OnnxGenerator:
    """An LSTMAGAN generator run by ONNX Runtime: ``[N, 1, h, w] -> [N, 1, h*s, w*s]`` float32 tensors on the CPU.

    Args:
        generator: an :class:`LSTMAGANGenerator` (its eval-mode weights are exported; the module is not changed).
        cache_dir: folder of the cached graphs (default :func:`onnx_cache_dir`).
        cache: keep the graphs in the cache; False: export into a temporary folder, removed once the sessions are
            made (for weights used once, e.g. a refiner fine-tuned on one scan).
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
        check: compare with the eager generator on a random input and raise if the difference exceeds
            :data:`MAX_ABS_DIFFERENCE` (cached graphs that fail it, or do not load, are exported again once).

    Raises:
        ImportError: ``onnxruntime``/``onnx`` are not installed.
        TypeError: ``generator`` is not an :class:`LSTMAGANGenerator`.
        RuntimeError: the graphs do not reproduce the eager generator.
    """

    def __init__(
        self,
        generator: LSTMAGANGenerator,
        cache_dir: str | None = None,
        threads: int | None = None,
        check: bool = True,
        cache: bool = True,
    ) -> None:
        if not onnxruntime_available():
            raise ImportError("the onnxruntime backend needs `pip install monai_lstmagan[onnx]` (onnx, onnxruntime).")
        if not isinstance(generator, LSTMAGANGenerator):
            raise TypeError(f"the onnxruntime backend runs LSTMAGAN generators, not {type(generator).__name__}.")
        self.generator = generator.cpu().eval()
        self.scale = generator.scale
        self.output_pixels = STRIP_OUTPUT_PIXELS
        self._upsampler_cl = upsampler_and_tail(copy.deepcopy(self.generator).to(memory_format=torch.channels_last))
        threads = threads or torch.get_num_threads()
        self.folder = _cached_graphs(self.generator, cache_dir) if cache else None
        if self.folder is not None:
            try:
                (self._trunk,) = _sessions(self.folder, threads)
                if check:
                    self.check()
            except Exception as e:  # a damaged or replaced cached graph: export it again, once
                logger.warning("the cached ONNX graphs in %s are unusable (%s); exporting them again", self.folder, e)
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = _cached_graphs(self.generator, cache_dir)
                (self._trunk,) = _sessions(self.folder, threads)
                if check:
                    self.check()
        else:  # weights used once, or no writable cache: graphs exported for this process, then removed
            folder = tempfile.mkdtemp(prefix="lstmagan-onnx-")
            try:
                export_generator_graphs(self.generator, folder)
                (self._trunk,) = _sessions(folder, threads)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            if check:
                self.check()

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, C, h, w]`` features."""
        (features,) = self._trunk.run(None, {"x": np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        return torch.from_numpy(features)

    def upsample_tail(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, C, r, w] -> [N, 1, r*s, w*s]``: the upsampler and tail before the residual (PyTorch, channels_last)."""
        return self._upsampler_cl(features.contiguous(memory_format=torch.channels_last)).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, h, w] -> [N, 1, h*s, w*s]``."""
        return run_in_strips(
            self.trunk, self.upsample_tail, self.generator.add_residual, self.scale, x, self.output_pixels
        )

    def check(self) -> float:
        """The largest absolute difference from the eager generator on a random ``[2, 1, 24, 24]`` input."""
        x = torch.rand(2, 1, _CHECK_SIZE, _CHECK_SIZE, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            difference = float((self(x) - self.generator(x)).abs().max())
        if not difference <= MAX_ABS_DIFFERENCE:
            raise RuntimeError(
                f"the ONNX graph in {self.folder or 'a temporary folder'} differs from the generator by {difference:.3g} "
                f"(> {MAX_ABS_DIFFERENCE}); run with --backend torch."
            )
        return difference
