"""Voxel grids in world coordinates: RAS/LPS, axis orders, and the grid of a super-resolved volume."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

__all__ = ["LPS_TO_RAS", "RAS_ORNT", "axial_axis", "file_to_ras", "ras_to_file", "upsampled_affine", "SlabPlacement"]

#: ITK's world coordinates (LPS) to NIfTI's / MONAI's (RAS).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS_ORNT = axcodes2ornt(("R", "A", "S"))


def file_to_ras(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform from a file's axis order (RAS ``affine``) to RAS (Z = axial)."""
    return io_orientation(affine)


def ras_to_file(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform from RAS back to the file's own axis order."""
    return ornt_transform(RAS_ORNT, io_orientation(affine))


def axial_axis(affine: np.ndarray) -> int:
    """The file axis that becomes RAS Z (the axial slice axis)."""
    return int(np.flatnonzero(io_orientation(affine)[:, 0] == 2)[0])


def upsampled_affine(affine: np.ndarray, axes: Sequence[int], factor: float) -> np.ndarray:
    """The voxel-to-world affine of a grid with ``factor`` times more voxels along ``axes`` over the same extent.

    The columns of ``axes`` shrink by ``factor`` and the first voxel centre moves by
    ``(1/factor - 1) / 2`` old voxels along each of them, so the outer edges of the grid stay in place.
    Works for any 4x4 affine (RAS or LPS); ``factor < 1`` gives the coarser grid (e.g. LR).

    Args:
        affine: 4x4 voxel-to-world matrix of the original grid.
        axes: the array axes that are resampled.
        factor: voxels per original voxel along those axes.
    """
    affine = np.asarray(affine, dtype=np.float64)
    new = affine.copy()
    shift = np.zeros(3)
    for axis in axes:
        new[:3, axis] = affine[:3, axis] / factor
        shift[axis] = (1.0 / factor - 1.0) / 2.0
    new[:3, 3] = affine[:3, 3] + affine[:3, :3] @ shift
    return new


class SlabPlacement:
    """Where the slabs ``start:stop`` along the last axis of a work layout land in the file.

    The work layout is an axis permutation (and flips) of the file's, given as ``to_file`` (work array -> file
    array, e.g. ``nibabel.orientations.apply_orientation`` with :func:`ras_to_file`, or ``np.moveaxis``), so a work
    slab is a slab of the file along one file axis, in the same or the reverse order.

    Args:
        to_file: maps an array in the work layout (any shape) to the file's axis order.
        out_shape: the work-layout shape ``[A, B, N]`` of the whole output.

    Attributes:
        file_shape: the output's shape in the file's axis order.
        axis: the file axis of the last work axis.
        flipped: whether it runs the other way in the file.
    """

    def __init__(self, to_file: Callable[[np.ndarray], np.ndarray], out_shape: Sequence[int]) -> None:
        self.num = int(out_shape[2])
        self.file_shape = tuple(to_file(np.broadcast_to(np.zeros((), np.uint8), tuple(out_shape))).shape)
        probe = to_file(np.broadcast_to(np.arange(self.num + 3), (1, 2, self.num + 3)))  # sizes tell the axes apart
        self.axis = list(probe.shape).index(self.num + 3)
        line = np.moveaxis(probe, self.axis, -1).reshape(-1, self.num + 3)[0]
        self.flipped = bool(line[0] > line[-1])

    def file_range(self, start: int, stop: int) -> tuple[int, int]:
        """The index range along :attr:`axis` of the work slab ``start:stop``."""
        return (self.num - stop, self.num - start) if self.flipped else (start, stop)

    @property
    def in_order(self) -> bool:
        """Whether the slabs come in the file's order along its last axis (so a writer can stream them)."""
        return self.axis == 2 and not self.flipped
