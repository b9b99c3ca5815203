"""Parameter and FLOP counts of the networks, measured with forward hooks.

``python -m monai_lstmagan.networks.complexity`` prints a markdown table for the default generator at
x2 and x4 (and the small CPU configuration), per 128x128 LR input slice.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_parameters", "count_flops", "generator_complexity_table"]


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


_COUNTERS = {nn.Conv2d: _conv_flops, nn.Linear: _linear_flops, nn.LSTM: _lstm_flops}


@torch.no_grad()
def count_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on a zero tensor of ``input_shape``, counted as 2 x multiply-adds.

    Counted: the weight products of ``nn.Conv2d`` (``2 * out.numel() * k_h * k_w * C_in / groups``),
    ``nn.Linear`` (``2 * out.numel() * in_features``) and ``nn.LSTM`` (the 4 gate mat-vecs,
    ``2 * 4 * hidden * (input + hidden)`` per step, layer and direction). Not counted: biases,
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
        configs: ``(label, generator kwargs)`` pairs; default: the default (paper-sized) generator, the small
            CPU configuration, the shipped models' (``bundle/configs/pretrain.yaml``) and the demo's (``train.yaml``).
        scales: upsampling factors.
        input_size: side of the square LR input slice.
    """
    from monai_lstmagan.networks.generator import LSTMAGANGenerator

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
            generator = LSTMAGANGenerator(scale=scale, **kwargs)
            flops = count_flops(generator, (1, 1, input_size, input_size))
            out = input_size * scale
            lines.append(
                f"| {label} | x{scale} | {count_parameters(generator) / 1e6:.3f} M | {flops / 1e9:.2f} | "
                f"{out}x{out} | {flops / 1e9 / (out * out / 1e6):.2f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Parameters and FLOPs of the LSTMAGAN generator.")
    parser.add_argument("--input-size", type=int, default=128, help="side of the square LR input slice")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4], help="upsampling factors")
    args = parser.parse_args(argv)
    print(generator_complexity_table(scales=args.scales, input_size=args.input_size))


if __name__ == "__main__":
    main()
