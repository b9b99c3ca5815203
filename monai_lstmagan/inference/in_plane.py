"""In-plane super-resolution of whole volumes, slice by slice, keeping the scanner geometry.

A volume is super-resolved in its axial plane: its array is reoriented to RAS exactly as the training
transforms do (so the generator sees slices in the orientation it was trained on, Z = the axial axis),
normalised, streamed through the generator ``batch_size`` slices at a time, and written by the pipeline of
:mod:`monai_lstmagan.inference.files` on a grid that covers the same physical extent:

- the two in-plane axes get ``scale`` times more voxels and ``spacing / scale``,
- the first voxel centre moves to ``origin + direction @ ((1/scale - 1) / 2 * spacing)`` along those
  axes (the old first voxel's outer edge stays where it was),
- the direction and the slice axis (size, spacing, origin along it) are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from nibabel.orientations import apply_orientation
from tqdm import tqdm

from monai_lstmagan.checkpoints import load_generator, load_interpolated_generator
from monai_lstmagan.inference.backends import STRIP_HALO, STRIP_OUTPUT_PIXELS, slice_forward
from monai_lstmagan.inference.files import VolumeOperation, super_resolve_files
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.io.geometry import axial_axis, file_to_ras, ras_to_file, upsampled_affine
from monai_lstmagan.io.paths import check_output_dir
from monai_lstmagan.io.scans import Scan
from monai_lstmagan.transforms.ops import bicubic_upsample

#: Activation memory of the shipped generators per input and per output pixel of a slice (channels_last): the peak
#: RSS increase of one forward (``docs/benchmark_inference.md``: about 600 and 270 bytes), with a margin.
NETWORK_BYTES_PER_INPUT_PIXEL = 1200
NETWORK_BYTES_PER_OUTPUT_PIXEL = 300

__all__ = ["iter_super_resolved_slices", "super_resolve_volume", "InPlaneSR", "load_in_plane_model", "run_inference"]


def _slice_model(
    generator: Callable[[torch.Tensor], torch.Tensor], options: InferenceOptions
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f([N, 1, h, w]) -> [N, 1, h*s, w*s]``: whole slices, or in-plane tiles blended by MONAI's sliding window."""
    if options.tile is None:
        return generator
    inferer = SlidingWindowInferer(
        roi_size=(options.tile, options.tile), sw_batch_size=options.slices_per_forward, overlap=options.tile_overlap,
        mode="gaussian", sw_device=options.torch_device, device=options.torch_device,
    )  # fmt: skip
    return lambda x: inferer(x, generator)


def iter_super_resolved_slices(
    generator: torch.nn.Module, volume: torch.Tensor, options: InferenceOptions | None = None
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Stream the axial slices of a volume through the generator, ``options.batch_size`` slices at a time.

    Only one batch of slices (and, with ``tile``, its tiles) is on the device at any time. The generator runs
    through :func:`~monai_lstmagan.inference.backends.slice_forward` (ONNX Runtime or channels_last on the CPU, the upsampler in
    strips): the same output, faster and in bounded memory.

    Args:
        generator: maps ``[N, 1, h, w] -> [N, 1, h*s, w*s]``; evaluated in eval mode without gradients.
        volume: ``[1, X, Y, Z]`` in [0, 1] (RAS, Z = axial slice axis), on any device.
        options: batch size, device, amp, tiling, progress.

    Yields:
        ``(z_start, z_stop, sr)`` with ``sr`` ``[X*s, Y*s, z_stop - z_start]`` float32 on CPU, clamped to [0, 1].
    """
    options = options or InferenceOptions()
    if volume.dim() != 4 or volume.shape[0] != 1:
        raise ValueError(f"expected a volume [1, X, Y, Z], got shape {tuple(volume.shape)}.")
    device, batch_size = options.torch_device, options.slices_per_forward
    model = _slice_model(slice_forward(generator, options), options)
    num_slices = volume.shape[-1]
    starts = range(0, num_slices, batch_size)
    for start in tqdm(starts, desc="super-resolving slices", unit="batch", disable=not options.progress, leave=False):
        stop = min(start + batch_size, num_slices)
        lr = volume[0, :, :, start:stop].permute(2, 0, 1).unsqueeze(1)  # [N, 1, X, Y]
        lr = torch.as_tensor(lr, dtype=torch.float32).to(device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=options.autocast_dtype, enabled=options.amp):
            sr = model(lr).float().clamp(0.0, 1.0)[:, 0].permute(1, 2, 0).cpu()  # [X*s, Y*s, N]
        yield start, stop, sr


def super_resolve_volume(
    generator: torch.nn.Module, volume: torch.Tensor, scale: int, options: InferenceOptions | None = None
) -> torch.Tensor:
    """Super-resolve every axial slice of a normalised volume.

    Args:
        generator: an ``LSTMAGANGenerator`` (or any ``[N, 1, h, w] -> [N, 1, h*s, w*s]`` module).
        volume: ``[1, X, Y, Z]`` intensities in [0, 1] (RAS, Z = axial).
        scale: the generator's in-plane factor ``s`` (checked against the generator output).
        options: see :func:`iter_super_resolved_slices`.

    Returns:
        ``[1, X*s, Y*s, Z]`` float32 on CPU, clamped to [0, 1].
    """
    _, x, y, z = volume.shape
    out = torch.empty((1, x * scale, y * scale, z), dtype=torch.float32)
    for start, stop, sr in iter_super_resolved_slices(generator, volume, options):
        if sr.shape[:2] != out.shape[1:3]:
            raise ValueError(
                f"the generator produced slices of {tuple(sr.shape[:2])} from {(x, y)}: it is not a x{scale} model."
            )
        out[0, :, :, start:stop] = sr
    return out


def _bicubic_baseline(lr: np.ndarray, scale: int) -> np.ndarray:
    """``[X, Y, N]`` slices in the input's units -> their bicubic upsampling ``[X*s, Y*s, N]`` (float32)."""
    slices = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1), dtype=np.float32))[:, None]  # [N, 1, X, Y]
    return bicubic_upsample(slices, scale)[:, 0].permute(1, 2, 0).numpy()


class InPlaneSR(VolumeOperation):
    """In-plane SR by a generator of scale ``s``: work layout RAS ``[X, Y, Z]``, output ``[X*s, Y*s, Z]``.

    Args:
        generator: ``[N, 1, h, w] -> [N, 1, h*s, w*s]`` with attribute ``scale``.
    """

    def __init__(self, generator: torch.nn.Module) -> None:
        self.generator = generator
        self.scale = int(generator.scale)
        self.info = {}

    def describe(self) -> str:
        return f"in-plane super-resolution x{self.scale}"

    def to_work(self, scan: Scan) -> np.ndarray:
        return apply_orientation(scan.array, file_to_ras(scan.affine))

    def to_file(self, scan: Scan, work: np.ndarray) -> np.ndarray:
        return apply_orientation(work, ras_to_file(scan.affine))

    def output_shape(self, work_shape: Sequence[int]) -> tuple[int, int, int]:
        x, y, z = work_shape
        return x * self.scale, y * self.scale, z

    def output_affine(self, scan: Scan) -> np.ndarray:
        slice_axis = axial_axis(scan.affine)
        return upsampled_affine(scan.affine, [a for a in range(3) if a != slice_axis], self.scale)

    def chunk_slices(self, out_shape: Sequence[int], options: InferenceOptions) -> int:
        return options.slices_per_forward

    def model_bytes(self, work_shape: Sequence[int], options: InferenceOptions) -> int:
        x, y, _ = work_shape
        if options.tile is not None:
            x = y = min(options.tile, max(x, y))
        out_pixels = min(x * y * self.scale**2, STRIP_OUTPUT_PIXELS + 2 * STRIP_HALO * self.scale**2 * y)
        per_slice = NETWORK_BYTES_PER_INPUT_PIXEL * x * y + NETWORK_BYTES_PER_OUTPUT_PIXEL * out_pixels
        return options.slices_per_forward * per_slice

    def chunks(self, image: MetaTensor, work: np.ndarray, options: InferenceOptions):
        for start, stop, sr in iter_super_resolved_slices(self.generator, image.as_tensor(), options):
            yield start, stop, sr.numpy(), _bicubic_baseline(work[:, :, start:stop], self.scale)


def load_in_plane_model(
    ckpt_path: str, expected_scale: int | None = None, gan_model: str | None = None, perceptual: float = 0.0
) -> torch.nn.Module:
    """The in-plane generator of a ``model.pt``; a clear error naming the file for a through-plane refiner.

    Args:
        ckpt_path: the generator (the PSNR-oriented model when ``gan_model`` is given).
        expected_scale: when given, the checkpoint's scale must equal it.
        gan_model: a GAN-trained ``model.pt`` of the same architecture to interpolate towards
            (:func:`~monai_lstmagan.checkpoints.load_interpolated_generator`).
        perceptual: the interpolation weight ``alpha`` in [0, 1] of ``gan_model``; 0 (the default) = ``ckpt_path``
            unchanged. Anything else needs ``gan_model`` (``lstmagan-sr`` takes the shipped x4 perceptual model,
            :func:`~monai_lstmagan.pretrained.perceptual_model_path`, when neither ``--model`` nor ``--gan-model``
            is given).
    """
    if gan_model is None:
        if perceptual != 0:
            raise ValueError(
                f"--perceptual {perceptual} needs a GAN-trained model to interpolate towards (--gan-model PATH); "
                f"'{ckpt_path}' alone is the PSNR model (--perceptual 0). The shipped x4 model has one: "
                "lstmagan-sr --scale 4 --perceptual ALPHA (without --model)."
            )
        generator, info = load_generator(ckpt_path, expected_scale=expected_scale, map_location="cpu")
    else:
        generator, info = load_interpolated_generator(ckpt_path, gan_model, perceptual, expected_scale, "cpu")
    if info["generator"].get("scale") == 1:
        raise ValueError(f"'{ckpt_path}' is a through-plane refiner: run it with `lstmagan-sr --through-plane`.")
    return generator


def run_inference(
    ckpt_path: str,
    output_dir: str,
    inputs: str | Sequence[str] | None = None,
    dataset_dir: str | None = None,
    modality: str = "auto",
    output_dtype: str | None = None,
    batch_size: int | None = None,
    device: str | None = "auto",
    amp: bool = False,
    tile: int | None = None,
    tile_overlap: float = 0.25,
    progress: bool = True,
    expected_scale: int | None = None,
    output_format: str | None = None,
    series: str | None = None,
    backend: str = "auto",
    gan_model: str | None = None,
    perceptual: float = 0.0,
) -> list[str]:
    """Super-resolve files and/or every volume of a folder with a generator checkpoint (in-plane).

    The architecture and scale come from the checkpoint (``checkpoints.load_generator``), so any trained
    ``model.pt`` runs as it is.

    Args:
        ckpt_path: generator checkpoint ``model.pt``.
        output_dir: where ``<name>_sr<ext>`` files are written (created if needed).
        inputs: volume files or folders; when given, ``dataset_dir`` is ignored.
        dataset_dir: folder searched with ``data.find_volumes`` (LUNA16, BraTS or any-folder layout).
        modality, output_dtype: see :func:`monai_lstmagan.inference.files.super_resolve_file`.
        batch_size, device, amp, tile, tile_overlap, progress, backend: the fields of :class:`InferenceOptions`.
        expected_scale: when given, the checkpoint's scale must equal it (clear error otherwise).
        output_format, series: the output format and the DICOM series to read (:class:`InferenceOptions`).
        gan_model, perceptual: ESRGAN-style network interpolation ``(1 - perceptual) * ckpt_path + perceptual *
            gan_model`` (:func:`load_in_plane_model`); the default ``perceptual = 0`` runs ``ckpt_path`` unchanged.

    Returns:
        the paths written, in input order.
    """
    options = InferenceOptions(
        batch_size, device, amp, tile, tile_overlap, progress, output_format=output_format, series=series,
        backend=backend,
    )  # fmt: skip
    check_output_dir(output_dir)  # before the model is loaded: a bad folder is the first thing said
    if inputs is None or inputs == "" or (not isinstance(inputs, str) and len(inputs) == 0):
        if not dataset_dir:
            raise ValueError("give input files (`--input FILE`) or a folder (`--dataset_dir DIR`).")
        inputs = [dataset_dir]
    operation = InPlaneSR(load_in_plane_model(ckpt_path, expected_scale, gan_model, perceptual))
    report = (lambda path, out, info: tqdm.write(f"{path} -> {out}")) if progress else None
    return super_resolve_files(operation, output_dir, inputs, modality, output_dtype, options, report)
