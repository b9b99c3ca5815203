"""Handlers: EMA, NaN/Inf guard, CSV logs (incl. resume), model.pt writers, atomic CheckpointSaver."""

from __future__ import annotations

import csv
import math
import os

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from monai_lstmagan.checkpoints import load_generator
from monai_lstmagan.detail_metrics import volume_detail_metrics
from monai_lstmagan.engines import LSTMAGANTrainer as AdversarialTrainer
from monai_lstmagan.handlers import (
    ITERATION_COLUMNS,
    AtomicCheckpointSaver,
    CSVLogger,
    GeneratorCheckpoint,
    GeneratorEMA,
    NonFiniteLossGuard,
    StreamingVolumeMetrics,
)
from monai_lstmagan.handlers.metrics import VALIDATION_DETAIL_METRICS
from monai_lstmagan.losses import HybridLoss, WGANGPObjective
from monai_lstmagan.networks import LSTMAGANGenerator, LSTMDiscriminator

TINY_G = {"scale": 2, "num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 4}


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ema_follows_the_documented_update():
    source = torch.nn.Linear(2, 1)
    ema = GeneratorEMA(source, decay=0.999)
    start = source.weight.detach().clone()
    with torch.no_grad():
        source.weight.add_(1.0)
    ema.update()  # t = 0: decay = min(0.999, 1/10) = 0.1
    assert torch.allclose(ema.module.weight, 0.1 * start + 0.9 * source.weight)
    previous = ema.module.weight.detach().clone()
    ema.update()  # t = 1: decay = 2/11
    assert torch.allclose(ema.module.weight, 2 / 11 * previous + 9 / 11 * source.weight)
    assert int(ema.num_updates) == 2 and "module.weight" in ema.state_dict()
    assert not any(k.startswith("_source") for k in ema.state_dict())  # the trained G is not saved twice
    x = torch.rand(3, 2)
    assert torch.equal(ema(x), ema.module(x))
    with pytest.raises(ValueError, match="decay"):
        GeneratorEMA(source, decay=1.0)


def make_trainer(loss_function, objective) -> AdversarialTrainer:
    generator = LSTMAGANGenerator(**TINY_G)
    critic = LSTMDiscriminator(num_slices=4, encoder_channels=(8,), hidden_size=8)
    data = [{"hr": torch.rand(1, 4, 1, 16, 16), "lr": torch.rand(1, 4, 1, 8, 8)}] * 2
    return AdversarialTrainer(
        "cpu", 1, data, generator, torch.optim.Adam(generator.parameters()), loss_function,
        critic, torch.optim.Adam(critic.parameters()), objective,
    )  # fmt: skip


class NaNGeneratorLoss(HybridLoss):
    def forward(self, sr, hr, adversarial=None):
        out = super().forward(sr, hr, adversarial)
        return {**out, "loss": out["loss"] * float("nan")}


class NaNCritic(WGANGPObjective):
    def discriminator_loss(self, discriminator, real, fake):
        out = super().discriminator_loss(discriminator, real, fake)
        return {**out, "loss": out["loss"] + float("inf")}


@pytest.mark.parametrize("where", ["generator", "discriminator"])
def test_nonfinite_guard_stops_before_the_step_and_saves(tmp_path, where):
    if where == "generator":
        trainer = make_trainer(NaNGeneratorLoss(), WGANGPObjective())
        watched = trainer.network
    else:
        trainer = make_trainer(HybridLoss(), NaNCritic())
        watched = trainer.d_network
    before = [p.detach().clone() for p in watched.parameters()]
    save_dict = {"network": trainer.network, "d_network": trainer.d_network, "trainer": trainer}
    NonFiniteLossGuard(str(tmp_path), save_dict).attach(trainer)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 1, iteration 1: \{'(loss|d_loss)'"):
        trainer.run()
    assert all(torch.equal(b, p) for b, p in zip(before, watched.parameters()))  # no step with the bad loss
    saved = torch.load(tmp_path / "nonfinite_checkpoint_iteration=1.pt", weights_only=True)
    assert set(saved) == {"network", "d_network", "trainer"} and saved["trainer"]["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in saved["network"].values() if v.is_floating_point())


def test_csv_logger_writes_rows_and_continues_after_resume(tmp_path):
    path = tmp_path / "iterations.csv"
    outputs = iter([{"loss": torch.tensor(float(i)), "d_loss": 2.0 * i} for i in range(1, 10)])
    engine = Engine(lambda e, b: next(outputs))
    CSVLogger(str(path), ITERATION_COLUMNS).attach(engine)
    engine.run([0] * 3, max_epochs=2)
    rows = read_rows(path)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert list(rows[0]) == list(ITERATION_COLUMNS)
    assert float(rows[1]["loss"]) == 2.0 and float(rows[1]["d_loss"]) == 4.0 and math.isnan(float(rows[1]["mse"]))

    # a resumed run restarting at iteration 3 drops rows 3.. before appending
    resumed = Engine(lambda e, b: {"loss": 100.0 + e.state.iteration})
    CSVLogger(str(path), ITERATION_COLUMNS).attach(resumed)
    resumed.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "iteration", 2))
    resumed.run([0] * 3, max_epochs=2)
    rows = read_rows(path)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r["loss"]) for r in rows] == [1.0, 2.0, 103.0, 104.0, 105.0, 106.0]


def test_csv_logger_resuming_a_file_of_older_columns_rewrites_its_header(tmp_path):
    path = tmp_path / "validation.csv"
    path.write_text("epoch,psnr_sr\n1,30.0\n")  # written before the detail metrics were logged
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(psnr_sr=31.0, hfen_fg_sr=0.2))
    CSVLogger(str(path), ("epoch", "psnr_sr", "hfen_fg_sr"), source="metrics").attach(engine)
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 1))
    engine.run([0], max_epochs=2)
    rows = read_rows(path)
    assert list(rows[0]) == ["epoch", "psnr_sr", "hfen_fg_sr"]
    assert [(r["epoch"], r["psnr_sr"], r["hfen_fg_sr"]) for r in rows] == [("1", "30.0", "nan"), ("2", "31.0", "0.2")]


def test_validation_logs_the_detail_metrics_of_whole_volumes_from_chunks():
    g = torch.Generator().manual_seed(0)
    hr = [torch.nn.functional.avg_pool2d(torch.rand((n, 1, 40, 36), generator=g), 3, 1, 1) for n in (7, 5)]
    masks = [torch.ones_like(v) for v in hr]
    for m in masks:
        m[:, :, :4] = 0

    def blur(x):
        return torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    engine = Engine(lambda e, b: None)
    handler = StreamingVolumeMetrics(pred_keys={"sr": "pred"}, scale=2)
    handler.reset()
    for index, (volume, mask) in enumerate(zip(hr, masks)):
        for start in range(0, volume.shape[0], 3):  # chunks of 3 slices
            part = slice(start, start + 3)
            engine.state.output = [{"pred": blur(volume[part]), "label": volume[part], "fg_mask": mask[part],
                                    "volume_index": torch.tensor(index)}]  # fmt: skip
            handler.update(engine)
    engine.state.metrics = {}
    handler.completed(engine)
    per_volume = [volume_detail_metrics(blur(v), v, m, 2).result()["foreground"] for v, m in zip(hr, masks)]
    for metric in VALIDATION_DETAIL_METRICS:
        expected = sum(r[metric] for r in per_volume) / 2
        assert engine.state.metrics[f"{metric}_fg_sr"] == pytest.approx(expected, rel=1e-9), metric
    assert engine.state.metrics["spectral_high_fg_sr"] < 0.5 and engine.state.metrics["hfen_fg_sr"] > 0.1
    no_scale = StreamingVolumeMetrics(pred_keys={"sr": "pred"})
    no_scale.reset()
    no_scale.update(engine)
    engine.state.metrics = {}
    no_scale.completed(engine)
    assert "psnr_fg_sr" in engine.state.metrics and "hfen_fg_sr" not in engine.state.metrics


def test_generator_checkpoint_latest_and_best(tmp_path):
    generator = LSTMAGANGenerator(**TINY_G)
    psnr = iter([10.0, 12.0, 11.0])
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(psnr_sr=next(psnr)))
    best = GeneratorCheckpoint(str(tmp_path / "model_best.pt"), generator, TINY_G, key_metric_name="psnr_sr")
    best.attach(evaluator)
    latest = GeneratorCheckpoint(str(tmp_path / "model.pt"), generator, TINY_G)
    latest.attach(evaluator)
    saved_epochs: list[int] = []
    evaluator.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: saved_epochs.append(load_generator(tmp_path / "model_best.pt")[1]["epoch"])
    )
    evaluator.run([0], max_epochs=3)
    assert saved_epochs == [1, 2, 2] and best.state_dict() == {"best_metric": 12.0, "best_epoch": 2}
    _, ckpt = load_generator(tmp_path / "model_best.pt", expected_scale=2)
    assert ckpt["metrics"]["psnr_sr"] == 12.0
    assert load_generator(tmp_path / "model.pt")[1]["epoch"] == 3
    restored = GeneratorCheckpoint(str(tmp_path / "b.pt"), generator, TINY_G, key_metric_name="psnr_sr")
    restored.load_state_dict(best.state_dict())
    assert restored.best_metric == 12.0


def _broken_save(obj, f, *args, **kwargs):
    (f if hasattr(f, "write") else open(f, "wb")).write(b"partial")
    raise OSError("disk full")


@pytest.mark.parametrize("saver_class", [AtomicCheckpointSaver, CheckpointSaver])
def test_checkpoint_saver_atomicity(tmp_path, monkeypatch, saver_class):
    model = torch.nn.Linear(1, 1)
    engine = Engine(lambda e, b: None)
    saver = saver_class(
        str(tmp_path), {"network": model, "trainer": engine}, save_interval=1, epoch_level=False, n_saved=None
    )
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    assert os.listdir(tmp_path) == ["checkpoint_iteration=1.pt"]
    monkeypatch.setattr(torch, "save", _broken_save)
    with pytest.raises(OSError, match="disk full"):
        engine.run([0], max_epochs=2)
    left = sorted(os.listdir(tmp_path))
    if saver_class is AtomicCheckpointSaver:
        assert left == ["checkpoint_iteration=1.pt"]  # no half-written file, the previous one intact
        monkeypatch.undo()
        assert torch.load(tmp_path / left[0], weights_only=True)["trainer"]["iteration"] == 1
    else:  # MONAI's own saver leaves the half-written file behind: what AtomicCheckpointSaver fixes
        assert "checkpoint_iteration=2.pt" in left
