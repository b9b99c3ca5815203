"""Tests of the LSTMAGAN networks: shapes, gradient flow, attention gate, critic rules, TorchScript, VGG, ablation."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from monai_lstmagan.bench.complexity import count_flops, count_parameters, generator_complexity_table
from monai_lstmagan.networks import (
    VGG19_LAYERS,
    ADCBlock,
    AttentionGate,
    ConvDiscriminator,
    DenseBlock,
    LSTMAGANGenerator,
    LSTMDiscriminator,
    VGG19Features,
    build_discriminator,
)

TINY_G = {"num_blocks": 2, "channels": 8, "dense_layers": 2, "growth": 4}
TINY_LSTM_D = {"num_slices": 4, "encoder_channels": (8, 16), "hidden_size": 16}
TINY_CONV_D = {"channels": (8, 16), "fc_features": 16}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _assert_all_parameters_get_gradient(module: nn.Module, unused: tuple[str, ...] = ()) -> None:
    for name, parameter in module.named_parameters():
        if name in unused:
            assert parameter.grad is None or parameter.grad.abs().sum() == 0, f"{name} was expected to be unused"
            continue
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_output_shape_for_each_scale(scale):
    generator = LSTMAGANGenerator(scale=scale, **TINY_G)
    assert generator(torch.rand(2, 1, 6, 10)).shape == (2, 1, 6 * scale, 10 * scale)


def test_generator_odd_sizes_and_sequences():
    generator = LSTMAGANGenerator(scale=2, **TINY_G).eval()
    assert generator(torch.rand(1, 1, 20, 28)).shape == (1, 1, 40, 56)
    assert generator(torch.rand(1, 1, 7, 13)).shape == (1, 1, 14, 26)
    sequence = torch.rand(2, 3, 1, 20, 28)
    out = generator(sequence)
    assert out.shape == (2, 3, 1, 40, 56)
    # folding into the batch super-resolves each slice on its own (eval mode: no batch statistics)
    torch.testing.assert_close(out[1, 2], generator(sequence[1, 2:3, :])[0])


def test_generator_rejects_bad_input():
    generator = LSTMAGANGenerator(scale=2, **TINY_G)
    with pytest.raises(ValueError, match="one-channel"):
        generator(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="scale"):
        LSTMAGANGenerator(scale=3)


@pytest.mark.parametrize("attention", [True, False])
def test_generator_gradients_reach_every_parameter(attention):
    generator = LSTMAGANGenerator(scale=2, attention=attention, residual="none", **TINY_G)
    generator(torch.rand(2, 1, 8, 8)).square().mean().backward()
    _assert_all_parameters_get_gradient(generator)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_untrained_residual_generator_is_exactly_the_bicubic_baseline(scale):
    from monai_lstmagan.transforms import bicubic_upsample

    lr = torch.rand(3, 1, 9, 12)
    generator = LSTMAGANGenerator(scale=scale, **TINY_G).eval()  # residual="bicubic" is the default
    with torch.no_grad():
        assert torch.equal(generator(lr), bicubic_upsample(lr, scale))
        paper_literal = LSTMAGANGenerator(scale=scale, residual="none", **TINY_G).eval()(lr)
    assert (paper_literal - bicubic_upsample(lr, scale)).abs().max() > 1e-3


def test_residual_generator_learns_after_the_zero_tail_moves():
    """The zero tail blocks gradients to the body at step 0 only: after one step every parameter learns."""
    generator = LSTMAGANGenerator(scale=2, **TINY_G)
    lr, hr = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 16, 16)
    torch.nn.functional.mse_loss(generator(lr), hr).backward()
    assert generator.tail.weight.grad.abs().sum() > 0
    torch.optim.SGD(generator.parameters(), lr=0.1).step()
    generator.zero_grad()
    torch.nn.functional.mse_loss(generator(lr), hr).backward()
    _assert_all_parameters_get_gradient(generator)


def test_generator_norm_and_residual_choices():
    assert not any(isinstance(m, nn.BatchNorm2d) for m in LSTMAGANGenerator(scale=2, **TINY_G).modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in LSTMAGANGenerator(scale=2, norm="batch", **TINY_G).modules())
    with pytest.raises(ValueError, match="residual"):
        LSTMAGANGenerator(scale=2, residual="nearest", **TINY_G)
    with pytest.raises(ValueError, match="norm"):
        LSTMAGANGenerator(scale=2, norm="instance", **TINY_G)


def test_attention_flag_changes_the_blocks():
    with_gates = LSTMAGANGenerator(scale=2, attention=True, **TINY_G)
    without = LSTMAGANGenerator(scale=2, attention=False, **TINY_G)
    assert sum(isinstance(m, AttentionGate) for m in with_gates.modules()) == TINY_G["num_blocks"]
    assert not any(isinstance(m, AttentionGate) for m in without.modules())
    assert count_parameters(with_gates) > count_parameters(without)


def test_attention_gate_output_is_alpha_times_p():
    gate = AttentionGate(6)
    p, g = torch.randn(2, 6, 5, 7), torch.randn(2, 6, 5, 7)
    # eqs. 3-4 recomputed from the gate's own weights
    q = nn.functional.conv2d(
        torch.relu(nn.functional.conv2d(p, gate.w_p.weight) + nn.functional.conv2d(g, gate.w_g.weight, gate.w_g.bias)),
        gate.psi.weight,
        gate.psi.bias,
    )
    alpha = torch.sigmoid(q)
    assert alpha.shape == (2, 1, 5, 7)
    assert ((alpha > 0) & (alpha < 1)).all()
    assert alpha.std() > 0  # the coefficients depend on P and G, not a constant
    torch.testing.assert_close(gate.coefficients(p, g), alpha)
    torch.testing.assert_close(gate(p, g), alpha * p)


def test_adc_block_combines_gated_input_and_scaled_dense_output():
    block = ADCBlock(6, dense_layers=2, growth=3, beta=0.2, attention=True)
    x = torch.randn(1, 6, 5, 5)
    g = 0.2 * block.dense(x)
    assert block.gate is not None
    torch.testing.assert_close(block(x), block.gate.coefficients(x, g) * x + g)
    plain = ADCBlock(6, dense_layers=2, growth=3, beta=0.2, attention=False)
    torch.testing.assert_close(plain(x), x + 0.2 * plain.dense(x))


def test_dense_block_is_densely_connected():
    block = DenseBlock(4, num_layers=3, growth=2)
    assert [layer[0].in_channels for layer in block.layers] == [4, 6, 8]
    assert block.fusion.in_channels == 10 and block.fusion.out_channels == 4
    assert block(torch.rand(1, 4, 6, 6)).shape == (1, 4, 6, 6)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_generator_torchscript_matches_eager():
    generator = LSTMAGANGenerator(scale=4, **TINY_G).eval()
    scripted = torch.jit.script(generator)
    for shape in [(2, 1, 6, 10), (1, 2, 1, 5, 7)]:
        x = torch.rand(shape)
        torch.testing.assert_close(scripted(x), generator(x))
    with pytest.raises(Exception, match="one-channel"):
        scripted(torch.rand(1, 2, 5, 5))


@pytest.mark.parametrize(
    "discriminator",
    [
        LSTMDiscriminator(**TINY_LSTM_D),
        LSTMDiscriminator(num_slices=4, hidden_size=8, variant="literal", image_size=(16, 12)),
        ConvDiscriminator(**TINY_CONV_D),
        ConvDiscriminator(norm="layer", **TINY_CONV_D),
    ],
    ids=["lstm", "lstm-literal", "conv", "conv-layernorm"],
)
def test_discriminator_shapes_gradients_and_no_batchnorm(discriminator):
    x = torch.rand(3, 4, 1, 16, 12)
    scores = discriminator(x)
    assert scores.shape == (3,)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules())
    scores.square().sum().backward()
    # paper-literal LSTM: one time step from h_0 = 0, so the recurrent weights W_hh cannot matter
    literal = getattr(discriminator, "variant", "") == "literal"
    _assert_all_parameters_get_gradient(discriminator, unused=("lstm.weight_hh_l0",) if literal else ())


def test_discriminator_scores_are_raw_unless_sigmoid():
    x = torch.rand(2, 4, 1, 16, 16)
    raw = LSTMDiscriminator(**TINY_LSTM_D)
    prob = LSTMDiscriminator(sigmoid=True, **TINY_LSTM_D)
    prob.load_state_dict(raw.state_dict())
    torch.testing.assert_close(prob(x), torch.sigmoid(raw(x)))
    conv = ConvDiscriminator(**TINY_CONV_D)
    with torch.no_grad():
        conv.net[-1].bias.fill_(5.0)  # raw scores are not squashed into (0, 1)
    assert (conv(x) > 1).all()


def test_lstm_discriminator_uses_the_slice_order():
    discriminator = LSTMDiscriminator(**TINY_LSTM_D)
    x = torch.rand(1, 4, 1, 16, 16)
    # an LSTM over slices is sensitive to their order, unlike a per-slice average
    assert not torch.allclose(discriminator(x), discriminator(x.flip(1)))
    conv = ConvDiscriminator(**TINY_CONV_D)
    torch.testing.assert_close(conv(x), conv(x.flip(1)))


def test_discriminator_input_checks():
    with pytest.raises(ValueError, match="num_slices=4"):
        LSTMDiscriminator(**TINY_LSTM_D)(torch.rand(1, 5, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, T, 1, H, W\]"):
        ConvDiscriminator(**TINY_CONV_D)(torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match="image_size"):
        LSTMDiscriminator(num_slices=4, variant="literal")
    literal = LSTMDiscriminator(num_slices=4, hidden_size=8, variant="literal", image_size=16)
    with pytest.raises(ValueError, match="16, 16"):
        literal(torch.rand(1, 4, 1, 8, 8))
    with pytest.raises(ValueError, match="norm"):
        ConvDiscriminator(norm="weird")
    assert any(isinstance(m, nn.BatchNorm2d) for m in ConvDiscriminator(norm="batch").modules())


def test_vgg_layer_names_follow_torchvision_indices():
    assert len(VGG19_LAYERS) == 37
    assert VGG19_LAYERS[0] == "conv1_1" and VGG19_LAYERS[4] == "pool1"
    assert VGG19_LAYERS.index("conv5_4") == 34 and VGG19_LAYERS.index("relu5_4") == 35
    vgg = VGG19Features(layer="relu2_1")
    assert isinstance(vgg.features[5], nn.Conv2d) and isinstance(vgg.features[6], nn.ReLU)
    assert len(vgg.features) == 7


def test_vgg_random_weights_warn_and_features_are_frozen(caplog):
    with caplog.at_level(logging.WARNING):
        vgg = VGG19Features(layer="relu2_2", weights=None)
    assert "RANDOM" in caplog.text
    assert not any(p.requires_grad for p in vgg.parameters())
    nn.Sequential(vgg).train()
    assert not vgg.training
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    out = vgg(x)
    assert out.shape == (2, 128, 8, 8)
    out.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_vgg_loads_a_local_torchvision_state_dict(tmp_path):
    full = VGG19Features(layer="pool3")  # saves keys beyond conv3_1 too: they must be ignored
    state = {f"features.{key}": value for key, value in full.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files also carry the classifier
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loaded = VGG19Features(layer="conv3_1", weights=str(path))
    torch.testing.assert_close(loaded.features[10].weight, state["features.10.weight"])
    torch.testing.assert_close(loaded.features[0].bias, state["features.0.bias"])
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(loaded(x), full.features[:11]((x.expand(-1, 3, -1, -1) - full.mean) / full.std))

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        VGG19Features(layer="conv1_1", weights=str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        VGG19Features(layer="conv1_1", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown layer"):
        VGG19Features(layer="relu6_1")


def test_ablation_overlays_set_the_papers_models_directly():
    """Configs only wire: each ablation overlay sets the generator's gates and the critic by id."""
    import os

    from monai.bundle import ConfigParser

    from monai_lstmagan.losses import HingeObjective

    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundle", "configs")
    expected = {
        "ablation_model1.yaml": (False, "conv", "wgan_gp"), "ablation_model2.yaml": (False, "lstm", "wgan_gp"),
        "ablation_model3.yaml": (True, "conv", "wgan_gp"), "ablation_model4.yaml": (True, "lstm", "wgan_gp"),
        "mse_only.yaml": (True, None, None), "gan.yaml": (True, "lstm", "gan"),
    }  # fmt: skip
    for overlay, (attention, critic, objective) in expected.items():
        parser = ConfigParser()
        parser.read_config([os.path.join(configs, "train.yaml"), os.path.join(configs, overlay)])
        assert parser.get_parsed_content("generator_kwargs")["attention"] is attention, overlay
        assert parser.get_parsed_content("critic") == critic and parser.get_parsed_content("objective") == objective
    assert isinstance(build_discriminator("lstm", **TINY_LSTM_D), LSTMDiscriminator)
    assert isinstance(build_discriminator("conv", num_slices=4, **TINY_CONV_D), ConvDiscriminator)
    parser = ConfigParser()  # the hinge objective with a spectrally normalised critic, wired by train.yaml
    parser.read_config(os.path.join(configs, "train.yaml"))
    parser.update({"objective": "hinge", "lstm_critic_kwargs#spectral_norm": True, "device": "$torch.device('cpu')"})
    assert isinstance(parser.get_parsed_content("adversarial_objective"), HingeObjective)
    critic_layers = [m for m in parser.get_parsed_content("discriminator").modules() if isinstance(m, nn.Linear)]
    assert critic_layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in critic_layers)
    with pytest.raises(ValueError, match="transformer"):
        build_discriminator("transformer")


def test_count_flops_matches_hand_count():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 6, 7))
    assert count_flops(conv, (2, 1, 5, 6)) == 2 * (2 * 4 * 5 * 6 * 9) + 2 * (2 * 7 * 120)
    lstm = LSTMDiscriminator(num_slices=3, hidden_size=5, variant="literal", image_size=(2, 2))
    assert count_flops(lstm, (1, 3, 1, 2, 2)) == 3 * 2 * 4 * 5 * (4 + 5) + 3 * 2 * 5
    assert count_parameters(conv) == 4 * 9 + 4 + 120 * 7 + 7


def test_generator_flops_scale_with_input_area():
    generator = LSTMAGANGenerator(scale=2, **TINY_G)
    assert count_flops(generator, (1, 1, 8, 16)) == 2 * count_flops(generator, (1, 1, 8, 8))
    table = generator_complexity_table(configs=[("tiny", TINY_G)], scales=(2,), input_size=8)
    assert "| tiny | x2 |" in table


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("tail_kernel", [9, 3])
def test_folded_upsampler_is_the_upsampler_and_tail(scale, tail_kernel):
    from monai_lstmagan.networks.folding import FoldedUpsampler, upsampler_and_tail

    generator = LSTMAGANGenerator(scale=scale, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    if tail_kernel != 9:
        generator.tail = torch.nn.Conv2d(8, 1, tail_kernel, padding=tail_kernel // 2)
    torch.nn.init.normal_(generator.tail.weight, std=0.1)
    torch.nn.init.normal_(generator.upsample[-1].weight, mean=0.25, std=0.1)  # a PReLU slope per channel
    folded = upsampler_and_tail(generator)
    assert isinstance(folded, FoldedUpsampler)
    features = torch.randn(2, 8, 13, 11)
    with torch.no_grad():
        expected = generator.tail(generator.upsample(features))
        out = folded(features)
    assert out.shape == expected.shape == (2, 1, 13 * scale, 11 * scale)
    assert float((out - expected).abs().max()) < 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("block_rows", [1, 3, 64])
@pytest.mark.parametrize("height", [1, 2, 13])
def test_folded_tail_gemm_is_the_folded_conv(block_rows, height, monkeypatch):
    """The CPU form of the folded tail (GEMM of every offset, shifted sums, in row blocks) is the folded conv, for
    every block size, at the image border, for tiny maps and for both memory formats."""
    import torch.nn.functional as F

    from monai_lstmagan.networks import folding

    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    torch.nn.init.normal_(generator.tail.weight, std=0.1)
    torch.nn.init.normal_(generator.tail.bias, std=0.1)
    folded = folding.FoldedUpsampler(generator)
    monkeypatch.setattr(folding, "GEMM_BLOCK_ROWS", block_rows)
    v = torch.randn(2, 32, height, 11)
    expected = F.conv2d(v, folded.kernel, folded.bias, padding=folded.padding)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = folded.folded_tail_as_gemm(v.contiguous(memory_format=layout))
        assert out.shape == expected.shape
        assert float((out - expected).abs().max()) < 1e-5 * float(expected.abs().max())


def test_a_scale_one_refiner_is_not_folded():
    from monai_lstmagan.networks.folding import FoldedUpsampler, upsampler_and_tail

    refiner = LSTMAGANGenerator(scale=1, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    torch.nn.init.normal_(refiner.tail.weight, std=0.1)
    tail = upsampler_and_tail(refiner)
    assert not isinstance(tail, FoldedUpsampler)
    features = torch.randn(1, 8, 10, 9)
    with torch.no_grad():
        assert torch.equal(tail(features), refiner.tail(features))


@pytest.mark.parametrize("attention", [True, False])
def test_split_conv_trunk_is_the_features(attention):
    """The inference trunk without concatenations (beta folded, psi repeated) computes ``features``."""
    from monai_lstmagan.networks.folding import SplitConvTrunk, inference_trunk

    generator = LSTMAGANGenerator(
        scale=2, num_blocks=2, channels=8, growth=4, dense_layers=3, attention=attention
    ).eval()
    for block in generator.body:  # away from the init (gate almost open, small dense output)
        for parameter in block.parameters():
            torch.nn.init.normal_(parameter, std=0.3)
    trunk = inference_trunk(generator)
    assert isinstance(trunk, SplitConvTrunk)
    x = torch.rand(2, 1, 13, 11)
    with torch.no_grad():
        expected, out = generator.features(x), trunk(x)
        channels_last = inference_trunk(generator).to(memory_format=torch.channels_last)
        out_cl = channels_last(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == expected.shape == (2, 8, 13, 11)
    assert float((out - expected).abs().max()) < 1e-5 * float(expected.abs().max())
    assert float((out_cl - expected).abs().max()) < 1e-5 * float(expected.abs().max())
    with torch.no_grad():  # its weights are copies: changing the generator afterwards does not change it
        generator.body[0].dense.fusion.bias.add_(1.0)
        assert float((trunk(x) - out).abs().max()) < 1e-5 * float(out.abs().max())


def test_a_generator_with_other_blocks_keeps_its_features():
    from monai_lstmagan.networks.folding import SplitConvTrunk, inference_trunk

    generator = LSTMAGANGenerator(scale=2, num_blocks=1, channels=8, growth=4, dense_layers=2).eval()
    generator.body[0] = torch.nn.Conv2d(8, 8, 3, padding=1)  # not an ADC block
    trunk = inference_trunk(generator)
    assert not isinstance(trunk, SplitConvTrunk)
    x = torch.rand(1, 1, 9, 9)
    with torch.no_grad():
        assert torch.equal(trunk(x), generator.features(x))


def test_high_pass_critic_judges_only_the_detail_above_the_lr_nyquist():
    """``HighPassCritic``: a smooth image has (almost) no detail, a Nyquist checkerboard keeps it; two sequences
    that differ only below the LR Nyquist (here: by a constant) get the same score; the gradient penalty works."""
    from monai_lstmagan.losses import gradient_penalty
    from monai_lstmagan.networks import HighPassCritic

    torch.manual_seed(0)
    critic = build_discriminator("lstm", high_pass_scale=4, **TINY_LSTM_D)
    assert isinstance(critic, HighPassCritic) and critic.sigmoid is False
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = (0.3 + 0.01 * x + 0.005 * y).expand(1, 4, 1, 32, 32)
    checker = (((x + y) % 2) * 0.5).expand(1, 4, 1, 32, 32)
    centre = (slice(None),) * 3 + (slice(8, 24), slice(8, 24))  # away from the bicubic edge handling
    assert critic.detail(smooth)[centre].abs().max() < 2e-3  # a ramp: 100x below the checkerboard
    assert critic.detail(checker)[centre].abs().mean() > 0.2
    noisy = torch.rand(2, 4, 1, 32, 32)
    assert torch.allclose(critic(noisy), critic(noisy + 0.25), atol=1e-5)
    assert not torch.allclose(critic(noisy), critic(noisy + 0.05 * torch.randn_like(noisy)), atol=1e-5)
    assert torch.isfinite(gradient_penalty(critic, noisy, torch.rand_like(noisy)))
    with pytest.raises(ValueError, match="integer >= 2"):
        HighPassCritic(critic.critic, 1)


@pytest.mark.parametrize("kind, kwargs", [("lstm", TINY_LSTM_D), ("conv", TINY_CONV_D)])
def test_spectral_norm_bounds_every_conv_and_linear_weight_of_the_critic(kind, kwargs):
    """``spectral_norm=True`` (a critic argument): after a few power iterations each conv/linear weight has largest
    singular value 1
    (a plain critic's are not), and the critic still scores ``[B, T, 1, H, W]`` -> ``[B]`` behind the high-pass."""
    torch.manual_seed(0)
    critic = build_discriminator(kind, high_pass_scale=2, spectral_norm=True, **kwargs)
    x = torch.rand(2, 4, 1, 16, 16)
    for _ in range(30):  # training-mode forward passes run the power iteration
        scores = critic(x)
    assert scores.shape == (2,)
    critic.eval()
    layers = [m for m in critic.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in layers]
    assert max(abs(s - 1) for s in sigmas) < 0.05, sigmas
    plain = build_discriminator(kind, **kwargs)
    plain_sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item()
                    for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # fmt: skip
    assert max(abs(s - 1) for s in plain_sigmas) > 0.1
