"""LSTMAGAN networks: ADC generator, LSTM and conv discriminators, VGG19 features.

Parameter/FLOP counting lives in :mod:`monai_lstmagan.networks.complexity` (also a ``python -m`` script).
"""

from monai_lstmagan.networks.blocks import ADCBlock, AttentionGate, DenseBlock
from monai_lstmagan.networks.discriminators import CRITICS, ConvDiscriminator, LSTMDiscriminator, build_discriminator
from monai_lstmagan.networks.generator import GENERATOR_NORMS, RESIDUALS, SUPPORTED_SCALES, LSTMAGANGenerator, bicubic_upsample_slices
from monai_lstmagan.networks.vgg import VGG19_IMAGENET_URL, VGG19_LAYERS, VGG19Features

__all__ = [
    "ADCBlock",
    "AttentionGate",
    "DenseBlock",
    "LSTMAGANGenerator",
    "SUPPORTED_SCALES",
    "RESIDUALS",
    "GENERATOR_NORMS",
    "bicubic_upsample_slices",
    "LSTMDiscriminator",
    "ConvDiscriminator",
    "VGG19Features",
    "VGG19_LAYERS",
    "VGG19_IMAGENET_URL",
    "CRITICS",
    "build_discriminator",
]
