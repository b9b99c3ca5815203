"""Engines: :mod:`~monai_lstmagan.engines.trainer` (:class:`LSTMAGANTrainer`), :mod:`~monai_lstmagan.engines.inferer`
(:class:`SliceStackInferer`) and :mod:`~monai_lstmagan.engines.utils` (batch preparation, loss values, unwrapping)."""

from monai_lstmagan.engines.inferer import SliceStackInferer
from monai_lstmagan.engines.trainer import AdversarialTrainer, LSTMAGANTrainer
from monai_lstmagan.engines.utils import loss_values, prepare_sr_batch, unwrap_module

__all__ = [
    "LSTMAGANTrainer",
    "AdversarialTrainer",
    "SliceStackInferer",
    "prepare_sr_batch",
    "loss_values",
    "unwrap_module",
]
