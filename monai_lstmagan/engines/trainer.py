"""LSTMAGAN training: adversarial super-resolution as a MONAI ``SupervisedTrainer``.

:class:`LSTMAGANTrainer` keeps the generator G as ``network`` (so MONAI's inferer, validation,
checkpoint and export machinery work unchanged) and adds a discriminator (critic) D with its own
optimizer. One ``_iteration`` on a batch ``{"lr": [B, T, 1, h, w], "hr": [B, T, 1, H, W]}``:

1. G forward on the folded slices: ``sr = G(lr)`` ``[B, T, 1, H, W]``.
2. unless in warm-up: ``n_critic`` D steps on ``(hr, sr.detach())`` with the adversarial
   objective's D loss (GAN or WGAN-GP), G untouched;
3. one G step with ``HybridLoss(sr, hr, adversarial)`` where the adversarial term is the objective's
   G loss through D (D's weights frozen), multiplied by a linear ramp; during the first
   ``warmup_iterations`` the G loss is ``warmup_loss_function`` (by default the pixel MSE only: SRResNet
   pretraining) and D is untouched.

Every optimizer step happens inside ``_iteration``. MONAI's iteration events are fired as in
``SupervisedTrainer`` (FORWARD_COMPLETED, LOSS_COMPLETED, BACKWARD_COMPLETED, MODEL_COMPLETED) and
the D step fires MONAI's ``AdversarialIterationEvents.DISCRIMINATOR_*`` events; handlers attached to
the LOSS events see the losses before the corresponding backward/step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer
from monai.utils import AdversarialIterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from monai_lstmagan.engines.utils import prepare_sr_batch, unwrap_module
from monai_lstmagan.losses import G_LOSS_KEYS, HybridLoss, LossKeys

__all__ = ["LSTMAGANTrainer", "AdversarialTrainer"]


class LSTMAGANTrainer(SupervisedTrainer):
    """Super-resolution GAN trainer: ``n_critic`` discriminator steps, then one generator step, per iteration.

    Args:
        device: where to train.
        max_epochs: number of epochs.
        train_data_loader: yields ``{"lr": [B, T, 1, h, w], "hr": [B, T, 1, H, W]}``.
        network: the generator G (``[B, T, 1, h, w] -> [B, T, 1, H, W]``); may be wrapped in DDP.
        optimizer: G's optimizer.
        loss_function: ``monai_lstmagan.losses.HybridLoss``; called as ``loss_function(sr, hr, adversarial)``
            and returning a dict with "loss", "mse", "perceptual", "adversarial".
        d_network: the discriminator / critic D (``[B, T, 1, H, W] -> [B]``); may be wrapped in DDP.
            ``None`` (with ``d_optimizer`` and ``objective`` None) trains G with ``loss_function(sr, hr)``
            alone: the MSE-only (SRResNet-like) baseline.
        d_optimizer: D's optimizer.
        objective: ``GANObjective`` or ``WGANGPObjective`` (``discriminator_loss(D, real, fake)`` -> dict with
            "loss", "d_real", "d_fake", "gradient_penalty", "accuracy"; ``generator_loss(D, fake)`` -> scalar).
        n_critic: D steps per G step (they share the iteration's batch and the detached ``sr``).
        warmup_iterations: the first iterations train G with ``warmup_loss_function``; D is not touched.
        warmup_loss_function: the G loss of the warm-up, called as ``(sr, hr)`` and returning the same dict as
            ``loss_function``; default ``HybridLoss(perceptual=None)`` (pixel MSE, weight 1). Unused without D.
        adversarial_ramp_iterations: after the warm-up the adversarial term is multiplied by a factor that
            grows linearly from ``1 / ramp`` to 1 over this many iterations (0: full weight at once).
        feature_loss_function: a critic-feature loss called as ``(D, sr, hr)`` with D's weights frozen
            (:class:`~monai_lstmagan.losses.DiscriminatorFeatureLoss`, MedSRGAN); in the adversarial phase its value,
            times the same ramp factor, goes to ``loss_function`` as ``adversarial_feature=``. ``None``: no such term.
        epoch_length: iterations per epoch, default ``len(train_data_loader)``.
        amp: mixed precision on CUDA (ignored with a warning on other devices).
        amp_dtype: "float16" (two GradScalers, one per optimizer) or "bfloat16" (no scaling).
        Other arguments are those of ``monai.engines.SupervisedTrainer``; the output stays a dict
        (no decollation), so ``postprocessing`` is not offered.

    ``engine.state.output`` after an iteration: "image" (lr), "label" (hr), "pred" (sr, detached), the
    scalar G losses "loss", "mse", "perceptual", "adversarial", "adversarial_scale", and after the
    warm-up the D statistics of the last critic step "d_loss", "gradient_penalty", "d_real", "d_fake",
    "d_accuracy" (detached 0-dim tensors; see :func:`loss_values`).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable[..., dict[str, torch.Tensor]],
        d_network: torch.nn.Module | None = None,
        d_optimizer: Optimizer | None = None,
        objective: Any | None = None,
        n_critic: int = 1,
        warmup_iterations: int = 0,
        warmup_loss_function: Callable[..., dict[str, torch.Tensor]] | None = None,
        adversarial_ramp_iterations: int = 0,
        feature_loss_function: Callable[..., torch.Tensor] | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = prepare_sr_batch,
        inferer: Inferer | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        amp_dtype: str = "float16",
        optim_set_to_none: bool = True,
        compile: bool = False,
        compile_kwargs: dict | None = None,
        to_kwargs: dict | None = None,
    ) -> None:
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}.")
        if warmup_iterations < 0 or adversarial_ramp_iterations < 0:
            raise ValueError("warmup_iterations and adversarial_ramp_iterations must be >= 0.")
        if amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be 'float16' or 'bfloat16', got {amp_dtype!r}.")
        if (d_network is None) != (d_optimizer is None) or (d_network is None) != (objective is None):
            raise ValueError("d_network, d_optimizer and objective must be given together (or all None: MSE-only).")
        if feature_loss_function is not None and d_network is None:
            raise ValueError("feature_loss_function needs a d_network (it compares the critic's features).")
        device = torch.device(device)
        if amp and device.type != "cuda":
            warnings.warn(f"AMP is only used on CUDA; training on '{device}' runs in float32.", stacklevel=2)
            amp = False
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            inferer=inferer,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            train_handlers=None,  # attached below, once the D attributes exist
            amp=amp,
            event_names=[AdversarialIterationEvents],
            decollate=False,
            optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs,
            amp_kwargs={"dtype": torch.bfloat16 if amp_dtype == "bfloat16" else torch.float16},
            compile=compile,
            compile_kwargs=compile_kwargs,
        )
        self.d_network = d_network
        self.d_optimizer = d_optimizer
        self.objective = objective
        self.n_critic = n_critic
        self.warmup_iterations = warmup_iterations
        self.warmup_loss_function = (
            HybridLoss(perceptual=None) if warmup_loss_function is None else warmup_loss_function
        )
        self.adversarial_ramp_iterations = adversarial_ramp_iterations
        self.feature_loss_function = feature_loss_function
        scaling = amp and amp_dtype == "float16"
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=scaling)
        self.d_scaler = torch.amp.GradScaler("cuda", enabled=scaling)
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    def adversarial_scale(self, iteration: int) -> float:
        """Factor of the adversarial term at a 1-based ``iteration``: 0 during warm-up (and without D), then a ramp to 1."""
        adversarial_iteration = iteration - self.warmup_iterations
        if self.d_network is None or adversarial_iteration <= 0:
            return 0.0
        if self.adversarial_ramp_iterations == 0:
            return 1.0
        return min(1.0, adversarial_iteration / self.adversarial_ramp_iterations)

    def _autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=self.state.device.type, **self.amp_kwargs)

    def _discriminator_step(self, engine: LSTMAGANTrainer, real: torch.Tensor, fake: torch.Tensor) -> None:
        """One D step on ``(real, fake)`` ``[B, T, 1, H, W]`` (``fake`` detached); G is untouched.

        Stores the critic statistics (:data:`~monai_lstmagan.losses.D_LOSS_KEYS`) in ``engine.state.output``.
        """
        engine.d_network.train()
        engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            d_out = engine.objective.discriminator_loss(engine.d_network, real, fake)
        output = engine.state.output
        output[LossKeys.D_LOSS] = d_out["loss"].detach().float()
        output[LossKeys.GRADIENT_PENALTY] = d_out["gradient_penalty"].detach().float()
        output[LossKeys.D_REAL] = d_out["d_real"].detach().float().mean()
        output[LossKeys.D_FAKE] = d_out["d_fake"].detach().float().mean()
        output[LossKeys.D_ACCURACY] = d_out["accuracy"].detach().float()
        if "accuracy_midpoint" in d_out:
            output[LossKeys.D_ACCURACY_MIDPOINT] = d_out["accuracy_midpoint"].detach().float()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED)
        engine.d_scaler.scale(d_out["loss"]).backward()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_BACKWARD_COMPLETED)
        engine.d_scaler.step(engine.d_optimizer)
        engine.d_scaler.update()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_MODEL_COMPLETED)

    def _generator_losses(self, sr: torch.Tensor, hr: torch.Tensor, adversarial_scale: float) -> dict:
        """The G loss of this iteration's phase, ``sr`` (with gradient) and ``hr`` ``[B, T, 1, H, W]``.

        Adversarial phase: ``loss_function(sr, hr, scale * objective.generator_loss(D, sr))`` (with a
        ``feature_loss_function`` also ``adversarial_feature=scale * feature_loss_function(D, sr, hr)``), D used
        through its plain module with frozen weights (no D gradients, no DDP reduction). Warm-up (a D exists, scale 0):
        ``warmup_loss_function(sr, hr)``. Without D (MSE-only baseline): ``loss_function(sr, hr)`` throughout.
        """
        if adversarial_scale > 0:
            discriminator = unwrap_module(self.d_network)
            discriminator.requires_grad_(False)
            try:
                g_adversarial = self.objective.generator_loss(discriminator, sr)
                if self.feature_loss_function is not None:
                    feature = self.feature_loss_function(discriminator, sr, hr)
                    return self.loss_function(
                        sr, hr, g_adversarial * adversarial_scale, adversarial_feature=feature * adversarial_scale
                    )
            finally:
                discriminator.requires_grad_(True)
            return self.loss_function(sr, hr, g_adversarial * adversarial_scale)
        if self.d_network is None:
            return self.loss_function(sr, hr)
        return self.warmup_loss_function(sr, hr)

    def _generator_step(self, engine: LSTMAGANTrainer, sr: torch.Tensor, hr: torch.Tensor, scale: float) -> None:
        """One G step on the loss of :meth:`_generator_losses`; stores :data:`~monai_lstmagan.losses.G_LOSS_KEYS`.

        Args:
            sr: ``G(lr)`` ``[B, T, 1, H, W]`` with its graph (G's gradients were zeroed before the forward).
            hr: the target ``[B, T, 1, H, W]``.
            scale: the adversarial factor of this iteration (:meth:`adversarial_scale`).
        """
        with engine._autocast():
            losses = engine._generator_losses(sr.float(), hr, scale)
        for key in G_LOSS_KEYS:
            engine.state.output[key] = losses[key].detach().float()
        if LossKeys.ADVERSARIAL_FEATURE in losses:
            engine.state.output[LossKeys.ADVERSARIAL_FEATURE] = losses[LossKeys.ADVERSARIAL_FEATURE].detach().float()
        engine.state.output[LossKeys.ADVERSARIAL_SCALE] = scale
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.g_scaler.scale(losses[LossKeys.LOSS]).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.g_scaler.step(engine.optimizer)
        engine.g_scaler.update()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)

    def _iteration(self, engine: LSTMAGANTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        """One training iteration: G forward, ``n_critic`` D steps (after the warm-up), then one G step.

        Args:
            engine: this trainer.
            batchdata: ``{"lr": [B, T, 1, h, w], "hr": [B, T, 1, H, W]}``.

        Returns:
            ``engine.state.output`` (see the class docstring).
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        lr, hr = batch[:2]
        engine.state.output = {Keys.IMAGE: lr, Keys.LABEL: hr}
        scale = engine.adversarial_scale(engine.state.iteration)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            sr = engine.inferer(lr, engine.network)
        engine.state.output[Keys.PRED] = sr.detach()
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        if scale > 0:
            fake = sr.detach().float()
            for _ in range(engine.n_critic):
                engine._discriminator_step(engine, hr, fake)
        engine._generator_step(engine, sr, hr, scale)
        return engine.state.output

    def state_dict(self) -> dict:
        """Ignite's engine state (iteration, epoch_length, max_epochs) plus both GradScalers."""
        state = super().state_dict()
        state["g_scaler"] = self.g_scaler.state_dict()
        state["d_scaler"] = self.d_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved (the scalers only when they are enabled here)."""
        state_dict = dict(state_dict)
        for key, scaler in (("g_scaler", self.g_scaler), ("d_scaler", self.d_scaler)):
            scaler_state = state_dict.pop(key, None)
            if scaler_state and scaler.is_enabled():
                scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)


#: The former name, kept for configs written before the rename (``monai.engines`` has its own ``AdversarialTrainer``).
AdversarialTrainer = LSTMAGANTrainer
