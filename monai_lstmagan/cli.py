"""The console command ``lstmagan-sr``: argument parsing only; the work is :mod:`monai_lstmagan.inference`.

Exit status: 0 done; 1 an error (one line ``lstmagan-sr: error: ...`` naming the file); 130 interrupted (Ctrl-C,
SIGINT); 143 terminated (SIGTERM). An interrupted or terminated run leaves the outputs finished before it and no
partial file (:mod:`monai_lstmagan.io.atomic`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from monai_lstmagan.inference.in_plane import run_inference
from monai_lstmagan.inference.options import BACKENDS, InferenceOptions
from monai_lstmagan.inference.through_plane import (
    DEFAULT_FINE_TUNE_ITERATIONS,
    DEFAULT_FINE_TUNE_SECONDS,
    run_through_plane,
)
from monai_lstmagan.io.paths import OUTPUT_FORMATS, VOLUME_SUFFIXES
from monai_lstmagan.pretrained import PRETRAINED_FILES, perceptual_model_path, pretrained_model_path
from monai_lstmagan.transforms.intensity import MODALITIES
from monai_lstmagan.transforms.slice_profile import DEFAULT_PROFILE, PROFILES

__all__ = ["main", "Terminated", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives during :func:`main` (a ``BaseException``, as
    ``KeyboardInterrupt``, so that no ``except Exception`` swallows it and every ``finally`` cleans up)."""


@contextmanager
def _stop_signals_raise(received: list[int]) -> Iterator[None]:
    """While the command runs: SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated`, each noted in
    ``received`` (an interrupt swallowed on its way, e.g. in a finaliser, still gives a non-zero exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    def terminate(signum, frame):
        received.append(signum)
        raise Terminated

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, interrupt),
        signal.SIGTERM: signal.signal(signal.SIGTERM, terminate),
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    """Console command ``lstmagan-sr IN... -o OUT [--model MODEL | --scale 2|4]``."""
    parser = argparse.ArgumentParser(
        prog="lstmagan-sr",
        description="Super-resolve 3D volumes (in-plane, slice by slice; or along the slice axis with --through-plane) "
        "with an LSTMAGAN generator, keeping "
        "the scanner geometry: OUT/<name>_sr<ext> in the input's format, units and voxel type.",
        epilog="Nothing is written when an output would replace a file of any input of the run (a header's data "
        "file included) or when two inputs would give the same output name (e.g. d1/a.nii.gz and d2/a.nii.gz): "
        "the run is refused; give distinct names or separate output folders. Exit status: 0 done, 1 error, "
        "130 interrupted (Ctrl-C), 143 terminated (SIGTERM); an interrupted run leaves no partial file.",
    )
    parser.add_argument(
        "inputs", nargs="+",
        help=f"volume files ({', '.join(VOLUME_SUFFIXES)}), DICOM series (a folder of one series, a multi-frame "
        "file, a DICOMDIR; FOLDER#SeriesInstanceUID picks a series) or folders of them",
    )  # fmt: skip
    parser.add_argument("-o", "--output-dir", required=True, help="output folder (created if needed)")
    parser.add_argument(
        "--model", default=None, help="generator checkpoint model.pt (default: the shipped model of --scale)"
    )
    parser.add_argument(
        "--scale", type=int, default=None, choices=sorted(PRETRAINED_FILES),
        help="SR factor of the shipped model used when --model is not given (default 2); with --model the "
        "checkpoint's scale must equal it",
    )  # fmt: skip
    parser.add_argument(
        "--perceptual", type=float, default=0.0, metavar="ALPHA",
        help="ESRGAN-style network interpolation: (1-ALPHA) x the PSNR model (--model / the shipped one) + ALPHA x "
        "--gan-model, ALPHA in [0, 1]; default 0 = the PSNR model unchanged. Higher ALPHA: sharper, more texture, "
        "lower PSNR, and detail that may be invented: a risk for diagnostic reading",
    )  # fmt: skip
    parser.add_argument(
        "--gan-model", default=None, metavar="PATH",
        help="GAN-trained model.pt of the same architecture and scale as the PSNR model (default with --perceptual > 0 "
        "and no --model: the shipped perceptual model of --scale, x4 only)",
    )  # fmt: skip
    parser.add_argument("--modality", default="auto", choices=MODALITIES, help="intensity normalisation")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="slices (--through-plane: planes) per forward pass (default: 8 on CUDA, 1 on CPU)",
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--amp", action="store_true", help="mixed precision (PyTorch backend)")
    parser.add_argument(
        "--backend", default="auto", choices=BACKENDS,
        help="how the generator runs: auto (default: on the CPU, ONNX Runtime for x2 models when the onnx extra is "
        "installed, else PyTorch), torch, onnxruntime",
    )  # fmt: skip
    parser.add_argument("--tile", type=int, default=None, help="in-plane tile size in input pixels (huge slices)")
    parser.add_argument("--tile-overlap", type=float, default=0.25, help="tile overlap fraction (default 0.25)")
    parser.add_argument("--output-dtype", default=None, help="voxel type of the output (default: the input's)")
    parser.add_argument(
        "--output-format", default=None, choices=OUTPUT_FORMATS,
        help="format of the outputs (default: each input's); dicom: a new DICOM series folder OUT/<name>_sr/ in "
        "the input's study (from DICOM inputs only)",
    )  # fmt: skip
    parser.add_argument(
        "--series", default=None, metavar="UID|all",
        help="a DICOM input with several series: the SeriesInstanceUID to super-resolve, or 'all' for each "
        "(default: refuse, listing them)",
    )  # fmt: skip
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
        "--profile",
        default=DEFAULT_PROFILE,
        choices=PROFILES,
        help=f"slice profile: box (contiguous slices averaging their thickness) or gaussian (FWHM = thickness); "
        f"default {DEFAULT_PROFILE}",
    )
    through.add_argument(
        "--fine-tune-iterations", type=int, default=DEFAULT_FINE_TUNE_ITERATIONS,
        help=f"self-supervised fine-tuning steps on each scan (default {DEFAULT_FINE_TUNE_ITERATIONS}; 0: none)",
    )  # fmt: skip
    through.add_argument(
        "--fine-tune-seconds",
        type=float,
        default=DEFAULT_FINE_TUNE_SECONDS,
        help=f"time bound of the fine-tuning per scan (default {DEFAULT_FINE_TUNE_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    received: list[int] = []
    try:
        with _stop_signals_raise(received):
            _run(args)
    except KeyboardInterrupt:
        received.append(signal.SIGINT)
    except Terminated:
        received.append(signal.SIGTERM)
    except (OSError, ValueError) as e:
        print(f"lstmagan-sr: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except (RuntimeError, MemoryError) as e:  # e.g. the allocator: still one line, not a traceback
        print(f"lstmagan-sr: error: {type(e).__name__}: {_one_line(str(e)) or 'out of memory'}", file=sys.stderr)
        return 1
    if signal.SIGTERM in received:
        print(
            "lstmagan-sr: terminated (SIGTERM); outputs finished before are kept, nothing partial is left.",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    if received:
        print("lstmagan-sr: interrupted; outputs finished before are kept, nothing partial is left.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _one_line(message: str) -> str:
    """A message on one line (the lines of a multi-line message joined)."""
    return "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())


def _run(args: argparse.Namespace) -> None:
    """The work of :func:`main` for parsed arguments."""
    if args.through_plane:
        if args.scale is not None or args.tile is not None:
            raise ValueError("--scale and --tile are in-plane options; --through-plane refines the slice axis.")
        if args.gan_model is not None or args.perceptual != 0:
            raise ValueError(
                "--perceptual and --gan-model are in-plane options; --through-plane refines the slice axis."
            )
        options = InferenceOptions(
            args.batch_size, args.device, args.amp, progress=not args.no_progress, output_format=args.output_format,
            series=args.series, backend=args.backend,
        )  # fmt: skip
        run_through_plane(
            args.model, args.output_dir, args.inputs, args.modality, args.output_dtype, options,
            factor=args.factor, slice_thickness=args.slice_thickness, profile=args.profile,
            fine_tune_iterations=args.fine_tune_iterations, fine_tune_seconds=args.fine_tune_seconds,
        )  # fmt: skip
        return
    model = args.model if args.model else pretrained_model_path(args.scale or 2)
    gan_model = args.gan_model
    if gan_model is None and args.perceptual != 0 and not args.model:
        gan_model = perceptual_model_path(args.scale or 2)
    run_inference(
        model,
        args.output_dir,
        expected_scale=args.scale,
        inputs=args.inputs,
        modality=args.modality,
        output_dtype=args.output_dtype,
        batch_size=args.batch_size,
        device=args.device,
        amp=args.amp,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        progress=not args.no_progress,
        output_format=args.output_format,
        series=args.series,
        backend=args.backend,
        gan_model=gan_model,
        perceptual=args.perceptual,
    )


if __name__ == "__main__":
    sys.exit(main())
