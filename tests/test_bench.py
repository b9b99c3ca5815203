"""Benchmark plumbing on tiny sizes: JSON structure, positive finite numbers, consistent ratios.

No timing thresholds: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from monai_lstmagan import bench
from monai_lstmagan.bench import (
    InferenceBenchConfig,
    PeakMemoryTracker,
    TrainingBenchConfig,
    benchmark_inference,
    benchmark_training,
    format_tables,
    matmul_gflops,
    naive_super_resolve_volume,
    run_benchmark,
)
from monai_lstmagan.inference import InferenceOptions, super_resolve_volume
from monai_lstmagan.networks import LSTMAGANGenerator

TINY_GENERATOR = {"num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 4}
TINY_TRAINING = TrainingBenchConfig(
    generator=TINY_GENERATOR,
    scale=2,
    batch_size=1,
    num_slices=4,
    crop_size=16,
    critic={"encoder_channels": (8,), "hidden_size": 8},
    perceptual_layer="relu1_2",
    warmup=1,
    iterations=3,
)
TINY_INFERENCE = InferenceBenchConfig(
    generator=TINY_GENERATOR, volume_shape=(32, 32, 4), scales=(2, 4), batch_sizes=(3, 1), repeats=2
)


def positive_finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def check_memory(side: dict) -> None:
    assert side["peak_cuda_mib"] is None  # CPU run: no CUDA numbers
    if side["rss_method"] is not None:  # Linux: /proc/self/status is readable
        assert positive_finite(side["peak_rss_mib"])
        assert 0 <= side["rss_increase_mib"] <= side["peak_rss_mib"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def result(one_thread) -> dict:
    with pytest.MonkeyPatch.context() as patch:  # a small matmul keeps the test short
        patch.setattr(bench, "measured_ceilings", lambda device: {"fp32": matmul_gflops(device, size=256, repeats=2)})
        return run_benchmark("cpu", TINY_TRAINING, TINY_INFERENCE)


def test_training_result_structure_and_ratio(result):
    (row,) = result["training"]
    assert row["variant"] == "fp32" and row["slices_per_iteration"] == 4
    for name in ("engine", "reference"):
        side = row[name]
        assert len(side["seconds"]) == TINY_TRAINING.iterations  # warm-up excluded
        assert all(positive_finite(s) for s in side["seconds"])
        assert side["median_s"] == pytest.approx(statistics.median(side["seconds"]))
        assert side["min_s"] == min(side["seconds"]) <= side["median_s"]
        assert side["slices_per_s"] == pytest.approx(4 / side["median_s"])
        check_memory(side)
    assert row["engine_time_ratio"] == pytest.approx(row["engine"]["median_s"] / row["reference"]["median_s"])
    assert row["engine_overhead_ms"] == pytest.approx(1e3 * (row["engine"]["median_s"] - row["reference"]["median_s"]))
    pairs = [e / r for e, r in zip(row["engine"]["seconds"], row["reference"]["seconds"])]
    assert row["paired_time_ratio"] == pytest.approx(statistics.median(pairs))


def test_reference_loop_does_the_same_math_as_the_engine(result):
    row = result["training"][0]
    losses = row["losses"]
    iterations = TINY_TRAINING.warmup + TINY_TRAINING.iterations
    for key in ("loss", "d_loss"):
        engine, reference = losses["engine"][key], losses["reference"][key]
        assert len(engine) == len(reference) == iterations and all(math.isfinite(v) for v in engine)
        assert len(set(engine)) > 1  # the weights move: a trajectory, not one point repeated
        assert reference == pytest.approx(engine, rel=1e-5, abs=1e-6)  # same weights, batch, seeds -> same losses
    assert row["max_loss_difference"] == max(
        abs(e - r) for key in ("loss", "d_loss") for e, r in zip(losses["engine"][key], losses["reference"][key])
    )


def test_inference_result_structure_and_ratio(result):
    rows = result["inference"]
    assert [(r["variant"], r["scale"]) for r in rows] == [("fp32", 2), ("fp32", 4)]
    for row in rows:
        s = row["scale"]
        assert row["lr_shape"] == [32 // s, 32 // s, 4] and row["sr_shape"] == [32, 32, 4]
        assert row["output_voxels"] == 32 * 32 * 4 and positive_finite(row["gflop_per_volume"])
        methods = row["methods"]
        assert {name: side["batch_size"] for name, side in methods.items()} == {
            "streaming_b3": 3,
            "streaming_b1": 1,
            "naive": 1,
        }
        for side in methods.values():
            assert len(side["seconds"]) == TINY_INFERENCE.repeats and all(positive_finite(t) for t in side["seconds"])
            assert side["voxels_per_s"] == pytest.approx(row["output_voxels"] / side["median_s"])
            assert side["gflop_per_s"] == pytest.approx(row["gflop_per_volume"] / side["median_s"])
            check_memory(side)
        assert set(row["speedup_over_naive"]) == {"streaming_b3", "streaming_b1"}
        for name, speedup in row["speedup_over_naive"].items():
            assert speedup == pytest.approx(methods["naive"]["median_s"] / methods[name]["median_s"])
        assert row["max_abs_difference"] < 1e-4  # every method computes the same volume


def test_ceiling_tables_and_json_roundtrip(result):
    assert set(result["matmul_gflops"]) == {"fp32"} and positive_finite(result["matmul_gflops"]["fp32"])
    assert result["device"]["type"] == "cpu" and result["device"]["threads"] == 1
    json.dumps(result, allow_nan=False)  # plain JSON: no tensors, no NaN/Inf
    tables = format_tables(result)
    assert tables.count("| fp32 | AdversarialTrainer |") == 1 and tables.count("| fp32 | plain PyTorch |") == 1
    assert tables.count("| naive loop, 1 |") == 2 and tables.count("| super_resolve_volume, 3 |") == 2
    assert f"{result['training'][0]['engine_time_ratio']:.3f}" in tables


def test_naive_loop_matches_streaming_inference():
    torch.manual_seed(0)
    generator = LSTMAGANGenerator(scale=2, **TINY_GENERATOR).eval()
    volume = torch.rand(1, 8, 10, 5)
    naive = naive_super_resolve_volume(generator, volume, 2)
    assert naive.shape == (1, 16, 20, 5)
    torch.testing.assert_close(
        naive, super_resolve_volume(generator, volume, 2, InferenceOptions(batch_size=2)), rtol=1e-5, atol=1e-5
    )


def test_peak_memory_tracker_sees_an_allocation():
    tracker = PeakMemoryTracker()
    tracker.start()
    block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    del block
    memory = tracker.stop()
    if memory["rss_method"] is None:
        pytest.skip("no /proc/self/status on this platform")
    assert memory["rss_increase_mib"] >= 48


def test_cpu_refuses_cuda_variants_and_bad_sizes():
    with pytest.raises(ValueError, match="CUDA only"):
        benchmark_inference(TINY_INFERENCE, 2, "cpu", bench.VARIANTS["bf16"])
    with pytest.raises(ValueError, match="CUDA only"):
        benchmark_training(TINY_TRAINING, "cpu", bench.VARIANTS["compile"])
    with pytest.raises(ValueError, match="not divisible"):
        TrainingBenchConfig(scale=4, crop_size=30)
    with pytest.raises(ValueError, match="warmup"):
        TrainingBenchConfig(warmup=0)
    with pytest.raises(ValueError, match="only the fp32 variant"):
        run_benchmark("cpu", TINY_TRAINING, TINY_INFERENCE, variants=["fp32", "bf16"])
    with pytest.raises(ValueError, match="unknown variants"):
        run_benchmark("cpu", TINY_TRAINING, TINY_INFERENCE, variants=["fp16"])


def test_cli_writes_json(result, tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run(device, training, inference, variants=None):  # the CLI's plumbing; measurements tested above
        calls.append((device, training, inference, variants))
        return result

    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    out = tmp_path / "sub" / "bench.json"
    bench.main(["--json", str(out), "--quick"])
    assert calls == [("cpu", *bench.bench_configs("cpu", quick=True), None)]
    assert calls[0][1].generator == {"num_blocks": 4, "channels": 32}  # --quick: the small CPU generator
    written = json.loads(out.read_text())
    assert {"device", "config", "matmul_gflops", "training", "inference", "notes"} <= set(written)
    assert written["training"][0]["engine_time_ratio"] == result["training"][0]["engine_time_ratio"]
    assert format_tables(result) in capsys.readouterr().out


def test_default_sizes():
    cpu_training, cpu_inference = bench.bench_configs("cpu")
    gpu_training, gpu_inference = bench.bench_configs("cuda")
    assert cpu_training.generator == {"num_blocks": 4, "channels": 32} and gpu_training.generator == {}
    assert cpu_inference.volume_shape == gpu_inference.volume_shape == (256, 256, 48)
    assert cpu_inference.scales == gpu_inference.scales == (2, 4)
