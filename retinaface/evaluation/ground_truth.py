"""Former home of the WIDER FACE ground truth; it lives in :mod:`retinaface.formats.ground_truth`
now (the file format is the bottom layer, below data and evaluation). Kept so that existing
imports keep working."""
from ..formats.ground_truth import (ATTRIBUTE_NAMES, MAIN_MAT, SETTING_MATS, SETTINGS, WiderGroundTruth,
                                    load_ground_truth, load_text_ground_truth, open_ground_truth, save_ground_truth,
                                    save_text_ground_truth)

__all__ = ["ATTRIBUTE_NAMES", "MAIN_MAT", "SETTING_MATS", "SETTINGS", "WiderGroundTruth", "load_ground_truth",
           "load_text_ground_truth", "open_ground_truth", "save_ground_truth", "save_text_ground_truth"]
