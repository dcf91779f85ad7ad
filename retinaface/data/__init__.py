"""Data: label readers for both WIDER FACE label formats, the training augmentation, the torch
data sets and collate function, and the built-in synthetic data set.

* :mod:`.labels` -- :class:`ImageAnnotation`, the readers, :func:`check_images`, layout detection;
* :mod:`.augment` -- :class:`TrainTransform` (the reference recipe), :class:`ValTransform`;
* :mod:`.dataset` -- :class:`WiderFaceTrainDataset`, :class:`WiderFaceValDataset`,
  :func:`detection_collate`, :class:`MeanSubtractingLoader`;
* :mod:`.synthetic` -- :func:`generate_synthetic_widerface`.
"""
from .augment import (DEFAULT_RGB_MEAN, INTERPOLATIONS, LABEL_COLUMN, TARGET_COLUMNS, TrainTransform,
                      ValTransform)
from .dataset import (MeanSubtractingLoader, WiderFaceTrainDataset, WiderFaceValDataset, detection_collate,
                      read_image, sample_rng, worker_init_fn)
from .labels import (LANDMARK_NAMES, ImageAnnotation, LabelStats, ValImage, check_images, detect_label_format,
                     load_training_annotations, read_retinaface_labels, read_val_list, read_wider_bbx_labels)
from .synthetic import SyntheticPaths, generate_synthetic_widerface

__all__ = [
    "DEFAULT_RGB_MEAN", "INTERPOLATIONS", "LABEL_COLUMN", "LANDMARK_NAMES", "TARGET_COLUMNS",
    "ImageAnnotation", "LabelStats", "MeanSubtractingLoader", "SyntheticPaths", "TrainTransform", "ValImage", "ValTransform",
    "WiderFaceTrainDataset", "WiderFaceValDataset", "check_images", "detect_label_format",
    "detection_collate", "generate_synthetic_widerface", "load_training_annotations", "read_image",
    "read_retinaface_labels", "read_val_list", "read_wider_bbx_labels", "sample_rng", "worker_init_fn",
]
