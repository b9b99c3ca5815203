"""Performance benchmark: the MONAI training engine and the streaming inference against plain-PyTorch floors.

``python -m monai_lstmagan.bench [--device cpu|cuda] [--json OUT.json] [--quick]`` prints markdown tables
and (with ``--json``) writes the same numbers as JSON. It measures, in one process:

1. **Training**: seconds per iteration, slices/s and peak memory of :class:`~monai_lstmagan.engines.trainer.LSTMAGANTrainer`
   (WGAN-GP objective, LSTM critic, hybrid loss with the VGG19 perceptual term) against a plain-PyTorch loop
   that does the same math (``n_critic`` critic steps with the gradient penalty, then the generator step with
   ``MSE + 6e-3 * perceptual + 1e-3 * adversarial``). Both start from the same weights, see the same batch
   and the same random seeds; their losses are compared at every iteration to show that the math is the same.
   The VGG19 of the perceptual loss has RANDOM weights (no download): the cost is that of the real loss.
   Engine and reference iterations alternate one by one, so both see the same load of a shared machine;
   warm-up iterations are excluded; the median and the minimum (the least disturbed iteration) over the
   timed iterations are reported, with the ratio of the medians and the median of the per-iteration ratios.
2. **Inference**: output voxels/s and peak memory of :func:`~monai_lstmagan.inference.in_plane.super_resolve_volume`
   (``batch_sizes`` slices per forward) against a naive loop over one slice at a time, for a volume whose
   super-resolved size is ``volume_shape`` (the LR input is ``X/s x Y/s x Z``, as in the evaluation
   protocol), with the achieved GFLOP/s from :func:`~monai_lstmagan.bench.complexity.count_flops` and a
   large matmul's GFLOP/s on the same device as a reference ceiling.
3. On CUDA, the variants fp32, AMP bfloat16, channels_last, ``torch.compile`` and all three together are
   measured side by side. On CPU only fp32 is measured (none of the CUDA code paths run).

Memory: ``peak RSS`` is the high-water mark of the whole process' resident set (``VmHWM`` of
``/proc/self/status``, reset through ``/proc/self/clear_refs`` at the start of the timed part; where that reset is
refused, ``VmRSS`` sampled every millisecond by a thread), so it includes the Python runtime, the libraries and
every model alive in the process; ``RSS increase`` is that peak minus the resident set at the start of the timed
part, i.e. what the measured work added (the C allocator's free memory is handed back to the OS with glibc's
``malloc_trim`` first, so that memory freed earlier and kept by the allocator does not hide new allocations).
``peak CUDA`` is ``torch.cuda.max_memory_allocated`` (tensors only, not the caching allocator's reserve or the
CUDA context).

Modules: :mod:`~monai_lstmagan.bench.config` (variants and sizes), :mod:`~monai_lstmagan.bench.memory`
(:class:`PeakMemoryTracker`), :mod:`~monai_lstmagan.bench.timing` (timed-run summaries, :func:`matmul_gflops`),
:mod:`~monai_lstmagan.bench.training` (:func:`benchmark_training`, :class:`ReferenceTrainingLoop`),
:mod:`~monai_lstmagan.bench.inference` (:func:`benchmark_inference`), :mod:`~monai_lstmagan.bench.run`
(:func:`run_benchmark`), :mod:`~monai_lstmagan.bench.report` (:func:`format_tables`),
:mod:`~monai_lstmagan.bench.cli` (:func:`main`).
"""

from monai_lstmagan.bench.cli import main
from monai_lstmagan.bench.config import VARIANTS, InferenceBenchConfig, TrainingBenchConfig, Variant, bench_configs
from monai_lstmagan.bench.inference import benchmark_inference, naive_super_resolve_volume
from monai_lstmagan.bench.memory import PeakMemoryTracker
from monai_lstmagan.bench.report import format_tables
from monai_lstmagan.bench.run import (  # noqa: F401 (measured_ceilings: replaceable here, see run)
    measured_ceilings,
    run_benchmark,
)
from monai_lstmagan.bench.timing import matmul_gflops
from monai_lstmagan.bench.training import ReferenceTrainingLoop, benchmark_training

__all__ = [
    "TrainingBenchConfig",
    "InferenceBenchConfig",
    "Variant",
    "VARIANTS",
    "bench_configs",
    "PeakMemoryTracker",
    "ReferenceTrainingLoop",
    "matmul_gflops",
    "benchmark_training",
    "benchmark_inference",
    "naive_super_resolve_volume",
    "run_benchmark",
    "format_tables",
    "main",
]
