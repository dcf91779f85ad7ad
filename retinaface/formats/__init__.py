"""WIDER FACE file formats: ground truth (the official ``.mat`` files and the text box lists) and
prediction folders (``<event>/<image>.txt``), read and written.

The bottom layer beside :mod:`retinaface.conventions`: numpy only (scipy.io is imported where a
``.mat`` file is read or written), no torch, and no import of ``data`` or ``evaluation``, which
both build on it.

* :mod:`.wider_bbx` -- the block structure of ``wider_face_{train,val}_bbx_gt.txt``;
* :mod:`.ground_truth` -- :class:`WiderGroundTruth` and its ``.mat`` / text forms;
* :mod:`.predictions` -- prediction folders under each evaluation protocol's reading rules.
"""
from .ground_truth import (ATTRIBUTE_NAMES, SETTINGS, WiderGroundTruth, load_ground_truth, load_text_ground_truth,
                           open_ground_truth, save_ground_truth, save_text_ground_truth)
from .predictions import (InvalidPredictionWarning, MissingPredictionsWarning, PredictionCountWarning,
                          PredictionFolder, check_protocol, prediction_path, read_prediction_folder,
                          read_predictions, to_wider_rows, write_prediction_file, write_predictions)
from .wider_bbx import BBX_FIELDS, BbxBlock, is_number, read_bbx_blocks

__all__ = [
    "ATTRIBUTE_NAMES", "BBX_FIELDS", "BbxBlock", "InvalidPredictionWarning", "MissingPredictionsWarning",
    "PredictionCountWarning", "PredictionFolder", "SETTINGS", "WiderGroundTruth", "check_protocol", "is_number",
    "load_ground_truth", "load_text_ground_truth", "open_ground_truth", "prediction_path", "read_bbx_blocks",
    "read_prediction_folder", "read_predictions", "save_ground_truth", "save_text_ground_truth", "to_wider_rows",
    "write_prediction_file", "write_predictions",
]
