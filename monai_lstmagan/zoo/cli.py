"""Command line: ``python -m monai_lstmagan.zoo export ...`` and ``python -m monai_lstmagan.zoo verify DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monai_lstmagan.pretrained import pretrained_model_path
from monai_lstmagan.zoo.ci import CI_STEPS, DEFAULT_STEPS, format_results, run_ci
from monai_lstmagan.zoo.common import LARGE_FILE_MB, PACKAGE
from monai_lstmagan.zoo.export import export_bundle
from monai_lstmagan.zoo.verify import verify_bundle

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_lstmagan.zoo export ...`` / ``... verify DIR`` / ``... ci DIR``; exit status 1 on any
    failure (``ci``: a failed step; a skipped one is reported, not failed)."""
    description = sys.modules[__package__].__doc__.split("\n\n")[0]  # the first paragraph of the package docstring
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.zoo", description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a model-zoo bundle for a checkpoint and verify it")
    export.add_argument("--ckpt", default=None, help="generator checkpoint model.pt (default: the shipped x2 model)")
    export.add_argument("--out", required=True, help="new bundle folder (must not exist or be empty)")
    export.add_argument("--summary", default=None, help="summary.json of evaluate, for the README metrics table")
    export.add_argument("--version", default=None, help="bundle version (default: the repository metadata's)")
    export.add_argument("--changelog", default=None, help="changelog entry for this version")
    export.add_argument("--notes", default=None, help="training notes for the README (data, split, time, hardware)")
    export.add_argument("--bundle_dir", default=None, help="the repository bundle (default: next to the package)")
    export.add_argument("--large_file_mb", type=float, default=LARGE_FILE_MB, help="size limit for git (MB)")
    verify = commands.add_parser("verify", help="verify an exported bundle offline")
    verify.add_argument("bundle", help="the bundle folder")
    verify.add_argument("--large_file_mb", type=float, default=LARGE_FILE_MB, help="size limit for git (MB)")
    ci = commands.add_parser("ci", help="run the MONAI model zoo's CI steps on an exported bundle (offline)")
    ci.add_argument("bundle", help="the bundle folder (its name is the bundle name)")
    ci.add_argument("--steps", nargs="+", default=list(DEFAULT_STEPS), choices=CI_STEPS, help="steps to run")
    ci.add_argument("--check_pins", action="store_true", help="also check the pins have py3.10 wheels (network)")
    args = parser.parse_args(argv)
    if args.command == "ci":
        return _ci(args.bundle, list(args.steps) + (["pins"] if args.check_pins else []))
    try:
        if args.command == "export":
            failures = export_bundle(
                args.ckpt or pretrained_model_path(2),
                args.out,
                args.summary,
                args.version,
                args.changelog,
                args.notes,
                args.bundle_dir,
                args.large_file_mb,
            )
            target = args.out
        else:
            failures = verify_bundle(args.bundle, args.large_file_mb)
            target = args.bundle
    except (OSError, ValueError) as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 1
    if failures:
        print(f"zoo {args.command}: {target} FAILED {len(failures)} check(s):", file=sys.stderr)
        for failure in failures:
            print(f"- {failure}", file=sys.stderr)
        return 1
    print(f"zoo {args.command}: {target} passed every offline check.")
    return 0


def _ci(bundle: str, steps: list[str]) -> int:
    try:
        results = run_ci(bundle, steps)
    except (OSError, ValueError) as e:
        print(f"zoo ci: error: {e}", file=sys.stderr)
        return 1
    print(format_results(results))
    failed = [r.name for r in results if r.status == "failed"]
    skipped = [r.name for r in results if r.status == "skipped"]
    summary = f"zoo ci: {bundle}: {len(results) - len(failed) - len(skipped)} passed, {len(failed)} failed {failed}, "
    print(summary + f"{len(skipped)} skipped {skipped}", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0
