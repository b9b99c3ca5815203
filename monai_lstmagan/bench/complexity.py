"""Parameter and FLOP counts of the networks, measured with forward hooks.

``python -m monai_lstmagan.bench.complexity`` prints a markdown table for the default generator at
x2 and x4 (and the small CPU configuration), per 128x128 LR input slice, then the same table for the comparison
generators (FRDAGAN, FA-GAN, MedSRGAN: the papers' default sizes, a small CPU preset and the sizes trained in the
comparison of ``docs/comparison_models.md``, ``bundle/configs/<model>.yaml``). With ``--checkpoints NAME=model.pt ...``
it prints instead, for trained generators, parameters, GFLOPs and the measured CPU time of one forward pass per LR slice
(:func:`checkpoint_timing_table`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from monai_lstmagan.checkpoints import load_generator
from monai_lstmagan.networks import build_generator
from monai_lstmagan.networks.fa_gan import SelfAttention

__all__ = [
    "count_parameters",
    "count_flops",
    "generator_complexity_table",
    "seconds_per_slice",
    "checkpoint_timing_table",
    "COMPARISON_CONFIGS",
]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _conv_flops(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    kernel = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
    return 2 * output.numel() * kernel


def _linear_flops(module: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    return 2 * output.numel() * module.in_features


def _lstm_flops(module: nn.LSTM, inputs: tuple[torch.Tensor, ...], output: object) -> int:
    x = inputs[0]
    steps_times_batch = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    directions = 2 if module.bidirectional else 1
    total = 0
    for layer in range(module.num_layers):
        layer_input = module.input_size if layer == 0 else module.hidden_size * directions
        total += 2 * 4 * module.hidden_size * (layer_input + module.hidden_size) * directions
    return total * steps_times_batch


def _self_attention_flops(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """The two attention products of :class:`~monai_lstmagan.networks.fa_gan.SelfAttention` (its 1x1 convs are
    counted as convs): ``query @ key`` ``[HW, C'] x [C', hw]`` and ``value @ attention^T`` ``[C, hw] x [hw, HW]``."""
    x = inputs[0]
    positions = x.shape[-2] * x.shape[-1]
    pooled = math.ceil(x.shape[-2] / module.pool) * math.ceil(x.shape[-1] / module.pool)
    return 2 * x.shape[0] * positions * pooled * (module.query.out_channels + module.value.out_channels)


_COUNTERS = {
    nn.Conv2d: _conv_flops,
    nn.Linear: _linear_flops,
    nn.LSTM: _lstm_flops,
    SelfAttention: _self_attention_flops,
}

#: ``(label, build_generator kwargs)`` of the comparison generators: the papers' default sizes, a small CPU preset
#: (about the LSTMAGAN small CPU configuration's cost) and the sizes of the comparison runs of
#: ``docs/comparison_models.md`` (about the demo generator's cost).
COMPARISON_CONFIGS: tuple[tuple[str, dict], ...] = (
    ("FRDAGAN paper-sized (16 RDBs x 3 dense blocks, 64 ch, growth 32)", {"architecture": "frdagan"}),
    ("FRDAGAN small CPU (4 RDBs x 2, 32 ch, growth 16)",
     {"architecture": "frdagan", "num_blocks": 4, "channels": 32, "dense_blocks": 2, "growth": 16}),
    ("FRDAGAN compared (frdagan.yaml: 1 RDB x 2, 16 ch, growth 8)",
     {"architecture": "frdagan", "num_blocks": 1, "channels": 16, "dense_blocks": 2, "growth": 8}),
    ("FA-GAN paper-sized (16 LFFBs, 64 ch)", {"architecture": "fa_gan"}),
    ("FA-GAN small CPU (3 LFFBs, 16 ch)", {"architecture": "fa_gan", "num_blocks": 3, "channels": 16}),
    ("FA-GAN compared (fa_gan.yaml: 1 LFFB, 8 ch)", {"architecture": "fa_gan", "num_blocks": 1, "channels": 8}),
    ("MedSRGAN paper-sized (8 groups x 16 RWMABs, 64 ch)", {"architecture": "medsrgan"}),
    ("MedSRGAN small CPU (2 groups x 4, 32 ch)",
     {"architecture": "medsrgan", "num_groups": 2, "blocks_per_group": 4, "channels": 32}),
    ("MedSRGAN compared (medsrgan.yaml: 1 group x 3, 16 ch)",
     {"architecture": "medsrgan", "num_groups": 1, "blocks_per_group": 3, "channels": 16}),
)  # fmt: skip


@torch.no_grad()
def count_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on a zero tensor of ``input_shape``, counted as 2 x multiply-adds.

    Counted: the weight products of ``nn.Conv2d`` (``2 * out.numel() * k_h * k_w * C_in / groups``),
    ``nn.Linear`` (``2 * out.numel() * in_features``) and ``nn.LSTM`` (the 4 gate mat-vecs,
    ``2 * 4 * hidden * (input + hidden)`` per step, layer and direction), and the two matrix products of FA-GAN's
    self-attention (:func:`_self_attention_flops`). Not counted: biases,
    activations, normalisation, pooling, pixel shuffle, concatenation and the element-wise products of
    the attention gates and LSTM cells (element-wise work, well below 1% of the generator's conv FLOPs).
    The forward runs on the module's device, in eval mode (restored afterwards).
    """
    total = [0]

    def hook(counter):
        def _hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
            total[0] += int(counter(mod, inputs, output))

        return _hook

    handles = [
        m.register_forward_hook(hook(counter))
        for m in module.modules()
        for kind, counter in _COUNTERS.items()
        if type(m) is kind
    ]
    was_training = module.training
    module.eval()
    try:
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        module(torch.zeros(tuple(input_shape), device=device))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return total[0]


def generator_complexity_table(
    configs: Sequence[tuple[str, dict]] | None = None, scales: Sequence[int] = (2, 4), input_size: int = 128
) -> str:
    """Markdown table of parameters and GFLOPs per ``input_size``² LR slice and per output megapixel.

    Args:
        configs: ``(label, generator kwargs)`` pairs (kwargs of
            :func:`~monai_lstmagan.networks.build_generator`, ``architecture`` defaults to LSTMAGAN); default: the
            default (paper-sized) LSTMAGAN generator, the small CPU configuration, the shipped models'
            (``bundle/configs/pretrain.yaml``) and the demo's (``train.yaml``); :data:`COMPARISON_CONFIGS` for the
            comparison generators.
        scales: upsampling factors.
        input_size: side of the square LR input slice.
    """
    if configs is None:
        configs = [
            ("default (16 blocks, 64 ch)", {}),
            ("small CPU (4 blocks, 32 ch)", {"num_blocks": 4, "channels": 32}),
            ("shipped (3 blocks, 32 ch, growth 16)", {"num_blocks": 3, "channels": 32, "growth": 16}),
            ("demo (2 blocks, 16 ch, growth 8)", {"num_blocks": 2, "channels": 16, "growth": 8}),
        ]
    lines = [
        f"| generator | scale | parameters | GFLOPs per {input_size}x{input_size} LR slice | "
        "output size | GFLOPs per output megapixel |",
        "|---|---|---|---|---|---|",
    ]
    for label, kwargs in configs:
        for scale in scales:
            generator = build_generator(scale=scale, **kwargs)
            flops = count_flops(generator, (1, 1, input_size, input_size))
            out = input_size * scale
            lines.append(
                f"| {label} | x{scale} | {count_parameters(generator) / 1e6:.3f} M | {flops / 1e9:.2f} | "
                f"{out}x{out} | {flops / 1e9 / (out * out / 1e6):.2f} |"
            )
    return "\n".join(lines)


@torch.no_grad()
def seconds_per_slice(generator: nn.Module, input_size: int = 128, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time [s] of ``generator`` on one ``[1, 1, input_size, input_size]`` LR slice, in eval mode.

    ``warmup`` untimed passes first; the forward runs on the generator's device with the current torch thread
    count (set ``OMP_NUM_THREADS`` / ``torch.set_num_threads`` for a fixed budget; CUDA is synchronised).
    """
    parameter = next(generator.parameters())
    x = torch.rand(1, 1, input_size, input_size, device=parameter.device)
    was_training = generator.training
    generator.eval()
    times = []
    try:
        for index in range(warmup + repeats):
            if parameter.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            generator(x)
            if parameter.device.type == "cuda":
                torch.cuda.synchronize()
            if index >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        generator.train(was_training)
    return statistics.median(times)


def checkpoint_timing_table(checkpoints: Sequence[tuple[str, str]], input_size: int = 128, repeats: int = 20) -> str:
    """Markdown table of trained generators: architecture, scale, parameters, GFLOPs and ms per LR slice.

    Args:
        checkpoints: ``(name, model.pt)`` pairs, loaded with :func:`monai_lstmagan.checkpoints.load_generator` on CPU.
        input_size: side of the square LR slice.
        repeats: timed forward passes per model (the median is reported).
    """
    lines = [
        f"| model | architecture | scale | parameters | GFLOPs per {input_size}x{input_size} LR slice | "
        f"CPU ms per slice (median of {repeats}, {torch.get_num_threads()} thread(s)) |",
        "|---|---|---|---|---|---|",
    ]
    for name, path in checkpoints:
        generator, info = load_generator(path)
        kwargs = info["generator"]
        flops = count_flops(generator, (1, 1, input_size, input_size))
        seconds = seconds_per_slice(generator, input_size, repeats)
        lines.append(
            f"| {name} | {kwargs.get('architecture', 'lstmagan')} | x{kwargs['scale']} | "
            f"{count_parameters(generator) / 1e6:.3f} M | {flops / 1e9:.2f} | {seconds * 1e3:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Parameters and FLOPs of the LSTMAGAN and comparison generators.")
    parser.add_argument("--input-size", type=int, default=128, help="side of the square LR input slice")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4], help="upsampling factors")
    parser.add_argument(
        "--checkpoints", nargs="+", metavar="NAME=MODEL.pt", default=None,
        help="instead of the tables of configurations: trained generators, with CPU time per LR slice",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=20, help="timed forward passes per checkpoint")
    args = parser.parse_args(argv)
    if args.checkpoints:
        pairs = []
        for item in args.checkpoints:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                parser.error(f"--checkpoints entries are NAME=MODEL.pt, got {item!r}")
            pairs.append((name, path))
        print(checkpoint_timing_table(pairs, input_size=args.input_size, repeats=args.repeats))
        return
    print(generator_complexity_table(scales=args.scales, input_size=args.input_size))
    print()
    print(generator_complexity_table(COMPARISON_CONFIGS, scales=args.scales, input_size=args.input_size))


if __name__ == "__main__":
    main()
