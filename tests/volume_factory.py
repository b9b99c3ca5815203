"""Write tiny test volumes (MetaImage and NIfTI) and LUNA16- / BraTS-like trees.

Plain functions, importable from any test (``from volume_factory import write_mhd``: pytest puts ``tests/`` on
``sys.path`` because it has no ``__init__.py``) and
used by the fixtures in ``tests/conftest.py``. Nothing here needs ITK: MetaImage headers are written
as text and the voxels as little-endian raw (or zlib-compressed ``.zraw``) bytes, so the files are
exactly what a scanner export or LUNA16 holds.

Arrays are given in index order ``(x, y, z)`` (NIfTI / ITK index order), which is the order MONAI's
readers return them in.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "TEST_SPACING",
    "TEST_DIRECTION",
    "TEST_SHAPE",
    "rotation_about_z",
    "smooth_volume",
    "ct_volume",
    "mr_volume",
    "write_mhd",
    "write_nifti",
    "nifti_affine",
    "make_luna16_tree",
    "make_brats_tree",
]

TEST_SHAPE = (24, 20, 10)
TEST_SPACING = (0.7, 0.8, 2.5)

_MET_TYPES = {
    np.dtype(np.int16): "MET_SHORT",
    np.dtype(np.uint16): "MET_USHORT",
    np.dtype(np.int32): "MET_INT",
    np.dtype(np.uint8): "MET_UCHAR",
    np.dtype(np.float32): "MET_FLOAT",
    np.dtype(np.float64): "MET_DOUBLE",
}


def rotation_about_z(degrees: float) -> np.ndarray:
    """3x3 rotation matrix about the z (axial) axis: a non-identity direction that keeps z axial."""
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


TEST_DIRECTION = rotation_about_z(30.0)


def smooth_volume(shape: Sequence[int] = TEST_SHAPE, seed: int = 0) -> np.ndarray:
    """A smooth float32 volume in [0, 1] (sum of low-frequency cosines), shape ``shape``."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    vol = np.zeros(shape, dtype=np.float64)
    for _ in range(3):
        freq = rng.uniform(0.3, 1.2, size=len(shape))
        phase = rng.uniform(0, 2 * np.pi)
        vol += np.cos(2 * np.pi * sum(f * g for f, g in zip(freq, grids)) + phase)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    return vol.astype(np.float32)


def ct_volume(shape: Sequence[int] = TEST_SHAPE, seed: int = 0) -> np.ndarray:
    """An int16 CT-like volume in HU: air (-1000) around an ellipsoid body of soft tissue with a lung."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1.0
    lung = ((x - 0.3) / 0.25) ** 2 + (y / 0.3) ** 2 < 1.0
    rng = np.random.default_rng(seed)
    vol = np.full(shape, -1000.0)
    vol[body] = 40.0 + 30.0 * smooth_volume(shape, seed)[body]
    vol[body & lung] = -850.0
    vol += rng.normal(0, 5, size=shape)
    return np.round(vol).astype(np.int16)


def mr_volume(shape: Sequence[int] = TEST_SHAPE, seed: int = 0) -> np.ndarray:
    """An int16 MR-like volume: zero background around a head of intensities ~200..1200."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (x / 0.85) ** 2 + (y / 0.8) ** 2 < 1.0
    vol = np.zeros(shape)
    vol[head] = 200.0 + 1000.0 * smooth_volume(shape, seed)[head]
    return np.round(vol).astype(np.int16)


def write_mhd(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing: Sequence[float] = TEST_SPACING,
    direction: np.ndarray | None = TEST_DIRECTION,
    origin: Sequence[float] | None = None,
    compressed: bool = False,
) -> str:
    """Write ``array`` (index order x, y, z[, t]) as MetaImage ``path`` (.mhd) + ``.raw``/``.zraw``.

    Args:
        path: header path ending in ``.mhd``.
        array: voxels in index order; its dtype sets ``ElementType``.
        spacing: ``ElementSpacing`` (one value per dimension; padded with 1.0).
        direction: ``TransformMatrix`` rows as ITK's direction (LPS); ``None`` is identity.
        origin: ``Offset``; defaults to zeros.
        compressed: zlib-compress the voxels into ``.zraw`` (as the embedded sample CT).

    Returns:
        the header path.
    """
    array = np.asarray(array)
    ndim = array.ndim
    spacing = list(spacing)[:ndim] + [1.0] * max(0, ndim - len(spacing))
    dir_matrix = np.eye(ndim)
    if direction is not None:
        d = np.asarray(direction, dtype=float)
        k = min(ndim, d.shape[0])
        dir_matrix[:k, :k] = d[:k, :k]
    origin = list(origin) if origin is not None else [0.0] * ndim
    base = os.path.splitext(os.fspath(path))[0]
    data_file = base + (".zraw" if compressed else ".raw")
    # MetaImage stores x fastest: Fortran order of an (x, y, z) array
    payload = np.asarray(array, dtype=array.dtype.newbyteorder("<")).tobytes(order="F")
    if compressed:
        payload = zlib.compress(payload)
    with open(data_file, "wb") as f:
        f.write(payload)
    # ITK's TransformMatrix lists the direction matrix column by column
    lines = [
        "ObjectType = Image",
        f"NDims = {ndim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compressed}",
    ]
    if compressed:
        lines.append(f"CompressedDataSize = {len(payload)}")
    lines += [
        "TransformMatrix = " + " ".join(f"{v:.10g}" for v in dir_matrix.T.ravel()),
        "Offset = " + " ".join(f"{v:.10g}" for v in origin),
        "ElementSpacing = " + " ".join(f"{v:.10g}" for v in spacing),
        "DimSize = " + " ".join(str(n) for n in array.shape),
        f"ElementType = {_MET_TYPES[array.dtype]}",
        f"ElementDataFile = {os.path.basename(data_file)}",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.fspath(path)


def nifti_affine(
    spacing: Sequence[float] = TEST_SPACING,
    direction: np.ndarray | None = TEST_DIRECTION,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """4x4 NIfTI (RAS) affine from spacing, a 3x3 direction and an origin."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = d @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    """Write ``array`` (index order x, y, z[, t]) as NIfTI-1 ``path`` (.nii or .nii.gz) with ``affine``."""
    import nibabel as nib

    affine = nifti_affine() if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array), affine), os.fspath(path))
    return os.fspath(path)


def make_luna16_tree(root: str | os.PathLike, uids_per_subset: Sequence[Sequence[str]], shape=TEST_SHAPE) -> list[str]:
    """LUNA16 layout ``root/subset<i>/<SeriesUID>.mhd`` (+ ``.raw``) plus a distractor mask folder.

    Returns:
        the ``.mhd`` paths written, in order.
    """
    paths = []
    for i, uids in enumerate(uids_per_subset):
        folder = os.path.join(root, f"subset{i}")
        os.makedirs(folder, exist_ok=True)
        for j, uid in enumerate(uids):
            paths.append(write_mhd(os.path.join(folder, f"{uid}.mhd"), ct_volume(shape, seed=10 * i + j)))
    # LUNA16 ships lung masks as .mhd outside the subsets: they must not be picked up
    masks = os.path.join(root, "seg-lungs-LUNA16")
    os.makedirs(masks, exist_ok=True)
    write_mhd(os.path.join(masks, "mask.mhd"), np.zeros(shape, dtype=np.uint8))
    return paths


def make_brats_tree(
    root: str | os.PathLike, case_ids: Sequence[str], modalities: Sequence[str] = ("flair", "t1"), shape=TEST_SHAPE
) -> list[str]:
    """BraTS2021 layout ``root/BraTS2021_<id>/BraTS2021_<id>_<modality>.nii.gz`` (+ a seg file).

    Returns:
        the paths written for the first modality, in order.
    """
    paths = []
    for k, case in enumerate(case_ids):
        name = f"BraTS2021_{case}"
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for m, mod in enumerate(modalities):
            p = write_nifti(os.path.join(folder, f"{name}_{mod}.nii.gz"), mr_volume(shape, seed=k * 7 + m))
            if m == 0:
                paths.append(p)
        write_nifti(os.path.join(folder, f"{name}_seg.nii.gz"), np.zeros(shape, dtype=np.uint8))
    return paths
