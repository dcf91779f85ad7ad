"""WIDER FACE evaluation: easy / medium / hard AP under the official MATLAB program's arithmetic
(the default) or the widely used Python port's (``protocol="python-port"``), vectorised, and
precision-recall plots.

The file formats (ground truth, prediction folders) live in :mod:`retinaface.formats` and are
re-exported here. Importing this package loads numpy only: running a detector over the val
split (:func:`retinaface.evaluation.predict.evaluate_model`, torch) is imported on its own.
"""
from ..formats.ground_truth import (SETTINGS, WiderGroundTruth, load_ground_truth, load_text_ground_truth,
                                    open_ground_truth, save_ground_truth, save_text_ground_truth)
from ..formats.predictions import (InvalidPredictionWarning, MissingPredictionsWarning, PredictionCountWarning,
                                   PredictionFolder, read_prediction_folder, read_predictions, to_wider_rows,
                                   write_prediction_file, write_predictions)
from .plot import plot_pr_curves
from .widerface import WiderEvalResult, evaluate

__all__ = [
    "SETTINGS", "InvalidPredictionWarning", "MissingPredictionsWarning", "PredictionCountWarning",
    "PredictionFolder", "WiderEvalResult", "WiderGroundTruth", "evaluate", "load_ground_truth",
    "load_text_ground_truth", "open_ground_truth", "plot_pr_curves", "read_prediction_folder", "read_predictions",
    "save_ground_truth", "save_text_ground_truth", "to_wider_rows", "write_prediction_file", "write_predictions",
]
