"""Command line: ``python -m monai_lstmagan.bench [--device cpu|cuda] [--json OUT.json] [--quick]``."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from monai_lstmagan.bench.config import VARIANTS, bench_configs
from monai_lstmagan.bench.report import format_tables
from monai_lstmagan.bench.run import bench_package

__all__ = ["main"]


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
    result = bench_package().run_benchmark(args.device, training, inference, variants=args.variants)
    print(format_tables(result))
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return result
