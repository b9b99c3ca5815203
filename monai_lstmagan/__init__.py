"""LSTMAGAN: attention-gated dense generator + LSTM discriminator for 3D medical image super-resolution.

The package is the library (data, transforms, networks, losses, trainer, inference, evaluation);
the MONAI bundle in ``bundle/`` wires these objects together with ``_target_`` configs.
"""

__version__ = "0.1.0"
