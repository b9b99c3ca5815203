"""How a generator is run over a volume: one options object for every whole-volume command."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

__all__ = ["BACKENDS", "InferenceOptions", "resolve_device", "default_batch_size"]

#: How the generator runs (:func:`monai_lstmagan.inference.backends.resolve_backend`): ``auto`` = ONNX Runtime on
#: the CPU when installed and the model is an LSTMAGAN generator (x2, slices of 192x192 and more), else PyTorch.
BACKENDS = ("auto", "torch", "onnxruntime")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / None: CUDA when available, else the CPU; anything else as ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_batch_size(device: torch.device) -> int:
    """Slices (or planes) per forward pass when none is given: 8 on CUDA, 1 on CPU (``python -m
    monai_lstmagan.bench`` measures both; on a CPU larger batches cost cache locality and memory, a GPU
    needs them to be busy)."""
    return 8 if device.type == "cuda" else 1


@dataclass(frozen=True)
class InferenceOptions:
    """Options of running a generator over whole volumes (in-plane SR, through-plane SR, evaluation).

    Attributes:
        batch_size: slices (through-plane: planes; with ``tile``: tiles) per forward pass; None:
            :func:`default_batch_size` of the device.
        device: where the generator runs; ``"auto"``/None: CUDA when available.
        amp: autocast (float16 on CUDA, bfloat16 on CPU).
        tile: in-plane SR only: super-resolve in-plane tiles of ``tile x tile`` LR pixels blended with Gaussian
            weights (MONAI ``SlidingWindowInferer``) instead of whole slices, for very large slices.
        tile_overlap: overlap of neighbouring tiles, as a fraction of the tile.
        progress: show progress bars.
        output_format: the format of the outputs, one of :data:`monai_lstmagan.io.paths.OUTPUT_FORMATS`
            (``".nii.gz"``, ..., ``"dicom"``: a DICOM series folder, from a DICOM input only); None: each input's.
        series: a DICOM input holding several series: the SeriesInstanceUID to read, ``"all"`` for each of them;
            None refuses such an input, listing its series.
        backend: ``"auto"`` (ONNX Runtime on the CPU when installed, else PyTorch), ``"torch"`` or
            ``"onnxruntime"`` (:func:`monai_lstmagan.inference.backends.resolve_backend`).
    """

    batch_size: int | None = None
    device: str | torch.device | None = "auto"
    amp: bool = False
    tile: int | None = None
    tile_overlap: float = 0.25
    progress: bool = False
    output_format: str | None = None
    series: str | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.tile is not None and (self.tile < 1 or not 0.0 <= self.tile_overlap < 1.0):
            raise ValueError(
                f"tile must be >= 1 and tile_overlap in [0, 1), got tile={self.tile}, tile_overlap={self.tile_overlap}."
            )
        if self.output_format is not None:
            from monai_lstmagan.io.paths import OUTPUT_FORMATS

            if self.output_format not in OUTPUT_FORMATS:
                raise ValueError(
                    f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {self.output_format!r}."
                )

    @property
    def torch_device(self) -> torch.device:
        """The resolved device."""
        return resolve_device(self.device)

    @property
    def slices_per_forward(self) -> int:
        """The resolved batch size."""
        return default_batch_size(self.torch_device) if self.batch_size is None else self.batch_size

    @property
    def autocast_dtype(self) -> torch.dtype:
        """The autocast type of ``amp``: float16 on CUDA, bfloat16 elsewhere."""
        return torch.float16 if self.torch_device.type == "cuda" else torch.bfloat16

    def with_(self, **changes) -> InferenceOptions:
        """A copy with some fields changed."""
        return replace(self, **changes)
