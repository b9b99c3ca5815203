"""Export a trained generator as a self-contained MONAI model-zoo bundle, and verify it offline.

::

    python -m monai_lstmagan.zoo export --ckpt runs/train/model.pt --out zoo/lstmagan_sr \
        [--summary eval/summary.json] [--version 0.1.0] [--changelog "..."] [--notes "trained on ..."]
    python -m monai_lstmagan.zoo verify zoo/lstmagan_sr

The model-zoo CI installs PyPI packages only, so the package code is vendored: a copy of
``monai_lstmagan`` goes to ``DIR/scripts/monai_lstmagan/`` with its absolute imports rewritten to
``scripts.monai_lstmagan`` (``from scripts import monai_lstmagan`` for plain ``import monai_lstmagan``),
and the configs import it from there (``$import scripts.monai_lstmagan as monai_lstmagan``,
``_target_: scripts.monai_lstmagan...``). The bundle holds ``configs/`` (every config of the repository
bundle, vendored, plus ``metadata.json`` with a ``changelog`` and ``logging.conf``), ``models/model.pt``
(the checkpoint) and ``models/model.ts`` (TorchScript, made with ``monai.bundle ckpt_export``),
``docs/README.md`` (model-zoo template, with the metrics table of an evaluation ``summary.json`` when
given), ``docs/data_license.txt``, ``LICENSE`` and ``large_files.yml`` (files over 25 MB, which the
model zoo stores outside git).

Verification runs every check in a separate ``python -I`` process in which importing the installed
``monai_lstmagan`` raises ``ModuleNotFoundError`` (an import hook blocks the name), so only the vendored
copy can be used; each process reports the modules it loaded from ``scripts/`` and the check fails
unless they all live in the bundle. Checks: layout and ``large_files.yml``; every ``_target_`` and
``$import`` of every config resolves to vendored code; ``verify_metadata`` against the schema shipped in
the bundle (offline); ``verify_net_in_out``; ``ckpt_export`` to TorchScript and its output equal to the
eager generator and to ``models/model.ts``; ``monai.bundle run`` of ``inference.yaml`` on a small
synthetic volume from another working directory, with the output geometry checked.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from monai_lstmagan.checkpoints import load_generator
from monai_lstmagan.pretrained import pretrained_model_path

__all__ = [
    "PACKAGE",
    "VENDOR_PACKAGE",
    "rewrite_imports",
    "vendor_package",
    "vendor_config",
    "export_bundle",
    "verify_bundle",
    "main",
]

PACKAGE = "monai_lstmagan"
VENDOR_PACKAGE = f"scripts.{PACKAGE}"
LARGE_FILE_MB = 25.0
SCHEMA_FILE = "meta_schema_20240725.json"
ZOO_DATASET_DIR = "/workspace/data"

LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


# ------------------------------------------------------------------------------------------- vendoring


def _is_package_module(name: str | None) -> bool:
    return name is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))


def _replacement(node: ast.Import | ast.ImportFrom) -> str | None:
    """Source text replacing one import statement of the package, or ``None`` when it does not import it."""
    if isinstance(node, ast.ImportFrom):
        if node.level or not _is_package_module(node.module):
            return None
        return ast.unparse(ast.ImportFrom(module=f"scripts.{node.module}", names=node.names, level=0))
    if not any(_is_package_module(alias.name) for alias in node.names):
        return None
    statements = []
    for alias in node.names:
        if not _is_package_module(alias.name):
            statements.append(ast.unparse(ast.Import(names=[alias])))
        elif alias.asname:  # import monai_lstmagan.x as y
            statements.append(f"import scripts.{alias.name} as {alias.asname}")
        elif alias.name == PACKAGE:  # import monai_lstmagan
            statements.append(f"from scripts import {PACKAGE}")
        else:  # import monai_lstmagan.x: load the submodule, bind the name monai_lstmagan
            statements.append(f"import scripts.{alias.name}; from scripts import {PACKAGE}")
    return "; ".join(statements)


def rewrite_imports(source: str) -> str:
    """Rewrite the absolute imports of ``monai_lstmagan`` in Python source to the vendored ``scripts.monai_lstmagan``.

    Relative imports and every other line are left untouched (line structure is kept except that a
    multi-line import becomes one line).

    Raises:
        ValueError: the source does not parse.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    starts = np.cumsum([0] + [len(line) for line in lines]).tolist()

    def offset(lineno: int, col_bytes: int) -> int:
        line = lines[lineno - 1]
        return starts[lineno - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8"))

    edits = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            text = _replacement(node)
            if text is not None:
                edits.append((offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset), text))
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source


def _absolute_package_imports(source: str) -> list[int]:
    """Line numbers of remaining absolute imports of the installed package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level and _is_package_module(node.module):
            found.append(node.lineno)
        elif isinstance(node, ast.Import) and any(_is_package_module(a.name) for a in node.names):
            found.append(node.lineno)
    return found


def vendor_package(scripts_dir: str | os.PathLike) -> list[str]:
    """Copy the ``monai_lstmagan`` package into ``scripts_dir/monai_lstmagan`` with rewritten imports.

    Python files are rewritten with :func:`rewrite_imports`; package data (``resources/*.json``) is
    copied as is; ``__pycache__`` is skipped. ``scripts_dir/__init__.py`` is written.

    Returns:
        the files written, relative to ``scripts_dir``.
    """
    source_root = Path(__file__).resolve().parent
    scripts_dir = Path(scripts_dir)
    target_root = scripts_dir / PACKAGE
    written = []
    for path in sorted(source_root.rglob("*")):
        relative = path.relative_to(source_root)
        if "__pycache__" in relative.parts or path.is_dir() or path.suffix not in (".py", ".json"):
            continue
        target = target_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".py":
            target.write_text(rewrite_imports(path.read_text(encoding="utf-8")), encoding="utf-8")
        else:
            shutil.copy2(path, target)
        written.append(str(target.relative_to(scripts_dir)))
    from monai_lstmagan import __version__

    (scripts_dir / "__init__.py").write_text(
        f'"""Vendored copy of {PACKAGE} {__version__} (Apache-2.0): the model-zoo CI installs PyPI packages only.\n\n'
        f"Generated by ``python -m {PACKAGE}.zoo export``; absolute imports were rewritten to ``{VENDOR_PACKAGE}``.\n"
        'Do not edit: change the package and export again.\n"""\n',
        encoding="utf-8",
    )
    written.append("__init__.py")
    return written


def vendor_config(config: Any) -> Any:
    """Point a parsed bundle config at the vendored package.

    ``$import monai_lstmagan`` -> ``$import scripts.monai_lstmagan as monai_lstmagan`` (so expressions such as
    ``$monai_lstmagan.inference.run_inference(...)`` keep working; MONAI's ``from scripts import
    monai_lstmagan`` would look up an attribute that is not set before the submodule is imported),
    ``$import monai_lstmagan.x`` ->
    ``$import scripts.monai_lstmagan.x`` and ``_target_: monai_lstmagan.x.Y`` -> ``scripts.monai_lstmagan.x.Y``.
    """
    if isinstance(config, Mapping):
        out = {}
        for key, value in config.items():
            if key == "_target_" and isinstance(value, str) and _is_package_module(value):
                out[key] = f"scripts.{value}"
            else:
                out[key] = vendor_config(value)
        return out
    if isinstance(config, list):
        return [vendor_config(v) for v in config]
    if isinstance(config, str):
        stripped = config.strip()
        if stripped == f"$import {PACKAGE}":
            return f"$import {VENDOR_PACKAGE} as {PACKAGE}"
        if stripped.startswith(f"$import {PACKAGE}."):
            return f"$import scripts.{stripped[len('$import '):]}"
        if stripped.startswith(f"$from {PACKAGE}"):
            return f"$from scripts.{stripped[len('$from '):]}"
    return config


# ------------------------------------------------------------------------------------------- export


def _default_bundle_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "bundle"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dump_config(config: Mapping, path: Path, source_name: str) -> None:
    header = (
        f"# Generated by `python -m {PACKAGE}.zoo export` from the repository's bundle/configs/{source_name}.\n"
        f"# The code it uses is vendored in scripts/{PACKAGE}/.\n"
    )
    with open(path, "w") as f:
        f.write(header)
        yaml.safe_dump(dict(config), f, sort_keys=False, width=110, default_flow_style=False)


def _zoo_configs(bundle_dir: Path, generator_kwargs: Mapping[str, Any]) -> dict[str, dict]:
    """The repository bundle's configs, vendored, with the checkpoint's architecture and zoo paths."""
    from monai.bundle import ConfigParser

    configs = {}
    for path in sorted((bundle_dir / "configs").iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json") or path.name == "metadata.json":
            continue
        config = vendor_config(ConfigParser.load_config_file(path))
        if "dataset_dir" in config:
            config["dataset_dir"] = ZOO_DATASET_DIR
        if path.stem in ("inference", "evaluate"):
            config["ckpt_path"] = "$@bundle_root + '/models/model.pt'"
        if "network_def" in config and isinstance(config["network_def"], dict):
            config["scale"] = int(generator_kwargs["scale"])
            for key, value in generator_kwargs.items():
                if key != "scale":
                    config["network_def"][key] = value
        if path.stem == "train" and isinstance(config.get("generator_kwargs"), dict):
            config["scale"] = int(generator_kwargs["scale"])
            for key, value in generator_kwargs.items():
                if key in config["generator_kwargs"] and key not in ("scale", "attention"):
                    config["generator_kwargs"][key] = value
        configs[path.name] = config
    if "inference.yaml" not in configs:
        raise FileNotFoundError(f"{bundle_dir / 'configs' / 'inference.yaml'} is missing: it is the zoo bundle's entry point.")
    return configs


def _metrics_table(summary: Mapping[str, Any]) -> str:
    lines = [
        "| method | region | PSNR (dB) mean ± std | SSIM mean ± std |",
        "|---|---|---|---|",
    ]

    def cell(stats: Mapping[str, Any], digits: int) -> str:
        if stats.get("mean") is None:
            return "n/a"
        std = stats.get("std")
        return f"{stats['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")

    for method, regions in summary["metrics"].items():
        for region, stats in regions.items():
            lines.append(f"| {method} | {region} | {cell(stats['psnr'], 2)} | {cell(stats['ssim'], 4)} |")
    return "\n".join(lines)


def _eval_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for method, regions in summary["metrics"].items():
        for region, stats in regions.items():
            for metric in ("psnr", "ssim"):
                if stats[metric].get("mean") is not None:
                    out[f"{metric}_{region}_{method}"] = round(float(stats[metric]["mean"]), 4)
    return out


def _readme(
    generator_kwargs: Mapping[str, Any],
    num_parameters: int,
    checkpoint_facts: Mapping[str, Any],
    summary: Mapping[str, Any] | None,
    notes: str | None,
    version: str,
) -> str:
    scale = int(generator_kwargs["scale"])
    arch = ", ".join(f"{k}={v}" for k, v in generator_kwargs.items())
    facts = "\n".join(f"- {k}: {v}" for k, v in checkpoint_facts.items()) or "- (none recorded)"
    if summary is not None:
        performance = (
            f"Measured with `configs/evaluate.yaml` (split `{summary.get('split')}`, "
            f"{summary.get('num_volumes')} volumes, x{summary.get('scale')}). Per-volume PSNR/SSIM with data range 1 "
            "on intensities normalised from the HR volume (CT window -1000..400 HU, MR 0.5..99.5 foreground "
            "percentiles); `foreground` = body/head mask, `whole` = every voxel; SSIM is 2D per axial slice "
            "(11x11 Gaussian window). Bicubic uses the same antialiased bicubic operator that made the LR input. "
            "On grayscale images the 'Y channel' of SR papers is the image itself.\n\n" + _metrics_table(summary)
        )
    else:
        performance = (
            "No evaluation summary was given to the export, so no numbers are reported here. Run "
            "`configs/evaluate.yaml` on held-out volumes and export again with `--summary OUT/summary.json`."
        )
    notes_text = notes if notes else "Not given at export (data, split, duration and hardware of the training run)."
    return f"""# LSTMAGAN super-resolution (x{scale}) of CT and MR volumes

Version {version}. Research use only; not for clinical use or diagnosis.

## Model Overview
LSTMAGAN super-resolves 3D medical images slice by slice: every axial slice is upsampled x{scale}
in-plane by a generator built from attention-gated dense (ADC) blocks on an SRResNet skeleton
(9x9 head conv + PReLU, ADC blocks, conv + BatchNorm, global skip, pixel-shuffle x2 stages, 9x9 tail
conv). It was trained with MSE + 6e-3 VGG19 perceptual + 1e-3 WGAN-GP adversarial loss against a
critic that reads 16 consecutive slices with an LSTM, after an MSE-only warm-up; the weights are the
exponential moving average of the generator.

Generator: `LSTMAGANGenerator({arch})`, {num_parameters:,} parameters.

## Data
Chest CT from LUNA16 (MetaImage `.mhd`) and brain MR FLAIR from BraTS2021 (NIfTI `.nii.gz`) in the
paper's setting; any folder of `.nii`, `.nii.gz`, `.mhd` or `.nrrd` volumes works. The split is by
patient and written once to a datalist JSON. See `docs/data_license.txt` for the data licenses.

## Training configuration
{notes_text}

Facts recorded in the checkpoint:
{facts}

`configs/train.yaml` is the training configuration of the repository (the dataset path is set to
`{ZOO_DATASET_DIR}`; override it with `--dataset_dir`).

## Input
A 3D volume (`.nii`, `.nii.gz`, `.mhd`, `.mha`, `.nrrd`). It is reoriented to RAS, normalised to [0, 1]
(CT: -1000..400 HU window; MR: 0.5..99.5 percentiles of the foreground) and cut into axial slices; the
network input is a batch of slices `[N, 1, h, w]` float32 in [0, 1].

## Output
The network output is `[N, 1, {scale}h, {scale}w]`. The inference workflow clamps it to [0, 1], maps it
back to the input's units (HU for CT) and voxel type, and writes `<name>_sr<ext>` in the input's
format with the same physical extent and direction: in-plane spacing / {scale}, first voxel centre
moved by (1/{scale} - 1)/2 old voxels, slice axis unchanged. Where the bicubic upsampling of the input
lies outside the normalisation window (bone, metal, the brightest MR voxels) the output keeps the
bicubic value instead of the generator's, which only covers the window.

## Performance
{performance}

## MONAI Bundle Commands
Run from this folder (the export tools put the working directory, not `--bundle_root`, on `sys.path`;
`run` adds the bundle root itself).

Super-resolve one file or every volume of a folder:
```
python -m monai.bundle run --config_file configs/inference.yaml --bundle_root . --input FILE --output_dir OUT
python -m monai.bundle run --config_file configs/inference.yaml --bundle_root . --dataset_dir DIR --output_dir OUT
```
Evaluate against bicubic (held-out split of the training datalist, or `--split all` for a folder):
```
python -m monai.bundle run --config_file configs/evaluate.yaml --bundle_root . --dataset_dir DIR --split all --output_dir OUT
```
Export TorchScript and check the bundle:
```
python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt --meta_file configs/metadata.json --config_file configs/inference.yaml --bundle_root .
python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath scripts/{PACKAGE}/resources/{SCHEMA_FILE}
python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json --config_file configs/inference.yaml --bundle_root .
```

## Code
`scripts/{PACKAGE}/` is a vendored copy of the `{PACKAGE}` package (imports rewritten to
`{VENDOR_PACKAGE}`), so the bundle needs only the PyPI packages listed in `configs/metadata.json`.

# References
- Ledig C, et al. Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial Network. CVPR 2017.
- Gulrajani I, et al. Improved Training of Wasserstein GANs. NeurIPS 2017.
- Oktay O, et al. Attention U-Net: Learning Where to Look for the Pancreas. MIDL 2018.

# License
Code and weights: Apache License 2.0 (`LICENSE`). Data: see `docs/data_license.txt`.
"""


def export_bundle(
    ckpt_path: str,
    out_dir: str,
    summary_file: str | None = None,
    version: str | None = None,
    changelog: str | None = None,
    notes: str | None = None,
    bundle_dir: str | None = None,
    large_file_mb: float = LARGE_FILE_MB,
) -> list[str]:
    """Write a self-contained model-zoo bundle for a generator checkpoint, then verify it.

    Args:
        ckpt_path: generator checkpoint ``model.pt`` (``checkpoints.save_generator`` format).
        out_dir: the new bundle folder; it must not exist or be empty.
        summary_file: ``summary.json`` of ``evaluate``, for the README table and ``eval_metrics``.
        version: bundle version (default: the repository ``metadata.json``'s).
        changelog: the changelog entry of this version (default: a line naming the checkpoint).
        notes: free text for the README's training section (data, split, duration, hardware).
        bundle_dir: the repository bundle (default: ``bundle/`` next to the package sources).
        large_file_mb: files larger than this go to ``large_files.yml``.

    Returns:
        the failed verification checks (empty when the bundle passed).
    """
    source = Path(bundle_dir) if bundle_dir else _default_bundle_dir()
    if not (source / "configs" / "inference.yaml").is_file():
        raise FileNotFoundError(f"'{source}' is not the repository bundle (no configs/inference.yaml): pass --bundle_dir.")
    out = Path(out_dir).resolve()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder '{out}' exists and is not empty: choose a new folder.")
    generator, ckpt = load_generator(ckpt_path)
    generator_kwargs = dict(ckpt["generator"])
    scale = int(generator_kwargs["scale"])
    summary = None
    if summary_file:
        with open(summary_file) as f:
            summary = json.load(f)
        if int(summary.get("scale", scale)) != scale:
            raise ValueError(f"'{summary_file}' evaluates a x{summary.get('scale')} model, the checkpoint is x{scale}.")

    for folder in ("configs", "models", "docs", "scripts"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    vendor_package(out / "scripts")
    for name, config in _zoo_configs(source, generator_kwargs).items():
        _dump_config(config, out / "configs" / (Path(name).stem + ".yaml"), name)
    logging_conf = source / "configs" / "logging.conf"
    (out / "configs" / "logging.conf").write_text(logging_conf.read_text() if logging_conf.is_file() else LOGGING_CONF)

    with open(source / "configs" / "metadata.json") as f:
        meta = json.load(f)
    version = version or meta.get("version", "0.1.0")
    entry = changelog or f"exported from checkpoint {os.path.basename(ckpt_path)} (x{scale})"
    meta["version"] = version
    meta["changelog"] = {version: entry, **{k: v for k, v in meta.get("changelog", {}).items() if k != version}}
    meta["monai_version"] = __import__("monai").__version__
    meta["pytorch_version"] = torch.__version__.split("+")[0]
    meta["numpy_version"] = np.__version__
    meta["task"] = f"In-plane x{scale} super-resolution of 3D chest CT and brain MR volumes, slice by slice"
    meta["pred_classes"] = (
        f"one channel: the super-resolved axial slice, {scale}x the input size in-plane, intensities in [0, 1] "
        "(inference clamps and maps them back to the input units)"
    )
    for output in meta["network_data_format"]["outputs"].values():
        output["spatial_shape"] = [f"{16 * scale}*n", f"{16 * scale}*n"]
    if summary is not None:
        meta["eval_metrics"] = _eval_metrics(summary)
    with open(out / "configs" / "metadata.json", "w") as f:
        json.dump(meta, f, indent=4)

    shutil.copy2(ckpt_path, out / "models" / "model.pt")
    shutil.copy2(source / "LICENSE", out / "LICENSE")
    shutil.copy2(source / "docs" / "data_license.txt", out / "docs" / "data_license.txt")
    facts = {k: v for k, v in ckpt.items() if k not in ("state_dict", "generator") and isinstance(v, (int, float, str))}
    num_parameters = sum(p.numel() for p in generator.parameters())
    (out / "docs" / "README.md").write_text(_readme(generator_kwargs, num_parameters, facts, summary, notes, version))

    failures = []
    result = _isolated(
        out, out, True, "module", "monai.bundle", "ckpt_export", "network_def", "--filepath", "models/model.ts",
        "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.yaml", "--bundle_root", ".",
    )  # fmt: skip
    if result.returncode != 0:
        failures.append(f"ckpt_export to models/model.ts failed:\n{_tail(result)}")
    _write_large_files(out, large_file_mb)
    if failures:
        return failures
    return verify_bundle(str(out), large_file_mb)


def _write_large_files(out: Path, large_file_mb: float) -> None:
    entries = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.stat().st_size > large_file_mb * 1024 * 1024:
            entries.append(
                {"path": str(path.relative_to(out)), "url": "", "hash_val": _sha256(path), "hash_type": "sha256"}
            )
    with open(out / "large_files.yml", "w") as f:
        f.write(
            f"# Files over {large_file_mb:g} MB are not committed to the model zoo: upload each one and fill in its url.\n"
        )
        yaml.safe_dump({"large_files": entries}, f, sort_keys=False)


# ------------------------------------------------------------------------------------------- verification

_BOOTSTRAP = r"""
import importlib.abc, json, os, runpy, sys

bundle_dir, add_root, mode, payload = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4:]


class _BlockInstalledPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "monai_lstmagan" or fullname.startswith("monai_lstmagan."):
            raise ModuleNotFoundError(
                f"import of {fullname!r} blocked: the exported bundle may only use its vendored scripts/ copy"
            )
        return None


sys.meta_path.insert(0, _BlockInstalledPackage())
if add_root:
    sys.path.insert(0, bundle_dir)


def _report():
    files = sorted(
        {os.path.realpath(m.__file__) for n, m in list(sys.modules.items())
         if (n == "scripts" or n.startswith("scripts.")) and getattr(m, "__file__", None)}
    )
    print("ZOO_VENDORED_MODULES=" + json.dumps(files), flush=True)


import atexit

atexit.register(_report)
if mode == "module":
    sys.argv = [payload[0]] + payload[1:]
    runpy.run_module(payload[0], run_name="__main__", alter_sys=True)
else:
    exec(compile(payload[0], "<zoo-check>", "exec"), {"__name__": "__main__", "BUNDLE": bundle_dir})
"""

_API_CHECKS = r"""
import ast, glob, importlib, os
import torch
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out
from monai.utils import optional_import

configs = sorted(glob.glob(os.path.join(BUNDLE, "configs", "*.yaml")))


def walk(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str) and value.startswith("scripts."):
                found.add(("target", value))
            else:
                walk(value, found)
    elif isinstance(node, list):
        for value in node:
            walk(value, found)
    elif isinstance(node, str) and node.strip().startswith(("$import ", "$from ")):
        found.add(("import", node.strip()[1:]))


for path in configs:
    found = set()
    walk(ConfigParser.load_config_file(path), found)
    for kind, value in sorted(found):
        if kind == "import":  # resolved the way MONAI's ConfigExpression does it
            node = ast.parse(value).body[0]
            if isinstance(node, ast.ImportFrom):
                _, ok = optional_import(node.module, name=node.names[0].name)
            else:
                _, ok = optional_import(node.names[0].name)
            assert ok, f"{os.path.basename(path)}: '{value}' does not resolve"
        else:
            module_name, _, attribute = value.rpartition(".")
            getattr(importlib.import_module(module_name), attribute)
    print(f"config ok: {os.path.basename(path)} ({len(found)} imports/targets)")

schema = os.path.join(BUNDLE, "scripts", "monai_lstmagan", "resources", "meta_schema_20240725.json")
meta = os.path.join(BUNDLE, "configs", "metadata.json")
inference = os.path.join(BUNDLE, "configs", "inference.yaml")
verify_metadata(meta_file=meta, filepath=schema)
print("verify_metadata ok")
verify_net_in_out(net_id="network_def", meta_file=meta, config_file=inference, bundle_root=BUNDLE, device="cpu", n=2)
print("verify_net_in_out ok")

from scripts.monai_lstmagan.checkpoints import load_generator

eager, _ = load_generator(os.path.join(BUNDLE, "models", "model.pt"))
shipped = torch.jit.load(os.path.join(BUNDLE, "models", "model.ts"))
torch.manual_seed(0)
for shape in [(2, 1, 16, 16), (1, 1, 13, 21)]:
    x = torch.rand(shape)
    with torch.no_grad():
        expected = eager(x)
        for name, net in (("models/model.ts", shipped),):
            diff = float((net(x) - expected).abs().max())
            assert diff < 1e-4, f"{name} differs from the eager generator by {diff}"
print("torchscript ok")
"""


def _tail(result: subprocess.CompletedProcess, limit: int = 3000) -> str:
    return ((result.stdout or "") + (result.stderr or ""))[-limit:]


def _isolated(bundle_dir: Path, cwd: Path, add_root: bool, mode: str, *payload: str) -> subprocess.CompletedProcess:
    """Run ``python -I -B`` (no ``__pycache__`` left in the bundle) with the installed package blocked.

    ``add_root`` puts the bundle folder on ``sys.path`` (as ``python -m`` does for the working directory).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cmd = [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, str(bundle_dir), "1" if add_root else "0", mode, *payload]
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=900)


def _vendored_modules(result: subprocess.CompletedProcess) -> list[str]:
    for line in (result.stdout or "").splitlines():
        if line.startswith("ZOO_VENDORED_MODULES="):
            return json.loads(line.split("=", 1)[1])
    return []


def _check_vendored(result: subprocess.CompletedProcess, bundle_dir: Path, what: str) -> list[str]:
    modules = _vendored_modules(result)
    scripts = os.path.realpath(bundle_dir / "scripts")
    if not modules:
        return [f"{what}: no module of scripts/ was loaded"]
    outside = [m for m in modules if not m.startswith(scripts + os.sep)]
    return [f"{what}: modules loaded from outside the bundle: {outside}"] if outside else []


def _check_layout(bundle: Path, large_file_mb: float) -> list[str]:
    failures = []
    required = [
        "configs/metadata.json", "configs/inference.yaml", "configs/logging.conf", "models/model.pt", "models/model.ts",
        "docs/README.md", "docs/data_license.txt", "LICENSE", "large_files.yml", "scripts/__init__.py",
        f"scripts/{PACKAGE}/__init__.py", f"scripts/{PACKAGE}/resources/{SCHEMA_FILE}",
    ]  # fmt: skip
    failures += [f"missing {name}" for name in required if not (bundle / name).is_file()]
    for path in sorted((bundle / "scripts").rglob("*.py")):
        lines = _absolute_package_imports(path.read_text(encoding="utf-8"))
        if lines:
            failures.append(f"{path.relative_to(bundle)} still imports the installed {PACKAGE} (lines {lines})")
    if (bundle / "large_files.yml").is_file():
        with open(bundle / "large_files.yml") as f:
            listed = {e["path"] for e in (yaml.safe_load(f) or {}).get("large_files", [])}
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            relative = str(path.relative_to(bundle))
            if path.stat().st_size > large_file_mb * 1024 * 1024 and relative not in listed:
                failures.append(f"{relative} is over {large_file_mb:g} MB but not in large_files.yml")
    with open(bundle / "configs" / "metadata.json") as f:
        meta = json.load(f)
    if meta.get("version") not in meta.get("changelog", {}):
        failures.append("metadata.json: the changelog has no entry for the version")
    return failures


def _check_inference_run(bundle: Path, work: Path) -> list[str]:
    import nibabel as nib

    from monai_lstmagan.inference import upsampled_affine

    with open(bundle / "configs" / "metadata.json") as f:
        spatial = json.load(f)["network_data_format"]["outputs"]
    scale = int(str(next(iter(spatial.values()))["spatial_shape"][0]).split("*")[0]) // 16
    run_dir = work / "elsewhere"
    run_dir.mkdir(parents=True, exist_ok=True)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (32, 28, 3)], indexing="ij")
    head = (grid[0] / 0.8) ** 2 + (grid[1] / 0.7) ** 2 < 1
    volume = np.where(head, 300 + 500 * (1 + np.cos(4 * grid[0]) * np.sin(3 * grid[1])), 0).astype(np.int16)
    affine = np.diag([0.9, 0.8, 5.0, 1.0])
    affine[:3, 3] = [-14.0, 11.0, 30.0]
    nib.save(nib.Nifti1Image(volume, affine), str(run_dir / "probe.nii.gz"))
    result = _isolated(
        bundle, run_dir, False, "module", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "inference.yaml"), "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--logging_file", str(bundle / "configs" / "logging.conf"), "--bundle_root", str(bundle),
        "--input", "probe.nii.gz", "--output_dir", "out", "--progress", "False", "--device", "cpu",
    )  # fmt: skip
    if result.returncode != 0:
        return [f"inference run from another working directory failed:\n{_tail(result)}"]
    failures = _check_vendored(result, bundle, "inference run")
    out = run_dir / "out" / "probe_sr.nii.gz"
    if not out.is_file():
        return failures + [f"inference run wrote no {out}"]
    image = nib.load(str(out))
    if image.shape != (32 * scale, 28 * scale, 3) or image.get_data_dtype() != np.int16:
        failures.append(f"inference output has shape {image.shape} / {image.get_data_dtype()}, expected x{scale} int16")
    elif not np.allclose(image.affine, upsampled_affine(affine, (0, 1), scale), atol=1e-5):
        failures.append(f"inference output affine {image.affine.tolist()} does not cover the input's extent")
    return failures


def verify_bundle(bundle_dir: str, large_file_mb: float = LARGE_FILE_MB) -> list[str]:
    """Verify an exported bundle offline without the installed package (see the module docstring).

    Returns:
        the failed checks, each a message (empty when everything passed).
    """
    bundle = Path(bundle_dir).resolve()
    failures = _check_layout(bundle, large_file_mb)
    if failures:
        return failures
    with tempfile.TemporaryDirectory(prefix="lstmagan-zoo-check-") as tmp:
        work = Path(tmp)
        result = _isolated(bundle, bundle, True, "code", _API_CHECKS)
        if result.returncode != 0:
            failures.append(f"config/metadata/network/TorchScript checks failed:\n{_tail(result)}")
        else:
            failures += _check_vendored(result, bundle, "config/metadata/network/TorchScript checks")
        result = _isolated(
            bundle, bundle, True, "module", "monai.bundle", "ckpt_export", "network_def",
            "--filepath", str(work / "reexport.ts"), "--ckpt_file", "models/model.pt",
            "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml", "--bundle_root", ".",
        )  # fmt: skip
        if result.returncode != 0:
            failures.append(f"ckpt_export failed:\n{_tail(result)}")
        else:
            failures += _check_vendored(result, bundle, "ckpt_export")
            shipped, again = torch.jit.load(str(bundle / "models" / "model.ts")), torch.jit.load(str(work / "reexport.ts"))
            x = torch.rand(1, 1, 12, 12)
            with torch.no_grad():
                if not torch.allclose(shipped(x), again(x), atol=1e-5):
                    failures.append("ckpt_export gives another network than models/model.ts")
        failures += _check_inference_run(bundle, work)
    return failures


# ------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_lstmagan.zoo export ...`` / ``... verify DIR``; exit status 1 on any failure."""
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.zoo", description=__doc__.split("\n\n")[0])
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
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            failures = export_bundle(
                args.ckpt or pretrained_model_path(2), args.out, args.summary, args.version, args.changelog, args.notes,
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


if __name__ == "__main__":
    sys.exit(main())
