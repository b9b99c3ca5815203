"""AdversarialTrainer: who gets updated when, the loss dict, resume and determinism (tiny CPU sizes)."""

from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader
from monai.utils import set_determinism

from monai_lstmagan.engines import AdversarialTrainer, SliceStackInferer, loss_values, prepare_sr_batch
from monai_lstmagan.handlers import AtomicCheckpointSaver
from monai_lstmagan.losses import GANObjective, HingeObjective, HybridLoss, LossKeys, PerceptualLoss, WGANGPObjective
from monai_lstmagan.networks import LSTMAGANGenerator, LSTMDiscriminator

T, H = 4, 16  # slices per sequence, HR size


def make_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"hr": torch.rand(2, T, 1, H, H, generator=g), "lr": torch.rand(2, T, 1, H // 2, H // 2, generator=g)}
        for _ in range(n)
    ]


def make_trainer(data, max_epochs: int = 1, objective=None, perceptual: bool = False, **kwargs) -> AdversarialTrainer:
    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, dense_layers=2, growth=4)
    critic = LSTMDiscriminator(num_slices=T, encoder_channels=(8,), hidden_size=8)
    loss = HybridLoss(PerceptualLoss(layer="relu1_2") if perceptual else None)
    return AdversarialTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=data,
        network=generator,
        optimizer=torch.optim.Adam(generator.parameters(), 1e-3),
        loss_function=loss,
        d_network=critic,
        d_optimizer=torch.optim.Adam(critic.parameters(), 1e-3),
        objective=objective or WGANGPObjective(),
        **kwargs,
    )


def count_steps(optimizer: torch.optim.Optimizer) -> list[int]:
    steps = [0]
    optimizer.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    return steps


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


@pytest.mark.parametrize(
    "objective", [WGANGPObjective(), GANObjective(), HingeObjective()], ids=["wgan_gp", "gan", "hinge"]
)
def test_one_iteration_updates_generator_and_discriminator(objective):
    trainer = make_trainer(make_batches(1), objective=objective, perceptual=True)
    g_before, d_before = params(trainer.network), params(trainer.d_network)
    trainer.run()
    assert trainer.state.iteration == 1
    assert changed(g_before, trainer.network) and changed(d_before, trainer.d_network)
    values = loss_values(trainer.state.output)
    critic_values = isinstance(objective, (WGANGPObjective, HingeObjective))
    wgan_only = set() if critic_values else {"d_accuracy_midpoint"}  # critic values only
    configured_only = {LossKeys.ADVERSARIAL_FEATURE}  # only with a feature_loss_function (MedSRGAN)
    assert set(LossKeys) - wgan_only - configured_only <= set(values)
    assert LossKeys.ADVERSARIAL_FEATURE not in values
    assert values["perceptual"] > 0 and values["d_loss"] != 0
    assert 0.0 <= values["d_accuracy"] <= 1.0 and values["adversarial_scale"] == 1.0
    if isinstance(objective, WGANGPObjective):
        assert values["gradient_penalty"] > 0
    assert trainer.state.output["pred"].shape == (2, T, 1, H, H) and not trainer.state.output["pred"].requires_grad


def test_n_critic_discriminator_steps_per_generator_step():
    trainer = make_trainer(make_batches(2), n_critic=3)
    g_steps, d_steps = count_steps(trainer.optimizer), count_steps(trainer.d_optimizer)
    trainer.run()
    assert (g_steps[0], d_steps[0]) == (2, 6)


def test_warmup_trains_generator_only_then_ramps_adversarial_weight():
    trainer = make_trainer(make_batches(5), warmup_iterations=2, adversarial_ramp_iterations=2)
    g_steps, d_steps = count_steps(trainer.optimizer), count_steps(trainer.d_optimizer)
    d_before = params(trainer.d_network)
    seen: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(loss_values(e.state.output)))
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=2), lambda e: seen.append({"d_unchanged": not changed(d_before, e.d_network)})
    )
    trainer.run()
    assert seen[2] == {"d_unchanged": True}
    assert "d_loss" not in seen[0] and "d_loss" not in seen[1] and seen[0]["adversarial"] == 0.0
    assert [s["adversarial_scale"] for s in seen if "adversarial_scale" in s] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert (g_steps[0], d_steps[0]) == (5, 3)


def test_warmup_uses_the_configured_warmup_loss_then_the_full_loss():
    """The warm-up loss is a configured callable: an L1 warm-up is what G minimises until the critic starts."""
    calls: list[str] = []

    def l1_warmup(sr, hr):
        calls.append("warmup")
        l1 = (sr - hr).abs().mean()
        zero = torch.zeros(())
        return {LossKeys.LOSS: l1, LossKeys.MSE: l1, LossKeys.PERCEPTUAL: zero, LossKeys.ADVERSARIAL: zero}

    trainer = make_trainer(make_batches(3), warmup_iterations=2, warmup_loss_function=l1_warmup)
    full_loss = trainer.loss_function
    trainer.loss_function = lambda *args: calls.append("full") or full_loss(*args)
    seen: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(loss_values(e.state.output)))
    trainer.run()
    assert calls == ["warmup", "warmup", "full"]
    assert seen[0]["mse"] > 0 and "d_loss" not in seen[1] and "d_loss" in seen[2]


def test_default_warmup_loss_is_the_pixel_mse():
    trainer = make_trainer(make_batches(1), warmup_iterations=1, perceptual=True)
    trainer.run()
    values = loss_values(trainer.state.output)
    sr, hr = trainer.state.output["pred"], trainer.state.output["label"]
    assert values["loss"] == pytest.approx(torch.nn.functional.mse_loss(sr, hr).item(), rel=1e-5)
    assert values["perceptual"] == 0.0 and values["adversarial"] == 0.0


def test_mse_only_without_discriminator():
    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, dense_layers=2, growth=4)
    trainer = AdversarialTrainer(
        "cpu", 1, make_batches(2), generator, torch.optim.Adam(generator.parameters()), HybridLoss(None)
    )
    trainer.run()
    values = loss_values(trainer.state.output)
    assert values["loss"] == pytest.approx(values["mse"]) and "d_loss" not in values


def test_resume_continues_at_saved_iteration_with_identical_optimizer_state(tmp_path):
    data = make_batches(3)
    first = make_trainer(data, max_epochs=2)
    save_dict = {
        "network": first.network, "d_network": first.d_network, "optimizer": first.optimizer,
        "d_optimizer": first.d_optimizer, "trainer": first,
    }  # fmt: skip
    AtomicCheckpointSaver(str(tmp_path), save_dict, save_interval=4, epoch_level=False, n_saved=2).attach(first)
    snapshot: dict = {}
    first.add_event_handler(
        Events.ITERATION_COMPLETED(once=4),
        lambda e: snapshot.update(
            g=copy.deepcopy(e.optimizer.state_dict()), d=copy.deepcopy(e.d_optimizer.state_dict()),
            weights=copy.deepcopy(e.network.state_dict()),
        ),
    )  # fmt: skip
    first.run()
    checkpoint = tmp_path / "checkpoint_iteration=4.pt"
    assert checkpoint.is_file()

    second = make_trainer(data, max_epochs=2)
    load_dict = {
        "network": second.network, "d_network": second.d_network, "optimizer": second.optimizer,
        "d_optimizer": second.d_optimizer, "trainer": second,
    }  # fmt: skip
    CheckpointLoader(str(checkpoint), load_dict).attach(second)
    iterations: list[int] = []
    restored: dict = {}

    def check_restored(engine):
        restored.update(g=engine.optimizer.state_dict(), d=engine.d_optimizer.state_dict())
        restored.update(weights=engine.network.state_dict(), iteration=engine.state.iteration)
        restored.update(copy.deepcopy(restored))  # training goes on in place after STARTED

    second.add_event_handler(Events.STARTED, check_restored)
    second.add_event_handler(Events.ITERATION_STARTED, lambda e: iterations.append(e.state.iteration))
    second.run()
    assert restored["iteration"] == 4
    for key in ("g", "d"):
        assert restored[key]["param_groups"] == snapshot[key]["param_groups"]
        for idx, state in snapshot[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(restored[key]["state"][idx][name], value), (key, idx, name)
    for name, value in snapshot["weights"].items():
        assert torch.equal(restored["weights"][name], value), name
    assert iterations == [5, 6]  # the rest of epoch 2, nothing repeated or skipped


def test_same_seed_same_first_losses():
    def first_losses() -> list[dict]:
        set_determinism(seed=7)
        trainer = make_trainer(make_batches(2, seed=1), warmup_iterations=1)
        out: list[dict] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: out.append(loss_values(e.state.output)))
        trainer.run()
        return out

    try:
        assert first_losses() == first_losses()
    finally:
        set_determinism(seed=None)


def test_amp_request_on_cpu_falls_back_to_float32():
    with pytest.warns(UserWarning, match="AMP is only used on CUDA"):
        trainer = make_trainer(make_batches(1), amp=True, amp_dtype="bfloat16")
    assert not trainer.amp and not trainer.g_scaler.is_enabled()
    with pytest.raises(ValueError, match="amp_dtype"):
        make_trainer(make_batches(1), amp_dtype="int8")
    with pytest.raises(ValueError, match="n_critic"):
        make_trainer(make_batches(1), n_critic=0)


def test_slice_stack_inferer_and_prepare_batch():
    network = torch.nn.Upsample(scale_factor=2)
    x = torch.rand(1, 5, 1, 4, 4)
    out = SliceStackInferer(slice_batch_size=2)(x, network)
    assert out.shape == (1, 5, 1, 8, 8) and torch.equal(out, network(x[0]).unsqueeze(0))
    lr, hr = prepare_sr_batch({"lr": x, "hr": out}, "cpu")
    assert type(lr) is torch.Tensor and torch.equal(hr, out)
    with pytest.raises(KeyError, match="'lr'"):
        prepare_sr_batch({"hr": out})
