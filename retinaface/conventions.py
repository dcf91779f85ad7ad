"""The interface facts of the toolkit, each stated once.

Everything that two modules must agree on lives here: the input normalization, the anchors' sizes
and strides and the box coding's variances, the column layout of detections and training targets,
the landmark order and its mirror image, the matching thresholds and training image size, the
default, drawing and WIDER test thresholds, the WIDER FACE protocol names, image-name parsing and
the data layout paths. Other modules import these names (some keep an older name as an alias);
none restates a value. This module imports nothing heavy (numpy only), so every layer may use it.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Tuple, Union

import numpy as np

# ---------------------------------------------------------------------------------------------
# Input normalization: images are read by OpenCV (BGR, uint8) and the model sees BGR minus this.
BGR_MEAN: Tuple[float, float, float] = (104.0, 117.0, 123.0)

# Every backbone returns feature maps at these strides, one FPN level and one head each.
FEATURE_STRIDES: Tuple[int, ...] = (8, 16, 32)
# Square anchor sizes (input pixels) of each level, in FEATURE_STRIDES order: the reference's.
PRIOR_MIN_SIZES: Tuple[Tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
# The SSD box coding's variances (centre, size): what encoding for training and decoding agree on.
BOX_VARIANCES: Tuple[float, float] = (0.1, 0.2)

# ---------------------------------------------------------------------------------------------
# Landmarks: five points, always in this order, stored as x, y pairs.
LANDMARK_NAMES: Tuple[str, ...] = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
NUM_LANDMARKS = len(LANDMARK_NAMES)
# Index of each point's partner in a horizontally mirrored image (left and right swap).
MIRROR_ORDER: Tuple[int, ...] = (1, 0, 2, 4, 3)


def mirror_x(x: np.ndarray, width: float) -> np.ndarray:
    """x coordinate, in the mirrored image of width ``width``, of the point at ``x``.

    Continuous-coordinate convention ``x -> width - x``: the reference training augmentation's,
    and flip test-time augmentation uses the same one (measured choice: docs/architecture.md).
    The map is its own inverse.
    """
    return width - x


# ---------------------------------------------------------------------------------------------
# Column layouts. Detections: (N, 15) float32, x1 y1 x2 y2 score, then 5 (x, y) landmarks.
DETECTION_COLUMNS = 15
DET_BOX = slice(0, 4)
DET_SCORE = 4
DET_LANDMARKS = slice(5, 15)

# Training targets: (K, 15) float32, x1 y1 x2 y2 (normalized to 0..1), 5 (x, y) landmarks, then the
# label: 1 for a face with landmarks, -1 for a face without (landmark loss skipped).
TARGET_COLUMNS = 15
TARGET_BOX = slice(0, 4)
TARGET_LANDMARKS = slice(4, 14)
TARGET_LABEL = 14

# ---------------------------------------------------------------------------------------------
# Training: the side of the square crops the augmentation resizes to, and the prior matching
# thresholds (a prior overlapping a face by this IoU learns it; a face whose best prior overlaps
# less than the ignore threshold forces no prior), shared by matching and the loss.
TRAIN_IMAGE_SIZE = 640
MATCH_IOU_THRESHOLD = 0.35
MATCH_IGNORE_THRESHOLD = 0.2

# ---------------------------------------------------------------------------------------------
# Post-processing defaults (the reference demo's) and the WIDER FACE test protocol's settings.
CONF_THRESHOLD = 0.02
NMS_THRESHOLD = 0.4
PRE_NMS_TOPK = 5000
POST_NMS_TOPK = 750
VIS_THRESHOLD = 0.6              # what `retinaface detect` draws and crops (the reference demo's)
# Pixels neighbouring tiles share (retinaface.inference.tiling, `detect --tile` and the automatic tiling).
TILE_OVERLAP = 64
# Default cap on a detect forward pass's input pixels: mobilenet0.25's CPU detect takes about 47-50 MiB
# per megapixel (peak RSS over the model at rest, 2-12 MP: benchmarks/bench_forward_memory.py), so
# 24 MP (a 6000 x 4000 camera photo) needs about 1.1-1.2 GiB, which a laptop has to spare.
DEFAULT_MAX_PIXELS = 24_000_000
DISPLAY_THRESHOLD = 0.5          # detect_and_align's minimum score and a video's drawn faces by default

WIDER_TEST_CONF_THRESHOLD = 0.02
WIDER_TEST_NMS_THRESHOLD = 0.4
WIDER_TEST_TARGET_SIZE = 1600    # reference short side for "resize" testing
WIDER_TEST_MAX_SIZE = 2150       # reference cap of the long side
MULTISCALE_SIZES: Tuple[int, ...] = (500, 800, 1100, 1400, 1700)

# ---------------------------------------------------------------------------------------------
# WIDER FACE evaluation: the three settings and the two programs whose arithmetic we reproduce.
WIDER_SETTINGS: Tuple[str, ...] = ("easy", "medium", "hard")
EVAL_PROTOCOLS: Tuple[str, ...] = ("official", "python-port")
DEFAULT_EVAL_PROTOCOL = "official"
EVAL_IOU_THRESHOLD = 0.5
EVAL_NUM_THRESHOLDS = 1000

GT_MAIN_MAT = "wider_face_val.mat"
GT_SETTING_MATS = {s: f"wider_{s}_val.mat" for s in WIDER_SETTINGS}
GT_VAL_TEXT = "wider_face_val_bbx_gt.txt"

# ---------------------------------------------------------------------------------------------
# Data layout under a data root (Pytorch_Retinaface's, which the synthetic set also writes).
TRAIN_LABELS = Path("train") / "label.txt"
TRAIN_IMAGES = Path("train") / "images"
VAL_LIST = Path("val") / "wider_val.txt"
VAL_LABELS = Path("val") / "label.txt"
VAL_IMAGES = Path("val") / "images"
VAL_GROUND_TRUTH = Path("val") / "ground_truth"
# The official download's layout.
OFFICIAL_SPLIT_DIR = Path("wider_face_split")
OFFICIAL_IMAGES = {"train": Path("WIDER_train") / "images", "val": Path("WIDER_val") / "images"}


def split_image_path(path: Union[str, Path]) -> Tuple[str, str]:
    """``(event, image stem)`` of a WIDER image path such as ``/0--Parade/0_Parade_x_1.jpg``.

    Back slashes count as separators and a leading slash is allowed; the event is the folder just
    above the file ("" when there is none); the stem drops the last extension only, as WIDER's own
    names contain dots and spaces.
    """
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    if not parts:
        raise ValueError(f"empty image path {str(path)!r}")
    name = parts[-1]
    stem = str(PurePosixPath(name).with_suffix("")) if "." in name else name
    return (parts[-2] if len(parts) > 1 else ""), stem

# ---------------------------------------------------------------------------------------------
# Face recognition: aligned crops and the embedding networks' input.
# The standard five-point template (ArcFace / insightface) for a 112 x 112 crop, in LANDMARK_NAMES
# order; 96 x 112 crops use it shifted by -8 in x, other square sizes scale it.
ARCFACE_TEMPLATE_112: Tuple[Tuple[float, float], ...] = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))
ALIGNED_FACE_SIZE = 112
# Embedding networks see RGB crops scaled to about [-1, 1]: (pixel - 127.5) / 128.
EMBED_MEAN = 127.5
EMBED_STD = 128.0
EMBEDDING_SIZE = 512


# ---------------------------------------------------------------------------------------------
# Errors a user sees: one line each (commands print it after "<prog>: error:"; libraries put the
# file and line or the flag first).
def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): what a command
    shows of an error instead of a traceback."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
