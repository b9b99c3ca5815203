"""Shared fixtures: tiny CT / MR volumes and LUNA16-, BraTS- and folder-layout datasets in tmp dirs.

Volumes are 24x20x10 voxels (index order x, y, z) with spacing (0.7, 0.8, 2.5) mm and a direction
rotated 30 degrees about z (see ``volume_factory``). Writers for custom volumes are plain functions
in ``tests/volume_factory.py`` (``from volume_factory import write_mhd, write_nifti``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from volume_factory import ct_volume, make_brats_tree, make_luna16_tree, mr_volume, write_mhd, write_nifti  # noqa: E402

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "bundle" / "sample_data"

LUNA16_UIDS = (
    (
        "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860",
        "1.3.6.1.4.1.14519.5.2.1.6279.6001.100332161840553388986847034053",
    ),
    (
        "1.3.6.1.4.1.14519.5.2.1.6279.6001.100398138793540579077826395208",
        "1.3.6.1.4.1.14519.5.2.1.6279.6001.100530488926682752765845212286",
    ),
    ("1.3.6.1.4.1.14519.5.2.1.6279.6001.100620385482151095585000946543",),
)
BRATS_CASES = ("00000", "00002", "00003", "00005", "00006", "00008")


@pytest.fixture(scope="session", autouse=True)
def onnx_graph_cache(tmp_path_factory) -> Path:
    """The ONNX Runtime backend's graph cache of the whole test session: a temporary folder, not the home folder.

    Set in the environment, so the subprocesses of the tests (bundle runs, the CLI) use it too.
    """
    folder = tmp_path_factory.mktemp("onnx_cache")
    previous = os.environ.get("MONAI_LSTMAGAN_CACHE")
    os.environ["MONAI_LSTMAGAN_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("MONAI_LSTMAGAN_CACHE", None)
    else:
        os.environ["MONAI_LSTMAGAN_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Two small CT volumes (``ct0``, ``ct1``): one for training, one for validation, in bundle runs."""
    root = tmp_path_factory.mktemp("tiny_ct")
    for i in range(2):
        write_mhd(root / f"ct{i}.mhd", ct_volume((32, 32, 12), seed=i))
    return root


@pytest.fixture(scope="session")
def sample_data_dir() -> Path:
    """The bundle's embedded demo data (``ct/lung1_crop.mhd`` 256x256x48, ``mr/brain1_t1c.nii.gz`` 256x256x25)."""
    return SAMPLE_DATA


@pytest.fixture
def ct_mhd(tmp_path) -> str:
    """One tiny CT volume (int16 HU) as ``.mhd`` + ``.raw``."""
    return write_mhd(tmp_path / "ct.mhd", ct_volume())


@pytest.fixture
def ct_zraw(tmp_path) -> str:
    """One tiny CT volume as ``.mhd`` + compressed ``.zraw`` (as the sample CT)."""
    return write_mhd(tmp_path / "ct_z.mhd", ct_volume(), compressed=True)


@pytest.fixture
def mr_nifti(tmp_path) -> str:
    """One tiny MR volume (int16, zero background) as ``.nii.gz``."""
    return write_nifti(tmp_path / "mr.nii.gz", mr_volume())


@pytest.fixture
def luna16_dir(tmp_path) -> Path:
    """LUNA16-like tree: ``subset0..2/<SeriesUID>.mhd`` (5 CT series) plus ``seg-lungs-LUNA16/``."""
    root = tmp_path / "LUNA16"
    make_luna16_tree(root, LUNA16_UIDS)
    return root


@pytest.fixture
def brats_dir(tmp_path) -> Path:
    """BraTS2021-like tree: 6 ``BraTS2021_XXXXX/`` cases with flair, t1 and seg ``.nii.gz``."""
    root = tmp_path / "BraTS2021"
    make_brats_tree(root, BRATS_CASES)
    return root


@pytest.fixture
def folder_dir(tmp_path) -> Path:
    """A plain folder: CT ``.mhd`` and MR ``.nii.gz`` / ``.nii`` in subfolders, plus a non-volume file."""
    root = tmp_path / "folder"
    (root / "ct").mkdir(parents=True)
    (root / "mr").mkdir(parents=True)
    write_mhd(root / "ct" / "a.mhd", ct_volume(seed=1))
    write_mhd(root / "ct" / "b.mhd", ct_volume(seed=2), compressed=True)
    write_nifti(root / "mr" / "c.nii.gz", mr_volume(seed=3))
    write_nifti(root / "mr" / "d.nii", mr_volume(seed=4))
    (root / "notes.txt").write_text("not a volume")
    return root
