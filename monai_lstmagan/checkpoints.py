"""Reading and writing LSTMAGAN checkpoint files.

Two kinds of files are written during training:

- ``model.pt``: the generator only, as the model-zoo convention wants it: a plain ``state_dict`` (so
  ``net.load_state_dict(torch.load("model.pt"))`` and MONAI's ``ckpt_export`` / ``verify_net_in_out`` work
  with their default arguments). The constructor kwargs (including ``scale``, ``residual`` and ``norm``)
  and training facts (epoch, metrics) travel inside the state_dict's own ``_metadata`` under the key
  :data:`METADATA_KEY` (``{"format": GENERATOR_FORMAT, "generator": kwargs, ...}``), which ``torch.save`` /
  ``torch.load(weights_only=True)`` keep and ``load_state_dict`` ignores. So a checkpoint of another scale
  or architecture fails with a clear message. Files of the first format (``monai_lstmagan.generator/1``:
  ``{"state_dict": ..., "generator": kwargs, "format": ...}``, written before the bicubic residual existed)
  still load, as the SRResNet-output generator with BatchNorm they are.
- full checkpoints ``checkpoint_*.pt`` (MONAI ``CheckpointSaver``) with every state needed to resume.

Every write goes through :func:`atomic_save` (:func:`monai_lstmagan.io.atomic.atomic_write`): a temporary file
in the destination folder followed by ``os.replace``, so a process killed mid-write never leaves a
half-written file behind.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from monai_lstmagan.engines.utils import unwrap_module
from monai_lstmagan.io.atomic import atomic_write
from monai_lstmagan.networks import build_generator

__all__ = [
    "GENERATOR_FORMAT",
    "METADATA_KEY",
    "ARCHITECTURE_LIMITS",
    "atomic_save",
    "save_generator",
    "load_generator",
    "load_interpolated_generator",
    "latest_checkpoint",
]

GENERATOR_FORMAT = "monai_lstmagan.generator/2"
METADATA_KEY = "monai_lstmagan"
_LEGACY_FORMAT = "monai_lstmagan.generator/1"
_LEGACY_GENERATOR = {"residual": "none", "norm": "batch"}  # what every /1 file is: no bicubic skip, BatchNorm

#: Inclusive bounds of the numbers a ``model.pt`` records for its architecture, checked before anything is built
#: (a hostile or damaged file must not make the loader build ``num_blocks = 10**6`` blocks). Every generator of the
#: package, as trained here (e.g. LSTMAGAN 16 blocks x 64 channels), lies far inside them. Within them the recorded
#: architecture is first built on PyTorch's ``meta`` device (no memory) and its weight shapes compared with the
#: file's, so the real build never allocates more than the file holds.
ARCHITECTURE_LIMITS: dict[str, tuple[float, float]] = {
    "scale": (1, 8),
    "num_blocks": (1, 256),
    "num_groups": (1, 64),
    "blocks_per_group": (1, 256),
    "dense_blocks": (1, 64),
    "dense_layers": (1, 64),
    "channels": (1, 1024),
    "growth": (1, 1024),
    "reduction": (1, 1024),
    "attention_pool": (1, 64),
    "kernel_sizes": (1, 31),
    "beta": (0.0, 10.0),
}


def atomic_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save`` ``obj`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Args:
        obj: anything ``torch.save`` accepts.
        path: destination file; its folder is created if needed.

    Returns:
        the destination path as a string.

    Raises:
        PermissionError / OSError: naming ``path`` when the folder cannot be written.
    """
    path = os.fspath(path)
    with atomic_write(path, "wb", what="checkpoint") as f:
        torch.save(obj, f)
    return path


def save_generator(
    path: str | os.PathLike,
    generator: torch.nn.Module,
    generator_kwargs: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write the generator-only checkpoint ``model.pt`` atomically: a plain state_dict with the architecture
    in its ``_metadata[METADATA_KEY]`` (see the module docstring).

    Args:
        path: destination file, e.g. ``output_dir/model.pt``.
        generator: the generator (wrappers such as DDP are removed); its weights are copied to CPU.
        generator_kwargs: the generator's constructor kwargs, must include ``scale``; ``architecture`` names a
            generator other than LSTMAGAN (:func:`monai_lstmagan.networks.build_generator`).
        extra: further entries stored at the top level (e.g. ``{"epoch": 3, "psnr": 31.2}``);
            they cannot replace the reserved keys ``generator``, ``format``.

    Returns:
        the destination path as a string.
    """
    kwargs = dict(generator_kwargs)
    if "scale" not in kwargs:
        raise ValueError("save_generator: generator_kwargs must contain 'scale' so a checkpoint records its scale.")
    extra = dict(extra or {})
    reserved = {"state_dict", "generator", "format"} & set(extra)
    if reserved:
        raise ValueError(f"save_generator: extra may not contain the reserved keys {sorted(reserved)}.")
    module_state = unwrap_module(generator).state_dict()
    state = OrderedDict((k, v.detach().cpu()) for k, v in module_state.items())
    state._metadata = OrderedDict(getattr(module_state, "_metadata", {}))  # type: ignore[attr-defined]
    state._metadata[METADATA_KEY] = {"format": GENERATOR_FORMAT, "generator": kwargs, **extra}  # type: ignore
    return atomic_save(state, path)


def _checkpoint_parts(ckpt: Any, path: str) -> tuple[Mapping, dict]:
    """``(state_dict, info)`` of a loaded ``model.pt`` of either format; ``info`` has "format", "generator", extras."""
    if isinstance(ckpt, Mapping) and ckpt.get("format") == _LEGACY_FORMAT:
        info = {k: v for k, v in ckpt.items() if k != "state_dict"}
        if not isinstance(info.get("generator"), Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
            raise ValueError(f"generator checkpoint '{path}' lacks the 'generator' kwargs or the 'state_dict'.")
        info["generator"] = {**_LEGACY_GENERATOR, **info["generator"]}
        return ckpt["state_dict"], info
    metadata = getattr(ckpt, "_metadata", None) or {}
    info = metadata.get(METADATA_KEY) if isinstance(ckpt, Mapping) else None
    if not isinstance(info, Mapping) or info.get("format") != GENERATOR_FORMAT:
        found = info.get("format") if isinstance(info, Mapping) else None
        if found is None and isinstance(ckpt, Mapping):
            found = ckpt.get("format", "a state_dict without LSTMAGAN metadata")
        hint = ""
        if isinstance(ckpt, Mapping) and {"network", "trainer"} <= set(ckpt):
            hint = " It looks like a full training checkpoint: load 'model.pt' from the same folder instead."
        raise ValueError(
            f"'{path}' is not an LSTMAGAN generator checkpoint (expected format '{GENERATOR_FORMAT}', "
            f"found {found!r}).{hint}"
        )
    info = dict(info)
    if not isinstance(info.get("generator"), Mapping):
        raise ValueError(f"generator checkpoint '{path}' lacks the 'generator' kwargs.")
    return ckpt, info


def _check_architecture(kwargs: Mapping[str, Any], path: str) -> None:
    """ValueError naming the file and the field when a recorded architecture value is not a number inside
    :data:`ARCHITECTURE_LIMITS` (``kernel_sizes``: a list of at most 16 such numbers)."""
    for field, (low, high) in ARCHITECTURE_LIMITS.items():
        if field not in kwargs:
            continue
        value = kwargs[field]
        values = list(value) if field == "kernel_sizes" and isinstance(value, (list, tuple)) else [value]
        integer = field != "beta"
        usable = len(values) <= 16 and all(
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and low <= v <= high
            and (not integer or float(v).is_integer())
            for v in values
        )
        if not usable:
            kind = "whole numbers" if integer else "a number"
            raise ValueError(
                f"generator checkpoint '{path}' records {field} = {value!r}, outside the sane range {low:g}..{high:g} "
                f"({kind}): the file is damaged or not a model of this package."
            )


def _check_weight_shapes(kwargs: Mapping[str, Any], state_dict: Mapping, path: str) -> None:
    """ValueError naming the file when the weights of the recorded architecture (built on the ``meta`` device: no
    memory) differ in names or shapes from the file's, before the real generator is built."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_generator(**kwargs).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    different = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or different:
        detail = []
        if missing:
            detail.append(f"{len(missing)} weight(s) missing (e.g. {missing[0]!r})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if different:
            k = different[0]
            detail.append(
                f"{len(different)} of another shape (e.g. {k!r}: {found[k]} in the file, {expected[k]} recorded)"
            )
        raise ValueError(
            f"generator checkpoint '{path}': weights do not match the recorded architecture {dict(kwargs)}: "
            + "; ".join(detail)
        )


def load_generator(
    path: str | os.PathLike, expected_scale: int | None = None, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """Rebuild the generator of a ``model.pt`` written by :func:`save_generator`.

    The architecture is ``info["generator"]["architecture"]`` (:data:`monai_lstmagan.networks.GENERATORS`:
    LSTMAGAN, FRDAGAN, FA-GAN, MedSRGAN), ``"lstmagan"`` when the kwargs have no such entry (every checkpoint
    written before the comparison models), built by :func:`monai_lstmagan.networks.build_generator`.

    Args:
        path: the checkpoint file.
        expected_scale: when given, the checkpoint's scale must equal it.
        map_location: where to load the tensors (the returned generator lives there too).

    Returns:
        ``(generator, info)``: the generator in eval mode and the checkpoint's metadata dict
        (``info["generator"]`` holds the constructor kwargs, ``info["format"]`` the file format, plus the
        extras saved with it such as ``"epoch"``). A ``monai_lstmagan.generator/1`` file loads with
        ``residual="none", norm="batch"``, the architecture it was trained with.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a regular file (a folder, ``/dev/null``, a pipe), is unreadable, is not a
            generator checkpoint, has another scale, records architecture values outside
            :data:`ARCHITECTURE_LIMITS`, or its weights do not fit the recorded architecture. Every message names
            the file (and the field).
    """

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"generator checkpoint '{path}' does not exist.")
    if not os.path.isfile(path):
        raise ValueError(f"generator checkpoint '{path}' is not a regular file (a model.pt file is expected).")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        if "Weights only load failed" in lines[0]:
            reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1])
            raise ValueError(
                f"generator checkpoint '{path}' cannot be read: it is not a plain weights file and loading it would "
                f"run code from the file ({reason}); refused."
            ) from e
        raise ValueError(
            f"generator checkpoint '{path}' cannot be read (truncated or not a torch file): {lines[-1]}"
        ) from e
    state_dict, info = _checkpoint_parts(ckpt, path)
    kwargs = dict(info["generator"])
    scale = kwargs.get("scale")
    if expected_scale is not None and scale != expected_scale:
        raise ValueError(
            f"generator checkpoint '{path}' was trained for x{scale} super-resolution, but x{expected_scale} "
            "was requested: use a checkpoint of that scale or change the scale."
        )
    _check_architecture(kwargs, path)
    try:
        _check_weight_shapes(kwargs, state_dict, path)
        generator = build_generator(**kwargs)
    except (TypeError, ValueError) as e:
        if str(e).startswith(f"generator checkpoint '{path}'"):
            raise
        raise ValueError(f"generator checkpoint '{path}' records unknown generator arguments {kwargs}: {e}") from e
    try:
        generator.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"generator checkpoint '{path}': weights do not match the recorded architecture {kwargs}: {e}"
        ) from e
    generator.to(map_location).eval()
    return generator, info


def load_interpolated_generator(
    psnr_path: str | os.PathLike,
    gan_path: str | os.PathLike,
    alpha: float,
    expected_scale: int | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """ESRGAN's network interpolation between a PSNR-oriented generator and a GAN-trained one of the same architecture.

    ``theta = (1 - alpha) * theta_psnr + alpha * theta_gan`` for every floating-point parameter and buffer (Wang et
    al., ESRGAN, ECCV 2018 workshops, section 3.4); other buffers (e.g. BatchNorm's ``num_batches_tracked``) are the
    PSNR model's. ``alpha = 0`` gives exactly the PSNR model, ``alpha = 1`` exactly the GAN model. Detail the GAN
    model adds is partly invented: a risk for diagnostic reading (``docs/evaluation.md``).

    Args:
        psnr_path: ``model.pt`` of the PSNR-oriented (MSE-trained) generator.
        gan_path: ``model.pt`` of the GAN-trained generator (same architecture and scale).
        alpha: the weight of the GAN model, in [0, 1].
        expected_scale, map_location: as in :func:`load_generator`.

    Returns:
        ``(generator, info)``: the interpolated generator in eval mode and the PSNR model's metadata with
        ``info["interpolation"] = {"alpha", "psnr_model", "gan_model"}``.

    Raises:
        ValueError: ``alpha`` is not a number in [0, 1], or the two files record another architecture or scale
            (the message names both files and the first difference), or any error of :func:`load_generator`.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"the perceptual weight alpha (--perceptual) must be a number in [0, 1], got {alpha!r}.")
    alpha = float(alpha)
    psnr_path, gan_path = os.fspath(psnr_path), os.fspath(gan_path)
    generator, info = load_generator(psnr_path, expected_scale=expected_scale, map_location=map_location)
    gan, gan_info = load_generator(gan_path, expected_scale=expected_scale, map_location=map_location)
    psnr_kwargs, gan_kwargs = dict(info["generator"]), dict(gan_info["generator"])
    if psnr_kwargs != gan_kwargs:
        different = sorted(k for k in set(psnr_kwargs) | set(gan_kwargs) if psnr_kwargs.get(k) != gan_kwargs.get(k))
        k = different[0]
        raise ValueError(
            f"cannot interpolate '{psnr_path}' and '{gan_path}': they are different generators ({k} = "
            f"{psnr_kwargs.get(k)!r} in the first, {gan_kwargs.get(k)!r} in the second); network interpolation needs "
            "a PSNR model and a GAN model of the same architecture and scale (the GAN fine-tuned from the PSNR model)."
        )
    gan_state = gan.state_dict()
    mixed = OrderedDict()
    for name, value in generator.state_dict().items():
        other = gan_state[name]
        if not value.is_floating_point() or alpha == 0.0:
            mixed[name] = value
        elif alpha == 1.0:
            mixed[name] = other
        else:
            mixed[name] = torch.lerp(value, other, alpha)
    generator.load_state_dict(mixed, strict=True)
    generator.eval()
    info = {**info, "interpolation": {"alpha": alpha, "psnr_model": psnr_path, "gan_model": gan_path}}
    return generator, info


def latest_checkpoint(output_dir: str | os.PathLike, pattern: str = "checkpoint_*.pt") -> str:
    """The full training checkpoint in ``output_dir`` with the highest trainer iteration (for resuming).

    Files matching ``pattern`` are read (memory-mapped) and ranked by ``checkpoint["trainer"]["iteration"]``
    (then by modification time); unreadable or incomplete files are skipped with a warning.

    Raises:
        FileNotFoundError: naming ``output_dir`` when it holds no readable full checkpoint.
    """
    output_dir = os.fspath(output_dir)
    ranked = []
    for path in glob.glob(os.path.join(glob.escape(output_dir), pattern)):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            iteration = int(ckpt["trainer"]["iteration"])
        except Exception as e:  # a broken file must not stop a resume from the previous one
            logging.getLogger(__name__).warning(f"skipping checkpoint '{path}': not a readable full checkpoint ({e}).")
            continue
        ranked.append((iteration, os.path.getmtime(path), path))
    if not ranked:
        raise FileNotFoundError(
            f"no full training checkpoint ('{pattern}' with a 'trainer' entry) in '{output_dir}': nothing to resume; "
            "train first with train.yaml, or set output_dir to the folder of the run to resume."
        )
    return max(ranked)[2]
