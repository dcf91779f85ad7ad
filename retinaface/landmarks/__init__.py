"""Dense facial landmarks (68 / 98 / 29 / 21 points): data set readers, metrics, crop policy, networks,
a synthetic set and evaluation.

Names are resolved lazily (PEP 562): ``import retinaface.landmarks`` is cheap, and torch is imported
only when a network is used; the readers and metrics need numpy only (scipy for ``.mat`` files).

* :mod:`~retinaface.landmarks.schemes` -- the point layouts: mirror permutations, eye corners, pupils.
* :mod:`~retinaface.landmarks.formats` -- 300W ``.pts``, WFLW lists, AFLW2000-3D and COFW ``.mat``;
  :class:`LandmarkSample`.
* :mod:`~retinaface.landmarks.metrics` -- NME (inter-ocular, inter-pupil, box), FR, CED, AUC, the
  seed report's mean pixel distance and ranking score.
* :mod:`~retinaface.landmarks.crop` -- the square face crop, its exact inverse, augmentation.
* :mod:`~retinaface.landmarks.models` -- the landmark network registry (regressors
  ``mobilenetv3_small``, ``pfld``, ``timm:<name>``; PIPNet heatmap models ``pipnet_mobilenetv3``,
  ``pipnet_resnet18``, ``pipnet:timm:<name>``) and complexity counting (the seed's FLOPs convention).
* :mod:`~retinaface.landmarks.heatmap` -- the heatmap models' score map + offset encoding and its
  exact inverse, neighbour votes.
* :mod:`~retinaface.landmarks.synthetic` -- drawn faces with true 68 / 98 points.
* :mod:`~retinaface.landmarks.evaluate` -- scores per set and per WFLW subset; predictions written in
  the ground truth's format.
* :mod:`~retinaface.landmarks.inference` -- dense points (and head poses) of detected faces.
* :mod:`~retinaface.landmarks.pose` -- head pose (yaw, pitch, roll) from the points, ``cv2.solvePnP``
  with a mean 3D face.
* :mod:`~retinaface.landmarks.adaptive` / :mod:`~retinaface.landmarks.prioritize` -- channel-prioritised
  networks: one checkpoint at 100 / 75 / 50 % width (``retinaface prioritize --task landmarks``).
* :mod:`~retinaface.landmarks.config` / :mod:`~retinaface.landmarks.task` -- ``LandmarkConfig`` and
  ``LandmarkTask`` for the one training loop (``retinaface train-landmarks``), the wing loss, the
  heatmap (PIPNet) loss, ``load_landmark_model`` and ``predict_landmarks``.
* :mod:`~retinaface.landmarks.export` / :mod:`~retinaface.landmarks.runtime` -- ONNX (float and INT8)
  files of a landmark network with their parity check, and ``LandmarkOnnxModel``, which runs them
  on ONNX Runtime wherever the PyTorch network runs.
"""
from __future__ import annotations

from typing import Dict

from .._lazy import lazy_names

_NAMES: Dict[str, str] = {
    "LandmarkScheme": "schemes",
    "SCHEMES": "schemes",
    "get_scheme": "schemes",
    "flip_points": "schemes",
    "LandmarkSample": "formats",
    "LandmarkFormatError": "formats",
    "read_pts": "formats",
    "write_pts": "formats",
    "read_wflw_list": "formats",
    "read_aflw2000_mat": "formats",
    "read_cofw_mat": "formats",
    "read_landmarks": "formats",
    "nme": "metrics",
    "nme_per_face": "metrics",
    "failure_rate": "metrics",
    "auc": "metrics",
    "ced_curve": "metrics",
    "mean_pixel_distance": "metrics",
    "ranking_score": "metrics",
    "AugmentConfig": "crop",
    "CropTransform": "crop",
    "augment_face": "crop",
    "crop_face": "crop",
    "crop_transform": "crop",
    "LandmarkModelConfig": "models",
    "create_landmark_model": "models",
    "landmark_model_from_config": "models",
    "list_landmark_models": "models",
    "register_landmark_model": "models",
    "model_complexity": "models",
    "landmark_model_kind": "models",
    "encode_points": "heatmap",
    "decode_points": "heatmap",
    "render_landmark_face": "synthetic",
    "write_synthetic_landmarks": "synthetic",
    "LandmarkEvaluation": "evaluate",
    "evaluate_landmarks": "evaluate",
    "write_predictions": "evaluate",
    "DenseFaces": "inference",
    "dense_faces": "inference",
    "detect_and_landmark": "inference",
    "landmarks_in_boxes": "inference",
    "HeadPose": "pose",
    "has_pose_points": "pose",
    "head_pose": "pose",
    "head_poses": "pose",
    "AdaptiveLandmarkRegressor": "adaptive",
    "make_adaptive_landmark_model": "adaptive",
    "materialize_landmark_width": "adaptive",
    "prune_landmark_model": "adaptive",
    "LandmarkPrioritizeConfig": "prioritize",
    "run_landmark_prioritization": "prioritize",
    "LandmarkConfig": "config",
    "LandmarkTask": "task",
    "load_landmark_model": "task",
    "predict_landmarks": "task",
    "wing_loss": "task",
    "LandmarkOnnxModel": "runtime",
    "export_landmark_onnx": "export",
    "export_landmark_int8": "export",
    "check_landmark_parity": "export",
    "heatmap_loss": "task",
}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_names(__name__, _NAMES)
