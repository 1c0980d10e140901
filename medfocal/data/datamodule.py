"""Lightning datamodules for segmentation and classification; their typed ``__init__`` is the YAML schema.

``layout`` is a path (auto-detected: Decathlon folder or ``dataset.json``, ``images/`` + ``masks/``
folders, ``.csv``, ``.npz``, class-folder tree) or a layout object given by ``class_path``::

    data:                                   # Decathlon folder
      class_path: medfocal.data.SegmentationDataModule
      init_args:
        layout: data/Task01_BrainTumour
        preprocessing: {modality: mri, spacing: [1.0, 1.0, 1.0]}
        roi_size: [96, 96, 64]
        pos_fraction: 0.67

    data:                                   # BraTS-style case folders, one file per modality
      class_path: medfocal.data.SegmentationDataModule
      init_args:
        layout:
          class_path: medfocal.data.CaseFoldersLayout
          init_args: {root: brats2013/train, val_root: brats2013/validation,
                      channels: ["Flair*.nii.gz", "T1c*.nii.gz"], label: OTMultiClass.nii.gz}
        class_names: [background, necrosis, oedema, non_enhancing, enhancing]
        preprocessing: {modality: mri}
        roi_size: [96, 96, 64]

    data:                                   # MedMNIST npz, class-balanced sampling
      class_path: medfocal.data.ClassificationDataModule
      init_args: {layout: medmnist/retinamnist.npz, balanced_sampler: true}

After ``setup("fit")`` both modules expose ``class_names``, ``num_classes``, ``in_channels``,
``spatial_dims``, ``preprocessing``, ``roi_size`` and ``class_counts()`` (training split, float tensor).
Batches are dicts with ``"image"`` ``(B, C, *spatial)`` float and ``"label"``: segmentation
``(B, 1, *spatial)`` class indices (float), classification ``(B,)`` long (``(B, K)`` float multi-label).

DDP: loaders are plain ``monai.data.DataLoader``s, so Lightning (``use_distributed_sampler=True``)
adds a ``DistributedSampler``, or wraps the class-balanced ``WeightedRandomSampler`` in a
``DistributedSamplerWrapper`` (every rank draws the same seeded sequence and takes its share).
``cache="memory"`` caches the whole split in every rank; prefer ``cache="disk"`` for large data.

Files: :mod:`medfocal.data.base_datamodule` (shared: splits, checks, loaders; settings in
:class:`~medfocal.data.loading.LoaderConfig`), :mod:`medfocal.data.segmentation_datamodule`,
:mod:`medfocal.data.classification_datamodule`. This module keeps the old import path.
"""

from __future__ import annotations

from medfocal.data.base_datamodule import BaseDataModule
from medfocal.data.classification_datamodule import ClassificationDataModule
from medfocal.data.loading import LoaderConfig
from medfocal.data.segmentation_datamodule import SegmentationDataModule

__all__ = ["BaseDataModule", "ClassificationDataModule", "LoaderConfig", "SegmentationDataModule"]
