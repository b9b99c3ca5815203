"""Evaluation against the interpolation baselines: :mod:`~monai_lstmagan.evaluation.in_plane` (:func:`evaluate`,
simulated LR of real volumes next to bicubic), :mod:`~monai_lstmagan.evaluation.through_plane`
(:func:`evaluate_through_plane`, simulated thick slices next to cubic and linear) and
:mod:`~monai_lstmagan.evaluation.report` (metrics.csv, summary.json)."""

from monai_lstmagan.evaluation.in_plane import evaluate, select_volumes
from monai_lstmagan.evaluation.report import METRICS_COLUMNS, summarize, write_results
from monai_lstmagan.evaluation.through_plane import evaluate_through_plane

__all__ = ["evaluate", "select_volumes", "evaluate_through_plane", "METRICS_COLUMNS", "summarize", "write_results"]
