"""Names shared by the model-zoo modules: package names, the git size limit, the schema file, the templates."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "PACKAGE",
    "VENDOR_PACKAGE",
    "LARGE_FILE_MB",
    "SCHEMA_FILE",
    "TEMPLATES_DIR",
    "MODEL_ZOO_CI_DIR",
    "read_template",
]

PACKAGE = "monai_lstmagan"
VENDOR_PACKAGE = f"scripts.{PACKAGE}"
LARGE_FILE_MB = 25.0
SCHEMA_FILE = "meta_schema_20240725.json"

#: the vendored files of the MONAI model zoo (its ``ci/`` scripts, ``setup.cfg``, ``pyproject.toml``): PROVENANCE.md
MODEL_ZOO_CI_DIR = Path(__file__).resolve().parent / "model_zoo_ci"
#: ``README.md.template``, ``logging.conf``, ``bootstrap.py`` and ``api_checks.py``: package data, not modules.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def read_template(name: str) -> str:
    """The text of ``templates/<name>`` next to this module (also in a vendored copy, see ``vendor_package``)."""
    return (TEMPLATES_DIR / name).read_text(encoding="utf-8")
