"""The MONAI model zoo's own CI steps on an exported bundle, offline, with the zoo's scripts and settings.

``python -m monai_lstmagan.zoo ci BUNDLE_DIR [--steps ...] [--check_pins]`` runs, each on a fresh copy of the
bundle laid out as ``models/<name>/`` of a model-zoo checkout (the folder name is the bundle name):

- ``files``: every file is a real file (no links: the zoo, zips and Windows do not follow them);
- ``verify_min`` / ``verify_full``: the zoo's ``ci/verify_bundle.py -m min`` / ``-m full`` (vendored in
  ``model_zoo_ci/``, see its ``PROVENANCE.md``). What its CI downloads is prepared offline: the metadata schema
  (``ci/prepare_schema.py``) is the bundle's vendored copy of the same file, ``models/model_info.json`` is empty
  (a new bundle), and listed large files must already be in the bundle (their download is skipped);
- ``unit_train`` / ``unit_infer``: the pattern of ``ci/unit_tests/test_brats_mri_segmentation.py``:
  ``ConfigWorkflow`` of ``train.yaml`` / ``inference.yaml`` on synthetic volumes, checked with the zoo's
  ``check_workflow(..., check_properties=True)`` (``templates/unit_tests.py``);
- ``code_format``: ``isort --check``, ``black --skip-magic-trailing-comma --check`` and ``flake8`` with the
  zoo's ``setup.cfg`` / ``pyproject.toml`` (``runtests.sh --codeformat``; pytype is not run);
- ``pre_commit``: the hooks of the zoo's ``.pre-commit-config.yaml`` (pre-commit-hooks 4.6.0), on the files of a
  git repository made of the bundle, as ``pre-commit run --all-files`` passes them;
- ``pins`` (network, only with ``--check_pins``): every version pinned in ``metadata.json`` has a wheel for
  CPython 3.10 on Linux (``pip install --dry-run``), what the zoo CI's ``pip install`` step needs.

Every Python step runs in an isolated process in which the installed ``monai_lstmagan`` cannot be imported
(:func:`monai_lstmagan.zoo.verify.run_isolated`), so only the bundle's vendored copy is used. The formatters
and hooks are the ``zoo`` extra (``pip install monai_lstmagan[zoo]``); a step whose tools are missing is
reported as skipped, not passed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from monai_lstmagan.zoo.common import MODEL_ZOO_CI_DIR, PACKAGE, read_template
from monai_lstmagan.zoo.verify import check_vendored, output_tail, run_isolated

__all__ = ["CI_STEPS", "DEFAULT_STEPS", "MODEL_ZOO_COMMIT", "StepResult", "run_ci", "format_results"]

MODEL_ZOO_COMMIT = "dfae206df112837d817e78d3727c9f32b3b52e82"
CI_STEPS = ("files", "verify_min", "verify_full", "unit_train", "unit_infer", "code_format", "pre_commit", "pins")
DEFAULT_STEPS = tuple(step for step in CI_STEPS if step != "pins")  # pins needs the network

#: the hooks of the zoo's .pre-commit-config.yaml: (hook id, pre_commit_hooks module, arguments, file filter)
PRE_COMMIT_HOOKS = (
    ("end-of-file-fixer", "end_of_file_fixer", (), "text"),
    ("trailing-whitespace", "trailing_whitespace_fixer", (), "text-not-weights"),
    ("check-yaml", "check_yaml", (), "yaml"),
    ("check-docstring-first", "check_docstring_first", (), "python"),
    ("check-executables-have-shebangs", "check_executables_have_shebangs", (), "text-executable"),
    ("check-toml", "check_toml", (), "toml"),
    ("check-case-conflict", "check_case_conflict", (), "all"),
    ("check-added-large-files", "check_added_large_files", ("--maxkb=1024",), "all"),
    ("detect-private-key", "detect_private_key", (), "text"),
    ("pretty-format-json", "pretty_format_json", ("--no-sort-keys", "--indent=4"), "json"),
    ("mixed-line-ending", "mixed_line_ending", (), "text"),
    ("forbid-new-submodules", "forbid_new_submodules", (), "all"),
)  # fmt: skip
PACKAGE_RESOURCES_DIR = Path(__file__).resolve().parents[1] / "resources"
ZOO_EXTRA_HINT = "install the zoo extra: pip install 'monai_lstmagan[zoo]'"


@dataclass
class StepResult:
    """One CI step: ``status`` is ``"passed"``, ``"failed"`` or ``"skipped"``; ``detail`` says what ran or why not."""

    name: str
    status: str
    detail: str = ""


def _copy_bundle(bundle: Path, models_root: Path) -> Path:
    target = models_root / bundle.name
    shutil.copytree(bundle, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _links(bundle: Path) -> list[str]:
    return sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_symlink())


def _step_files(bundle: Path) -> StepResult:
    links = _links(bundle)
    if links:
        return StepResult("files", "failed", f"links instead of files: {links}")
    count = sum(1 for p in bundle.rglob("*") if p.is_file())
    return StepResult("files", "passed", f"{count} real files, no links")


def _prepare_zoo_checkout(bundle: Path, root: Path) -> tuple[Path, list[str]]:
    """``root/models/<name>/`` with what the zoo CI would have downloaded, from the bundle itself."""
    models = root / "models"
    models.mkdir(parents=True)
    copy = _copy_bundle(bundle, models)
    (models / "model_info.json").write_text("{}\n")
    notes = ["models/model_info.json is empty (a new bundle)"]
    with open(copy / "configs" / "metadata.json") as f:
        schema_name = json.load(f)["schema"].rsplit("/", 1)[-1]
    vendored_schema = next(iter(sorted(copy.glob(f"scripts/*/resources/{schema_name}"))), None)
    package_schema = PACKAGE_RESOURCES_DIR / schema_name  # the repository bundle has no scripts/
    if vendored_schema is not None:
        shown = str(vendored_schema.relative_to(copy))
    elif package_schema.is_file():
        vendored_schema, shown = package_schema, f"{PACKAGE}/resources/{schema_name} (this package's copy)"
    else:
        raise FileNotFoundError(f"{schema_name} (the metadata schema) is neither in the bundle nor in {PACKAGE}")
    (copy / "eval").mkdir(exist_ok=True)
    shutil.copyfile(vendored_schema, copy / "eval" / "schema.json")
    notes.append(f"schema: {shown} instead of the download of prepare_schema.py")
    large = copy / "large_files.yml"
    if large.is_file():
        with open(large) as f:
            entries = (yaml.safe_load(f) or {}).get("large_files") or []
        missing = [e["path"] for e in entries if not (copy / e["path"]).is_file()]
        if missing:
            raise FileNotFoundError(
                f"large files listed but not in the bundle (their download needs the network): {missing}"
            )
        if entries:
            large.unlink()
            notes.append(f"download of {len(entries)} listed large file(s) skipped (present in the bundle)")
    return copy, notes


def _step_verify(bundle: Path, mode: str, work: Path) -> StepResult:
    name = f"verify_{mode}"
    try:
        copy, notes = _prepare_zoo_checkout(bundle, work / name)
    except (OSError, ValueError, KeyError) as e:
        return StepResult(name, "failed", f"could not prepare the model-zoo layout: {e}")
    script = MODEL_ZOO_CI_DIR / "ci" / "verify_bundle.py"
    result = run_isolated(
        copy, work / name, False, "path", str(script), "-b", copy.name, "-p", str(copy.parent), "-m", mode
    )
    if result.returncode != 0:
        return StepResult(name, "failed", f"ci/verify_bundle.py -m {mode}:\n{output_tail(result)}")
    failures = check_vendored(result, copy, name) if mode == "full" else []
    if failures:
        return StepResult(name, "failed", "; ".join(failures))
    said = [line for line in (result.stdout or "").splitlines() if "verified" in line or "successfully" in line]
    if mode == "full":
        notes.append("property check of supported_apps skipped by the zoo script itself (supported_apps is empty)")
    return StepResult(name, "passed", "; ".join(said + notes))


def _step_unit(bundle: Path, workflow: str, work: Path) -> StepResult:
    name = f"unit_{workflow}"
    root = work / name
    root.mkdir(parents=True)
    copy = _copy_bundle(bundle, root / "models")
    unit_tests_dir = MODEL_ZOO_CI_DIR / "ci" / "unit_tests"
    program = read_template("unit_tests.py")
    result = run_isolated(copy, root, True, "code-in", str(unit_tests_dir), program, workflow, str(root / "run"))
    if result.returncode != 0:
        return StepResult(
            name, "failed", f"ConfigWorkflow({workflow}) with check_properties=True:\n{output_tail(result)}"
        )
    failures = check_vendored(result, copy, name)
    if failures:
        return StepResult(name, "failed", "; ".join(failures))
    done = [line for line in (result.stdout or "").splitlines() if line.startswith("ZOO_UNIT_TEST_OK")]
    return StepResult(name, "passed", done[-1] if done else "check_workflow passed")


def _missing_modules(*names: str) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def _run_tool(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=str(cwd), capture_output=True, text=True, timeout=600
    )  # fmt: skip


def _step_code_format(bundle: Path, work: Path) -> StepResult:
    missing = _missing_modules("isort", "black", "flake8")
    if missing:
        return StepResult("code_format", "skipped", f"{', '.join(missing)} not installed: {ZOO_EXTRA_HINT}")
    root = work / "code_format"  # a model-zoo checkout: its setup.cfg and pyproject.toml, the bundle in models/
    root.mkdir(parents=True)
    _copy_bundle(bundle, root / "models")
    shutil.copyfile(MODEL_ZOO_CI_DIR / "model-zoo-setup.cfg", root / "setup.cfg")
    shutil.copyfile(MODEL_ZOO_CI_DIR / "model-zoo-pyproject.toml", root / "pyproject.toml")
    commands = {  # runtests.sh --codeformat, run from the checkout on "$(pwd)"
        "isort --check": ["isort", "--check", str(root)],
        "black --skip-magic-trailing-comma --check": ["black", "--skip-magic-trailing-comma", "--check", str(root)],
        "flake8": ["flake8", str(root), "--count", "--statistics"],
    }
    failures, ran = [], []
    for label, command in commands.items():
        result = _run_tool(command, root)
        ran.append(label)
        if result.returncode != 0:
            failures.append(f"{label}:\n{output_tail(result, 2000)}")
    plugins = _missing_modules("bugbear", "pep8ext_naming")
    note = f" (flake8 plugins missing, their B/N checks did not run: {plugins}; {ZOO_EXTRA_HINT})" if plugins else ""
    if failures:
        return StepResult("code_format", "failed", "\n".join(failures) + note)
    return StepResult("code_format", "passed", ", ".join(ran) + " with the model zoo's setup.cfg/pyproject.toml" + note)


def _is_text(path: Path) -> bool:
    data = path.read_bytes()[:8192]
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _selected(files: Sequence[Path], selector: str) -> list[Path]:
    suffixes = {"yaml": (".yaml", ".yml"), "python": (".py",), "toml": (".toml",), "json": (".json",)}
    if selector == "all":
        return list(files)
    if selector in suffixes:
        return [f for f in files if f.suffix in suffixes[selector]]
    text = [f for f in files if _is_text(f)]
    if selector == "text-not-weights":
        return [f for f in text if f.suffix not in (".ts", ".pt")]
    if selector == "text-executable":
        return [f for f in text if f.stat().st_mode & 0o111]
    return text


def _step_pre_commit(bundle: Path, work: Path) -> StepResult:
    if _missing_modules("pre_commit_hooks"):
        return StepResult("pre_commit", "skipped", f"pre-commit-hooks not installed: {ZOO_EXTRA_HINT}")
    if shutil.which("git") is None:
        return StepResult("pre_commit", "skipped", "git is not installed (the hooks check what git stages)")
    copy = _copy_bundle(bundle, work / "pre_commit")
    git = ["git", "-c", "init.defaultBranch=main", "-c", "core.autocrlf=false"]
    subprocess.run([*git, "init", "-q"], cwd=copy, check=True)
    subprocess.run([*git, "add", "-A"], cwd=copy, check=True)
    listed = subprocess.run([*git, "ls-files"], cwd=copy, check=True, capture_output=True, text=True).stdout
    files = [copy / name for name in listed.splitlines() if not name.endswith(".ipynb")]  # the config's exclude
    failures, ran = [], []
    for hook, module, args, selector in PRE_COMMIT_HOOKS:
        chosen = _selected(files, selector)
        if not chosen:
            continue
        # the console script's entry point (not every hook module runs under ``python -m``)
        entry = f"import sys; from pre_commit_hooks.{module} import main; sys.exit(main())"
        names = [str(f.relative_to(copy)) for f in chosen]
        result = subprocess.run(
            [sys.executable, "-c", entry, *args, *names], cwd=str(copy), capture_output=True, text=True, timeout=600
        )
        ran.append(f"{hook} ({len(chosen)} files)")
        if result.returncode != 0:
            failures.append(f"{hook}:\n{output_tail(result, 2000)}")
    if failures:
        return StepResult("pre_commit", "failed", "\n".join(failures))
    return StepResult("pre_commit", "passed", ", ".join(ran) + " (hooks without matching files are not listed)")


def pinned_requirements(meta: dict) -> list[str]:
    """``name==version`` of everything ``metadata.json`` pins, as the zoo's ``ci/get_bundle_requirements.py``
    lists it (monai, torch, numpy, ``optional_packages_version`` and ``required_packages_version``)."""
    pins = []
    for key, name in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        if key in meta:
            pins.append(f"{name}=={meta[key]}")
    for key in ("optional_packages_version", "required_packages_version"):
        pins += [f"{name}=={version}" for name, version in meta.get(key, {}).items()]
    return pins


def _step_pins(bundle: Path, work: Path) -> StepResult:
    with open(bundle / "configs" / "metadata.json") as f:
        pins = pinned_requirements(json.load(f))
    command = [
        "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.10", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
        "--platform", "manylinux2014_x86_64", "--target", str(work / "pins"), *pins,
    ]  # fmt: skip
    result = _run_tool(command, work)
    if result.returncode != 0:
        return StepResult("pins", "failed", f"no CPython 3.10 wheel for a pin of {pins}:\n{output_tail(result, 2000)}")
    return StepResult("pins", "passed", f"CPython 3.10 wheels exist for {' '.join(pins)}")


def run_ci(bundle_dir: str, steps: Sequence[str] = DEFAULT_STEPS, work_dir: str | None = None) -> list[StepResult]:
    """Run the model zoo's CI steps (see the module docstring) on an exported bundle; nothing in it is changed.

    Args:
        bundle_dir: the exported bundle (its folder name is the bundle name).
        steps: names of :data:`CI_STEPS`, run in that order.
        work_dir: an empty folder for the copies (default: a temporary one, removed afterwards).

    Returns:
        one :class:`StepResult` per step.
    """
    unknown = [step for step in steps if step not in CI_STEPS]
    if unknown:
        raise ValueError(f"unknown CI step(s) {unknown}: choose from {list(CI_STEPS)}.")
    bundle = Path(bundle_dir).resolve()
    if not (bundle / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"'{bundle}' is not a bundle (no configs/metadata.json).")
    results = []
    with tempfile.TemporaryDirectory(prefix="lstmagan-zoo-ci-", dir=work_dir) as tmp:
        work = Path(tmp)
        for step in CI_STEPS:
            if step not in steps:
                continue
            if step == "files":
                results.append(_step_files(bundle))
            elif step.startswith("verify_"):
                results.append(_step_verify(bundle, step.split("_", 1)[1], work))
            elif step.startswith("unit_"):
                results.append(_step_unit(bundle, step.split("_", 1)[1], work))
            elif step == "code_format":
                results.append(_step_code_format(bundle, work))
            elif step == "pre_commit":
                results.append(_step_pre_commit(bundle, work))
            else:
                results.append(_step_pins(bundle, work))
    return results


def format_results(results: Sequence[StepResult]) -> str:
    """One block per step: ``STATUS name: detail``."""
    return "\n".join(f"{r.status.upper():7s} {r.name}: {r.detail}" for r in results)
