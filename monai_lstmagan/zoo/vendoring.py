"""Vendoring: a copy of the package with its absolute imports rewritten, and configs pointed at it."""

from __future__ import annotations

import ast
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import optional_import

from monai_lstmagan import __version__
from monai_lstmagan.zoo.common import MODEL_ZOO_CI_DIR, PACKAGE, VENDOR_PACKAGE

black, HAS_BLACK = optional_import("black")
isort, HAS_ISORT = optional_import("isort")

__all__ = ["NOT_VENDORED", "rewrite_imports", "format_for_the_zoo", "vendor_package", "vendor_config"]

#: subpackages an exported bundle does not need: the exporter / CI runner and the benchmarks
NOT_VENDORED = ("zoo", "bench")


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


def format_for_the_zoo(source: str) -> str:
    """Python source formatted as the model zoo's ``runtests.sh --autofix`` does: isort then black
    (``--skip-magic-trailing-comma``) with the zoo's ``setup.cfg`` / ``pyproject.toml`` (``model_zoo_ci/``).

    The package is already formatted so; this re-sorts and re-wraps the imports :func:`rewrite_imports` changed
    (``scripts`` is a third-party name to the zoo's isort: only ``models`` is first party there).

    Raises:
        ModuleNotFoundError: black or isort is not installed (the ``zoo`` extra).
    """
    if not (HAS_BLACK and HAS_ISORT):
        raise ModuleNotFoundError(
            "formatting the vendored code needs black and isort: pip install 'monai_lstmagan[zoo]'"
        )
    config = isort.Config(settings_file=str(MODEL_ZOO_CI_DIR / "model-zoo-setup.cfg"))
    sorted_source = isort.code(source, config=config)
    versions = {black.TargetVersion.PY37, black.TargetVersion.PY38, black.TargetVersion.PY39}  # the zoo's setting
    mode = black.Mode(target_versions=versions, line_length=120, magic_trailing_comma=False)
    return black.format_str(sorted_source, mode=mode)


def absolute_package_imports(source: str) -> list[int]:
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

    Only what inference and training use: the subpackages of :data:`NOT_VENDORED` (the exporter and CI
    runner ``zoo/``, the benchmarks ``bench/``) are left out, and so are the shipped weights (the bundle has its
    own ``models/``). Python files are rewritten with :func:`rewrite_imports` and, where a rewritten import
    changed, formatted with :func:`format_for_the_zoo` (the package itself is formatted to the zoo's settings and
    documents module attributes with ``#:`` comments, as its ``check-docstring-first`` hook needs);
    ``resources/*.json`` is copied as is; ``__pycache__``
    is skipped. ``scripts_dir/__init__.py`` is written.

    Returns:
        the files written, relative to ``scripts_dir``.
    """
    source_root = Path(__file__).resolve().parents[1]
    scripts_dir = Path(scripts_dir)
    target_root = scripts_dir / PACKAGE
    if not (HAS_BLACK and HAS_ISORT):
        warnings.warn(
            "black/isort are not installed: the vendored code keeps its rewritten imports unformatted, so the model "
            "zoo's code-format check will fail on it. Install the zoo extra: pip install 'monai_lstmagan[zoo]'.",
            stacklevel=2,
        )
    written = []
    for path in sorted(source_root.rglob("*")):
        relative = path.relative_to(source_root)
        if relative.parts[0] in NOT_VENDORED or "__pycache__" in relative.parts:
            continue
        if path.is_dir() or path.suffix not in (".py", ".json"):
            continue
        target = target_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".py":
            source = path.read_text(encoding="utf-8")
            rewritten = rewrite_imports(source)
            if rewritten != source and HAS_BLACK and HAS_ISORT:
                rewritten = format_for_the_zoo(rewritten)
            target.write_text(rewritten, encoding="utf-8")
        else:
            shutil.copy2(path, target)
        written.append(str(target.relative_to(scripts_dir)))
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
