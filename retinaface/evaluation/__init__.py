"""WIDER FACE evaluation: ground truth (``.mat`` and text), prediction folders, the official
easy / medium / hard AP (vectorised, identical to the official algorithm) and PR-curve plots."""
from .ground_truth import (
    SETTINGS,
    WiderGroundTruth,
    load_ground_truth,
    load_text_ground_truth,
    open_ground_truth,
    save_ground_truth,
    save_text_ground_truth,
)
from .plot import plot_pr_curves
from .widerface import (
    MissingPredictionsWarning,
    PredictionCountWarning,
    WiderEvalResult,
    evaluate,
    read_predictions,
    to_wider_rows,
    write_prediction_file,
    write_predictions,
)

__all__ = [
    "SETTINGS", "MissingPredictionsWarning", "PredictionCountWarning", "WiderEvalResult",
    "WiderGroundTruth", "evaluate", "load_ground_truth", "load_text_ground_truth", "open_ground_truth",
    "plot_pr_curves",
    "read_predictions", "save_ground_truth", "save_text_ground_truth", "to_wider_rows", "write_prediction_file",
    "write_predictions",
]
