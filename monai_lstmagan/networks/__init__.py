"""LSTMAGAN networks: ADC generator, LSTM and conv discriminators, VGG19 features, and the comparison
generators of the field (FRDAGAN, FA-GAN, MedSRGAN), all built by name with :func:`build_generator`.

Parameter/FLOP counting lives in :mod:`monai_lstmagan.bench.complexity` (also a ``python -m`` script).
"""

from torch import nn

from monai_lstmagan.networks.blocks import ADCBlock, AttentionGate, DenseBlock
from monai_lstmagan.networks.discriminators import (
    CRITICS,
    ConvDiscriminator,
    HighPassCritic,
    LSTMDiscriminator,
    build_discriminator,
)
from monai_lstmagan.networks.fa_gan import FAGANGenerator
from monai_lstmagan.networks.frdagan import FRDAGANGenerator
from monai_lstmagan.networks.generator import (
    GENERATOR_NORMS,
    RESIDUALS,
    SUPPORTED_SCALES,
    LSTMAGANGenerator,
    bicubic_upsample_slices,
)
from monai_lstmagan.networks.medsrgan import MedSRGANGenerator
from monai_lstmagan.networks.vgg import VGG19_IMAGENET_URL, VGG19_LAYERS, VGG19Features

__all__ = [
    "ADCBlock",
    "AttentionGate",
    "DenseBlock",
    "LSTMAGANGenerator",
    "FRDAGANGenerator",
    "FAGANGenerator",
    "MedSRGANGenerator",
    "GENERATORS",
    "build_generator",
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
    "HighPassCritic",
]

#: The generator architectures by name (``generator_kwargs#architecture`` in the configs, recorded in ``model.pt``).
GENERATORS: dict[str, type[nn.Module]] = {
    "lstmagan": LSTMAGANGenerator,
    "frdagan": FRDAGANGenerator,
    "fa_gan": FAGANGenerator,
    "medsrgan": MedSRGANGenerator,
}


def build_generator(architecture: str = "lstmagan", **kwargs) -> nn.Module:
    """Generator by architecture name (:data:`GENERATORS`) and its constructor kwargs (including ``scale``).

    ``architecture`` defaults to ``"lstmagan"``, so the kwargs of every checkpoint written before the comparison
    models existed (which have no ``architecture`` entry) build the generator they were trained with.
    """
    if architecture not in GENERATORS:
        raise ValueError(f"build_generator: unknown architecture {architecture!r}; choose one of {sorted(GENERATORS)}.")
    return GENERATORS[architecture](**kwargs)
