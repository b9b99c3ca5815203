"""LSTMAGAN losses: perceptual (VGG19) loss, GAN and WGAN-GP objectives, gradient penalty, hybrid loss.

Generator loss (SRGAN weights): ``L = 1.0 * MSE + 6e-3 * perceptual + 1e-3 * adversarial``.
The objectives take the discriminator as an argument so that the trainer owns the modules, optimisers
and AMP; discriminator inputs are HR-size slice sequences ``[B, T, 1, H, W]``.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from monai.utils.enums import StrEnum
from torch import nn

from monai_lstmagan.networks.vgg import VGG19Features

__all__ = [
    "LossKeys",
    "G_LOSS_KEYS",
    "D_LOSS_KEYS",
    "PerceptualLoss",
    "GANObjective",
    "WGANGPObjective",
    "gradient_penalty",
    "HybridLoss",
    "DiscriminatorFeatureLoss",
    "make_objective",
    "log_perceptual_setting",
    "OBJECTIVES",
]


class LossKeys(StrEnum):
    """The names of the training losses and critic statistics (like MONAI's ``GanKeys``), defined once.

    The trainer's output, ``iterations.csv``, the StatsHandler/TensorBoard tags and the plots use these names;
    members are ``str``, so ``output["mse"]`` and ``output[LossKeys.MSE]`` are the same entry.
    """

    LOSS = "loss"  # the generator's total (weighted) loss
    MSE = "mse"  # pixel MSE, the content term
    PERCEPTUAL = "perceptual"  # VGG feature MSE (0 when the term is off)
    ADVERSARIAL = "adversarial"  # the objective's generator loss (unweighted, before the ramp)
    ADVERSARIAL_FEATURE = "adversarial_feature"  # critic-feature L1 of SR vs HR (MedSRGAN; only when configured)
    ADVERSARIAL_SCALE = "adversarial_scale"  # 0 in warm-up, then the ramp factor up to 1
    D_LOSS = "d_loss"  # the critic's loss of its last step in the iteration
    GRADIENT_PENALTY = "gradient_penalty"
    D_REAL = "d_real"  # mean critic score of the HR sequences
    D_FAKE = "d_fake"  # mean critic score of the SR sequences
    D_ACCURACY = "d_accuracy"  # paired: D(hr_i) > D(sr_i)
    D_ACCURACY_MIDPOINT = "d_accuracy_midpoint"  # both scores on the right side of their batch midpoint


#: the scalars a generator loss (:class:`HybridLoss`) returns, in ``iterations.csv`` order.
G_LOSS_KEYS = (LossKeys.LOSS, LossKeys.MSE, LossKeys.PERCEPTUAL, LossKeys.ADVERSARIAL)
#: the critic statistics of an adversarial iteration, in ``iterations.csv`` order.
D_LOSS_KEYS = (
    LossKeys.D_LOSS, LossKeys.GRADIENT_PENALTY, LossKeys.D_REAL, LossKeys.D_FAKE, LossKeys.D_ACCURACY,
    LossKeys.D_ACCURACY_MIDPOINT,
)  # fmt: skip


def _fold_slices(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, 1, H, W] -> [B*T, 1, H, W]``; ``[N, 1, H, W]`` unchanged."""
    return x.flatten(0, 1) if x.dim() == 5 else x


class PerceptualLoss(nn.Module):
    """MSE between VGG19 features of SR and HR, features multiplied by ``feature_scale`` (SRGAN's 1/12.75).

    Args:
        layer: VGG19 layer (see :data:`~monai_lstmagan.networks.vgg.VGG19_LAYERS`); SRGAN's VGG54 is ``"relu5_4"``.
        weights: ``None`` (random VGG, warned), ``"imagenet"`` or a local state_dict path, see
            :class:`~monai_lstmagan.networks.vgg.VGG19Features`.
        feature_scale: factor applied to the features before the MSE.

    Shapes:
        ``sr, hr``: ``[N, 1, H, W]`` or ``[B, T, 1, H, W]`` in ``[0, 1]`` -> scalar. The HR features are
        computed without gradient.
    """

    def __init__(self, layer: str = "relu5_4", weights: str | None = None, feature_scale: float = 1 / 12.75) -> None:
        super().__init__()
        self.vgg = VGG19Features(layer=layer, weights=weights)
        self.feature_scale = float(feature_scale)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if sr.shape != hr.shape:
            raise ValueError(f"PerceptualLoss: sr {list(sr.shape)} and hr {list(hr.shape)} differ in shape.")
        with torch.no_grad():
            target = self.vgg(_fold_slices(hr)) * self.feature_scale
        return F.mse_loss(self.vgg(_fold_slices(sr)) * self.feature_scale, target)


def _check_discriminator(discriminator: nn.Module, objective: str, allow_batch_norm: bool = True) -> None:
    if getattr(discriminator, "sigmoid", False) and objective in ("WGANGPObjective", "HingeObjective"):
        raise ValueError(f"{objective} needs raw critic values: build the discriminator with sigmoid=False.")
    if not allow_batch_norm and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()):
        raise ValueError(
            "WGANGPObjective: the critic contains BatchNorm, which makes a sample's score depend on the batch "
            "and invalidates the gradient penalty; use norm='none', 'layer' or 'instance'."
        )


class GANObjective:
    """Plain (non-saturating) GAN objective with binary cross-entropy.

    The discriminator should return logits (``sigmoid=False``, BCE-with-logits is used); one built with
    ``sigmoid=True`` returns probabilities and then plain BCE is used on them (clamped away from 0 and 1).

    ``discriminator_loss``: ``BCE(D(real), 1) + BCE(D(fake), 0)``; ``accuracy`` = fraction of real samples
    classified real and fake samples classified fake (logit > 0, i.e. probability > 0.5).
    ``generator_loss``: ``BCE(D(fake), 1)``.
    """

    eps: float = 1e-7

    def _bce(self, discriminator: nn.Module, scores: torch.Tensor, target: float) -> torch.Tensor:
        # float32 outside autocast: CUDA autocast refuses binary_cross_entropy on probabilities
        with torch.autocast(device_type=scores.device.type, enabled=False):
            scores = scores.float()
            targets = torch.full_like(scores, target)
            if getattr(discriminator, "sigmoid", False):
                return F.binary_cross_entropy(scores.clamp(self.eps, 1 - self.eps), targets)
            return F.binary_cross_entropy_with_logits(scores, targets)

    def discriminator_loss(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Args: real, fake ``[B, T, 1, H, W]`` (fake detached by the caller). Returns loss and diagnostics."""
        _check_discriminator(discriminator, type(self).__name__)
        d_real, d_fake = discriminator(real), discriminator(fake)
        loss = self._bce(discriminator, d_real, 1.0) + self._bce(discriminator, d_fake, 0.0)
        threshold = 0.5 if getattr(discriminator, "sigmoid", False) else 0.0
        with torch.no_grad():
            accuracy = torch.cat([d_real > threshold, d_fake < threshold]).float().mean()
        return {
            "loss": loss,
            "d_real": d_real.detach().float().mean(),
            "d_fake": d_fake.detach().float().mean(),
            "gradient_penalty": torch.zeros((), device=loss.device),
            "accuracy": accuracy,
        }

    def state_dict(self) -> dict:
        """No state (the same interface as :meth:`WGANGPObjective.state_dict`, so checkpoints can hold any objective)."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore."""

    def generator_loss(self, discriminator: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating adversarial loss for G, ``fake`` ``[B, T, 1, H, W]`` with gradient -> scalar."""
        return self._bce(discriminator, discriminator(fake), 1.0)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty ``mean_i (||grad_x critic(x_i)|| - 1)^2`` on random interpolates (Gulrajani et al. 2017).

    * one mixing weight ``alpha_i ~ U(0, 1)`` per sample, broadcast over all of its other dims
      (``x_i = alpha_i * real_i + (1 - alpha_i) * fake_i``);
    * the gradient norm is taken over ALL non-batch dims, ``grad.flatten(1).norm(dim=1)`` (a per-pixel norm
      over the channel dim is a known bug of public code: it is not the critic's Lipschitz constant);
    * computed in float32 with autocast disabled, with ``create_graph=True`` so that the penalty can be
      back-propagated into the critic's weights;
    * on CUDA the critic runs with cuDNN disabled: cuDNN's LSTM has no double backward;
    * the critic is used in the mode the caller left it in (train mode during the critic step).

    Args:
        critic: maps ``[B, ...]`` to scores ``[B]``.
        real, fake: ``[B, ...]`` of the same shape (e.g. ``[B, T, 1, H, W]``); gradients to them are not tracked.

    Returns:
        Unweighted scalar penalty (float32); multiply by lambda (10) in the critic loss.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {list(real.shape)} and fake {list(fake.shape)} differ in shape.")
    device_type = real.device.type
    cudnn_off = torch.backends.cudnn.flags(enabled=False) if device_type == "cuda" else contextlib.nullcontext()
    with torch.autocast(device_type=device_type, enabled=False), cudnn_off:
        real32, fake32 = real.detach().float(), fake.detach().float()
        alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device)
        mixed = (alpha * real32 + (1 - alpha) * fake32).requires_grad_(True)
        scores = critic(mixed).float()
        (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


class WGANGPObjective:
    """Wasserstein GAN objective with gradient penalty (critic without BatchNorm and without sigmoid).

    ``discriminator_loss``: ``mean D(fake) - mean D(real) + gp_weight * gradient_penalty``; the returned
    ``"gradient_penalty"`` is the unweighted penalty. Critic values have no fixed zero, so there are two
    accuracies: ``accuracy`` (paired) is the fraction of samples ``i`` with ``D(real_i) > D(fake_i)``: in SR
    training ``fake_i`` is the super-resolution of the same crop as ``real_i``, so this asks whether the critic
    ranks each HR sequence above its own SR, independent of how much anatomy the crop holds;
    ``accuracy_midpoint`` is the fraction of real samples scored above, and fake samples below, the batch
    midpoint ``(mean D(real) + mean D(fake)) / 2``, which content differences between crops (air vs tissue)
    dominate. ``generator_loss``: ``-mean D(fake)``.

    Lazy regularisation (StyleGAN2): with ``gp_interval = k > 1`` the penalty is computed on every k-th
    critic step only, with weight ``k * gp_weight``, so its average pull is unchanged while the expensive
    double backward (through the LSTM) runs ``k`` times less often; the other steps report the last
    computed penalty.

    Args:
        gp_weight: lambda of the gradient penalty (10 in WGAN-GP).
        gp_interval: compute the penalty every ``gp_interval`` critic steps (1: every step, as in WGAN-GP).
    """

    def __init__(self, gp_weight: float = 10.0, gp_interval: int = 1) -> None:
        if int(gp_interval) < 1:
            raise ValueError(f"WGANGPObjective: gp_interval must be >= 1, got {gp_interval}.")
        self.gp_weight = float(gp_weight)
        self.gp_interval = int(gp_interval)
        self.critic_steps = 0
        self._last_penalty: torch.Tensor | None = None

    def discriminator_loss(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Args: real, fake ``[B, T, 1, H, W]`` (fake detached by the caller). Returns loss and diagnostics."""
        _check_discriminator(discriminator, type(self).__name__, allow_batch_norm=False)
        d_real, d_fake = discriminator(real).float(), discriminator(fake).float()
        loss = d_fake.mean() - d_real.mean()
        if self.critic_steps % self.gp_interval == 0 or self._last_penalty is None:
            penalty = gradient_penalty(discriminator, real, fake)
            loss = loss + self.gp_weight * self.gp_interval * penalty
            self._last_penalty = penalty.detach()
        self.critic_steps += 1
        penalty = self._last_penalty
        with torch.no_grad():
            midpoint = (d_real.mean() + d_fake.mean()) / 2
            accuracy_midpoint = torch.cat([d_real > midpoint, d_fake < midpoint]).float().mean()
            accuracy = (d_real > d_fake).float().mean()
        return {
            "loss": loss,
            "d_real": d_real.detach().mean(),
            "d_fake": d_fake.detach().mean(),
            "gradient_penalty": penalty.detach(),
            "accuracy": accuracy,
            "accuracy_midpoint": accuracy_midpoint,
        }

    def state_dict(self) -> dict:
        """The lazy-penalty schedule (critic steps so far, last penalty), for exact resume from a checkpoint."""
        last = torch.tensor(float("nan")) if self._last_penalty is None else self._last_penalty.detach().cpu()
        return {"critic_steps": self.critic_steps, "last_penalty": last}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.critic_steps = int(state_dict["critic_steps"])
        last = torch.as_tensor(state_dict["last_penalty"])
        self._last_penalty = None if torch.isnan(last) else last

    def generator_loss(self, discriminator: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """``-mean critic(fake)``, ``fake`` ``[B, T, 1, H, W]`` with gradient -> scalar."""
        return -discriminator(fake).float().mean()


class HingeObjective:
    """Hinge GAN objective (Lim & Ye 2017; SAGAN, BigGAN), usually with a spectrally normalised critic (the critics'
    ``spectral_norm=True``, e.g. ``--lstm_critic_kwargs#spectral_norm True``) in place of a gradient penalty.

    ``discriminator_loss``: ``mean relu(1 - D(real)) + mean relu(1 + D(fake))``: the critic stops pushing a sample
    once it is beyond the margin, so its scores stay bounded without a penalty. ``accuracy`` is paired as in
    :class:`WGANGPObjective` (``D(real_i) > D(fake_i)``), ``accuracy_midpoint`` the fraction on the right side of 0.
    ``generator_loss``: ``-mean D(fake)``.
    """

    def discriminator_loss(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Args: real, fake ``[B, T, 1, H, W]`` (fake detached by the caller). Returns loss and diagnostics."""
        _check_discriminator(discriminator, type(self).__name__)
        d_real, d_fake = discriminator(real).float(), discriminator(fake).float()
        loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        with torch.no_grad():
            accuracy = (d_real > d_fake).float().mean()
            accuracy_midpoint = torch.cat([d_real > 0, d_fake < 0]).float().mean()
        return {
            "loss": loss,
            "d_real": d_real.detach().mean(),
            "d_fake": d_fake.detach().mean(),
            "gradient_penalty": torch.zeros((), device=loss.device),
            "accuracy": accuracy,
            "accuracy_midpoint": accuracy_midpoint,
        }

    def state_dict(self) -> dict:
        """No state (the interface of :meth:`WGANGPObjective.state_dict`)."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore."""

    def generator_loss(self, discriminator: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """``-mean D(fake)``, ``fake`` ``[B, T, 1, H, W]`` with gradient -> scalar."""
        return -discriminator(fake).float().mean()


OBJECTIVES = {"gan": GANObjective, "wgan_gp": WGANGPObjective, "hinge": HingeObjective}


def make_objective(name: str, **kwargs) -> GANObjective | WGANGPObjective | HingeObjective:
    """Objective by name: ``"gan"`` -> :class:`GANObjective`, ``"wgan_gp"`` -> :class:`WGANGPObjective(**kwargs)`,
    ``"hinge"`` -> :class:`HingeObjective`."""
    if name not in OBJECTIVES:
        raise ValueError(f"make_objective: unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}.")
    return OBJECTIVES[name](**kwargs)


def log_perceptual_setting(vgg_weights: str | None, perceptual_weight: float) -> None:
    """Say in the log what the perceptual term is, so that it is never silently absent.

    Without pretrained VGG19 weights the term is off by default (on random weights the term is ~1e-7, nothing but
    cost; docs/training.md); forcing a weight on random weights is warned.
    """
    log = logging.getLogger("monai_lstmagan")
    if vgg_weights:
        return
    if perceptual_weight == 0:
        log.warning(
            "perceptual loss OFF (weight 0): no pretrained VGG19 weights (vgg_weights is null), and on random "
            "weights the term is ~1e-7, i.e. absent. Set --vgg_weights imagenet or a local vgg19 state_dict file."
        )
    else:
        log.warning(
            "perceptual loss on RANDOM VGG19 weights (vgg_weights is null): set --vgg_weights imagenet or a local "
            "vgg19 state_dict file for a meaningful perceptual loss"
        )


class HybridLoss(nn.Module):
    """Generator loss ``content_weight * MSE + perceptual_weight * perceptual + adversarial_weight * adversarial``
    ``+ adversarial_feature_weight * adversarial_feature``.

    Args:
        perceptual: a :class:`PerceptualLoss`, or ``None`` to leave the perceptual term out (reported as 0).
        content_weight: weight of the pixel MSE (content loss).
        perceptual_weight: weight of the perceptual loss (SRGAN: 6e-3).
        adversarial_weight: weight of the adversarial loss (SRGAN: 1e-3).
        adversarial_feature_weight: weight of the critic-feature loss (:class:`DiscriminatorFeatureLoss`, MedSRGAN's
            adversarial feature loss); it only counts when the trainer computes the term (its
            ``feature_loss_function``).

    ``forward(sr, hr, adversarial=None, adversarial_feature=None)``: ``sr, hr`` ``[N, 1, H, W]`` or
    ``[B, T, 1, H, W]``; ``adversarial`` is the objective's ``generator_loss`` and ``adversarial_feature`` the
    critic-feature loss (``None`` -> 0, e.g. MSE pretraining). Returns a dict of scalars ``"loss"`` (weighted sum),
    ``"mse"``, ``"perceptual"``, ``"adversarial"`` (unweighted parts), and ``"adversarial_feature"`` (unweighted)
    when it was given.
    """

    def __init__(
        self,
        perceptual: PerceptualLoss | None = None,
        content_weight: float = 1.0,
        perceptual_weight: float = 6e-3,
        adversarial_weight: float = 1e-3,
        adversarial_feature_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.perceptual = perceptual
        self.content_weight = float(content_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.adversarial_feature_weight = float(adversarial_feature_weight)

    def forward(
        self,
        sr: torch.Tensor,
        hr: torch.Tensor,
        adversarial: torch.Tensor | None = None,
        adversarial_feature: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if sr.shape != hr.shape:
            raise ValueError(f"HybridLoss: sr {list(sr.shape)} and hr {list(hr.shape)} differ in shape.")
        mse = F.mse_loss(sr.float(), hr.float())
        zero = torch.zeros((), device=mse.device)
        perceptual = self.perceptual(sr, hr) if self.perceptual is not None else zero
        adversarial = adversarial.float() if adversarial is not None else zero
        loss = self.content_weight * mse + self.perceptual_weight * perceptual + self.adversarial_weight * adversarial
        losses = {
            LossKeys.LOSS: loss, LossKeys.MSE: mse, LossKeys.PERCEPTUAL: perceptual, LossKeys.ADVERSARIAL: adversarial
        }  # fmt: skip
        if adversarial_feature is not None:
            adversarial_feature = adversarial_feature.float()
            losses[LossKeys.LOSS] = loss + self.adversarial_feature_weight * adversarial_feature
            losses[LossKeys.ADVERSARIAL_FEATURE] = adversarial_feature
        return losses


class DiscriminatorFeatureLoss:
    """MedSRGAN's adversarial feature loss: L1 between the critic's intermediate features of SR and HR.

    ``mean_l mean |phi_l(sr) - phi_l(hr)|`` over the feature maps ``phi_l`` that ``discriminator.features`` returns
    (:meth:`~monai_lstmagan.networks.ConvDiscriminator.features`: the end of every stride-2 stage); the HR features
    are computed without gradient, so the term pulls SR towards HR in the critic's feature space (pix2pixHD's
    feature matching). The trainer calls it with the critic's weights frozen (its ``feature_loss_function``).

    ``__call__(discriminator, sr, hr)``: ``sr`` (with gradient), ``hr`` ``[B, T, 1, H, W]`` -> scalar (float32).
    """

    def __call__(self, discriminator: nn.Module, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if not hasattr(discriminator, "features"):
            raise ValueError(
                f"DiscriminatorFeatureLoss needs a critic with a features() method (ConvDiscriminator), "
                f"got {type(discriminator).__name__}."
            )
        fake = discriminator.features(sr)
        with torch.no_grad():
            real = discriminator.features(hr)
        return torch.stack([F.l1_loss(f.float(), r.float()) for f, r in zip(fake, real)]).mean()
