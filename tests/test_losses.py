"""Tests of the LSTMAGAN losses: gradient penalty, GAN / WGAN-GP objectives, perceptual and hybrid losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_lstmagan.losses import (
    GANObjective,
    HingeObjective,
    HybridLoss,
    PerceptualLoss,
    WGANGPObjective,
    gradient_penalty,
    make_objective,
)
from monai_lstmagan.networks import ConvDiscriminator, LSTMAGANGenerator, LSTMDiscriminator

SHAPE = (3, 4, 1, 6, 5)  # [B, T, 1, H, W]
TINY_LSTM_D = {"num_slices": 4, "encoder_channels": (8, 16), "hidden_size": 16}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class LinearCritic(nn.Module):
    """score_i = <w, x_i.flatten()>: its gradient w.r.t. each sample is w, whose norm is the Lipschitz constant."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.flatten().clone())
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return x.flatten(1) @ self.weight


def _unit_weight() -> torch.Tensor:
    w = torch.randn(SHAPE[1:])
    return w / w.norm()


def _per_pixel_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The known bug: the gradient norm taken over the channel dim only, i.e. per pixel."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, 1)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.norm(2, dim=2) - 1) ** 2).mean()


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic_and_not_per_pixel():
    real, fake = torch.rand(SHAPE), torch.rand(SHAPE)
    critic = LinearCritic(_unit_weight())
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    # the same critic looks far from 1-Lipschitz to the per-pixel norm, so the assertion above rejects it
    assert _per_pixel_penalty(critic, real, fake).item() > 0.5


def test_gradient_penalty_is_positive_otherwise():
    real, fake = torch.rand(SHAPE), torch.rand(SHAPE)
    assert gradient_penalty(LinearCritic(2 * _unit_weight()), real, fake).item() == pytest.approx(1.0, rel=1e-5)
    assert gradient_penalty(LinearCritic(0.5 * _unit_weight()), real, fake).item() == pytest.approx(0.25, rel=1e-5)
    assert gradient_penalty(LSTMDiscriminator(**TINY_LSTM_D), real, fake).item() > 0


def test_gradient_penalty_mixes_with_one_alpha_per_sample():
    real, fake = torch.rand(SHAPE), torch.rand(SHAPE)
    critic = LinearCritic(_unit_weight())
    gradient_penalty(critic, real, fake)
    alpha = (critic.inputs[-1] - fake) / (real - fake)
    per_sample = alpha.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample), rtol=1e-4, atol=1e-4)
    assert ((per_sample >= 0) & (per_sample <= 1)).all()
    assert per_sample[:, 0].unique().numel() == SHAPE[0]  # a different weight for every sample


def test_gradient_penalty_runs_in_fp32_under_autocast_and_keeps_train_mode():
    critic = ConvDiscriminator(channels=(4,), fc_features=4)
    dtypes = []
    critic.net[0].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    real, fake = torch.rand(SHAPE), torch.rand(SHAPE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        critic(real)
        penalty = gradient_penalty(critic, real.bfloat16(), fake.bfloat16())
    assert dtypes == [torch.bfloat16, torch.float32]  # autocast is really on outside, off inside
    assert penalty.dtype == torch.float32
    assert critic.training


def test_gradient_penalty_backpropagates_into_the_lstm_critic():
    critic = LSTMDiscriminator(**TINY_LSTM_D)
    gradient_penalty(critic, torch.rand(SHAPE), torch.rand(SHAPE)).backward()  # double backward through the LSTM
    for name, parameter in critic.named_parameters():
        if name == "score.bias":  # a constant offset of the score does not change its input gradient
            assert parameter.grad is None
            continue
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN LSTM has no double backward)")
def test_gradient_penalty_lstm_critic_on_cuda_with_amp():
    critic = LSTMDiscriminator(**TINY_LSTM_D).cuda()
    real, fake = torch.rand(SHAPE, device="cuda"), torch.rand(SHAPE, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        losses = WGANGPObjective().discriminator_loss(critic, real, fake)
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in critic.parameters())
    assert losses["gradient_penalty"].dtype == torch.float32


def _assert_generator_loss_is_minus_the_mean_score(objective, critic: nn.Module, fake: torch.Tensor) -> None:
    """``generator_loss = -mean critic(fake)``, and it sends a gradient to ``fake``."""
    fake_g = fake.clone().requires_grad_(True)
    g_loss = objective.generator_loss(critic, fake_g)
    torch.testing.assert_close(g_loss, -critic(fake).mean())
    g_loss.backward()
    assert fake_g.grad is not None and fake_g.grad.abs().sum() > 0


def test_wgan_gp_objective_losses_and_guards():
    real, fake = torch.rand(SHAPE), torch.rand(SHAPE)
    critic = LinearCritic(_unit_weight())  # penalty 0, so the loss is the Wasserstein estimate alone
    objective = WGANGPObjective(gp_weight=10.0)
    out = objective.discriminator_loss(critic, real, fake)
    assert set(out) == {"loss", "d_real", "d_fake", "gradient_penalty", "accuracy", "accuracy_midpoint"}
    d_real, d_fake = critic(real), critic(fake)
    torch.testing.assert_close(out["loss"], d_fake.mean() - d_real.mean(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["d_real"], d_real.mean().detach())
    midpoint = (d_real.mean() + d_fake.mean()) / 2
    expected_midpoint = torch.cat([d_real > midpoint, d_fake < midpoint]).float().mean()
    torch.testing.assert_close(out["accuracy_midpoint"], expected_midpoint)
    torch.testing.assert_close(out["accuracy"], (d_real > d_fake).float().mean())  # paired: real_i vs its fake_i
    steep = LinearCritic(3 * _unit_weight())
    out = objective.discriminator_loss(steep, real, fake)
    torch.testing.assert_close(out["gradient_penalty"], torch.tensor(4.0), rtol=1e-5, atol=1e-5)
    expected = (steep(fake).mean() - steep(real).mean() + 40.0).detach()
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-4)
    _assert_generator_loss_is_minus_the_mean_score(objective, critic, fake)

    with pytest.raises(ValueError, match="BatchNorm"):
        objective.discriminator_loss(ConvDiscriminator(channels=(4,), fc_features=4, norm="batch"), real, fake)
    with pytest.raises(ValueError, match="sigmoid=False"):
        objective.discriminator_loss(LSTMDiscriminator(sigmoid=True, **TINY_LSTM_D), real, fake)


def test_hinge_objective_margins_accuracy_and_generator_loss():
    """The critic loss counts only scores inside the margin (real below +1, fake above -1)."""
    real, fake = torch.rand(SHAPE), torch.rand(SHAPE)
    critic = FixedScores()  # scores 4 * (mean - 0.5): some inside the margin, some beyond
    objective = make_objective("hinge")
    assert isinstance(objective, HingeObjective) and objective.state_dict() == {}
    out = objective.discriminator_loss(critic, real, fake)
    d_real, d_fake = critic(real), critic(fake)
    expected = (1 - d_real).clamp(min=0).mean() + (1 + d_fake).clamp(min=0).mean()
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["accuracy"], (d_real > d_fake).float().mean())
    beyond = objective.discriminator_loss(critic, torch.ones(SHAPE), torch.zeros(SHAPE))  # scores +2 and -2
    assert beyond["loss"].item() == 0.0 and beyond["accuracy"].item() == 1.0 and beyond["accuracy_midpoint"] == 1.0
    _assert_generator_loss_is_minus_the_mean_score(objective, critic, fake)
    with pytest.raises(ValueError, match="HingeObjective needs raw critic values"):
        objective.discriminator_loss(FixedScores(sigmoid=True), real, fake)


class FixedScores(nn.Module):
    """Scores real-looking (mean > 0.5) sequences positive: mean intensity - 0.5, times a gain."""

    def __init__(self, sigmoid: bool = False) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(4.0))
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.gain * (x.flatten(1).mean(1) - 0.5)
        return torch.sigmoid(logits) if self.sigmoid else logits


def test_gan_objective_bce_accuracy_and_sigmoid_discriminators():
    real, fake = 0.5 + 0.5 * torch.rand(SHAPE), 0.5 * torch.rand(SHAPE)
    real[0] = 0.2  # one real sample that the discriminator calls fake
    objective = GANObjective()
    logits_d = FixedScores()
    out = objective.discriminator_loss(logits_d, real, fake)
    d_real, d_fake = logits_d(real), logits_d(fake)
    expected = F.binary_cross_entropy_with_logits(d_real, torch.ones(3)) + F.binary_cross_entropy_with_logits(
        d_fake, torch.zeros(3)
    )
    torch.testing.assert_close(out["loss"], expected)
    assert out["accuracy"].item() == pytest.approx(5 / 6)
    assert out["gradient_penalty"].item() == 0.0
    # a discriminator with sigmoid=True returns probabilities: same loss and accuracy
    out_prob = objective.discriminator_loss(FixedScores(sigmoid=True), real, fake)
    torch.testing.assert_close(out_prob["loss"], out["loss"], rtol=1e-5, atol=1e-6)
    assert out_prob["accuracy"].item() == pytest.approx(5 / 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_amp = objective.discriminator_loss(FixedScores(sigmoid=True), real, fake)
    assert out_amp["loss"].dtype == torch.float32
    g_loss = objective.generator_loss(logits_d, fake)
    torch.testing.assert_close(g_loss, F.binary_cross_entropy_with_logits(d_fake, torch.ones(3)))
    assert isinstance(make_objective("gan"), GANObjective)
    assert make_objective("wgan_gp", gp_weight=5.0).gp_weight == 5.0
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("lsgan")


def test_perceptual_loss():
    loss = PerceptualLoss(layer="relu2_2", feature_scale=1.0)
    hr = torch.rand(2, 3, 1, 16, 16)
    assert loss(hr, hr).item() == 0.0
    sr = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
    value = loss(sr, hr)
    assert value.item() > 0
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    # the features are scaled before the MSE, so the loss scales with feature_scale**2 (SRGAN: 1/12.75)
    scaled = PerceptualLoss(layer="relu2_2", feature_scale=1 / 12.75)
    scaled.load_state_dict(loss.state_dict())
    torch.testing.assert_close(scaled(sr, hr) * 12.75**2, value)
    torch.testing.assert_close(loss(sr.flatten(0, 1), hr.flatten(0, 1)), value)  # [N, 1, H, W] == folded sequence
    with pytest.raises(ValueError, match="differ in shape"):
        loss(sr, hr[:, :2])


def test_hybrid_loss_weights_and_parts():
    hr = torch.rand(2, 4, 1, 16, 16)
    sr = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
    perceptual = PerceptualLoss(layer="relu1_2")
    adversarial = torch.tensor(0.7)
    hybrid = HybridLoss(perceptual, content_weight=1.0, perceptual_weight=6e-3, adversarial_weight=1e-3)
    out = hybrid(sr, hr, adversarial)
    assert set(out) == {"loss", "mse", "perceptual", "adversarial"}
    torch.testing.assert_close(out["mse"], F.mse_loss(sr, hr))
    torch.testing.assert_close(out["perceptual"], perceptual(sr, hr))
    torch.testing.assert_close(out["loss"], out["mse"] + 6e-3 * out["perceptual"] + 1e-3 * 0.7)
    other = HybridLoss(perceptual, content_weight=2.0, perceptual_weight=0.5, adversarial_weight=3.0)
    other = other(sr, hr, adversarial)
    torch.testing.assert_close(other["loss"], 2 * out["mse"] + 0.5 * out["perceptual"] + 3 * 0.7)
    mse_only = HybridLoss()(sr, hr)
    assert mse_only["perceptual"].item() == 0.0 and mse_only["adversarial"].item() == 0.0
    torch.testing.assert_close(mse_only["loss"], out["mse"])


def test_one_adversarial_step_updates_generator_and_critic():
    # SRResNet output: the bicubic residual's zero tail would hold the body's gradient at 0 in this first step
    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, dense_layers=2, growth=4, residual="none")
    critic = LSTMDiscriminator(**TINY_LSTM_D)
    objective, hybrid = WGANGPObjective(), HybridLoss(PerceptualLoss(layer="relu1_2"))
    lr, hr = torch.rand(2, 4, 1, 8, 8), torch.rand(2, 4, 1, 16, 16)
    sr = generator(lr)
    objective.discriminator_loss(critic, hr, sr.detach())["loss"].backward()
    assert all(p.grad is not None for p in critic.parameters())
    assert all(p.grad is None for p in generator.parameters())  # fake was detached
    critic.zero_grad()
    losses = hybrid(sr, hr, objective.generator_loss(critic, sr))
    losses["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())


def test_paired_accuracy_ignores_content_offsets_that_the_midpoint_accuracy_cannot():
    """Crops differ in content (air vs tissue) far more than HR differs from its SR: the paired accuracy sees
    that the critic ranks every HR above its own SR, the midpoint accuracy is at chance."""

    class OffsetCritic(nn.Module):
        def forward(self, x):
            return x.flatten(1).mean(1)

    content = torch.tensor([0.0, 10.0, 0.0]).reshape(3, 1, 1, 1, 1)
    real = content + torch.full(SHAPE, 0.1)
    fake = content + torch.zeros(SHAPE)
    out = WGANGPObjective().discriminator_loss(OffsetCritic(), real, fake)
    assert out["accuracy"].item() == 1.0
    assert out["accuracy_midpoint"].item() == 0.5


def test_lazy_gradient_penalty_every_k_steps_with_k_times_the_weight():
    real, fake = torch.rand(SHAPE), torch.rand(SHAPE)
    steep = LinearCritic(3 * _unit_weight())  # penalty (3 - 1)^2 = 4
    objective = WGANGPObjective(gp_weight=10.0, gp_interval=3)
    wasserstein = (steep(fake).mean() - steep(real).mean()).detach()
    losses = [objective.discriminator_loss(steep, real, fake) for _ in range(6)]
    for step, out in enumerate(losses):
        expected = wasserstein + (3 * 10.0 * 4.0 if step % 3 == 0 else 0.0)
        torch.testing.assert_close(out["loss"].detach(), expected, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(out["gradient_penalty"], torch.tensor(4.0), rtol=1e-5, atol=1e-5)  # last computed
    with pytest.raises(ValueError, match="gp_interval"):
        WGANGPObjective(gp_interval=0)
