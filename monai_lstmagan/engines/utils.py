"""Helpers of the engines: batch preparation, the scalar losses of an output, unwrapping wrapped modules."""

from __future__ import annotations

from typing import Any

import torch

from monai_lstmagan.losses import D_LOSS_KEYS, G_LOSS_KEYS, LossKeys

__all__ = ["prepare_sr_batch", "loss_values", "unwrap_module"]


def prepare_sr_batch(
    batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prepare_batch`` for MONAI engines: ``(lr, hr)`` as plain tensors on ``device``.

    Args:
        batchdata: a collated batch with "lr" ``[B, T, 1, h, w]`` and "hr" ``[B, T, 1, H, W]``.
        device, non_blocking, kwargs: passed to ``Tensor.to``.
    """
    for key in ("lr", "hr"):
        if key not in batchdata:
            raise KeyError(f"training/validation batch has no '{key}' entry (found {sorted(batchdata)}).")
    lr, hr = (torch.as_tensor(batchdata[k]) for k in ("lr", "hr"))  # drop MetaTensor: faster and no meta in G
    return (
        lr.as_subclass(torch.Tensor).to(device=device, non_blocking=non_blocking, **kwargs),
        hr.as_subclass(torch.Tensor).to(device=device, non_blocking=non_blocking, **kwargs),
    )


def loss_values(output: Any) -> dict[str, float]:
    """``output_transform`` for StatsHandler / TensorBoardStatsHandler: the scalar losses of the trainer output.

    Returns ``{name: float}`` for the :class:`~monai_lstmagan.losses.LossKeys` present in ``output`` (the D
    entries are absent during warm-up).
    """
    if isinstance(output, list):  # decollated output: every item holds the same scalars
        output = output[0]
    values = {}
    for key in (*G_LOSS_KEYS, LossKeys.ADVERSARIAL_FEATURE, *D_LOSS_KEYS, LossKeys.ADVERSARIAL_SCALE):
        if key in output and output[key] is not None:
            value = output[key]
            values[key] = float(value.item() if isinstance(value, torch.Tensor) else value)
    return values


def unwrap_module(module: torch.nn.Module) -> torch.nn.Module:
    """Return the plain module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers."""
    while True:
        if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, torch.nn.Module):
            module = module._orig_mod
        else:
            return module
