"""The pieces of ``bundle/configs/inference.yaml`` as a MONAI workflow (dataset -> preprocessing -> inferer ->
postprocessing in a ``SupervisedEvaluator``), around the one scan-in / scan-out pipeline of
:mod:`monai_lstmagan.inference.files`.

- :func:`inference_datalist`: the items ``{"image": path, "modality": m}`` of a run, checked like ``lstmagan-sr``
  checks them (output folder writable, no output replaces an input) before anything is read;
- :class:`LoadSliceStackd` (preprocessing): a scan -> its axial slices ``[Z, 1, X, Y]`` in [0, 1], the network
  input of :class:`~monai_lstmagan.engines.inferer.SliceStackInferer`;
- :class:`SuperResolvedWriterd` (postprocessing): the inferred slices ``pred`` ``[Z, 1, X*s, Y*s]`` -> the output
  file, written by :func:`monai_lstmagan.inference.files.super_resolve_file` (geometry, units, voxel type and
  format of the input; atomic), so the workflow and ``lstmagan-sr`` write the same file the same way.

The writer reads the input scan a second time (the pipeline reads, normalises and writes it; only the
generator's work is taken from the evaluator).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform
from nibabel.orientations import apply_orientation
from tqdm import tqdm

from monai_lstmagan.data.discovery import collect_inputs
from monai_lstmagan.inference.files import check_run_outputs, super_resolve_file
from monai_lstmagan.inference.in_plane import InPlaneSR
from monai_lstmagan.inference.options import InferenceOptions
from monai_lstmagan.io.geometry import file_to_ras
from monai_lstmagan.io.paths import check_output_dir
from monai_lstmagan.io.scans import read_scan, scan_files
from monai_lstmagan.transforms.intensity import IntensityNormalizationd
from monai_lstmagan.transforms.ops import bicubic_upsample

__all__ = ["inference_datalist", "first_item", "LoadSliceStackd", "PredictedInPlaneSR", "SuperResolvedWriterd"]

BASELINE_CHUNK = 16  # slices whose bicubic baseline is computed at a time (bounds the memory)


def inference_datalist(
    output_dir: str, inputs: str | Sequence[str] | None = None, dataset_dir: str | None = None, modality: str = "auto"
) -> list[dict[str, str]]:
    """The volumes of an inference run as dataset items, checked before anything is read.

    Args:
        output_dir: where ``<name>_sr<ext>`` files go (created if needed, must be writable).
        inputs: volume files or folders; when given, ``dataset_dir`` is ignored.
        dataset_dir: a folder searched for volumes (LUNA16, BraTS or any-folder layout).
        modality: ``"ct"``, ``"mr"`` or ``"auto"`` (a folder's layout may set it per volume).

    Returns:
        ``[{"image": absolute path, "image_path": the same (kept for the writer), "modality": m}, ...]`` in input
        order.

    Raises:
        ValueError: neither inputs nor a folder, or an output would replace an input / two inputs share an output.
        FileNotFoundError: an input does not exist or a folder holds no volume.
    """
    output_dir = check_output_dir(output_dir)
    if inputs is None or inputs == "" or (not isinstance(inputs, str) and len(inputs) == 0):
        if not dataset_dir:
            raise ValueError("give input files (`--input FILE`) or a folder (`--dataset_dir DIR`).")
        inputs = [dataset_dir]
    items = collect_inputs([inputs] if isinstance(inputs, str) else list(inputs), modality, output_dir)
    check_run_outputs([path for path, _ in items], output_dir)
    return [{"image": path, "image_path": path, "modality": item_modality} for path, item_modality in items]


def first_item(batch: Sequence[dict]) -> dict:
    """``collate_fn`` of the inference dataloader (batch size 1): the item itself, whose ``image`` is already a
    batch of slices ``[Z, 1, X, Y]`` (a volume's slice count is its batch size)."""
    if len(batch) != 1:
        raise ValueError(f"the inference dataloader takes one volume at a time (batch_size 1), got {len(batch)}.")
    return batch[0]


class LoadSliceStackd(MapTransform):
    """``{"image": path, "modality": m}`` -> ``image`` ``[Z, 1, X, Y]`` float32 in [0, 1], the axial slices.

    The scan is read by :func:`monai_lstmagan.io.scans.read_scan` (checked; a clear error naming the file),
    reoriented to RAS (Z = axial) and normalised by :class:`IntensityNormalizationd` exactly as
    :func:`~monai_lstmagan.inference.files.super_resolve_file` does it; the item's ``modality`` is set to the
    resolved one.

    Args:
        keys: the path key(s).
        modality_key: the item key holding ``"ct"``, ``"mr"`` or ``"auto"``.
        default_modality: used when the item has none (or ``"auto"``).
    """

    def __init__(self, keys: str = "image", modality_key: str = "modality", default_modality: str = "auto") -> None:
        super().__init__(keys)
        self.modality_key = modality_key
        self.normaliser = IntensityNormalizationd(
            keys="image", modality_key="modality", default_modality=default_modality
        )

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            scan = read_scan(str(d[key]))
            work = np.ascontiguousarray(apply_orientation(scan.array, file_to_ras(scan.affine)), dtype=np.float32)
            item = {"image": MetaTensor(torch.from_numpy(work)[None]), "modality": d.get(self.modality_key, "auto")}
            image = self.normaliser(item)["image"]  # [1, X, Y, Z]
            d[key] = image.as_tensor()[0].permute(2, 0, 1).unsqueeze(1).contiguous()  # [Z, 1, X, Y]
            d[self.modality_key] = str(image.meta["modality"])
        return d


class PredictedInPlaneSR(InPlaneSR):
    """In-plane SR whose generator output is already there: ``pred`` ``[Z, 1, X*s, Y*s]`` (the evaluator's).

    Everything but :meth:`chunks` (work layout, output grid and geometry) is :class:`InPlaneSR`'s.
    """

    def __init__(self, pred: torch.Tensor, scale: int) -> None:
        self.generator = None
        self.scale = int(scale)
        self.info = {}
        self.pred = pred

    def chunks(self, image: MetaTensor, work: np.ndarray, options: InferenceOptions) -> Iterator:
        """``(start, stop, sr [X*s, Y*s, n] in [0, 1], bicubic baseline [X*s, Y*s, n] in input units)``."""
        num_slices = work.shape[2]
        if self.pred.ndim != 4 or self.pred.shape[0] != num_slices:
            raise ValueError(f"pred must be [{num_slices}, 1, H, W] for this scan, got {tuple(self.pred.shape)}.")
        for start in range(0, num_slices, BASELINE_CHUNK):
            stop = min(start + BASELINE_CHUNK, num_slices)
            sr = self.pred[start:stop].detach().float().clamp(0.0, 1.0)[:, 0].permute(1, 2, 0).cpu().numpy()
            lr = torch.from_numpy(np.ascontiguousarray(work[:, :, start:stop].transpose(2, 0, 1)))[:, None]
            baseline = bicubic_upsample(lr, self.scale)[:, 0].permute(1, 2, 0).numpy()
            yield start, stop, sr, baseline


class SuperResolvedWriterd(MapTransform):
    """Write the super-resolved scan of an item: ``OUT/<name>_sr<ext>``, same format, voxel type, extent and
    direction as the input (``super_resolve_file`` of :mod:`monai_lstmagan.inference.files`, atomic).

    Args:
        output_dir: the output folder (checked by :func:`inference_datalist`).
        scale: the generator's in-plane factor.
        image_key: the item key of the input path. The dataset keeps it in ``image_path`` (``image`` holds the
            tensor after preprocessing).
        pred_key: the inferred slices ``[Z, 1, X*s, Y*s]`` in [0, 1].
        modality_key: the resolved modality of the item.
        output_dtype: voxel type of the output (e.g. ``"float32"``); None keeps the input's.
        inputs: every item of the run, whose files no output may replace.
        progress: print ``input -> output`` per volume.

    Sets ``output_key`` (default ``"output_file"``) to the path written.
    """

    def __init__(
        self,
        output_dir: str,
        scale: int,
        image_key: str = "image_path",
        pred_key: str = "pred",
        modality_key: str = "modality",
        output_dtype: str | None = None,
        inputs: Sequence[Mapping[str, str]] = (),
        progress: bool = False,
        output_key: str = "output_file",
    ) -> None:
        super().__init__(pred_key)
        self.output_dir = output_dir
        self.scale = int(scale)
        self.image_key, self.pred_key, self.modality_key, self.output_key = (
            image_key,
            pred_key,
            modality_key,
            output_key,
        )
        self.output_dtype = output_dtype
        self.protected = sorted(set().union(*(scan_files(item["image"]) for item in inputs)) if inputs else set())
        self.progress = progress

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        path = str(d[self.image_key])
        operation = PredictedInPlaneSR(d[self.pred_key], self.scale)
        modality = str(d.get(self.modality_key, "auto"))
        d[self.output_key] = super_resolve_file(
            operation, path, self.output_dir, modality, self.output_dtype, InferenceOptions(), self.protected
        )
        if self.progress:
            tqdm.write(f"{path} -> {d[self.output_key]}")
        return d
