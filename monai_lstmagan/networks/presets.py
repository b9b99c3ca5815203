"""Ablation presets: the paper's Models 1-4 and the MSE-only (SRResNet-like) baseline."""

from __future__ import annotations

from typing import Any

from torch import nn

from monai_lstmagan.networks.discriminators import ConvDiscriminator, LSTMDiscriminator

__all__ = ["ablation_preset", "build_discriminator", "PRESETS"]

_GAN_LOSS = {"content_weight": 1.0, "perceptual_weight": 6e-3, "adversarial_weight": 1e-3}

PRESETS: dict[str, dict[str, Any]] = {
    # Model 1: GAN = plain dense residual generator + SRGAN-style conv discriminator.
    "model1": {"generator": {"attention": False}, "discriminator": "conv", "objective": "wgan_gp", "adversarial": True},
    # Model 2: LSTM discriminator + GAN.
    "model2": {"generator": {"attention": False}, "discriminator": "lstm", "objective": "wgan_gp", "adversarial": True},
    # Model 3: attention-gated generator + GAN (conv discriminator).
    "model3": {"generator": {"attention": True}, "discriminator": "conv", "objective": "wgan_gp", "adversarial": True},
    # Model 4: LSTM discriminator + attention-gated generator + GAN = LSTMAGAN.
    "model4": {"generator": {"attention": True}, "discriminator": "lstm", "objective": "wgan_gp", "adversarial": True},
    # Pixel-loss baseline (SRResNet-like training); same generator as model4 so it is also its pretraining.
    "mse_only": {"generator": {"attention": True}, "discriminator": None, "objective": None, "adversarial": False},
}


def ablation_preset(name: str) -> dict[str, Any]:
    """Settings of one ablation model.

    All four GAN models use the same objective (WGAN-GP) and loss weights, so that the ablation only changes
    the generator blocks (attention gates on/off) and the discriminator (LSTM over slices vs per-slice conv).
    ``"mse_only"`` uses the full generator with the pixel loss only and no discriminator.

    Args:
        name: ``"model1"`` .. ``"model4"`` or ``"mse_only"``.

    Returns:
        A new dict with ``"generator"`` (kwargs for :class:`~monai_lstmagan.networks.LSTMAGANGenerator` on top
        of ``scale`` etc.), ``"discriminator"`` (``"lstm"``, ``"conv"`` or ``None``), ``"objective"``
        (``"wgan_gp"`` or ``None``, see :func:`monai_lstmagan.losses.make_objective`), ``"adversarial"`` (bool)
        and ``"loss"`` (HybridLoss weights; perceptual and adversarial weights are 0 for ``"mse_only"``).
    """
    if name not in PRESETS:
        raise ValueError(f"ablation_preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    preset = {key: (dict(value) if isinstance(value, dict) else value) for key, value in PRESETS[name].items()}
    preset["loss"] = dict(_GAN_LOSS)
    if not preset["adversarial"]:
        preset["loss"].update(perceptual_weight=0.0, adversarial_weight=0.0)
    return preset


def build_discriminator(kind: str, num_slices: int = 16, **kwargs: Any) -> nn.Module:
    """Discriminator by preset name: ``"lstm"`` -> :class:`LSTMDiscriminator(num_slices, **kwargs)`,
    ``"conv"`` -> :class:`ConvDiscriminator(**kwargs)` (``num_slices`` is not needed by the per-slice conv)."""
    if kind == "lstm":
        return LSTMDiscriminator(num_slices=num_slices, **kwargs)
    if kind == "conv":
        return ConvDiscriminator(**kwargs)
    raise ValueError(f'build_discriminator: kind must be "lstm" or "conv", got {kind!r}.')
