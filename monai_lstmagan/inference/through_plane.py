"""Through-plane super-resolution of thick-slice scans, self-supervised (SMORE, Zhao et al., IEEE TMI 2021).

A scan with fine in-plane pixels and thick slices lacks resolution along its slice axis only. The
method learns that axis from the scan's own in-plane images:

1. **Training pairs** (:class:`~monai_lstmagan.transforms.through_plane.RandThroughPlanePairsd`): in-plane patches are
   measured along one in-plane axis with the slice profile of the scan (a box for contiguous slices, the
   default, or a Gaussian of FWHM = slice thickness; :mod:`monai_lstmagan.transforms.slice_profile`) at the slice spacing, and
   interpolated back (cubic); the target is the patch at the refined slice spacing.
2. **The network** is the residual generator with ``scale=1``: a same-size refiner of the cubic
   interpolation, whose tail starts at zero, so an untrained refiner *is* cubic interpolation. Chosen over a
   one-axis pixel shuffle because slice-spacing ratios are rarely integers (5 mm / 0.7 mm = 7.1): one network
   serves every real factor. By default it starts untrained (:func:`default_refiner`).
3. **Per-scan fine-tuning** (:func:`fine_tune`, SMORE's per-scan mode): 1000 steps on the input scan itself,
   with its own spacing ratio, before it is refined (bounded in steps and seconds).
4. **Application** (:func:`super_resolve_slice_axis`): the volume is interpolated (cubic) along the slice
   axis to the refined grid, and the refiner is run over every plane that contains the slice axis, in both
   in-plane directions (the sagittal and coronal planes of an axial scan); the two results are averaged
   (each plane sees the slice axis as rows, the layout of training).

:class:`ThroughPlaneSR` is this mode in the pipeline of :mod:`monai_lstmagan.inference.files`: the volume is
written with the slice axis refined, ``round(N * factor)`` slices over the same extent (spacing
``N * s / round(N * factor)``, the first slice centre moved so that the outer edges stay), direction and
in-plane geometry untouched, in the input's format, units and voxel type, atomically. The slice axis is the
file axis with the largest spacing, whatever the axis order on disk.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from tqdm import tqdm

from monai_lstmagan.checkpoints import load_generator
from monai_lstmagan.inference.backends import slice_forward
from monai_lstmagan.inference.files import VolumeOperation, super_resolve_files
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.io.geometry import upsampled_affine
from monai_lstmagan.io.paths import check_output_dir
from monai_lstmagan.io.scans import Scan
from monai_lstmagan.networks import LSTMAGANGenerator
from monai_lstmagan.transforms.intensity import ForegroundMaskd
from monai_lstmagan.transforms.slice_profile import DEFAULT_PROFILE, PROFILES, interpolate_axis
from monai_lstmagan.transforms.through_plane import RandThroughPlanePairsd

__all__ = [
    "slice_axis_of",
    "refined_slice_count",
    "fine_tune",
    "super_resolve_slice_axis",
    "ThroughPlaneSR",
    "DEFAULT_REFINER",
    "DEFAULT_FINE_TUNE_ITERATIONS",
    "DEFAULT_FINE_TUNE_SECONDS",
    "default_refiner",
    "fine_tuned_copy",
    "load_refiner",
    "run_through_plane",
]

#: The refiner used when no model is given (the demo generator's size: fast enough to fine-tune per scan on a CPU).
DEFAULT_REFINER = {"scale": 1, "num_blocks": 2, "channels": 16, "dense_layers": 4, "growth": 8}
DEFAULT_FINE_TUNE_ITERATIONS = 1000
DEFAULT_FINE_TUNE_SECONDS = 120.0

_ANISOTROPY = 1.05  # the slice axis must be this much coarser than the in-plane pixels to be found by itself


def default_refiner(seed: int = 0) -> torch.nn.Module:
    """The untrained :data:`DEFAULT_REFINER` (weights seeded by ``seed``): exactly cubic interpolation until
    fine-tuned, since its tail starts at zero. Measured: starting the per-scan fine-tuning from a refiner
    trained on the sample scans over factors 2..8 (``train_through_plane.yaml``) gave the same result after 300
    steps (``docs/through_plane.md``), and that trained refiner alone lost to cubic by 0.1..0.2 dB (it cannot know the factor of
    the scan it sees), so no through-plane model is shipped."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LSTMAGANGenerator(**DEFAULT_REFINER)


def slice_axis_of(spacing: Sequence[float], path: str = "<volume>") -> int:
    """The axis with the largest spacing (the slice axis of a thick-slice scan).

    Raises:
        ValueError: naming ``path`` when no axis is coarser than the others (give the factor and the
            slice axis is then the last one of the largest spacing).
    """
    spacing = [float(s) for s in spacing]
    axis = int(np.argmax(spacing))
    others = [s for a, s in enumerate(spacing) if a != axis]
    if spacing[axis] < _ANISOTROPY * max(others):
        raise ValueError(
            f"'{path}' has no thick slices to refine (voxel spacing {tuple(round(s, 4) for s in spacing)} mm): "
            "give --factor to refine its last axis anyway."
        )
    return axis


def refined_slice_count(num_slices: int, factor: float) -> int:
    """Slices of the refined grid: ``round(num_slices * factor)`` (the real factor is that over ``num_slices``)."""
    if not factor > 1.0:
        raise ValueError(f"the through-plane factor must be > 1, got {factor}.")
    return max(num_slices + 1, int(round(num_slices * factor)))


def fine_tune(
    generator: torch.nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor | None,
    factor: float,
    target_spacing: float | None = None,
    thickness_ratio: float = 1.0,
    profile: str = DEFAULT_PROFILE,
    iterations: int = DEFAULT_FINE_TUNE_ITERATIONS,
    time_limit: float | None = None,
    batch_size: int = 8,
    patch_size: int = 64,
    learning_rate: float = 2e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune a refiner in place on the scan's own in-plane slices (SMORE's per-scan self-supervision).

    Args:
        generator: the refiner (``LSTMAGANGenerator(scale=1)``), trained in place with Adam and the pixel MSE.
        image: ``[1, X, Y, Z]`` MetaTensor in [0, 1] (Z = slice axis; its meta gives the in-plane spacing).
        mask: ``[1, X, Y, Z]`` foreground mask (patches are centred on it with probability 0.9) or None.
        factor: the SR factor along Z.
        target_spacing: refined slice spacing [mm] (slice spacing / factor); None: the in-plane spacing.
        thickness_ratio: slice thickness / slice spacing (1: contiguous slices).
        profile: ``"gaussian"`` or ``"box"``.
        iterations: optimiser steps (at most).
        time_limit: stop after this many seconds even if ``iterations`` are not done; None: no limit.
        batch_size, patch_size: patches per step and their size.
        learning_rate: Adam's learning rate.
        seed: seeds the patch sampling.
        device: where to train.
        progress: show a progress bar.

    Returns:
        ``{"iterations": done, "seconds": elapsed, "first_loss": ..., "last_loss": ...}`` (losses: mean MSE of the
        first / last 10% of the steps).
    """
    sampler = RandThroughPlanePairsd(
        ("image", "mask"), factor=factor, thickness_ratio=thickness_ratio, profile=profile,
        target_spacing=target_spacing, patch_size=patch_size, num_patches=batch_size,
    ).set_random_state(seed)  # fmt: skip
    generator.to(device).train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=(0.9, 0.99))
    losses: list[float] = []
    started = time.perf_counter()
    for _ in tqdm(range(iterations), desc="fine-tuning on the scan", unit="step", disable=not progress, leave=False):
        if time_limit is not None and time.perf_counter() - started > time_limit:
            break
        pair = sampler({"image": image, "mask": mask} if mask is not None else {"image": image})
        network_input, target = pair["lr"].to(device), pair["hr"].to(device)
        loss = torch.nn.functional.mse_loss(generator(network_input), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    generator.eval()
    tenth = max(1, len(losses) // 10)
    return {
        "iterations": len(losses),
        "seconds": time.perf_counter() - started,
        "first_loss": float(np.mean(losses[:tenth])) if losses else math.nan,
        "last_loss": float(np.mean(losses[-tenth:])) if losses else math.nan,
    }


def fine_tuned_copy(
    generator: torch.nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor | None,
    factor: float,
    iterations: int = DEFAULT_FINE_TUNE_ITERATIONS,
    **options: Any,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A copy of the refiner fine-tuned on a thick-slice scan (:func:`fine_tune`); the argument is left as it is.

    The refined slice spacing is the scan's slice spacing (``image.pixdim[2]``) over ``factor``; where that is
    not coarser than the pixels, the pixels themselves are the targets.

    Args:
        generator: the refiner.
        image: ``[1, X, Y, Z]`` MetaTensor in [0, 1], Z = slice axis, with its spacing.
        mask: its foreground mask or None.
        factor: the SR factor along Z.
        iterations: fine-tuning steps (0: an untouched copy).
        options: further arguments of :func:`fine_tune` (thickness_ratio, profile, time_limit, seed, device, progress).

    Returns:
        ``(refiner, stats)`` with the statistics of :func:`fine_tune` (``{"iterations": 0}`` without fine-tuning).
    """
    model = copy.deepcopy(generator)
    if iterations <= 0:
        return model, {"iterations": 0}
    spacing = [float(s) for s in image.pixdim]
    target_spacing = spacing[2] / factor
    target = target_spacing if target_spacing > min(spacing[:2]) else None
    return model, fine_tune(model, image, mask, factor, target_spacing=target, iterations=iterations, **options)


def super_resolve_slice_axis(
    generator: torch.nn.Module, volume: torch.Tensor, num_slices: int, options: InferenceOptions | None = None
) -> torch.Tensor:
    """Refine the slice axis (Z) of a normalised volume with a through-plane refiner.

    The volume is interpolated (cubic) along Z to ``num_slices``; every plane of fixed X (rows Z, columns Y)
    and of fixed Y (rows Z, columns X) goes through the refiner, ``batch_size`` planes at a time; the results of
    the two directions are averaged.

    Args:
        generator: same-size refiner ``[N, 1, Z', W] -> [N, 1, Z', W]`` (``LSTMAGANGenerator(scale=1)``).
        volume: ``[X, Y, Z]`` in [0, 1].
        num_slices: ``Z'``, slices of the refined grid (same extent).
        options: planes per forward pass (``batch_size``), device, amp, progress (``tile`` is not used).

    Returns:
        ``[X, Y, Z']`` float32 on CPU in [0, 1].
    """
    if volume.dim() != 3:
        raise ValueError(f"expected a volume [X, Y, Z], got shape {tuple(volume.shape)}.")
    options = options or InferenceOptions()
    device, batch_size = options.torch_device, options.slices_per_forward
    # the fast path (ONNX Runtime or channels_last); a refiner fine-tuned on this scan keeps no graph in the cache
    forward = slice_forward(generator, options, cache_graphs=False)
    interpolated = interpolate_axis(volume.float().cpu(), -1, num_slices, "cubic").clamp(0.0, 1.0)  # [X, Y, Z']
    out = torch.zeros_like(interpolated)
    for fixed in (0, 1):
        stack = interpolated if fixed == 0 else interpolated.permute(1, 0, 2)  # [fixed, other, Z']
        refined = out if fixed == 0 else out.permute(1, 0, 2)  # a view: writes land in out
        starts = range(0, stack.shape[0], batch_size)
        for start in tqdm(
            starts, desc=f"refining planes of fixed axis {fixed}", disable=not options.progress, leave=False
        ):
            batch = stack[start : start + batch_size].transpose(1, 2)[:, None].to(device)  # [n, 1, Z', other]
            with torch.inference_mode(), torch.autocast(device.type, dtype=options.autocast_dtype, enabled=options.amp):
                result = forward(batch).float().clamp(0.0, 1.0)
            refined[start : start + batch_size] += result[:, 0].transpose(1, 2).cpu()
    return out / 2.0


#: Refined slices converted to the file's voxel type and written at a time.
THROUGH_PLANE_CHUNK_SLICES = 16


class ThroughPlaneSR(VolumeOperation):
    """Through-plane SR: the slice axis (the file axis of the largest spacing) refined by a refiner fine-tuned on
    each scan first; work layout ``[A, B, N]`` with the slice axis last, output ``[A, B, round(N * factor)]``.

    Args:
        refiner: a through-plane refiner (``LSTMAGANGenerator(scale=1)``); each scan fine-tunes a copy, the
            argument is left as it is.
        factor: slices per input slice; None: the slice spacing over the finest in-plane spacing (isotropic
            output).
        slice_thickness: slice thickness [mm] (the profile's FWHM); None: the slice spacing (contiguous slices).
        profile: ``"gaussian"`` or ``"box"``.
        fine_tune_iterations: steps of per-scan self-supervised fine-tuning (0: apply the model as it is).
        fine_tune_seconds: time bound of the fine-tuning (None: none).
        seed: seeds the fine-tuning.

    After each scan :attr:`info` holds ``slice_axis``, ``factor`` (real), ``slices``, ``spacing`` (new) and the
    ``fine_tune`` statistics.
    """

    def __init__(
        self,
        refiner: torch.nn.Module,
        factor: float | None = None,
        slice_thickness: float | None = None,
        profile: str = DEFAULT_PROFILE,
        fine_tune_iterations: int = DEFAULT_FINE_TUNE_ITERATIONS,
        fine_tune_seconds: float | None = DEFAULT_FINE_TUNE_SECONDS,
        seed: int = 0,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"slice profile must be one of {PROFILES}, got {profile!r}.")
        if slice_thickness is not None and not float(slice_thickness) > 0:
            raise ValueError(f"slice thickness must be > 0 mm, got {slice_thickness}.")
        self.refiner, self.factor, self.slice_thickness, self.profile = refiner, factor, slice_thickness, profile
        self.fine_tune_iterations, self.fine_tune_seconds, self.seed = fine_tune_iterations, fine_tune_seconds, seed
        self.info = {}

    def begin(self, scan: Scan) -> None:
        spacing = np.linalg.norm(scan.affine[:3, :3], axis=0)
        try:
            axis = slice_axis_of(spacing, scan.path)
        except ValueError:
            if self.factor is None:
                raise
            axis = 2  # isotropic voxels with an explicit factor: refine the last axis
        num_slices = scan.array.shape[axis]
        if num_slices < 2:
            raise ValueError(f"'{scan.path}' has {num_slices} slice along its slice axis: nothing to interpolate.")
        in_plane = [float(s) for a, s in enumerate(spacing) if a != axis]
        slice_spacing = float(spacing[axis])
        factor = slice_spacing / min(in_plane) if self.factor is None else float(self.factor)
        num_out = refined_slice_count(num_slices, factor)
        self.axis, self.in_plane, self.slice_spacing, self.num_out = axis, in_plane, slice_spacing, num_out
        self.real_factor = num_out / num_slices
        thickness = 1.0 if self.slice_thickness is None else float(self.slice_thickness) / slice_spacing
        self.thickness_ratio = thickness
        self.info = {"slice_axis": axis, "factor": self.real_factor, "slices": num_out}

    def describe(self) -> str:
        return f"through-plane super-resolution x{self.real_factor:.4g} (slice axis {self.axis})"

    def to_work(self, scan: Scan) -> np.ndarray:
        return np.moveaxis(np.asarray(scan.array, dtype=np.float32), self.axis, -1)

    def to_file(self, scan: Scan, work: np.ndarray) -> np.ndarray:
        return np.moveaxis(work, -1, self.axis)

    def work_affine(self, scan: Scan) -> np.ndarray:
        return np.diag([*self.in_plane, self.slice_spacing, 1.0])

    def output_shape(self, work_shape: Sequence[int]) -> tuple[int, int, int]:
        return work_shape[0], work_shape[1], self.num_out

    def output_affine(self, scan: Scan) -> np.ndarray:
        affine = upsampled_affine(scan.affine, [self.axis], self.real_factor)
        self.info["spacing"] = float(np.linalg.norm(affine[:3, self.axis]))
        return affine

    def chunks(self, image: MetaTensor, work: np.ndarray, options: InferenceOptions):
        mask = ForegroundMaskd("image")({"image": image})["mask"]
        model, stats = fine_tuned_copy(
            self.refiner, image, mask, self.real_factor, self.fine_tune_iterations,
            thickness_ratio=self.thickness_ratio, profile=self.profile, time_limit=self.fine_tune_seconds,
            seed=self.seed, device=options.torch_device, progress=options.progress,
        )  # fmt: skip
        self.info["fine_tune"] = stats
        if stats["iterations"]:
            logging.getLogger(__name__).info(
                f"{image.meta.get('filename_or_obj', 'volume')}: fine-tuned {stats['iterations']} steps in "
                f"{stats['seconds']:.0f} s."
            )
        refined = super_resolve_slice_axis(model, image[0].as_tensor(), self.num_out, options).numpy()
        baseline = interpolate_axis(torch.from_numpy(work), -1, self.num_out, "cubic").numpy()
        step = self.chunk_slices(refined.shape, options)
        for start in range(0, self.num_out, step):  # the conversion to the file's type slab by slab
            stop = min(start + step, self.num_out)
            yield start, stop, refined[:, :, start:stop], baseline[:, :, start:stop]

    def chunk_slices(self, out_shape: Sequence[int], options: InferenceOptions) -> int:
        return THROUGH_PLANE_CHUNK_SLICES

    def model_bytes(self, work_shape: Sequence[int], options: InferenceOptions) -> int:
        """The refined grid is made whole (both plane directions are averaged): the cubic interpolation, the sum
        of the refined planes and its copy, and the baseline, float32 each."""
        return 4 * 4 * work_shape[0] * work_shape[1] * self.num_out


def load_refiner(ckpt_path: str, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """The through-plane refiner of a ``model.pt``; a clear error naming the file for an in-plane model."""
    generator, info = load_generator(ckpt_path, map_location=map_location)
    scale = info["generator"].get("scale")
    if scale != 1:
        raise ValueError(
            f"'{ckpt_path}' is an in-plane x{scale} model; through-plane SR needs a through-plane refiner (scale 1, "
            "trained with bundle/configs/train_through_plane.yaml), or no --model for the default refiner."
        )
    return generator


def run_through_plane(
    ckpt_path: str | None,
    output_dir: str,
    inputs: str | Sequence[str],
    modality: str = "auto",
    output_dtype: str | None = None,
    options: InferenceOptions | None = None,
    **through_plane: Any,
) -> list[str]:
    """Refine the slice axis of volume files and/or every volume of folders (``lstmagan-sr --through-plane``).

    The output folder is checked before anything is loaded, the refiner is loaded once, and each volume is
    fine-tuned on (a copy of it) and refined by :class:`ThroughPlaneSR`.

    Args:
        ckpt_path: through-plane ``model.pt`` (:func:`load_refiner`); None: :func:`default_refiner`.
        output_dir: where ``<name>_sr<ext>`` files are written (created if needed).
        inputs: volume files or folders.
        modality: ``"ct"``, ``"mr"`` or ``"auto"``.
        output_dtype: voxel type of the outputs; None keeps each input's.
        options: batch size (planes per forward), device, amp, progress.
        through_plane: arguments of :class:`ThroughPlaneSR` (factor, slice_thickness, profile,
            fine_tune_iterations, fine_tune_seconds, seed).

    Returns:
        the paths written, in input order.
    """
    options = options or InferenceOptions(progress=True)
    check_output_dir(output_dir)
    refiner = load_refiner(ckpt_path) if ckpt_path else default_refiner(through_plane.get("seed", 0))
    operation = ThroughPlaneSR(refiner, **through_plane)

    def report(path: str, out: str, info: dict) -> None:
        tqdm.write(
            f"{path} -> {out}: axis {info['slice_axis']} x{info['factor']:.3g} ({info['slices']} slices of "
            f"{info['spacing']:.3g} mm), {info['fine_tune']['iterations']} fine-tuning steps"
        )

    return super_resolve_files(
        operation, output_dir, inputs, modality, output_dtype, options, report if options.progress else None
    )
