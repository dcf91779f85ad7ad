"""Five-point face alignment: a similarity transform onto the ArcFace template, and the warped crop.

``estimate_norm`` fits the least-squares similarity (rotation, uniform scale, translation; Umeyama
1991) that maps five detected landmarks onto :data:`~retinaface.conventions.ARCFACE_TEMPLATE_112`
scaled to the crop size, ``norm_crop`` warps the image with it. The fit never contains a
reflection: Umeyama's sign correction keeps ``det(R) = +1`` and landmarks given in mirrored order
(left and right swapped, as a flip augmentation without the landmark swap produces) are put back in
order with :data:`~retinaface.conventions.MIRROR_ORDER` first (``strict=True`` refuses them instead),
so every crop shows the face as it is in the image, upright.

Coordinates are pixels in OpenCV's convention (the template's numbers are used as-is with
``cv2.warpAffine``, as insightface does). Crop sizes: ``112`` is the template; any square size ``S``
scales it by ``S / 112``; ``(height, width)`` scales by ``height / 112`` and centres the template
horizontally, so ``(112, 96)`` is the template shifted by -8 in x.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np

from ..conventions import ALIGNED_FACE_SIZE, ARCFACE_TEMPLATE_112, DET_LANDMARKS, MIRROR_ORDER, NUM_LANDMARKS

CropSize = Union[int, Tuple[int, int]]

_TEMPLATE = np.asarray(ARCFACE_TEMPLATE_112, dtype=np.float64)


def _crop_hw(size: CropSize) -> Tuple[int, int]:
    """``(height, width)`` of a crop size given as ``S`` or ``(height, width)``."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"crop size must be an int or (height, width), got {size!r}")
        height, width = (int(v) for v in size)
    else:
        height = width = int(size)
    if height < 8 or width < 8:
        raise ValueError(f"crop size must be at least 8 x 8 pixels, got {size!r}")
    return height, width


def template(size: CropSize = ALIGNED_FACE_SIZE) -> np.ndarray:
    """The five template points ``(5, 2)`` float64 for a crop of ``size`` (see the module doc)."""
    height, width = _crop_hw(size)
    points = _TEMPLATE * (height / ALIGNED_FACE_SIZE)
    points[:, 0] += (width - height) / 2.0
    return points


def _orientation(points: np.ndarray) -> np.ndarray:
    """Sign of the turn eye line -> mouth centre, ``(...,)``: +1 for the template's handedness.

    In image coordinates (y down) the template's right eye lies to the +x side of the left eye and
    the mouth below, so the cross product is positive; a mirrored point order makes it negative.
    """
    eyes = points[..., 1, :] - points[..., 0, :]
    mouth = 0.5 * (points[..., 3, :] + points[..., 4, :]) - 0.5 * (points[..., 0, :] + points[..., 1, :])
    return np.sign(eyes[..., 0] * mouth[..., 1] - eyes[..., 1] * mouth[..., 0])


_TEMPLATE_SIGN = float(_orientation(_TEMPLATE))


def _check_landmarks(landmarks: np.ndarray, batched: bool) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    want = "(N, 5, 2)" if batched else "(5, 2)"
    if batched and points.ndim == 2 and points.shape[1] == 2 * NUM_LANDMARKS:
        points = points.reshape(-1, NUM_LANDMARKS, 2)  # (N, 10) x y pairs, the detection layout
    elif not batched and points.shape == (2 * NUM_LANDMARKS,):
        points = points.reshape(NUM_LANDMARKS, 2)
    if points.shape[-2:] != (NUM_LANDMARKS, 2) or points.ndim != (3 if batched else 2):
        raise ValueError(f"landmarks must have shape {want}, got {tuple(np.shape(landmarks))}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or infinite coordinates")
    return points


def _reorder_mirrored(points: np.ndarray, strict: bool) -> np.ndarray:
    """Put landmarks given in mirrored order (left/right swapped) back in template order."""
    signs = _orientation(points)
    mirrored = signs == -_TEMPLATE_SIGN
    if not mirrored.any():
        return points
    if strict:
        which = np.flatnonzero(np.atleast_1d(mirrored)).tolist()
        raise ValueError(f"landmarks are in mirrored order (left and right swapped) for face(s) {which}: "
                         "a similarity onto the template would need a reflection")
    swapped = points[..., list(MIRROR_ORDER), :]
    return np.where(mirrored[..., None, None], swapped, points)


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``(B, 2, 3)`` mapping ``src (B, K, 2)`` onto ``dst (K, 2)``.

    Umeyama (1991): with centred points and ``Sigma = dst^T src / K = U S V^T``, ``R = U D V^T`` with
    ``D = diag(1, sign(det U det V))`` so ``det R = +1`` (never a reflection), scale
    ``tr(S D) / var(src)``, translation ``mean(dst) - scale R mean(src)``.
    """
    src_mean = src.mean(axis=1, keepdims=True)
    dst_mean = dst.mean(axis=0, keepdims=True)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    var_src = (src_c ** 2).sum(axis=(1, 2)) / src.shape[1]
    if (var_src < 1e-12).any():
        bad = np.flatnonzero(var_src < 1e-12).tolist()
        raise ValueError(f"landmarks of face(s) {bad} all lie on one point: no transform can be fitted")
    sigma = np.einsum("ki,bkj->bij", dst_c, src_c) / src.shape[1]
    u, s, vt = np.linalg.svd(sigma)
    d = np.ones((src.shape[0], 2))
    d[:, 1] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    d[d == 0] = 1.0  # rank-deficient (collinear points): keep the proper rotation
    rotation = np.einsum("bij,bj,bjk->bik", u, d, vt)
    scale = (s * d).sum(axis=1) / var_src
    translation = dst_mean[None, 0] - scale[:, None] * np.einsum("bij,bj->bi", rotation, src_mean[:, 0])
    return np.concatenate([scale[:, None, None] * rotation, translation[:, :, None]], axis=2)


def estimate_norm_batch(landmarks: np.ndarray, size: CropSize = ALIGNED_FACE_SIZE,
                        strict: bool = False) -> np.ndarray:
    """Similarity transforms ``(N, 3 -> 2, 3)`` float64 mapping each face's landmarks
    ``(N, 5, 2)`` (or ``(N, 10)``) onto the template of ``size``; see :func:`estimate_norm`."""
    points = _check_landmarks(landmarks, batched=True)
    if len(points) == 0:
        return np.zeros((0, 2, 3))
    points = _reorder_mirrored(points, strict)
    return _umeyama(points, template(size))


def estimate_norm(landmarks: np.ndarray, size: CropSize = ALIGNED_FACE_SIZE, strict: bool = False) -> np.ndarray:
    """The ``(2, 3)`` float64 similarity that maps ``landmarks (5, 2)`` onto the template of ``size``.

    Least squares over the five points, rotation + uniform scale + translation, ``det(M[:, :2]) > 0``
    always. Landmarks in mirrored order are reordered with ``MIRROR_ORDER`` (``strict=True``: a
    ``ValueError`` instead). Raises ``ValueError`` for a wrong shape, NaN / inf, or coincident points.
    """
    return estimate_norm_batch(_check_landmarks(landmarks, batched=False)[None], size, strict)[0]


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) array, got shape {getattr(image, 'shape', None)}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (as read by OpenCV), got {image.dtype}")
    return image


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: CropSize = ALIGNED_FACE_SIZE) -> np.ndarray:
    """``image`` warped by the ``(2, 3)`` ``matrix`` into a ``size`` crop (bilinear, black outside)."""
    import cv2  # only the warp needs OpenCV: the landmark geometry above is NumPy alone

    height, width = _crop_hw(size)
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (width, height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def norm_crop(image: np.ndarray, landmarks: np.ndarray, size: CropSize = ALIGNED_FACE_SIZE,
              strict: bool = False) -> np.ndarray:
    """Aligned crop ``uint8 (h, w, 3)`` (same channel order as ``image``) of the face with
    ``landmarks (5, 2)`` in ``image uint8 (H, W, 3)``."""
    return warp_crop(_check_image(image), estimate_norm(landmarks, size, strict), size)


def norm_crop_batch(image: np.ndarray, landmarks: np.ndarray, size: CropSize = ALIGNED_FACE_SIZE,
                    strict: bool = False) -> np.ndarray:
    """Aligned crops ``uint8 (N, h, w, 3)`` of the ``N`` faces with ``landmarks (N, 5, 2)`` in one
    image: one batched fit, then one warp per face. Equal to :func:`norm_crop` face by face."""
    _check_image(image)
    height, width = _crop_hw(size)
    matrices = estimate_norm_batch(landmarks, size, strict)
    crops = np.empty((len(matrices), height, width, 3), dtype=np.uint8)
    for i, matrix in enumerate(matrices):
        crops[i] = warp_crop(image, matrix, size)
    return crops


def align_faces(image: np.ndarray, detections: np.ndarray, size: CropSize = ALIGNED_FACE_SIZE,
                strict: bool = False) -> np.ndarray:
    """Aligned crops ``uint8 (N, h, w, 3)`` of the faces in ``detections (N, 15)`` (the detector's
    layout: box, score, then the 5 landmarks in ``DET_LANDMARKS``)."""
    detections = np.asarray(detections, dtype=np.float64)
    if detections.ndim != 2 or detections.shape[1] < DET_LANDMARKS.stop:
        raise ValueError(f"detections must have shape (N, 15), got {detections.shape}")
    landmarks = detections[:, DET_LANDMARKS].reshape(-1, NUM_LANDMARKS, 2)
    return norm_crop_batch(image, landmarks, size, strict)


__all__ = ["align_faces", "estimate_norm", "estimate_norm_batch", "norm_crop", "norm_crop_batch", "template",
           "warp_crop"]
