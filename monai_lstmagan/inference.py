"""Whole-volume super-resolution that keeps the scanner geometry.

A volume is super-resolved slice by slice in its axial plane: the file is read with nibabel (NIfTI)
or ITK (MetaImage ``.mhd``/``.mha``, NRRD), its array is reoriented to RAS exactly as the training
transforms do (so the generator sees slices in the orientation it was trained on, Z = the axial
axis), normalised with :class:`~monai_lstmagan.transforms.IntensityNormalizationd`, streamed through
the generator ``batch_size`` slices at a time, mapped back to the input's units (HU for CT) and dtype,
reoriented back to the file's own axis order and written next to a geometry that covers the same
physical extent:

- the two in-plane axes get ``scale`` times more voxels and ``spacing / scale``,
- the first voxel centre moves to ``origin + direction @ ((1/scale - 1) / 2 * spacing)`` along those
  axes (the old first voxel's outer edge stays where it was),
- the direction and the slice axis (size, spacing, origin along it) are unchanged.

The generator only sees (and only produces) intensities inside the normalisation window (CT:
-1000..400 HU by default; MR: the 0.5..99.5 foreground percentiles). Where the bicubic upsampling of
the input lies outside that window (bone, metal, the brightest MR voxels), the output keeps the
bicubic value instead of a value clipped to the window edge, so nothing the scanner measured is
flattened; inside the window the output is the generator's.

Entry points: :func:`run_inference` (used by ``bundle/configs/inference.yaml``) and the console
command ``lstmagan-sr`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from tqdm import tqdm

from monai_lstmagan.atomic import atomic_files
from monai_lstmagan.checkpoints import load_generator
from monai_lstmagan.volumes import LPS_TO_RAS, NIFTI_SUFFIXES, VOLUME_SUFFIXES, Scan, read_scan, split_suffix
from monai_lstmagan.pretrained import PRETRAINED_FILES, pretrained_model_path
from monai_lstmagan.slice_profile import PROFILES
from monai_lstmagan.through_plane import DEFAULT_FINE_TUNE_ITERATIONS, DEFAULT_FINE_TUNE_SECONDS, run_through_plane

__all__ = [
    "super_resolve_volume",
    "iter_super_resolved_slices",
    "default_batch_size",
    "upsampled_affine",
    "Scan",
    "read_scan",
    "super_resolve_file",
    "run_inference",
    "output_path_for",
    "check_output_dir",
    "main",
]

RAS_ORNT = axcodes2ornt(("R", "A", "S"))


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_batch_size(device: torch.device) -> int:
    """Slices per forward pass when none is given: 8 on CUDA, 1 on CPU.

    On the 2-core CPU of this project one slice per forward was about twice as fast as eight
    (``python -m monai_lstmagan.bench``: 5.2 s vs 10.5 s for a 256x256x48 x2 volume), larger batches only
    costing cache locality and memory there; a GPU needs batches to be busy.
    """
    return 8 if device.type == "cuda" else 1


def _slice_model(generator: torch.nn.Module, tile: int | None, tile_overlap: float, batch_size: int, device):
    """Return ``f([N, 1, h, w]) -> [N, 1, h*s, w*s]``, whole slices or in-plane tiles blended by MONAI's sliding window."""
    if tile is None:
        return generator
    from monai.inferers import SlidingWindowInferer

    if tile < 1 or not 0.0 <= tile_overlap < 1.0:
        raise ValueError(f"tile must be >= 1 and tile_overlap in [0, 1), got tile={tile}, tile_overlap={tile_overlap}.")
    inferer = SlidingWindowInferer(
        roi_size=(tile, tile), sw_batch_size=batch_size, overlap=tile_overlap, mode="gaussian", sw_device=device, device=device
    )
    return lambda x: inferer(x, generator)


def iter_super_resolved_slices(
    generator: torch.nn.Module,
    volume: torch.Tensor,
    batch_size: int | None = None,
    device: str | torch.device | None = "cpu",
    amp: bool = False,
    tile: int | None = None,
    tile_overlap: float = 0.25,
    progress: bool = False,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Stream the axial slices of a volume through the generator, ``batch_size`` slices at a time.

    Only one batch of slices (and, with ``tile``, its tiles) is on ``device`` at any time.

    Args:
        generator: maps ``[N, 1, h, w] -> [N, 1, h*s, w*s]``; evaluated in eval mode without gradients.
        volume: ``[1, X, Y, Z]`` in [0, 1] (RAS, Z = axial slice axis), on any device.
        batch_size: slices per forward pass (with tiling: tiles per forward pass); ``None``:
            :func:`default_batch_size` of the device.
        device: where the generator runs; ``"auto"``/``None``: CUDA when available.
        amp: autocast (float16 on CUDA, bfloat16 on CPU).
        tile: if given, super-resolve in-plane tiles of ``tile x tile`` LR pixels blended with Gaussian
            weights (MONAI ``SlidingWindowInferer``) instead of whole slices, for very large slices.
        tile_overlap: overlap of neighbouring tiles, as a fraction of the tile.
        progress: show a tqdm progress bar.

    Yields:
        ``(z_start, z_stop, sr)`` with ``sr`` ``[X*s, Y*s, z_stop - z_start]`` float32 on CPU, clamped to [0, 1].
    """
    if volume.dim() != 4 or volume.shape[0] != 1:
        raise ValueError(f"expected a volume [1, X, Y, Z], got shape {tuple(volume.shape)}.")
    device = _resolve_device(device)
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    generator = generator.to(device).eval()
    model = _slice_model(generator, tile, tile_overlap, batch_size, device)
    autocast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    num_slices = volume.shape[-1]
    starts = range(0, num_slices, batch_size)
    for start in tqdm(starts, desc="super-resolving slices", unit="batch", disable=not progress, leave=False):
        stop = min(start + batch_size, num_slices)
        lr = volume[0, :, :, start:stop].permute(2, 0, 1).unsqueeze(1)  # [N, 1, X, Y]
        lr = torch.as_tensor(lr, dtype=torch.float32).to(device)
        with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=amp):
            sr = model(lr).float().clamp(0.0, 1.0)[:, 0].permute(1, 2, 0).cpu()  # [X*s, Y*s, N]
        yield start, stop, sr


def super_resolve_volume(
    generator: torch.nn.Module,
    volume: torch.Tensor,
    scale: int,
    batch_size: int | None = None,
    device: str | torch.device | None = "cpu",
    amp: bool = False,
    tile: int | None = None,
    tile_overlap: float = 0.25,
    progress: bool = False,
) -> torch.Tensor:
    """Super-resolve every axial slice of a normalised volume.

    Args:
        generator: an ``LSTMAGANGenerator`` (or any ``[N, 1, h, w] -> [N, 1, h*s, w*s]`` module).
        volume: ``[1, X, Y, Z]`` intensities in [0, 1] (RAS, Z = axial).
        scale: the generator's in-plane factor ``s`` (checked against the generator output).
        batch_size, device, amp, tile, tile_overlap, progress: see :func:`iter_super_resolved_slices`.

    Returns:
        ``[1, X*s, Y*s, Z]`` float32 on CPU, clamped to [0, 1].
    """
    _, x, y, z = volume.shape
    out = torch.empty((1, x * scale, y * scale, z), dtype=torch.float32)
    for start, stop, sr in iter_super_resolved_slices(
        generator, volume, batch_size, device, amp, tile, tile_overlap, progress
    ):
        if sr.shape[:2] != out.shape[1:3]:
            raise ValueError(
                f"the generator produced slices of {tuple(sr.shape[:2])} from {(x, y)}: it is not a x{scale} model."
            )
        out[0, :, :, start:stop] = sr
    return out


def upsampled_affine(affine: np.ndarray, axes: Sequence[int], factor: float) -> np.ndarray:
    """The voxel-to-world affine of a grid with ``factor`` times more voxels along ``axes`` over the same extent.

    The columns of ``axes`` shrink by ``factor`` and the first voxel centre moves by
    ``(1/factor - 1) / 2`` old voxels along each of them, so the outer edges of the grid stay in place.
    Works for any 4x4 affine (RAS or LPS); ``factor < 1`` gives the coarser grid (e.g. LR).

    Args:
        affine: 4x4 voxel-to-world matrix of the original grid.
        axes: the array axes that are resampled.
        factor: voxels per original voxel along those axes.
    """
    affine = np.asarray(affine, dtype=np.float64)
    new = affine.copy()
    shift = np.zeros(3)
    for axis in axes:
        new[:3, axis] = affine[:3, axis] / factor
        shift[axis] = (1.0 / factor - 1.0) / 2.0
    new[:3, 3] = affine[:3, 3] + affine[:3, :3] @ shift
    return new


def output_path_for(input_path: str, output_dir: str) -> str:
    """``output_dir/<name>_sr<ext>`` for an input ``<name><ext>`` (the input's format is kept)."""
    stem, suffix = split_suffix(input_path)
    return os.path.join(output_dir, f"{stem}_sr{suffix}")


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _write_scan(scan: Scan, array: np.ndarray, affine: np.ndarray, dtype: np.dtype, path: str) -> None:
    """Write ``array`` (file index order, output units) with the RAS ``affine`` in the format of ``scan``.

    ``dtype`` is the stored voxel type; a float ``array`` with an integer ``dtype`` (scaled NIfTI input)
    is stored with a scaling chosen by nibabel.
    """
    _, suffix = split_suffix(path)
    if suffix.lower() in NIFTI_SUFFIXES:
        header = scan.header.copy()
        header.set_data_dtype(dtype)
        header.set_slope_inter(np.nan, np.nan)  # nibabel picks a scaling for float data stored as integers
        image = nib.Nifti1Image(array, affine, header=header)
        sform_code, qform_code = int(scan.header["sform_code"]), int(scan.header["qform_code"])
        if sform_code or qform_code:
            image.set_sform(affine, code=sform_code)
            image.set_qform(affine, code=qform_code)
        nib.save(image, path)
        return
    import itk

    try:
        image = itk.image_from_array(np.ascontiguousarray(_to_dtype(array, dtype).transpose(2, 1, 0)))
    except Exception as e:  # ITK's Python wrapping covers a subset of voxel types
        raise ValueError(
            f"'{scan.path}': ITK cannot write voxel type {dtype} ({type(e).__name__}); choose another output "
            "dtype (e.g. --output-dtype int16 or float32)."
        ) from e
    affine_lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine_lps[:3, 3].tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(affine_lps[:3, :3] / spacing)))
    itk.imwrite(image, path, compression=scan.compressed)


def _input_files(scan_path: str) -> set[str]:
    files = {os.path.realpath(scan_path)}
    if scan_path.lower().endswith((".mhd", ".nhdr")):
        with open(scan_path, encoding="latin-1") as f:
            match = re.search(r"(?:ElementDataFile\s*=|data file:)\s*(\S+)", f.read())
        if match:
            files.add(os.path.realpath(os.path.join(os.path.dirname(scan_path), match.group(1))))
    return files


def _bicubic_baseline(lr: np.ndarray, scale: int) -> np.ndarray:
    """``[X, Y, N]`` slices in the input's units -> their bicubic upsampling ``[X*s, Y*s, N]`` (float32)."""
    from monai_lstmagan.transforms import bicubic_upsample

    slices = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1), dtype=np.float32))[:, None]  # [N, 1, X, Y]
    return bicubic_upsample(slices, scale)[:, 0].permute(1, 2, 0).numpy()


def keep_baseline_outside_window(sr: np.ndarray, baseline: np.ndarray, low: float, high: float) -> np.ndarray:
    """SR where the interpolation baseline lies inside the normalisation window ``[low, high]``, the baseline
    outside it (bone, metal, the brightest MR voxels keep the value measured instead of the window edge).

    Args:
        sr: super-resolved voxels in the input's units (inside ``[low, high]``).
        baseline: the interpolation of the input on the same grid (bicubic in-plane, cubic along the slice
            axis), in the input's units, same shape.
        low, high: the normalisation window in the input's units.
    """
    outside = (baseline < low) | (baseline > high)
    return np.where(outside, baseline, sr)


def super_resolve_file(
    generator: torch.nn.Module,
    input_path: str,
    output_dir: str,
    modality: str = "auto",
    output_dtype: str | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "cpu",
    amp: bool = False,
    tile: int | None = None,
    tile_overlap: float = 0.25,
    progress: bool = False,
) -> str:
    """Super-resolve one volume file and write ``output_dir/<name>_sr<ext>`` atomically (temp folder + rename).

    Args:
        generator: an ``LSTMAGANGenerator`` with attribute ``scale``.
        input_path: ``.nii``/``.nii.gz`` (nibabel) or ``.mhd``/``.mha``/``.nrrd`` (ITK) 3D scalar volume.
        output_dir: existing, writable folder.
        modality: ``"ct"``, ``"mr"`` or ``"auto"``: picks the intensity normalisation (see transforms).
        output_dtype: voxel type of the output, e.g. ``"float32"``; ``None`` keeps the input's type
            (integer types are rounded and clipped to their range).
        batch_size, device, amp, tile, tile_overlap, progress: see :func:`iter_super_resolved_slices`.

    Returns:
        the path written.
    """
    from monai.data import MetaTensor

    from monai_lstmagan.transforms import IntensityNormalizationd

    scale = int(generator.scale)
    output_path = output_path_for(input_path, output_dir)
    protected = _input_files(input_path)
    if os.path.realpath(output_path) in protected:
        raise ValueError(f"refusing to overwrite the input file '{input_path}': choose another output folder.")
    scan = read_scan(input_path)
    ornt = io_orientation(scan.affine)
    to_file_order = ornt_transform(RAS_ORNT, ornt)
    slice_axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])  # the file axis that becomes RAS Z (axial)
    in_plane = [a for a in range(3) if a != slice_axis]

    ras = np.ascontiguousarray(apply_orientation(scan.array, ornt), dtype=np.float32)
    normaliser = IntensityNormalizationd(keys="image", default_modality=modality)
    normalised = normaliser({"image": MetaTensor(torch.from_numpy(ras)[None]), "modality": modality})["image"]
    low, high = float(normalised.meta["intensity_low"]), float(normalised.meta["intensity_high"])

    dtype = np.dtype(output_dtype) if output_dtype is not None else scan.dtype
    # a scaled NIfTI keeps real units in memory; nibabel stores them in the input's type with a new scaling
    memory_dtype = np.dtype(np.float32) if scan.scaled and output_dtype is None else dtype
    x, y, z = ras.shape
    out_ras = np.empty((x * scale, y * scale, z), dtype=memory_dtype)
    for start, stop, sr in iter_super_resolved_slices(
        generator, normalised.as_tensor(), batch_size, device, amp, tile, tile_overlap, progress
    ):
        if sr.shape[:2] != out_ras.shape[:2]:
            raise ValueError(f"the generator produced slices of {tuple(sr.shape[:2])} from {(x, y)}: not x{scale}.")
        values = low + sr.numpy().astype(np.float64) * (high - low)
        baseline = _bicubic_baseline(ras[:, :, start:stop], scale)
        out_ras[:, :, start:stop] = _to_dtype(keep_baseline_outside_window(values, baseline, low, high), memory_dtype)
    out_array = apply_orientation(out_ras, to_file_order)
    affine = upsampled_affine(scan.affine, in_plane, scale)

    name = os.path.basename(output_path)
    with atomic_files(output_dir, last=name, protected=protected) as tmp_dir:
        _write_scan(scan, out_array, affine, dtype, os.path.join(tmp_dir, name))
    return output_path


def check_output_dir(output_dir: str) -> str:
    """Create ``output_dir`` if needed and prove it is writable; a clear error otherwise.

    Returns:
        the absolute folder path.
    """
    output_dir = os.path.abspath(output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise PermissionError(f"output folder '{output_dir}' cannot be created or written: {e}") from e
    return output_dir


def _is_output_of_this(path: str, output_dir: str) -> bool:
    """True for a ``<name>_sr<ext>`` file inside ``output_dir`` (a result of an earlier run, not an input)."""
    same_folder = os.path.dirname(os.path.realpath(path)) == os.path.realpath(output_dir)
    return same_folder and split_suffix(path)[0].endswith("_sr")


def _collect_inputs(inputs: Sequence[str], modality: str, output_dir: str) -> list[tuple[str, str]]:
    from monai_lstmagan.data import find_volumes

    found: list[tuple[str, str]] = []
    for entry in inputs:
        if os.path.isdir(entry):
            items = find_volumes(entry, layout="auto", modality=modality)
            volumes = [(item["image"], item.get("modality", modality)) for item in items if not _is_output_of_this(item["image"], output_dir)]
            if not volumes:
                raise FileNotFoundError(f"no volumes ({', '.join(VOLUME_SUFFIXES)}) found in '{entry}'.")
            found += volumes
        elif os.path.isfile(entry):
            split_suffix(entry)
            found.append((os.path.abspath(entry), modality))
        else:
            raise FileNotFoundError(f"input '{entry}' does not exist (neither a file nor a folder).")
    return found


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
) -> list[str]:
    """Super-resolve files and/or every volume of a folder with a generator checkpoint.

    The output folder is checked before anything is loaded. The architecture and scale come from the
    checkpoint (``checkpoints.load_generator``), so any trained ``model.pt`` runs as it is.

    Args:
        ckpt_path: generator checkpoint ``model.pt``.
        output_dir: where ``<name>_sr<ext>`` files are written (created if needed).
        inputs: volume files or folders; when given, ``dataset_dir`` is ignored.
        dataset_dir: folder searched with ``data.find_volumes`` (LUNA16, BraTS or any-folder layout).
        modality, output_dtype, batch_size, device, amp, tile, tile_overlap, progress: see :func:`super_resolve_file`.
        expected_scale: when given, the checkpoint's scale must equal it (clear error otherwise).

    Returns:
        the paths written, in input order.
    """
    output_dir = check_output_dir(output_dir)
    if inputs is None or inputs == "" or (not isinstance(inputs, str) and len(inputs) == 0):
        if not dataset_dir:
            raise ValueError("give input files (`--input FILE`) or a folder (`--dataset_dir DIR`).")
        inputs = [dataset_dir]
    items = _collect_inputs([inputs] if isinstance(inputs, str) else list(inputs), modality, output_dir)
    device = _resolve_device(device)
    generator, info = load_generator(ckpt_path, expected_scale=expected_scale, map_location="cpu")
    if info["generator"].get("scale") == 1:
        raise ValueError(f"'{ckpt_path}' is a through-plane refiner: run it with `lstmagan-sr --through-plane`.")
    written = []
    for path, item_modality in tqdm(items, desc="volumes", unit="volume", disable=not progress or len(items) < 2):
        written.append(
            super_resolve_file(
                generator, path, output_dir, item_modality, output_dtype, batch_size, device, amp, tile, tile_overlap,
                progress,
            )
        )
        if progress:
            tqdm.write(f"{path} -> {written[-1]}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Console command ``lstmagan-sr IN... -o OUT [--model MODEL | --scale 2|4]``."""
    parser = argparse.ArgumentParser(
        prog="lstmagan-sr",
        description="Super-resolve 3D volumes (in-plane, slice by slice; or along the slice axis with --through-plane) with an LSTMAGAN generator, keeping "
        "the scanner geometry: OUT/<name>_sr<ext> in the input's format, units and voxel type.",
    )
    parser.add_argument("inputs", nargs="+", help="volume files (.nii, .nii.gz, .mhd, .mha, .nrrd) or folders")
    parser.add_argument("-o", "--output-dir", required=True, help="output folder (created if needed)")
    parser.add_argument(
        "--model", default=None, help="generator checkpoint model.pt (default: the shipped model of --scale)"
    )
    parser.add_argument(
        "--scale", type=int, default=None, choices=sorted(PRETRAINED_FILES),
        help="SR factor of the shipped model used when --model is not given (default 2); with --model the "
        "checkpoint's scale must equal it",
    )  # fmt: skip
    parser.add_argument("--modality", default="auto", choices=("auto", "ct", "mr"), help="intensity normalisation")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="slices (--through-plane: planes) per forward pass (default: 8 on CUDA, 1 on CPU)"
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    parser.add_argument("--tile", type=int, default=None, help="in-plane tile size in input pixels (huge slices)")
    parser.add_argument("--tile-overlap", type=float, default=0.25, help="tile overlap fraction (default 0.25)")
    parser.add_argument("--output-dtype", default=None, help="voxel type of the output (default: the input's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    through = parser.add_argument_group(
        "through-plane SR", "refine the slice axis of thick-slice scans instead of the in-plane axes (SMORE-style)"
    )
    through.add_argument(
        "--through-plane", action="store_true",
        help="refine the slice axis (the axis with the largest spacing); each scan first fine-tunes the refiner "
        "(--model, default: an untrained one, i.e. cubic interpolation) on its own in-plane slices",
    )  # fmt: skip
    through.add_argument(
        "--factor", type=float, default=None,
        help="slices per input slice (default: slice spacing / in-plane spacing, i.e. isotropic voxels)",
    )  # fmt: skip
    through.add_argument(
        "--slice-thickness", type=float, default=None, help="slice thickness in mm (default: the slice spacing)"
    )
    through.add_argument(
        "--profile", default="box", choices=PROFILES,
        help="slice profile: box (default; contiguous slices averaging their thickness) or gaussian (FWHM = thickness)",
    )
    through.add_argument(
        "--fine-tune-iterations", type=int, default=DEFAULT_FINE_TUNE_ITERATIONS,
        help=f"self-supervised fine-tuning steps on each scan (default {DEFAULT_FINE_TUNE_ITERATIONS}; 0: none)",
    )  # fmt: skip
    through.add_argument(
        "--fine-tune-seconds", type=float, default=DEFAULT_FINE_TUNE_SECONDS,
        help=f"time bound of the fine-tuning per scan (default {DEFAULT_FINE_TUNE_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    try:
        if args.through_plane:
            if args.scale is not None or args.tile is not None:
                raise ValueError("--scale and --tile are in-plane options; --through-plane refines the slice axis.")
            run_through_plane(
                args.model, args.output_dir, args.inputs,
                modality=args.modality, progress=not args.no_progress, factor=args.factor,
                slice_thickness=args.slice_thickness, profile=args.profile,
                fine_tune_iterations=args.fine_tune_iterations, fine_tune_seconds=args.fine_tune_seconds,
                output_dtype=args.output_dtype, batch_size=args.batch_size, device=args.device, amp=args.amp,
            )  # fmt: skip
            return 0
        model = args.model if args.model else pretrained_model_path(args.scale or 2)
        run_inference(
            model, args.output_dir, expected_scale=args.scale, inputs=args.inputs, modality=args.modality, output_dtype=args.output_dtype,
            batch_size=args.batch_size, device=args.device, amp=args.amp, tile=args.tile,
            tile_overlap=args.tile_overlap, progress=not args.no_progress,
        )
    except (OSError, ValueError) as e:
        print(f"lstmagan-sr: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
