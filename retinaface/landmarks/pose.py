"""Head pose (yaw, pitch, roll in degrees) from 2D landmarks: ``cv2.solvePnP`` fits a mean 3D face of
six points to their image positions.

The 3D model: six points of a generic face in the widely used head-pose example's units (nose tip at
the origin; x to the image's right, y up, z towards the viewer), here turned into the camera's axes
(:data:`MODEL_POINTS`: x right, y down, z away from the camera, so a frontal face has the identity
rotation):

========================================= =================== ====== ====== ====== ======
point                                     (x, y, z) example   ibug68 wflw98 aflw21
========================================= =================== ====== ====== ====== ======
nose tip                                  (0, 0, 0)           30     54     14
chin                                      (0, -330, -65)      8      16     20
outer eye corner on the image's left      (-225, 170, -135)   36     60     6
outer eye corner on the image's right     (225, 170, -135)    45     72     11
mouth corner on the image's left          (-150, -150, -125)  48     76     17
mouth corner on the image's right         (150, -150, -125)   54     82     19
========================================= =================== ====== ====== ====== ======

``cofw29`` is left out: which of its two midline nose points is the tip could not be checked
against COFW data here; ``retinaface5`` has no chin.

Camera: focal length = image width (in pixels, both axes), principal point = the image centre in the
toolkit's pixel-centre coordinates (``((W - 1) / 2, (H - 1) / 2)``, so a horizontally flipped image has
the mirrored camera), no lens distortion.

Angle conventions (degrees; the subject facing the camera is ``(0, 0, 0)``):

* **yaw > 0**: the face turns towards the image's right (the subject's left); the nose moves right;
* **pitch > 0**: the face turns up (chin forward and up, nose towards the top of the image);
* **roll > 0**: the face turns counter-clockwise as seen in the image (the eye on the image's right
  rises), the sense of ``cv2.getRotationMatrix2D`` and of the crop augmentation's angle.

The rotation from model to camera coordinates is ``R = Rx(-pitch) @ Ry(-yaw) @ Rz(-roll)`` with
``Rx``, ``Ry``, ``Rz`` the right-handed rotations about the camera's x (right), y (down) and z
(forward) axes: roll turns the face in the image plane first, then yaw about its vertical axis, then
pitch; the order of AFLW2000-3D's ``Pose_Para`` (3DDFA's ``R = Rx Ry Rz``). AFLW2000-3D's angles
(radians, ``Pose_Para[:3]`` = pitch, yaw, roll) are ours as ``yaw = -Pose_Para[1]``,
``pitch = Pose_Para[0]`` and ``roll = -Pose_Para[2]`` (in degrees): its y and z axes point the other
way, which keeps a rotation about x and negates those about y and z. Checked on its faces: a profile
looking towards the image's left has ``Pose_Para`` yaw +71 degrees and our yaw -73; a face looking up
has ``Pose_Para`` pitch +34 and our pitch +36; the opposite sign of any one angle is 14 to 56 degrees off
on average. Mirroring the image (:func:`~retinaface.landmarks.schemes.flip_points`) negates yaw and
roll and keeps pitch.

Accuracy: on the 16 AFLW2000-3D faces of ``../shared/real`` (450 x 450, yaw up to 71 degrees), the
pose from their fitted 68 points (``pt3d_68``) against ``Pose_Para`` has a mean absolute error of
5.07 (yaw), 3.60 (pitch) and 1.89 (roll) degrees, worst face 16.4 / 8.0 / 6.3: six points of a generic
face, not the person's own shape (``tests/test_landmark_pose.py`` prints the figures).
"""
from __future__ import annotations

import math
from typing import Dict, NamedTuple, Sequence, Tuple, Union

import cv2
import numpy as np

from .schemes import LandmarkScheme, get_scheme

# the six model points in camera axes (x right, y down, z away from the camera), model units
MODEL_POINTS = np.array([
    [0.0, 0.0, 0.0],          # nose tip
    [0.0, 330.0, 65.0],       # chin
    [-225.0, -170.0, 135.0],  # outer eye corner, image's left
    [225.0, -170.0, 135.0],   # outer eye corner, image's right
    [-150.0, 150.0, 125.0],   # mouth corner, image's left
    [150.0, 150.0, 125.0],    # mouth corner, image's right
])

# each scheme's indices of MODEL_POINTS, in that order (see the module docstring's table)
POSE_POINTS: Dict[str, Tuple[int, ...]] = {
    "ibug68": (30, 8, 36, 45, 48, 54),
    "wflw98": (54, 16, 60, 72, 76, 82),
    "aflw21": (14, 20, 6, 11, 17, 19),
}


class HeadPose(NamedTuple):
    """Yaw, pitch and roll in degrees (conventions: the module docstring)."""

    yaw: float
    pitch: float
    roll: float

    def to_dict(self, digits: int = 2) -> Dict[str, float]:
        return {name: round(float(value), digits) for name, value in self._asdict().items()}


def has_pose_points(scheme: Union[str, int, LandmarkScheme]) -> bool:
    """Whether :func:`head_pose` knows the six model points in ``scheme``."""
    return get_scheme(scheme).name in POSE_POINTS


def camera_matrix(image_size: Tuple[int, int]) -> np.ndarray:
    """The 3 x 3 intrinsics for an image of ``image_size = (width, height)`` pixels (see the module
    docstring)."""
    width, height = (float(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be (width, height) > 0, got {image_size}")
    return np.array([[width, 0.0, (width - 1) / 2.0], [0.0, width, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def _rotation(axis: int, radians: float) -> np.ndarray:
    c, s = math.cos(radians), math.sin(radians)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def pose_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The model -> camera rotation of a head pose in degrees (the module docstring's convention)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    return _rotation(0, -p) @ _rotation(1, -y) @ _rotation(2, -r)


def rotation_to_pose(rotation: np.ndarray) -> HeadPose:
    """The inverse of :func:`pose_rotation` (yaw in [-90, 90], pitch and roll in (-180, 180])."""
    m = np.asarray(rotation, dtype=np.float64)
    # R = Rx(a) Ry(b) Rz(c): R[0, 2] = sin b, R[0, :2] = cos b (cos c, -sin c), R[1:, 2] = cos b (-sin a, cos a)
    b = math.asin(max(-1.0, min(1.0, m[0, 2])))
    c = math.atan2(-m[0, 1], m[0, 0])
    a = math.atan2(-m[1, 2], m[2, 2])
    return HeadPose(-math.degrees(b), -math.degrees(a), -math.degrees(c))


def head_pose(points: np.ndarray, scheme: Union[str, int, LandmarkScheme], image_size: Tuple[int, int]
              ) -> HeadPose:
    """``(yaw, pitch, roll)`` in degrees of one face from its ``points`` ``(K, 2)`` of ``scheme`` in an
    image of ``image_size = (width, height)`` pixels. ``ValueError`` for a scheme without the six
    model points (:data:`POSE_POINTS`) or non-finite points."""
    layout = get_scheme(scheme)
    if layout.name not in POSE_POINTS:
        raise ValueError(f"head pose needs the nose tip, chin, outer eye and mouth corners; scheme "
                         f"{layout.name} is not one of {sorted(POSE_POINTS)}")
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (layout.num_points, 2):
        raise ValueError(f"points {points.shape} do not fit scheme {layout.name} ({layout.num_points}, 2)")
    image_points = points[list(POSE_POINTS[layout.name])]
    if not np.all(np.isfinite(image_points)):
        raise ValueError("head pose: the nose tip, chin, eye or mouth corner points are not finite")
    # SQPnP finds the global minimum of the reprojection error without an initial guess (the
    # default iterative solver starts from a DLT, unstable with only six points); Levenberg-Marquardt
    # then polishes it
    ok, rvec, tvec = cv2.solvePnP(MODEL_POINTS, image_points, camera_matrix(image_size), None,
                                  flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise ValueError("head pose: cv2.solvePnP found no pose for these points")
    rvec, tvec = cv2.solvePnPRefineLM(MODEL_POINTS, image_points, camera_matrix(image_size), None, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    return rotation_to_pose(rotation)


def head_poses(points: np.ndarray, scheme: Union[str, int, LandmarkScheme], image_size: Tuple[int, int]
               ) -> np.ndarray:
    """``(N, 3)`` yaw, pitch, roll in degrees of the faces ``points`` ``(N, K, 2)`` (see :func:`head_pose`)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3:
        raise ValueError(f"expected (N, K, 2) points, got {points.shape}")
    return np.array([head_pose(p, scheme, image_size) for p in points], dtype=np.float64).reshape(-1, 3)


def image_size_of(image: np.ndarray) -> Tuple[int, int]:
    """``(width, height)`` of an ``H x W (x C)`` image array."""
    return int(image.shape[1]), int(image.shape[0])


__all__: Sequence[str] = ["HeadPose", "MODEL_POINTS", "POSE_POINTS", "camera_matrix", "has_pose_points",
                          "head_pose", "head_poses", "image_size_of", "pose_rotation", "rotation_to_pose"]
