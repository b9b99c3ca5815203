"""Performance benchmark: the MONAI training engine and the streaming inference against plain-PyTorch floors.

``python -m monai_lstmagan.bench [--device cpu|cuda] [--json OUT.json] [--quick]`` prints markdown tables
and (with ``--json``) writes the same numbers as JSON. It measures, in one process:

1. **Training**: seconds per iteration, slices/s and peak memory of :class:`~monai_lstmagan.engine.AdversarialTrainer`
   (WGAN-GP objective, LSTM critic, hybrid loss with the VGG19 perceptual term) against a plain-PyTorch loop
   that does the same math (``n_critic`` critic steps with the gradient penalty, then the generator step with
   ``MSE + 6e-3 * perceptual + 1e-3 * adversarial``). Both start from the same weights, see the same batch
   and the same random seeds; their losses are compared at every iteration to show that the math is the same.
   The VGG19 of the perceptual loss has RANDOM weights (no download): the cost is that of the real loss.
   Engine and reference iterations alternate one by one, so both see the same load of a shared machine;
   warm-up iterations are excluded; the median and the minimum (the least disturbed iteration) over the
   timed iterations are reported, with the ratio of the medians and the median of the per-iteration ratios.
2. **Inference**: output voxels/s and peak memory of :func:`~monai_lstmagan.inference.super_resolve_volume`
   (``batch_sizes`` slices per forward) against a naive loop over one slice at a time, for a volume whose
   super-resolved size is ``volume_shape`` (the LR input is ``X/s x Y/s x Z``, as in the evaluation
   protocol), with the achieved GFLOP/s from :func:`~monai_lstmagan.networks.complexity.count_flops` and a
   large matmul's GFLOP/s on the same device as a reference ceiling.
3. On CUDA, the variants fp32, AMP bfloat16, channels_last, ``torch.compile`` and all three together are
   measured side by side. On CPU only fp32 is measured (none of the CUDA code paths run).

Memory: ``peak RSS`` is the high-water mark of the whole process' resident set (``VmHWM`` of
``/proc/self/status``, reset through ``/proc/self/clear_refs`` at the start of the timed part; where that reset is
refused, ``VmRSS`` sampled every millisecond by a thread), so it includes the Python runtime, the libraries and
every model alive in the process; ``RSS increase`` is that peak minus the resident set at the start of the timed
part, i.e. what the measured work added (the C allocator's free memory is handed back to the OS with glibc's
``malloc_trim`` first, so that memory freed earlier and kept by the allocator does not hide new allocations).
``peak CUDA`` is ``torch.cuda.max_memory_allocated`` (tensors only, not the caching allocator's reserve or the
CUDA context).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import math
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Events
from torch import nn

from monai_lstmagan.engine import AdversarialTrainer
from monai_lstmagan.inference import super_resolve_volume
from monai_lstmagan.losses import HybridLoss, PerceptualLoss, WGANGPObjective
from monai_lstmagan.networks import LSTMAGANGenerator, LSTMDiscriminator
from monai_lstmagan.networks.complexity import count_flops
from monai_lstmagan.transforms import bicubic_downsample

__all__ = [
    "TrainingBenchConfig",
    "InferenceBenchConfig",
    "Variant",
    "VARIANTS",
    "bench_configs",
    "PeakMemoryTracker",
    "ReferenceTrainingLoop",
    "matmul_gflops",
    "benchmark_training",
    "benchmark_inference",
    "naive_super_resolve_volume",
    "run_benchmark",
    "format_tables",
    "main",
]

_MIB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Variant:
    """How the networks run: AMP bfloat16 autocast, channels_last weights, ``torch.compile`` of the generator.

    Every option other than ``fp32`` is CUDA-only.
    """

    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


VARIANTS: dict[str, Variant] = {
    "fp32": Variant("fp32"),
    "bf16": Variant("bf16", bf16=True),
    "channels_last": Variant("channels_last", channels_last=True),
    "compile": Variant("compile", compile=True),
    "bf16+channels_last+compile": Variant("bf16+channels_last+compile", bf16=True, channels_last=True, compile=True),
}


@dataclass(frozen=True)
class TrainingBenchConfig:
    """Sizes of the training benchmark.

    Args:
        generator: ``LSTMAGANGenerator`` kwargs (besides ``scale``).
        scale: SR factor of the training pairs.
        batch_size: sequences per batch ``B``.
        num_slices: slices per sequence ``T`` (the LSTM critic's sequence length).
        crop_size: HR in-plane crop (divisible by ``scale``).
        critic: ``LSTMDiscriminator`` kwargs (besides ``num_slices``).
        perceptual_layer: VGG19 layer of the perceptual loss (SRGAN's VGG54 is ``relu5_4``).
        n_critic: critic steps per generator step.
        warmup: untimed iterations (>= 1) of each side.
        iterations: timed iterations of each side.
        seed: seed of the weights, the batch and the gradient penalty's mixing weights.
    """

    generator: dict[str, Any] = field(default_factory=dict)
    scale: int = 4
    batch_size: int = 8
    num_slices: int = 16
    crop_size: int = 96
    critic: dict[str, Any] = field(default_factory=dict)
    perceptual_layer: str = "relu5_4"
    n_critic: int = 1
    warmup: int = 3
    iterations: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.iterations < 1:
            raise ValueError(f"warmup and iterations must be >= 1, got {self.warmup}, {self.iterations}.")
        if self.crop_size % self.scale:
            raise ValueError(f"crop_size {self.crop_size} is not divisible by scale {self.scale}.")


@dataclass(frozen=True)
class InferenceBenchConfig:
    """Sizes of the inference benchmark.

    Args:
        generator: ``LSTMAGANGenerator`` kwargs (besides ``scale``).
        volume_shape: ``(X, Y, Z)`` of the super-resolved volume; the LR input is ``(X/s, Y/s, Z)``.
        scales: SR factors to measure.
        batch_sizes: slices per forward pass of the streaming inference, one measurement each.
        repeats: timed whole-volume runs per method (after one untimed warm-up on a few slices).
        seed: seed of the weights and the volume.
    """

    generator: dict[str, Any] = field(default_factory=dict)
    volume_shape: tuple[int, int, int] = (256, 256, 48)
    scales: tuple[int, ...] = (2, 4)
    batch_sizes: tuple[int, ...] = (8, 1)
    repeats: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.repeats < 1 or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"repeats and batch_sizes must be >= 1, got {self.repeats}, {self.batch_sizes}.")
        for scale in self.scales:
            if self.volume_shape[0] % scale or self.volume_shape[1] % scale:
                raise ValueError(f"volume_shape {self.volume_shape} is not divisible in-plane by scale {scale}.")


_SMALL_GENERATOR = {"num_blocks": 4, "channels": 32}


def bench_configs(device: str, quick: bool = False) -> tuple[TrainingBenchConfig, InferenceBenchConfig]:
    """Default benchmark sizes for a device.

    On CUDA: the sizes of the bundle's full-size training (default generator, x4, batch 8 x 16 slices of
    96x96, default LSTM critic, VGG54 perceptual loss). Otherwise the small CPU generator (4 blocks,
    32 channels), x2, one sequence of 16 slices of 64x64. Inference: a 256x256x48 SR volume at x2 and x4.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        quick: small generator, smaller crops/volume and fewer iterations on any device (a few minutes on 2 cores).
    """
    if quick:
        return (
            TrainingBenchConfig(
                generator=dict(_SMALL_GENERATOR),
                scale=2,
                batch_size=1,
                num_slices=8,
                crop_size=32,
                warmup=1,
                iterations=4,
            ),
            InferenceBenchConfig(generator=dict(_SMALL_GENERATOR), volume_shape=(128, 128, 16), repeats=2),
        )
    if torch.device(device).type == "cuda":
        return TrainingBenchConfig(), InferenceBenchConfig(batch_sizes=(32, 8, 1), repeats=5)
    return (
        TrainingBenchConfig(
            generator=dict(_SMALL_GENERATOR),
            scale=2,
            batch_size=1,
            num_slices=16,
            crop_size=64,
            warmup=2,
            iterations=10,
        ),
        InferenceBenchConfig(generator=dict(_SMALL_GENERATOR), repeats=5),
    )


# ----------------------------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            match = re.search(rf"^{key}:\s+(\d+)\s+kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _release_free_heap() -> None:
    """Return the C allocator's free memory to the OS (glibc ``malloc_trim``), so that RSS counts live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (``VmHWM``) of this process; ``False`` if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class PeakMemoryTracker:
    """Peak resident set size of this process (and peak CUDA allocation) between ``start()`` and ``stop()``.

    The RSS peak is the kernel's ``VmHWM`` after a reset through ``/proc/self/clear_refs`` (method
    ``"VmHWM"``); where the reset is refused, a thread samples ``VmRSS`` every ``interval`` seconds (method
    ``"sampled VmRSS"``, may miss peaks shorter than the interval); without ``/proc`` (not Linux) the RSS
    values are ``None``.

    Args:
        device: the CUDA device whose ``max_memory_allocated`` is reported; ``None``/CPU: no CUDA numbers.
        interval: sampling period of the fallback thread, seconds.
    """

    def __init__(self, device: torch.device | None = None, interval: float = 1e-3) -> None:
        self.cuda_device = device if device is not None and device.type == "cuda" else None
        self.interval = interval
        self.method: str | None = None
        self._start_rss: int | None = None
        self._sampled_peak = 0
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop_sampling.wait(self.interval):
            self._sampled_peak = max(self._sampled_peak, _status_kib("VmRSS") or 0)

    def start(self) -> None:
        """Begin a measurement (resets the peaks)."""
        if self.cuda_device is not None:
            torch.cuda.synchronize(self.cuda_device)
            torch.cuda.reset_peak_memory_stats(self.cuda_device)
        _release_free_heap()
        self._start_rss = _status_kib("VmRSS")
        if self._start_rss is None:
            self.method = None
        elif _reset_peak_rss():
            self.method = "VmHWM"
        else:
            self.method = "sampled VmRSS"
            self._sampled_peak = self._start_rss
            self._stop_sampling.clear()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def stop(self) -> dict[str, float | str | None]:
        """End the measurement: ``{"peak_rss_mib", "rss_increase_mib", "peak_cuda_mib", "rss_method"}``.

        Values that cannot be measured here are ``None``.
        """
        peak_cuda = None
        if self.cuda_device is not None:
            torch.cuda.synchronize(self.cuda_device)
            peak_cuda = torch.cuda.max_memory_allocated(self.cuda_device) / _MIB
        peak_kib: int | None = None
        if self.method == "VmHWM":
            peak_kib = _status_kib("VmHWM")
        elif self.method == "sampled VmRSS" and self._sampler is not None:
            self._stop_sampling.set()
            self._sampler.join()
            self._sampler = None
            peak_kib = max(self._sampled_peak, _status_kib("VmRSS") or 0)
        return {
            "peak_rss_mib": None if peak_kib is None else peak_kib / 1024.0,
            "rss_increase_mib": (
                None if peak_kib is None or self._start_rss is None else (peak_kib - self._start_rss) / 1024.0
            ),
            "peak_cuda_mib": peak_cuda,
            "rss_method": self.method,
        }


def _max_memory(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise maximum of :meth:`PeakMemoryTracker.stop` results (``None`` stays ``None``)."""
    merged: dict[str, Any] = {"rss_method": records[0]["rss_method"]}
    for key in ("peak_rss_mib", "rss_increase_mib", "peak_cuda_mib"):
        values = [r[key] for r in records if r[key] is not None]
        merged[key] = max(values) if values else None
    return merged


# ----------------------------------------------------------------------------------------------- helpers


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_variant(variant: Variant, device: torch.device) -> None:
    if device.type != "cuda" and (variant.bf16 or variant.channels_last or variant.compile):
        raise ValueError(f"variant {variant.name!r} is measured on CUDA only, got device '{device}'.")
    if variant.compile:  # fresh compile caches: every variant/scale compiles the same forward code objects
        torch.compiler.reset()


def _autocast(variant: Variant):
    """CUDA bfloat16 autocast for the bf16 variants, else nothing."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if variant.bf16 else nullcontext()


def _seconds_summary(seconds: Sequence[float], items: float, unit: str) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {"seconds": list(seconds), "median_s": median, "min_s": min(seconds), f"{unit}_per_s": items / median}


def matmul_gflops(
    device: str | torch.device, size: int | None = None, dtype: torch.dtype = torch.float32, repeats: int = 10
) -> float:
    """GFLOP/s of a square ``size x size`` matmul, the best of ``repeats`` after one warm-up: a reference ceiling.

    Args:
        device: where to measure.
        size: matrix side; default 2048 on CPU, 8192 on CUDA.
        dtype: element type (on CUDA, float32 uses the current ``torch.get_float32_matmul_precision``).
        repeats: timed products.
    """
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.rand(size, size, generator=generator).to(device=device, dtype=dtype)
    times = []
    for index in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _synchronize(device)
        if index:
            times.append(time.perf_counter() - start)
    return 2.0 * size**3 / min(times) / 1e9


# ----------------------------------------------------------------------------------------------- training


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
    """Plain-PyTorch training step with the same math as ``AdversarialTrainer`` + ``WGANGPObjective`` + ``HybridLoss``.

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
        with _autocast(self.variant):
            sr = self.generator(lr)
        fake = sr.detach().float()
        for _ in range(self.n_critic):
            setup.d_optimizer.zero_grad(set_to_none=True)
            with _autocast(self.variant):
                d_real, d_fake = setup.critic(hr).float(), setup.critic(fake).float()
                d_loss = d_fake.mean() - d_real.mean() + self.gp_weight * self._gradient_penalty(hr, fake)
            d_loss.backward()
            setup.d_optimizer.step()
        with _autocast(self.variant):
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
    """Time ``AdversarialTrainer`` iterations against :class:`ReferenceTrainingLoop`, interleaved one by one.

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
    _check_variant(variant, device)
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
    trainer = AdversarialTrainer(
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
    def _reference_step(engine: AdversarialTrainer) -> None:
        _synchronize(device)
        engine_end = time.perf_counter()
        index = engine.state.iteration - 1
        record("engine", index, engine_end - engine_start[0], engine.state.output)
        torch.manual_seed(config.seed + index)
        tracker.start()
        reference_start = time.perf_counter()
        values = reference.step(batch["lr"], batch["hr"])
        _synchronize(device)
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
        result[side] = {**_seconds_summary(seconds[side], slices, "slices"), **_max_memory(memory[side])}
    engine_median, reference_median = result["engine"]["median_s"], result["reference"]["median_s"]
    result["engine_time_ratio"] = engine_median / reference_median
    result["paired_time_ratio"] = statistics.median(e / r for e, r in zip(seconds["engine"], seconds["reference"]))
    result["engine_overhead_ms"] = 1e3 * (engine_median - reference_median)
    result["losses"] = losses
    result["max_loss_difference"] = max(
        abs(e - r) for key in ("loss", "d_loss") for e, r in zip(losses["engine"][key], losses["reference"][key])
    )
    return result


# ----------------------------------------------------------------------------------------------- inference


class _AutocastBF16(nn.Module):
    """Run the wrapped module under CUDA bfloat16 autocast (``super_resolve_volume``'s ``amp`` is float16)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            return self.module(x)


def _inference_model(generator: nn.Module, variant: Variant, device: torch.device) -> nn.Module:
    model = generator.to(device).eval()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if variant.bf16:
        model = _AutocastBF16(model)
    if variant.compile:
        model = torch.compile(model, dynamic=False)
    return model


def naive_super_resolve_volume(
    generator: nn.Module, volume: torch.Tensor, scale: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The naive floor: one axial slice per forward pass.

    Args:
        generator: ``[1, 1, h, w] -> [1, 1, h*s, w*s]``.
        volume: ``[1, X, Y, Z]`` in [0, 1].
        scale: SR factor ``s``.
        device: where the generator runs.

    Returns:
        ``[1, X*s, Y*s, Z]`` float32 on CPU, clamped to [0, 1] (as :func:`super_resolve_volume`).
    """
    device = torch.device(device)
    _, x, y, z = volume.shape
    out = torch.empty((1, x * scale, y * scale, z), dtype=torch.float32)
    generator = generator.to(device).eval()
    with torch.inference_mode():
        for index in range(z):
            sr = generator(volume[:, :, :, index].unsqueeze(0).to(device))  # [1, 1, X*s, Y*s]
            out[0, :, :, index] = sr[0, 0].float().clamp(0.0, 1.0).cpu()
    return out


def benchmark_inference(
    config: InferenceBenchConfig, scale: int, device: str | torch.device = "cpu", variant: Variant = VARIANTS["fp32"]
) -> dict[str, Any]:
    """Time whole-volume SR with :func:`super_resolve_volume` against :func:`naive_super_resolve_volume`.

    The methods run in alternating order, one whole volume at a time, after one untimed warm-up each on
    a few slices.

    Args:
        config: volume size, streaming batch sizes, repeats.
        scale: SR factor; the LR input is ``(X/s, Y/s, Z)`` of ``config.volume_shape``.
        device: where the generator runs.
        variant: fp32 or a CUDA-only option (bf16 autocast, channels_last, ``torch.compile``).

    Returns:
        ``{"variant", "scale", "lr_shape", "sr_shape", "output_voxels", "gflop_per_volume", "methods": {...},
        "speedup_over_naive": {...}, "max_abs_difference"}``. ``methods`` maps ``"streaming_b<N>"`` (one per
        entry of ``config.batch_sizes``) and ``"naive"`` to ``batch_size``, ``seconds``, ``median_s``, ``min_s``,
        ``voxels_per_s`` (output voxels, from the median), ``gflop_per_s`` and the memory fields of
        :class:`PeakMemoryTracker`; ``speedup_over_naive`` maps each streaming method to the naive median time
        over its median time; ``max_abs_difference`` is the largest difference of a streaming output from the
        naive output.
    """
    device = torch.device(device)
    _check_variant(variant, device)
    x, y, z = config.volume_shape
    torch.manual_seed(config.seed)
    generator = LSTMAGANGenerator(scale=scale, **config.generator).to(device).eval()
    flops_per_slice = count_flops(generator, (1, 1, x // scale, y // scale))
    volume = torch.rand((1, x // scale, y // scale, z), generator=torch.Generator().manual_seed(config.seed))
    model = _inference_model(generator, variant, device)

    def streaming(batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda v: super_resolve_volume(model, v, scale, batch_size=batch_size, device=device)

    methods: dict[str, tuple[int, Callable[[torch.Tensor], torch.Tensor]]] = {
        f"streaming_b{batch}": (batch, streaming(batch)) for batch in config.batch_sizes
    }
    methods["naive"] = (1, lambda v: naive_super_resolve_volume(model, v, scale, device=device))
    for batch_size, method in methods.values():
        method(volume[..., : min(batch_size, z)])  # warm-up (and compilation) at the batch shape
    tracker = PeakMemoryTracker(device)
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    memory: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    outputs: dict[str, torch.Tensor] = {}
    for repeat in range(config.repeats):
        for name in list(methods) if repeat % 2 == 0 else list(methods)[::-1]:
            outputs.pop(name, None)  # free this method's previous output before measuring
            tracker.start()
            start = time.perf_counter()
            outputs[name] = methods[name][1](volume)
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)
            memory[name].append(tracker.stop())
    voxels = x * y * z
    gflop = flops_per_slice * z / 1e9
    results: dict[str, dict[str, Any]] = {}
    for name, (batch_size, _) in methods.items():
        summary = _seconds_summary(seconds[name], voxels, "voxels")
        summary["gflop_per_s"] = gflop / summary["median_s"]
        results[name] = {"batch_size": batch_size, **summary, **_max_memory(memory[name])}
    streaming_names = [name for name in methods if name != "naive"]
    return {
        "variant": variant.name,
        "scale": scale,
        "lr_shape": [x // scale, y // scale, z],
        "sr_shape": [x, y, z],
        "output_voxels": voxels,
        "gflop_per_volume": gflop,
        "methods": results,
        "speedup_over_naive": {
            name: results["naive"]["median_s"] / results[name]["median_s"] for name in streaming_names
        },
        "max_abs_difference": max(float((outputs[name] - outputs["naive"]).abs().max()) for name in streaming_names),
    }


# ----------------------------------------------------------------------------------------------- driver


def _device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read(), re.MULTILINE)
            name = match.group(1).strip() if match else name
        except OSError:
            pass
        info["name"] = name
        info["cpu_count"] = os.cpu_count()
    return info


def _ceilings(device: torch.device) -> dict[str, float]:
    """Matmul GFLOP/s per dtype on ``device``: fp32 (CPU); fp32, tf32 and bf16 (CUDA)."""
    if device.type != "cuda":
        return {"fp32": matmul_gflops(device)}
    ceilings = {"fp32": matmul_gflops(device, dtype=torch.float32), "bf16": matmul_gflops(device, dtype=torch.bfloat16)}
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # TF32, what cuDNN convolutions use by default
        ceilings["tf32"] = matmul_gflops(device, dtype=torch.float32)
    finally:
        torch.set_float32_matmul_precision(precision)
    return ceilings


def run_benchmark(
    device: str | torch.device = "cpu",
    training: TrainingBenchConfig | None = None,
    inference: InferenceBenchConfig | None = None,
    variants: Sequence[str] | None = None,
    ceiling: bool = True,
) -> dict[str, Any]:
    """Run the training and inference benchmarks for every variant; the JSON-ready result.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        training, inference: sizes (default :func:`bench_configs` for ``device``).
        variants: names from :data:`VARIANTS`; default all of them on CUDA, ``["fp32"]`` on CPU.
        ceiling: also measure the matmul ceilings (:func:`matmul_gflops`).

    Returns:
        ``{"device": {...}, "config": {"training": ..., "inference": ...}, "matmul_gflops": {dtype: GFLOP/s},
        "training": [benchmark_training results], "inference": [benchmark_inference results], "notes": [...]}``.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("bench: --device cuda was asked for but torch.cuda.is_available() is False.")
    default_training, default_inference = bench_configs(device.type)
    training = training or default_training
    inference = inference or default_inference
    if variants is None:
        variants = list(VARIANTS) if device.type == "cuda" else ["fp32"]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"bench: unknown variants {unknown}; choose from {sorted(VARIANTS)}.")
    if device.type != "cuda" and list(variants) != ["fp32"]:
        raise ValueError(f"bench: on '{device}' only the fp32 variant is measured, got {list(variants)}.")
    ceilings = _ceilings(device) if ceiling else {}
    result: dict[str, Any] = {
        "device": _device_info(device),
        "config": {"training": asdict(training), "inference": asdict(inference)},
        "matmul_gflops": ceilings,
        "training": [benchmark_training(training, device, VARIANTS[name]) for name in variants],
        "inference": [
            benchmark_inference(inference, scale, device, VARIANTS[name])
            for name in variants
            for scale in inference.scales
        ],
        "notes": [
            "matmul_gflops: fastest square matmul, measured before and after the benchmarks (the better of the two)",
            "perceptual loss: VGG19 with random weights (no download); the cost equals the ImageNet-weighted loss",
            "peak RSS: whole-process resident-set high-water mark over the timed part; RSS increase: peak minus "
            "the resident set at the start of the timed part (after glibc malloc_trim)",
            "peak CUDA: torch.cuda.max_memory_allocated over the timed part",
            "engine_time_ratio: median seconds per iteration of AdversarialTrainer over that of the plain-PyTorch "
            "loop; paired_time_ratio: median of the per-iteration ratios (the two loops alternate iteration by "
            "iteration)",
            "inference input: LR = SR shape / scale in-plane; voxels/s counts output voxels",
        ],
    }
    if ceiling:  # again at the end: on a shared machine the load at the start may not be typical
        result["matmul_gflops"] = {dtype: max(value, ceilings[dtype]) for dtype, value in _ceilings(device).items()}
    return result


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ceiling_for(result: dict[str, Any], variant: str) -> float | None:
    """The matmul ceiling a variant is compared with: bf16 for autocast variants, else TF32 (CUDA) or fp32."""
    ceilings = result["matmul_gflops"]
    if VARIANTS[variant].bf16:
        return ceilings.get("bf16")
    return ceilings.get("tf32", ceilings.get("fp32"))


def _memory_cells(side: dict[str, Any]) -> list[str]:
    return [_fmt(side["peak_rss_mib"], 0), _fmt(side["rss_increase_mib"], 0), _fmt(side["peak_cuda_mib"], 0)]


def format_tables(result: dict[str, Any]) -> str:
    """Markdown: a line naming the hardware, then the training and the inference table of :func:`run_benchmark`."""
    info = result["device"]
    train_cfg, infer_cfg = result["config"]["training"], result["config"]["inference"]
    ceilings = ", ".join(f"{dtype} {_fmt(value, 0)} GFLOP/s" for dtype, value in result["matmul_gflops"].items())
    memory_header = ["peak RSS (MiB)", "RSS increase (MiB)", "peak CUDA (MiB)"]
    training_rows = []
    for row in result["training"]:
        for name, label in (("engine", "AdversarialTrainer"), ("reference", "plain PyTorch")):
            side = row[name]
            ratio = f"{row['engine_time_ratio']:.3f}; {row['paired_time_ratio']:.3f}" if name == "engine" else ""
            training_rows.append(
                [row["variant"], label, _fmt(side["median_s"], 3), _fmt(side["min_s"], 3), _fmt(side["slices_per_s"])]
                + _memory_cells(side)
                + [ratio]
            )
    inference_rows = []
    for row in result["inference"]:
        ceiling = _ceiling_for(result, row["variant"])
        shapes = " -> ".join("x".join(str(v) for v in row[key]) for key in ("lr_shape", "sr_shape"))
        for name, side in row["methods"].items():
            label = "naive loop, 1" if name == "naive" else f"super_resolve_volume, {side['batch_size']}"
            share = 100.0 * side["gflop_per_s"] / ceiling if ceiling else None
            speedup = _fmt(row["speedup_over_naive"].get(name), 2) if name != "naive" else ""
            inference_rows.append(
                [row["variant"], f"x{row['scale']}", shapes, label, _fmt(side["median_s"], 2), _fmt(side["min_s"], 2)]
                + [_fmt(side["voxels_per_s"] / 1e6, 2), _fmt(side["gflop_per_s"]), _fmt(share, 0)]
                + _memory_cells(side)
                + [speedup]
            )
    lines = [
        f"Device: {info['type']} ({info['name']}), torch {info['torch']}, torch threads: {info['threads']}."
        + (f" Matmul ceiling (fastest square matmul): {ceilings}." if ceilings else ""),
        "",
        f"Training: generator {train_cfg['generator'] or 'default'} x{train_cfg['scale']}, batch "
        f"{train_cfg['batch_size']} x {train_cfg['num_slices']} slices of {train_cfg['crop_size']}x"
        f"{train_cfg['crop_size']} HR, LSTM critic, WGAN-GP (n_critic={train_cfg['n_critic']}), MSE + perceptual "
        f"{train_cfg['perceptual_layer']} (random VGG19 weights); "
        f"{train_cfg['iterations']} timed iterations after {train_cfg['warmup']} warm-up, engine and reference "
        "alternating.",
        "",
        *_markdown_table(
            ["variant", "loop", "s / iteration (median)", "(min)", "slices / s"]
            + memory_header
            + ["engine / reference time (medians; paired)"],
            training_rows,
        ),
        "",
        f"Inference: generator {infer_cfg['generator'] or 'default'}, SR volume "
        f"{'x'.join(str(v) for v in infer_cfg['volume_shape'])} (LR = SR / scale in-plane), streaming "
        f"super_resolve_volume vs a naive loop of one slice per forward; median of {infer_cfg['repeats']} runs.",
        "",
        *_markdown_table(
            ["variant", "scale", "LR -> SR", "method, slices per forward", "s / volume (median)", "(min)"]
            + ["output Mvoxel / s"]
            + ["GFLOP/s", "% of matmul ceiling"]
            + memory_header
            + ["speed-up over naive"],
            inference_rows,
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line of the benchmark.

    ``python -m monai_lstmagan.bench [--device cpu|cuda] [--json OUT.json] [--quick] [--variants V ...]``
    prints the markdown tables of :func:`format_tables` and returns the result of :func:`run_benchmark`.
    """
    parser = argparse.ArgumentParser(description="LSTMAGAN training-engine and inference benchmark.")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="small generator, small sizes, few iterations")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="CUDA variants to measure (default: all; CPU: fp32)"
    )
    args = parser.parse_args(argv)
    training, inference = bench_configs(args.device, quick=args.quick)
    result = run_benchmark(args.device, training, inference, variants=args.variants)
    print(format_tables(result))
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return result


if __name__ == "__main__":
    main()
