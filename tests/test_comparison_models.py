"""The comparison models of the field (FRDAGAN, FA-GAN, MedSRGAN): generators, FA-GAN's spectrally normalised
critic, MedSRGAN's critic-feature loss, checkpoints, and a short bundle run of each overlay through lstmagan-sr."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from volume_factory import mr_volume

from monai_lstmagan.bench.complexity import COMPARISON_CONFIGS, count_flops, generator_complexity_table
from monai_lstmagan.bench.complexity import main as complexity_main
from monai_lstmagan.checkpoints import latest_checkpoint, load_generator, save_generator
from monai_lstmagan.cli import main as lstmagan_sr
from monai_lstmagan.engines import LSTMAGANTrainer as AdversarialTrainer
from monai_lstmagan.losses import DiscriminatorFeatureLoss, HybridLoss, LossKeys, WGANGPObjective
from monai_lstmagan.networks import (
    GENERATORS,
    ConvDiscriminator,
    FAGANGenerator,
    FRDAGANGenerator,
    LSTMAGANGenerator,
    MedSRGANGenerator,
    bicubic_upsample_slices,
    build_generator,
)
from monai_lstmagan.networks.fa_gan import SelfAttention
from monai_lstmagan.networks.medsrgan import ResidualWholeMapAttentionBlock

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"

TINY = {
    "frdagan": {"num_blocks": 1, "channels": 8, "dense_blocks": 2, "dense_layers": 2, "growth": 4},
    "fa_gan": {"num_blocks": 1, "channels": 8},
    "medsrgan": {"num_groups": 1, "blocks_per_group": 2, "channels": 8},
}
CLASSES = {"frdagan": FRDAGANGenerator, "fa_gan": FAGANGenerator, "medsrgan": MedSRGANGenerator}


def tiny_generator(architecture: str, scale: int, **kwargs) -> torch.nn.Module:
    return build_generator(architecture, scale=scale, **TINY[architecture], **kwargs)


def trained_looking(generator: torch.nn.Module) -> torch.nn.Module:
    """Random non-zero weights everywhere (the zero-initialised tail would hide the body)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in generator.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return generator


@pytest.mark.parametrize("architecture", sorted(TINY))
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_shapes_at_every_scale_and_untrained_is_bicubic(architecture, scale):
    generator = tiny_generator(architecture, scale).eval()
    assert isinstance(generator, CLASSES[architecture]) and generator.scale == scale
    lr = torch.rand(2, 1, 7, 5)
    with torch.no_grad():
        out = generator(lr)
        sequence = generator(lr.reshape(1, 2, 1, 7, 5))
    assert out.shape == (2, 1, 7 * scale, 5 * scale)
    assert sequence.shape == (1, 2, 1, 7 * scale, 5 * scale)
    torch.testing.assert_close(out, bicubic_upsample_slices(lr, scale))  # zero tail: exactly the bicubic baseline
    plain = tiny_generator(architecture, scale, residual="none").eval()
    with torch.no_grad():
        assert plain(lr).shape == out.shape and not torch.allclose(plain(lr), out)
    with pytest.raises(ValueError, match="one-channel"):
        generator(torch.rand(1, 2, 7, 5))


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_bad_arguments_are_refused(architecture):
    with pytest.raises(ValueError, match="scale"):
        tiny_generator(architecture, 3)
    with pytest.raises(ValueError, match="residual"):
        tiny_generator(architecture, 2, residual="nearest")
    with pytest.raises(ValueError, match="unknown architecture"):
        build_generator("srgan", scale=2)


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_torchscript_matches_eager(architecture):
    generator = trained_looking(tiny_generator(architecture, 2)).eval()
    scripted = torch.jit.script(generator)
    lr = torch.rand(1, 3, 1, 9, 6)
    with torch.no_grad():
        torch.testing.assert_close(scripted(lr), generator(lr))
        assert scripted(lr[0]).shape == (3, 1, 18, 12)


def test_frdagan_batch_norm_option_is_the_paper_form():
    generator = tiny_generator("frdagan", 2, norm="batch")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in generator.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tiny_generator("frdagan", 2).modules())


def test_fa_gan_self_attention_starts_as_identity_and_pools_keys():
    attention = SelfAttention(8, pool=2)
    x = torch.rand(2, 8, 7, 5)
    torch.testing.assert_close(attention(x), x)  # gamma = 0: the block starts as the identity
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    assert not torch.allclose(attention(x), x)
    # the counted attention products: [35, 1] x [1, 12] and [8, 12] x [12, 35] per sample
    flops = count_flops(attention, (2, 8, 7, 5))
    convs = 2 * 2 * (35 * 8 * 1 + 12 * 8 * 1 + 12 * 8 * 8 + 35 * 8 * 8)  # query, key, value, out 1x1 convs
    assert flops == convs + 2 * 2 * 35 * 12 * (1 + 8)


def test_medsrgan_attention_is_a_whole_map():
    block = ResidualWholeMapAttentionBlock(4)
    x = torch.rand(2, 4, 6, 5)
    with torch.no_grad():
        attention = block.attention_map(x)
    assert attention.shape == x.shape and float(attention.min()) > 0 and float(attention.max()) < 1
    assert attention.std(dim=(2, 3)).min() > 0 and attention.std(dim=1).min() > 0  # varies over pixels and channels


def test_complexity_table_lists_the_comparison_models():
    table = generator_complexity_table(COMPARISON_CONFIGS[:3], scales=(2,), input_size=16)
    assert table.count("| FRDAGAN") == 3 and "M |" in table
    for label, kwargs in COMPARISON_CONFIGS:
        assert kwargs["architecture"] in GENERATORS, label


def test_timing_table_of_trained_checkpoints(tmp_path, capsys):
    for architecture in sorted(TINY):
        kwargs = {"architecture": architecture, "scale": 2, **TINY[architecture]}
        save_generator(tmp_path / f"{architecture}.pt", tiny_generator(architecture, 2), kwargs)
    complexity_main(
        ["--input-size", "8", "--repeats", "2", "--checkpoints", *(f"{a}={tmp_path / a}.pt" for a in sorted(TINY))]
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and " x2 " in line]
    assert [row.split(" | ")[1] for row in rows] == sorted(TINY)
    assert all(float(row.split(" | ")[-1].rstrip(" |")) > 0 for row in rows)  # a measured time in ms
    with pytest.raises(SystemExit):
        complexity_main(["--checkpoints", str(tmp_path / "fa_gan.pt")])  # NAME= missing


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_checkpoint_records_and_rebuilds_the_architecture(tmp_path, architecture):
    generator = trained_looking(tiny_generator(architecture, 4))
    kwargs = {"architecture": architecture, "scale": 4, **TINY[architecture]}
    path = save_generator(tmp_path / "model.pt", generator, kwargs)
    loaded, info = load_generator(path, expected_scale=4)
    assert type(loaded) is CLASSES[architecture] and info["generator"]["architecture"] == architecture
    lr = torch.rand(1, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), generator.eval()(lr))
    with pytest.raises(ValueError, match="weights do not match"):  # another architecture's kwargs, same weights
        other = "medsrgan" if architecture != "medsrgan" else "frdagan"
        save_generator(tmp_path / "bad.pt", generator, {"architecture": other, "scale": 4, **TINY[other]})
        load_generator(tmp_path / "bad.pt")


def test_checkpoint_without_architecture_is_lstmagan(tmp_path):
    kwargs = {"scale": 2, "num_blocks": 1, "channels": 8, "growth": 4, "dense_layers": 2}
    path = save_generator(tmp_path / "model.pt", LSTMAGANGenerator(**kwargs), kwargs)
    assert type(load_generator(path)[0]) is LSTMAGANGenerator
    save_generator(tmp_path / "unknown.pt", LSTMAGANGenerator(**kwargs), {**kwargs, "architecture": "srgan"})
    with pytest.raises(ValueError, match="unknown architecture"):
        load_generator(tmp_path / "unknown.pt")


# ---------------------------------------------------------------- FA-GAN's spectrally normalised discriminator
def effective_weights(discriminator: ConvDiscriminator) -> list[torch.Tensor]:
    """The weight each conv / linear layer applies (the normalised one under spectral norm), as matrices."""
    return [
        m.weight.detach().flatten(1)
        for m in discriminator.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]


def largest_singular_values(discriminator: ConvDiscriminator) -> list[float]:
    return [float(torch.linalg.matrix_norm(w, ord=2)) for w in effective_weights(discriminator)]


def test_spectral_norm_bounds_every_layer_through_training():
    torch.manual_seed(0)
    kwargs = {"channels": (8, 16), "fc_features": 16}
    plain, normalised = ConvDiscriminator(**kwargs), ConvDiscriminator(**kwargs, spectral_norm=True)
    assert max(largest_singular_values(plain)) > 1.5  # He-initialised layers are not 1-Lipschitz: the test can fail
    optimizer = torch.optim.Adam(normalised.parameters(), lr=1e-2)
    for _ in range(8):  # each training forward runs one power iteration; the raw weights move a lot at lr 1e-2
        loss = -normalised(torch.rand(2, 3, 1, 16, 16)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    normalised.train()
    with torch.no_grad():
        for _ in range(20):  # a few more power iterations on the final weights
            normalised(torch.rand(1, 1, 1, 16, 16))
    values = largest_singular_values(normalised)
    assert len(values) == 6 and max(values) <= 1.02 and min(values) > 0.9, values
    raw = [m.parametrizations.weight.original for m in normalised.modules() if hasattr(m, "parametrizations")]
    assert len(raw) == 6 and max(float(torch.linalg.matrix_norm(w.flatten(1), ord=2)) for w in raw) > 1.1


def test_spectral_norm_needs_no_normalisation_layers():
    with pytest.raises(ValueError, match="spectral_norm"):
        ConvDiscriminator(channels=(8,), fc_features=8, norm="instance", spectral_norm=True)


# ---------------------------------------------------------------- MedSRGAN's critic-feature loss
def test_discriminator_features_are_the_stage_outputs():
    critic = ConvDiscriminator(channels=(4, 8, 16), fc_features=8)
    features = critic.features(torch.rand(2, 3, 1, 16, 16))
    assert [tuple(f.shape) for f in features] == [(6, 4, 8, 8), (6, 8, 4, 4), (6, 16, 2, 2)]


def feature_trainer(weight: float, feature_loss: bool = True) -> AdversarialTrainer:
    torch.manual_seed(0)
    generator = trained_looking(tiny_generator("medsrgan", 2))
    critic = ConvDiscriminator(channels=(4, 8), fc_features=8)
    return AdversarialTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[],
        network=generator,
        optimizer=torch.optim.Adam(generator.parameters()),
        loss_function=HybridLoss(adversarial_weight=1e-3, adversarial_feature_weight=weight),
        d_network=critic,
        d_optimizer=torch.optim.Adam(critic.parameters()),
        objective=WGANGPObjective(),
        feature_loss_function=DiscriminatorFeatureLoss() if feature_loss else None,
    )


def generator_gradient(trainer: AdversarialTrainer) -> tuple[dict, torch.Tensor]:
    torch.manual_seed(1)
    lr, hr = torch.rand(1, 2, 1, 8, 8), torch.rand(1, 2, 1, 16, 16)
    trainer.network.zero_grad()
    losses = trainer._generator_losses(trainer.network(lr), hr, 1.0)
    losses[LossKeys.LOSS].backward()
    return losses, torch.cat([p.grad.flatten() for p in trainer.network.parameters()])


def test_the_critic_feature_loss_enters_the_generator_gradient():
    zero_losses, zero_grad = generator_gradient(feature_trainer(0.0))
    losses, grad = generator_gradient(feature_trainer(1.0))
    none_losses, none_grad = generator_gradient(feature_trainer(1.0, feature_loss=False))
    feature = losses[LossKeys.ADVERSARIAL_FEATURE]
    assert float(feature) > 0 and LossKeys.ADVERSARIAL_FEATURE not in none_losses
    expected = losses[LossKeys.MSE] + 1e-3 * losses[LossKeys.ADVERSARIAL] + feature
    torch.testing.assert_close(losses[LossKeys.LOSS], expected)
    torch.testing.assert_close(zero_grad, none_grad)  # weight 0 = no term
    assert (grad - zero_grad).abs().max() > 1e-3 * zero_grad.abs().max()  # weight 1 changes G's gradient
    trainer = feature_trainer(1.0)
    generator_gradient(trainer)
    assert all(p.grad is None for p in trainer.d_network.parameters())  # the critic stays frozen in the G step


def test_feature_loss_needs_a_critic_with_features():
    with pytest.raises(ValueError, match="features"):
        DiscriminatorFeatureLoss()(torch.nn.Linear(1, 1), torch.rand(1, 1, 1, 4, 4), torch.rand(1, 1, 1, 4, 4))


# ---------------------------------------------------------------- the overlays: train, then lstmagan-sr --model
OVERLAY_TINY = {
    "frdagan": ["--generator_kwargs#num_blocks", "1", "--generator_kwargs#channels", "8",
                "--generator_kwargs#growth", "4", "--generator_kwargs#dense_layers", "2"],
    "fa_gan": ["--generator_kwargs#channels", "4"],
    "medsrgan": ["--generator_kwargs#blocks_per_group", "1", "--generator_kwargs#channels", "8"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(OVERLAY_TINY))
def test_overlay_trains_and_its_model_runs_through_lstmagan_sr(model, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
        repr([str(CONFIGS / "train.yaml"), str(CONFIGS / f"{model}.yaml")]), "--bundle_root", str(REPO / "bundle"),
        "--dataset_dir", str(tiny_dataset), "--output_dir", str(out), "--validation_patients", "['ct1']",
        "--scale", "2", "--epochs", "2", "--samples_per_volume", "2", "--batch_size", "1", "--num_slices", "4",
        "--warmup_iterations", "$len(@train#dataloader)", "--crop_size", "16", "--n_critic", "1",
        "--conv_critic_kwargs#channels", "[8]", "--conv_critic_kwargs#fc_features", "8", *OVERLAY_TINY[model],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "d_loss" in log and "psnr_fg_sr" in log  # the critic trained in epoch 2, validation ran
    if model == "medsrgan":
        assert "adversarial_feature" in log
        rows = list(csv.DictReader(open(out / "iterations.csv")))
        assert any(row["adversarial_feature"] not in ("", "nan") for row in rows)  # logged in the adversarial epoch
    generator, info = load_generator(out / "model.pt", expected_scale=2)
    assert type(generator) is CLASSES[model] and info["generator"]["architecture"] == model
    if model == "fa_gan":
        critic_state = torch.load(latest_checkpoint(out), weights_only=True)["d_network"]
        assert any(k.endswith("parametrizations.weight.original") for k in critic_state)
    data = tmp_path / "in"
    data.mkdir()
    nib.save(nib.Nifti1Image(mr_volume((12, 10, 3)), np.diag([0.9, 0.9, 4.0, 1.0])), str(data / "b.nii.gz"))
    assert lstmagan_sr([str(data / "b.nii.gz"), "-o", str(tmp_path / "sr"), "--model", str(out / "model.pt"),
                        "--no-progress"]) == 0  # fmt: skip
    assert nib.load(str(tmp_path / "sr" / "b_sr.nii.gz")).shape == (24, 20, 3)
