"""medfocal.data: dataset layouts, MONAI transform presets, sampling, input checks and datamodules.

Example::

    from medfocal.data import PreprocessingSpec, SegmentationDataModule
    dm = SegmentationDataModule("Task01_BrainTumour", preprocessing=PreprocessingSpec(modality="mri"),
                                roi_size=[96, 96, 64])
    dm.setup("fit"); dm.class_counts()
"""

from __future__ import annotations

from medfocal.data.boxes import DetectionDataModule
from medfocal.data.checks import DataValidationError, main_check_data, validate_records
from medfocal.data.datamodule import ClassificationDataModule, SegmentationDataModule
from medfocal.data.layouts import (
    CaseFoldersLayout,
    CSVLayout,
    DecathlonLayout,
    ImageFolderLayout,
    Layout,
    MedMNISTLayout,
    PairedFoldersLayout,
    detect_layout,
)
from medfocal.data.loading import LoaderConfig
from medfocal.data.sampling import class_balanced_sampler, class_balanced_weights, split_indices
from medfocal.data.transforms import (
    Augmentation,
    LabelToIndexd,
    PreprocessingSpec,
    inference_transforms,
    label_transforms,
    train_transforms,
)

__all__ = [
    "Augmentation",
    "CSVLayout",
    "CaseFoldersLayout",
    "ClassificationDataModule",
    "DataValidationError",
    "DecathlonLayout",
    "DetectionDataModule",
    "ImageFolderLayout",
    "LabelToIndexd",
    "Layout",
    "LoaderConfig",
    "MedMNISTLayout",
    "PairedFoldersLayout",
    "PreprocessingSpec",
    "SegmentationDataModule",
    "class_balanced_sampler",
    "class_balanced_weights",
    "detect_layout",
    "inference_transforms",
    "label_transforms",
    "main_check_data",
    "split_indices",
    "train_transforms",
    "validate_records",
]
