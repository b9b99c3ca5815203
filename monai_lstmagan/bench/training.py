"""Training benchmark: ``LSTMAGANTrainer`` against a plain-PyTorch loop doing the same math, interleaved."""

from __future__ import annotations

import copy
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Events
from torch import nn

from monai_lstmagan.bench.config import VARIANTS, TrainingBenchConfig, Variant, check_variant, variant_autocast
from monai_lstmagan.bench.memory import PeakMemoryTracker, max_memory
from monai_lstmagan.bench.timing import seconds_summary, synchronize
from monai_lstmagan.engines.trainer import LSTMAGANTrainer
from monai_lstmagan.losses import HybridLoss, PerceptualLoss, WGANGPObjective
from monai_lstmagan.networks import LSTMAGANGenerator, LSTMDiscriminator
from monai_lstmagan.transforms.ops import bicubic_downsample

__all__ = ["ReferenceTrainingLoop", "benchmark_training"]


@dataclass
class _TrainingSetup:
    generator: nn.Module
    critic: nn.Module
    vgg: nn.Module
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer


def _training_setup(
    generator: nn.Module, critic: nn.Module, vgg: nn.Module, variant: Variant, device: torch.device
) -> _TrainingSetup:
    generator, critic, vgg = generator.to(device), critic.to(device), vgg.to(device)
    if variant.channels_last:
        for module in (generator, critic, vgg):
            module.to(memory_format=torch.channels_last)
    return _TrainingSetup(
        generator,
        critic,
        vgg,
        torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.9, 0.99)),
        torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.9, 0.99)),
    )


class ReferenceTrainingLoop:
    """Plain-PyTorch training step with the same math as ``LSTMAGANTrainer`` + ``WGANGPObjective`` + ``HybridLoss``.

    One :meth:`step` on ``lr`` ``[B, T, 1, h, w]`` and ``hr`` ``[B, T, 1, H, W]`` (moved to ``device`` every step,
    as the engine's ``prepare_batch`` does): ``sr = G(lr)``; ``n_critic`` times: ``D(fake) - D(real) + 10 * GP``
    (one mixing weight per sample drawn after the two critic forwards, gradient norm over all non-batch dims,
    fp32 without autocast, cuDNN off on CUDA), backward, Adam step; then with the critic frozen
    ``MSE + 6e-3 * MSE(VGG(sr) / 12.75, VGG(hr) / 12.75) + 1e-3 * (-mean D(sr))``, backward, Adam step.

    Args:
        setup: networks and optimizers (not shared with the engine).
        n_critic: critic steps per generator step.
        variant: autocast bf16 and ``torch.compile`` of G as in the engine (CUDA only).
        device: where to train.
    """

    gp_weight = 10.0
    feature_scale = 1 / 12.75
    perceptual_weight = 6e-3
    adversarial_weight = 1e-3

    def __init__(self, setup: _TrainingSetup, n_critic: int, variant: Variant, device: torch.device) -> None:
        self.setup = setup
        self.n_critic = n_critic
        self.variant = variant
        self.device = device
        self.generator = torch.compile(setup.generator) if variant.compile else setup.generator
        setup.generator.train()
        setup.critic.train()

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        critic = self.setup.critic
        cudnn_off = torch.backends.cudnn.flags(enabled=False) if self.device.type == "cuda" else nullcontext()
        with torch.autocast(device_type=self.device.type, enabled=False), cudnn_off:
            alpha = torch.rand((real.shape[0], 1, 1, 1, 1), device=real.device)
            mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(mixed).float().sum(), mixed, create_graph=True)
            return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()

    def step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """One iteration; returns the G loss ``"loss"`` and the last critic loss ``"d_loss"`` as tensors."""
        setup = self.setup
        lr, hr = lr.to(self.device), hr.to(self.device)
        setup.g_optimizer.zero_grad(set_to_none=True)
        with variant_autocast(self.variant):
            sr = self.generator(lr)
        fake = sr.detach().float()
        for _ in range(self.n_critic):
            setup.d_optimizer.zero_grad(set_to_none=True)
            with variant_autocast(self.variant):
                d_real, d_fake = setup.critic(hr).float(), setup.critic(fake).float()
                d_loss = d_fake.mean() - d_real.mean() + self.gp_weight * self._gradient_penalty(hr, fake)
            d_loss.backward()
            setup.d_optimizer.step()
        with variant_autocast(self.variant):
            setup.critic.requires_grad_(False)
            adversarial = -setup.critic(sr.float()).float().mean()
            setup.critic.requires_grad_(True)
            sr_slices, hr_slices = sr.float().flatten(0, 1), hr.flatten(0, 1)
            with torch.no_grad():
                target = setup.vgg(hr_slices) * self.feature_scale
            perceptual = F.mse_loss(setup.vgg(sr_slices) * self.feature_scale, target)
            mse = F.mse_loss(sr.float(), hr.float())
            loss = mse + self.perceptual_weight * perceptual + self.adversarial_weight * adversarial.float()
        loss.backward()
        setup.g_optimizer.step()
        return {"loss": loss.detach(), "d_loss": d_loss.detach()}


def _training_batch(config: TrainingBenchConfig) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(config.seed)
    shape = (config.batch_size, config.num_slices, 1, config.crop_size, config.crop_size)
    hr = torch.rand(shape, generator=generator)
    return {"hr": hr, "lr": bicubic_downsample(hr, config.scale).clamp(0.0, 1.0)}


def benchmark_training(
    config: TrainingBenchConfig, device: str | torch.device = "cpu", variant: Variant = VARIANTS["fp32"]
) -> dict[str, Any]:
    """Time ``LSTMAGANTrainer`` iterations against :class:`ReferenceTrainingLoop`, interleaved one by one.

    The reference step runs inside the engine's ``ITERATION_COMPLETED`` handler, so engine iteration ``i`` and
    reference iteration ``i`` run back to back and see the same machine load. An engine iteration is timed
    from the end of the previous reference step to the end of its own ``_iteration`` and the handlers
    before this one, so it includes ignite's loop, the batch fetch, ``prepare_batch`` and the events. Both
    sides start from the same weights, use the same batch and are re-seeded with ``seed + i`` before
    iteration ``i`` (the gradient penalty's mixing weights), so they follow the same trajectory.

    Args:
        config: sizes and iteration counts.
        device: where to train.
        variant: fp32, or a CUDA-only option (bf16 autocast via the engine's ``amp_dtype="bfloat16"``,
            channels_last, ``torch.compile`` of G via the engine's ``compile``).

    Returns:
        ``{"variant", "slices_per_iteration", "engine": {...}, "reference": {...}, "engine_time_ratio",
        "paired_time_ratio", "engine_overhead_ms", "losses": {...}, "max_loss_difference"}``. Each side holds
        ``seconds`` (every timed iteration), ``median_s``, ``min_s``, ``slices_per_s`` (from the median) and
        the memory fields of :class:`PeakMemoryTracker` (maximum over the timed iterations).
        ``engine_time_ratio`` is the engine's median time over the reference's (1.0 = no overhead),
        ``paired_time_ratio`` the median of the per-iteration ratios, ``engine_overhead_ms`` the difference
        of the medians; ``losses`` holds every iteration's ``"loss"`` and ``"d_loss"`` of both sides and
        ``max_loss_difference`` their largest absolute difference.
    """
    device = torch.device(device)
    check_variant(variant, device)
    torch.manual_seed(config.seed)
    generator = LSTMAGANGenerator(scale=config.scale, **config.generator)
    critic = LSTMDiscriminator(num_slices=config.num_slices, **config.critic)
    perceptual = PerceptualLoss(layer=config.perceptual_layer, weights=None)  # random VGG19: same cost, no download
    reference = ReferenceTrainingLoop(
        _training_setup(
            copy.deepcopy(generator), copy.deepcopy(critic), copy.deepcopy(perceptual.vgg), variant, device
        ),
        config.n_critic,
        variant,
        device,
    )
    engine_setup = _training_setup(generator, critic, perceptual.vgg, variant, device)
    batch = _training_batch(config)
    trainer = LSTMAGANTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=[batch] * (config.warmup + config.iterations),
        network=engine_setup.generator,
        optimizer=engine_setup.g_optimizer,
        loss_function=HybridLoss(perceptual),
        d_network=engine_setup.critic,
        d_optimizer=engine_setup.d_optimizer,
        objective=WGANGPObjective(gp_weight=ReferenceTrainingLoop.gp_weight),
        n_critic=config.n_critic,
        amp=variant.bf16,
        amp_dtype="bfloat16",
        compile=variant.compile,
    )
    tracker = PeakMemoryTracker(device)
    seconds: dict[str, list[float]] = {"engine": [], "reference": []}
    memory: dict[str, list[dict[str, Any]]] = {"engine": [], "reference": []}
    losses: dict[str, dict[str, list[float]]] = {side: {"loss": [], "d_loss": []} for side in seconds}
    engine_start = [0.0]

    def record(side: str, index: int, duration: float, values: dict[str, Any]) -> None:
        mem = tracker.stop()
        for key in ("loss", "d_loss"):
            losses[side][key].append(float(values[key]))
        if index >= config.warmup:
            seconds[side].append(duration)
            memory[side].append(mem)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _reference_step(engine: LSTMAGANTrainer) -> None:
        synchronize(device)
        engine_end = time.perf_counter()
        index = engine.state.iteration - 1
        record("engine", index, engine_end - engine_start[0], engine.state.output)
        torch.manual_seed(config.seed + index)
        tracker.start()
        reference_start = time.perf_counter()
        values = reference.step(batch["lr"], batch["hr"])
        synchronize(device)
        record("reference", index, time.perf_counter() - reference_start, values)
        torch.manual_seed(config.seed + index + 1)
        tracker.start()
        engine_start[0] = time.perf_counter()

    torch.manual_seed(config.seed)
    tracker.start()
    engine_start[0] = time.perf_counter()
    trainer.run()

    slices = config.batch_size * config.num_slices
    result: dict[str, Any] = {"variant": variant.name, "slices_per_iteration": slices}
    for side in ("engine", "reference"):
        result[side] = {**seconds_summary(seconds[side], slices, "slices"), **max_memory(memory[side])}
    engine_median, reference_median = result["engine"]["median_s"], result["reference"]["median_s"]
    result["engine_time_ratio"] = engine_median / reference_median
    result["paired_time_ratio"] = statistics.median(e / r for e, r in zip(seconds["engine"], seconds["reference"]))
    result["engine_overhead_ms"] = 1e3 * (engine_median - reference_median)
    result["losses"] = losses
    result["max_loss_difference"] = max(
        abs(e - r) for key in ("loss", "d_loss") for e, r in zip(losses["engine"][key], losses["reference"][key])
    )
    return result
