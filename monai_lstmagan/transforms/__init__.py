"""MONAI dictionary transforms and resampling operators, one job per module.

- :mod:`~monai_lstmagan.transforms.ops`: the bicubic / Keys cubic operators (the one copy; the generators import it);
- :mod:`~monai_lstmagan.transforms.intensity`: loading, RAS orientation, intensity normalisation, foreground masks;
- :mod:`~monai_lstmagan.transforms.in_plane`: axial slice sequences and their bicubic LR (training, validation);
- :mod:`~monai_lstmagan.transforms.augment`: training augmentation (rotation, pixel size, intensity, stored levels);
- :mod:`~monai_lstmagan.transforms.through_plane`: SMORE training pairs and simulated thick-slice stacks;
- :mod:`~monai_lstmagan.transforms.slice_profile`: slice-profile degradation and interpolation along one axis;
- :mod:`~monai_lstmagan.transforms.sampling`: index windows and foreground-centred crops.

Every public name is importable from here (``monai_lstmagan.transforms.train_transforms`` in the configs).
"""

from monai_lstmagan.transforms.augment import (
    AugmentationSettings,
    RandSliceAugmentd,
    RandStoredLevelsd,
    augmentation_settings,
)
from monai_lstmagan.transforms.in_plane import (
    MakeLowResolutiond,
    RandSliceSequenced,
    SliceStackd,
    centre_crop_bounds,
    sample_transforms,
    train_transforms,
    validation_transforms,
)
from monai_lstmagan.transforms.intensity import (
    CT_WINDOW,
    MODALITIES,
    MR_PERCENTILES,
    ForegroundMaskd,
    IntensityNormalizationd,
    LoadVolumed,
    intensity_range,
    load_transforms,
    normalize_transforms,
    volume_transforms,
)
from monai_lstmagan.transforms.ops import bicubic_downsample, bicubic_upsample, bicubic_upsample_slices, keys_cubic
from monai_lstmagan.transforms.slice_profile import DEFAULT_PROFILE, INTERPOLATIONS, PROFILES
from monai_lstmagan.transforms.through_plane import (
    RandThroughPlanePairsd,
    ThickSliceStackd,
    through_plane_train_transforms,
    through_plane_validation_transforms,
)

__all__ = [
    "AugmentationSettings",
    "RandSliceAugmentd",
    "RandStoredLevelsd",
    "augmentation_settings",
    "CT_WINDOW",
    "MR_PERCENTILES",
    "MODALITIES",
    "DEFAULT_PROFILE",
    "PROFILES",
    "INTERPOLATIONS",
    "keys_cubic",
    "bicubic_upsample_slices",
    "bicubic_downsample",
    "bicubic_upsample",
    "intensity_range",
    "LoadVolumed",
    "IntensityNormalizationd",
    "ForegroundMaskd",
    "load_transforms",
    "normalize_transforms",
    "volume_transforms",
    "RandSliceSequenced",
    "centre_crop_bounds",
    "SliceStackd",
    "MakeLowResolutiond",
    "sample_transforms",
    "train_transforms",
    "validation_transforms",
    "RandThroughPlanePairsd",
    "ThickSliceStackd",
    "through_plane_train_transforms",
    "through_plane_validation_transforms",
]
