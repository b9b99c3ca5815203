"""model.pt format, clear load errors, atomic writes, and picking the checkpoint to resume from."""

from __future__ import annotations

import os

import pytest
import torch

from monai_lstmagan.checkpoints import (
    GENERATOR_FORMAT,
    METADATA_KEY,
    atomic_save,
    latest_checkpoint,
    load_generator,
    save_generator,
    unwrap_module,
)
from monai_lstmagan.networks import LSTMAGANGenerator

TINY = {"scale": 2, "num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 4}


def test_save_and_load_generator_roundtrip(tmp_path):
    torch.manual_seed(0)
    generator = LSTMAGANGenerator(**TINY).eval()
    path = save_generator(tmp_path / "model.pt", generator, TINY, extra={"epoch": 3})
    raw = torch.load(path, weights_only=True)
    # model-zoo convention: the file IS a state_dict; the architecture rides in its _metadata
    assert set(raw) == set(generator.state_dict())
    info = raw._metadata[METADATA_KEY]
    assert info["format"] == GENERATOR_FORMAT and info["generator"] == TINY and info["epoch"] == 3
    plain = LSTMAGANGenerator(**TINY).eval()
    plain.load_state_dict(raw)  # strict: what a model-zoo user does
    loaded, ckpt = load_generator(path, expected_scale=2)
    x = torch.rand(1, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), generator(x))
    assert ckpt["epoch"] == 3 and not loaded.training
    assert [f for f in os.listdir(tmp_path) if f != "model.pt"] == []  # no temp file left behind


def test_save_generator_unwraps_and_requires_scale(tmp_path):
    generator = LSTMAGANGenerator(**TINY)
    wrapped = torch.nn.DataParallel(generator)
    assert unwrap_module(wrapped) is generator
    save_generator(tmp_path / "model.pt", wrapped, TINY)
    assert not any(k.startswith("module.") for k in torch.load(tmp_path / "model.pt", weights_only=True))
    with pytest.raises(ValueError, match="scale"):
        save_generator(tmp_path / "x.pt", generator, {"num_blocks": 1})
    with pytest.raises(ValueError, match="reserved"):
        save_generator(tmp_path / "x.pt", generator, TINY, extra={"state_dict": {}})


def test_first_format_files_load_as_the_srresnet_output_generator_they_are(tmp_path):
    """model.pt files written before the bicubic residual (format /1: a dict, BatchNorm, no residual) still load."""
    torch.manual_seed(0)
    legacy = LSTMAGANGenerator(**TINY, residual="none", norm="batch").eval()
    path = tmp_path / "old_model.pt"
    state = {k: v.clone() for k, v in legacy.state_dict().items()}
    torch.save({"state_dict": state, "generator": dict(TINY), "format": "monai_lstmagan.generator/1", "epoch": 5}, path)
    loaded, info = load_generator(path, expected_scale=2)
    assert info["generator"]["residual"] == "none" and info["generator"]["norm"] == "batch" and info["epoch"] == 5
    x = torch.rand(1, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), legacy(x))
    plain = tmp_path / "plain_state_dict.pt"
    torch.save(LSTMAGANGenerator(**TINY).state_dict(), plain)  # weights without the LSTMAGAN metadata
    with pytest.raises(ValueError, match="plain_state_dict.pt.*not an LSTMAGAN generator checkpoint.*metadata"):
        load_generator(plain)


def test_load_generator_of_another_scale_errors_clearly(tmp_path):
    path = save_generator(tmp_path / "model.pt", LSTMAGANGenerator(**TINY), TINY)
    with pytest.raises(ValueError, match=r"model\.pt.*x2.*x4"):
        load_generator(path, expected_scale=4)


def test_load_generator_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_generator(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    save_generator(truncated, LSTMAGANGenerator(**TINY), TINY)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.pt.*cannot be read"):
        load_generator(truncated)
    full = tmp_path / "checkpoint_iteration=2.pt"
    torch.save({"network": {}, "trainer": {"iteration": 2}}, full)
    with pytest.raises(ValueError, match="full training checkpoint"):
        load_generator(full)
    wrong_arch = tmp_path / "wrong.pt"
    save_generator(wrong_arch, LSTMAGANGenerator(**TINY), {**TINY, "channels": 16})
    with pytest.raises(ValueError, match="wrong.pt.*do not match"):
        load_generator(wrong_arch)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_latest_checkpoint_picks_the_highest_iteration(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        latest_checkpoint(tmp_path)
    for it in (4, 12, 8):
        torch.save({"trainer": {"iteration": it}}, tmp_path / f"checkpoint_iteration={it}.pt")
    (tmp_path / "checkpoint_iteration=99.pt").write_bytes(b"half-written")
    torch.save({"trainer": {"iteration": 50}}, tmp_path / "nonfinite_checkpoint_iteration=50.pt")
    assert os.path.basename(latest_checkpoint(tmp_path)) == "checkpoint_iteration=12.pt"
