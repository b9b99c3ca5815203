"""Export a trained generator as a self-contained MONAI model-zoo bundle, and verify it offline.

::

    python -m monai_lstmagan.zoo export --ckpt runs/train/model.pt --out zoo/ct_mri_lstmagan_super_resolution \
        [--summary eval/summary.json] [--version 0.1.0] [--changelog "..."] [--notes "trained on ..."]
    python -m monai_lstmagan.zoo verify zoo/ct_mri_lstmagan_super_resolution
    python -m monai_lstmagan.zoo ci zoo/ct_mri_lstmagan_super_resolution [--check_pins]

The model-zoo CI installs PyPI packages only, so the package code is vendored: a copy of
``monai_lstmagan`` goes to ``DIR/scripts/monai_lstmagan/`` with its absolute imports rewritten to
``scripts.monai_lstmagan`` (``from scripts import monai_lstmagan`` for plain ``import monai_lstmagan``),
and the configs import it from there (``$import scripts.monai_lstmagan as monai_lstmagan``,
``_target_: scripts.monai_lstmagan...``). The rewritten imports are re-sorted and re-wrapped with
the zoo's isort/black settings (the ``zoo`` extra), so the copy passes the zoo's code-format check; ``zoo/`` and
``bench/`` are not vendored. The bundle holds ``configs/`` (``inference.yaml``, ``train.yaml`` and
``evaluate.yaml`` of the repository bundle, vendored, plus ``metadata.json`` with the repository's
``changelog`` and ``logging.conf``), ``models/model.pt`` (the checkpoint) and ``models/model.ts``
(TorchScript, made with ``monai.bundle ckpt_export``), ``docs/README.md`` (the zoo's README template, with
the metrics table of an evaluation ``summary.json`` when given, or the held-out numbers of the shipped
recipe for a shipped model), ``docs/data_license.txt``, ``LICENSE`` and ``large_files.yml`` (files over
25 MB, which the model zoo stores outside git).

Verification runs every check in a separate ``python -I`` process in which importing the installed
``monai_lstmagan`` raises ``ModuleNotFoundError`` (an import hook blocks the name), so only the vendored
copy can be used; each process reports the modules it loaded from ``scripts/`` and the check fails
unless they all live in the bundle. Checks: layout and ``large_files.yml``; every ``_target_`` and
``$import`` of every config resolves to vendored code; ``verify_metadata`` against the schema shipped in
the bundle (offline); ``verify_net_in_out``; ``ckpt_export`` to TorchScript and its output equal to the
eager generator and to ``models/model.ts``; ``monai.bundle run`` of ``inference.yaml`` on a small
synthetic volume from another working directory, with the output geometry checked.

``python -m monai_lstmagan.zoo ci DIR`` (:mod:`~monai_lstmagan.zoo.ci`) runs the model zoo's own CI steps on an
exported bundle with its vendored scripts and settings (``model_zoo_ci/``): ``verify_bundle.py`` min and full,
the ``ConfigWorkflow`` unit-test pattern with ``check_properties=True``, isort/black/flake8 and the pre-commit
hooks (see ``docs/model_zoo.md``).

Modules: :mod:`~monai_lstmagan.zoo.vendoring` (the rewritten copy of the package, configs pointed at it),
:mod:`~monai_lstmagan.zoo.export` (:func:`export_bundle`), :mod:`~monai_lstmagan.zoo.verify`
(:func:`verify_bundle`, the isolated processes), :mod:`~monai_lstmagan.zoo.cli` (:func:`main`),
:mod:`~monai_lstmagan.zoo.ci` (:func:`run_ci`), :mod:`~monai_lstmagan.zoo.common` (shared names);
``templates/`` holds the README template, the held-out numbers of the shipped models, the fallback
``logging.conf`` and the programs the isolated processes run (package data, not modules).
"""

# besides __all__: the constants, and the helpers the tests call as zoo._name
from monai_lstmagan.zoo.ci import run_ci
from monai_lstmagan.zoo.cli import main
from monai_lstmagan.zoo.common import LARGE_FILE_MB, PACKAGE, SCHEMA_FILE, VENDOR_PACKAGE  # noqa: F401
from monai_lstmagan.zoo.export import ZOO_DATASET_DIR, export_bundle  # noqa: F401
from monai_lstmagan.zoo.vendoring import absolute_package_imports  # noqa: F401
from monai_lstmagan.zoo.vendoring import rewrite_imports, vendor_config, vendor_package
from monai_lstmagan.zoo.verify import check_layout, run_isolated, verify_bundle  # noqa: F401

__all__ = [
    "PACKAGE",
    "VENDOR_PACKAGE",
    "rewrite_imports",
    "vendor_package",
    "vendor_config",
    "export_bundle",
    "verify_bundle",
    "run_ci",
    "main",
]
