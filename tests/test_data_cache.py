"""The prepared-volume data path: same samples as the whole-volume pipeline, a disk cache that is reused,
invalidated and repaired, streamed validation with the numbers of whole volumes, and worker-independent crops."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from torch.utils.data import DataLoader
from volume_factory import ct_volume, mr_volume, write_mhd, write_nifti

from monai_lstmagan.data import (
    CorruptCacheEntryError,
    DiskVolume,
    MemoryVolume,
    SliceSampleDataset,
    ValidationChunkDataset,
    prepare_volumes,
)
from monai_lstmagan.data.cache import open_disk_entry
from monai_lstmagan.handlers import StreamingVolumeMetrics
from monai_lstmagan.metrics import volume_metrics
from monai_lstmagan.reproducible import EpochPermutationSampler, IterationBatchSampler, iteration_seed
from monai_lstmagan.transforms import sample_transforms, train_transforms, validation_transforms


@pytest.fixture
def two_volumes(tmp_path):
    """A CT (.mhd, int16) and an MR (.nii.gz, float) volume, as datalist items."""
    ct = write_mhd(tmp_path / "ct.mhd", ct_volume((40, 36, 20), seed=3))
    mr = write_nifti(tmp_path / "mr.nii.gz", mr_volume((36, 40, 18), seed=4))
    return [{"image": str(ct), "patient": "ct"}, {"image": str(mr), "patient": "mr"}]


def samples_of(dataset, indices):
    return [dataset[i] for i in indices]


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_prepared_samples_equal_the_whole_volume_pipeline(two_volumes, tmp_path, mode):
    """A crop from a prepared volume (raw voxels normalised on read) is bit-identical to the crop of the
    normalised whole volume that train_transforms draws with the same seed."""
    volumes = prepare_volumes(two_volumes, str(tmp_path / "cache"), mode=mode, progress=False)
    assert all(isinstance(v, MemoryVolume if mode == "memory" else DiskVolume) for v in volumes)
    reference = train_transforms(2, num_slices=8, crop_size=16, foreground_prob=0.9)
    dataset = SliceSampleDataset(volumes, sample_transforms(2, num_slices=8, crop_size=16), 3, items=two_volumes)
    for k, seed in enumerate([0, 1, 7, 123]):
        reference.set_random_state(seed=seed)
        expected = reference(dict(two_volumes[k % 2]))
        got = dataset[(k, seed, True)]
        for key in ("hr", "lr", "mask"):
            assert torch.equal(torch.as_tensor(got[key]), torch.as_tensor(expected[key])), (mode, seed, key)
        assert got["patient"] == two_volumes[k % 2]["patient"]


def test_ct_voxels_are_stored_as_int16_and_slice_major(two_volumes, tmp_path):
    ct, _ = prepare_volumes(two_volumes, str(tmp_path / "cache"), mode="disk", progress=False)
    x, y, z = ct.shape
    assert ct.dtype == np.int16 and os.path.getsize(os.path.join(ct.folder, "image.bin")) == x * y * z * 2
    raw, mask = ct.read_slices(3, 5)
    assert raw.shape == (2, x, y) and mask.shape == (2, x, y)


def entry_folders(cache):
    return sorted(p for p in os.listdir(cache) if not p.startswith("."))


def test_disk_cache_is_reused_and_a_changed_source_is_prepared_again(two_volumes, tmp_path):
    cache = str(tmp_path / "cache")
    first = prepare_volumes(two_volumes, cache, mode="disk", progress=False)
    stamp = os.stat(os.path.join(first[0].folder, "entry.json")).st_mtime_ns
    again = prepare_volumes(two_volumes, cache, mode="disk", progress=False)
    assert [v.folder for v in again] == [v.folder for v in first]
    assert os.stat(os.path.join(again[0].folder, "entry.json")).st_mtime_ns == stamp  # not rebuilt

    write_mhd(two_volumes[0]["image"], ct_volume((40, 36, 20), seed=99))  # same name, new voxels
    changed = prepare_volumes(two_volumes, cache, mode="disk", progress=False)
    assert changed[0].folder != first[0].folder and changed[1].folder == first[1].folder
    expected = train_transforms(2, num_slices=8, crop_size=16)
    expected.set_random_state(seed=5)
    dataset = SliceSampleDataset(changed, sample_transforms(2, num_slices=8, crop_size=16), 1)
    assert torch.equal(dataset[(0, 5, True)]["hr"], expected(dict(two_volumes[0]))["hr"])  # the new voxels


def test_deleted_cache_is_rebuilt(two_volumes, tmp_path):
    cache = str(tmp_path / "cache")
    prepare_volumes(two_volumes, cache, mode="disk", progress=False)
    shutil.rmtree(cache)
    volumes = prepare_volumes(two_volumes, cache, mode="disk", progress=False)
    assert len(entry_folders(cache)) == 2 and all(os.path.isfile(os.path.join(v.folder, "entry.json")) for v in volumes)


def test_a_truncated_entry_is_rebuilt_at_preparation(two_volumes, tmp_path):
    cache = str(tmp_path / "cache")
    ct, _ = prepare_volumes(two_volumes, cache, mode="disk", progress=False)
    image = os.path.join(ct.folder, "image.bin")
    with open(image, "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptCacheEntryError, match="has 100 bytes"):
        open_disk_entry(ct.folder)
    rebuilt, _ = prepare_volumes(two_volumes, cache, mode="disk", progress=False)
    assert os.path.getsize(image) == np.prod(rebuilt.shape) * 2


def test_a_corrupt_slice_is_detected_and_rebuilt_never_trained_on(two_volumes, tmp_path):
    """A flipped byte in a slice passes the size check; reading it fails its checksum, the entry is rebuilt
    from the source and the sample is the one the intact entry gives."""
    cache = str(tmp_path / "cache")
    volumes = prepare_volumes(two_volumes, cache, mode="disk", progress=False)
    transforms = sample_transforms(2, num_slices=20, crop_size=16)  # T = Z: every slice is read
    expected = SliceSampleDataset(volumes, transforms, 1)[(0, 11, True)]["hr"]
    ct = volumes[0]
    with open(os.path.join(ct.folder, "image.bin"), "r+b") as f:
        f.seek(7 * ct.plane * 2 + 10)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptCacheEntryError, match="slice 7"):
        open_disk_entry(ct.folder, verify=True)
    reopened = prepare_volumes(two_volumes, cache, mode="disk", progress=False)  # sizes are fine: not noticed here
    with pytest.raises(CorruptCacheEntryError, match="slice 7"):
        reopened[0].read_slices(0, 20)
    dataset = SliceSampleDataset(reopened, sample_transforms(2, num_slices=20, crop_size=16), 1)
    assert torch.equal(dataset[(0, 11, True)]["hr"], expected)
    open_disk_entry(ct.folder, verify=True)  # repaired on disk


def test_auto_mode_picks_disk_beyond_the_ram_budget(two_volumes, tmp_path, caplog):
    caplog.set_level("INFO")
    small = prepare_volumes(two_volumes, str(tmp_path / "c1"), mode="auto", ram_budget_gb=1.0, progress=False)
    large = prepare_volumes(two_volumes, str(tmp_path / "c2"), mode="auto", ram_budget_gb=1e-5, progress=False)
    assert all(isinstance(v, MemoryVolume) for v in small) and all(isinstance(v, DiskVolume) for v in large)
    assert "memory (estimated" in caplog.text and "disk (estimated" in caplog.text


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_streamed_validation_gives_the_whole_volume_numbers(two_volumes, tmp_path, mode):
    """Chunks of 7 slices through StreamingVolumeMetrics = volume_metrics on the whole stacks of
    validation_transforms (per volume, foreground and whole), averaged as the validation handlers do."""
    volumes = prepare_volumes(two_volumes, str(tmp_path / "cache"), mode=mode, progress=False)
    chunks = ValidationChunkDataset(volumes, scale=2, chunk_slices=7)
    assert len(chunks) == 3 + 3  # 20 and 18 slices

    def fake_sr(hr):  # a deterministic "prediction" that differs from both HR and bicubic
        return (hr * 0.9 + 0.05).clamp(0, 1)

    engine = Engine(lambda e, b: None)
    handler = StreamingVolumeMetrics(pred_keys={"sr": "pred"})
    handler.reset()
    for item in chunks:
        engine.state.output = [{"pred": fake_sr(item["hr"]), "label": item["hr"], "fg_mask": item["mask"],
                                "volume_index": torch.tensor(item["volume"])}]  # fmt: skip
        handler.update(engine)
    engine.state.metrics = {}
    handler.completed(engine)

    whole = validation_transforms(2)
    per_volume, slice_ssims = [], []
    for item in two_volumes:
        stack = whole(dict(item))
        per_volume.append(volume_metrics(fake_sr(stack["hr"]), stack["hr"], stack["mask"]))
        assert torch.equal(stack["lr"], torch.cat([c["lr"] for c in chunks if c["volume"] == len(per_volume) - 1]))
        slice_ssims.append(per_volume[-1]["whole"]["ssim"] * stack["hr"].shape[0])
    mean = lambda region, metric: sum(v[region][metric] for v in per_volume) / len(per_volume)  # noqa: E731
    assert engine.state.metrics["psnr_fg_sr"] == pytest.approx(mean("foreground", "psnr"), abs=1e-9)
    assert engine.state.metrics["ssim_fg_sr"] == pytest.approx(mean("foreground", "ssim"), abs=1e-7)
    assert engine.state.metrics["psnr_sr"] == pytest.approx(mean("whole", "psnr"), abs=1e-9)
    assert engine.state.metrics["ssim_sr"] == pytest.approx(sum(slice_ssims) / (20 + 18), abs=1e-7)


def test_crops_are_the_same_with_dataloader_workers(two_volumes, tmp_path):
    """Iteration i's batch depends on (seed, rank, i) only: 0 and 2 workers give the same batches, and a
    sampler started mid-epoch (a resume) gives the remaining batches of the uninterrupted epoch."""
    volumes = prepare_volumes(two_volumes, str(tmp_path / "cache"), mode="disk", progress=False)

    def batches(num_workers, start=0):
        dataset = SliceSampleDataset(volumes, sample_transforms(2, num_slices=8, crop_size=16), 4)
        sampler = EpochPermutationSampler(len(dataset), seed=3)
        sampler.set_position(2, start)
        loader = DataLoader(dataset, batch_sampler=IterationBatchSampler(sampler, 2, seed=3), num_workers=num_workers)
        return [b["hr"] for b in loader]

    serial, parallel, resumed = batches(0), batches(2), batches(2, start=4)
    assert len(serial) == 4 and all(torch.equal(a, b) for a, b in zip(serial, parallel))
    assert len(resumed) == 2 and all(torch.equal(a, b) for a, b in zip(serial[2:], resumed))
    assert not torch.equal(serial[0], serial[1])
    batch = next(iter(IterationBatchSampler(EpochPermutationSampler(8, seed=3), 2, seed=3)))
    assert [b[1:] for b in batch] == [(iteration_seed(3, 0, 1), True), (iteration_seed(3, 0, 1), False)]


def test_available_memory_reads_the_limit_of_this_process_cgroup(tmp_path, monkeypatch):
    """A v1-style cgroup of this process (and its parent) limits what is available: limit - usage + page cache."""
    from monai_lstmagan import system

    root = tmp_path / "memory"
    job = root / "batch" / "job"
    job.mkdir(parents=True)
    (job / "memory.limit_in_bytes").write_text(str(3 * 2**30))
    (job / "memory.usage_in_bytes").write_text(str(2**30))
    (job / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {2**29}\n")
    (root / "batch" / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # unlimited parent
    (root / "batch" / "memory.usage_in_bytes").write_text(str(2**30))
    monkeypatch.setattr(system, "_CGROUP_ROOTS", ((str(root), "memory.limit_in_bytes", "memory.usage_in_bytes",
                                                  "total_inactive_file"),))  # fmt: skip
    monkeypatch.setattr(system, "_own_cgroups", lambda: ["/batch/job"])
    monkeypatch.setattr(system, "_stat_value", lambda path, key: 64 * 2**30 // 1024 if "meminfo" in path
                        else int(dict(line.split() for line in open(path))[key]))  # fmt: skip
    assert system.available_memory() == (2 * 2**30 + 2**29, "left by the cgroup memory limit")


def test_auto_mode_keeps_half_of_the_available_memory(two_volumes, tmp_path, monkeypatch, caplog):
    """A large RAM budget does not put the volumes in RAM when they need more than half of what is available."""
    from monai_lstmagan.data import cache

    caplog.set_level("INFO")
    need = sum(cache.estimated_bytes(s) for s in ([40, 36, 20], [36, 40, 18]))
    monkeypatch.setattr(cache, "available_memory", lambda: (need + 1, "left by the cgroup memory limit"))
    volumes = prepare_volumes(two_volumes, str(tmp_path / "c"), mode="auto", ram_budget_gb=100.0, progress=False)
    assert all(isinstance(v, DiskVolume) for v in volumes) and "cgroup memory limit" in caplog.text
