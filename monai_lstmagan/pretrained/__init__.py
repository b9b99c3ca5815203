"""The shipped default generators (x2 and x4), trained on the embedded sample data.

The files live inside the package (so a pip-installed package finds them, not only a checkout);
``lstmagan_x4_perceptual.pt`` is the x4 GAN fine-tune that ``lstmagan-sr --perceptual`` interpolates towards;
``bundle/models/model.pt`` (x2, the model-zoo default) and ``bundle/models/model_x4.pt`` are byte-identical copies
(real files: the model zoo, zips and Windows do not follow links; a test keeps the copies equal).
How they were trained (config, command, iterations, time) and how well they do (leave-one-patient-out
against bicubic and the MSE-only model) is recorded in ``docs/training.md``.
"""

from __future__ import annotations

import os

__all__ = ["PERCEPTUAL_FILES", "PRETRAINED_FILES", "perceptual_model_path", "pretrained_model_path"]

#: Shipped generator checkpoint per scale (files in this folder): the PSNR-oriented defaults.
PRETRAINED_FILES = {2: "lstmagan_x2.pt", 4: "lstmagan_x4.pt"}
#: Shipped GAN-fine-tuned generator per scale (``bundle/configs/gan_finetune.yaml`` from the PSNR model of the same
#: scale): what ``lstmagan-sr --perceptual ALPHA`` interpolates towards when no ``--gan-model`` is given.
PERCEPTUAL_FILES = {4: "lstmagan_x4_perceptual.pt"}


def _shipped_file(name: str, what: str) -> str:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the shipped {what} model '{path}' is missing from this installation.")
    return path


def pretrained_model_path(scale: int = 2) -> str:
    """Path of the shipped generator checkpoint for ``scale``.

    Raises:
        ValueError: no model is shipped for that scale.
        FileNotFoundError: the file is missing from this installation.
    """
    if scale not in PRETRAINED_FILES:
        raise ValueError(
            f"no shipped model for x{scale} (shipped: {', '.join(f'x{s}' for s in PRETRAINED_FILES)}); "
            "train one with bundle/configs/train.yaml and pass it with --model."
        )
    return _shipped_file(PRETRAINED_FILES[scale], f"x{scale}")


def perceptual_model_path(scale: int = 4) -> str:
    """Path of the shipped GAN-fine-tuned generator for ``scale`` (the ``--perceptual`` end of the PSNR model).

    Raises:
        ValueError: no perceptual model is shipped for that scale.
        FileNotFoundError: the file is missing from this installation.
    """
    if scale not in PERCEPTUAL_FILES:
        raise ValueError(
            f"no perceptual (GAN-trained) model is shipped for x{scale} (shipped: "
            f"{', '.join(f'x{s}' for s in PERCEPTUAL_FILES)}): use --scale 4, or give --gan-model PATH "
            "(a gan_finetune.yaml run from the PSNR model)."
        )
    return _shipped_file(PERCEPTUAL_FILES[scale], f"x{scale} perceptual")
