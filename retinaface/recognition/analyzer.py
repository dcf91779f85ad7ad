"""Detect, align and embed in one call: :class:`FaceAnalyzer`.

``FaceAnalyzer(detector, embedder).analyze(image)`` returns one :class:`Face` per detection above
``min_score``: its box, score and five landmarks (image pixels, the detector's layout), the aligned
``112 x 112`` BGR crop and the L2-normalized embedding; with a landmark model
(``FaceAnalyzer(..., landmark_model=...)`` or ``from_checkpoints(..., landmarks=PATH)``) also its
dense landmarks and head pose (:mod:`retinaface.landmarks`). :meth:`FaceAnalyzer.analyze_batch` runs the
detector over several images per forward pass and the embedder over all their faces at once (one
batched forward for many faces is several times cheaper than one call per face on a CPU:
``benchmarks/bench_recognition.py``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..inference.align import align_faces
from ..conventions import ALIGNED_FACE_SIZE, DET_BOX, DET_LANDMARKS, DET_SCORE, DISPLAY_THRESHOLD, NUM_LANDMARKS
from ..inference.detector import Detector
from ..inference.sources import dense_landmark_fields
from ..landmarks.inference import dense_faces
from ..landmarks.task import load_landmark_model
from ..runtime_interface import LandmarkModel
from .checkpoint import load_embedder
from .transforms import preprocess


@dataclasses.dataclass
class Face:
    """One analysed face. ``box (4,)`` x1 y1 x2 y2, ``landmarks (5, 2)`` in image pixels,
    ``crop`` uint8 ``(112, 112, 3)`` BGR, ``embedding`` float32 ``(D,)`` with unit L2 norm; with a
    landmark model, ``dense_landmarks (K, 2)`` in image pixels and ``head_pose`` ``(yaw, pitch,
    roll)`` in degrees (:mod:`retinaface.landmarks.pose`; ``None`` when the model's scheme has no
    pose points), else ``None``."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    crop: np.ndarray
    embedding: np.ndarray
    dense_landmarks: Optional[np.ndarray] = None
    head_pose: Optional[Tuple[float, float, float]] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: box, score and landmarks, and ``landmarks_dense`` / ``head_pose`` when known
        (the fields of ``retinaface detect --landmarks``; the crop and embedding are arrays kept
        elsewhere)."""
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 5),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
                **dense_landmark_fields(self.dense_landmarks, self.head_pose)}


class FaceAnalyzer:
    """A detector (:class:`retinaface.Detector`) and an embedding network together.

    ``embedder`` maps ``(B, 3, 112, 112)`` network input (:func:`retinaface.recognition.preprocess`
    of the crops) to ``(B, D)`` embeddings; it is put in eval mode. ``min_score`` drops weaker
    detections (default: the display threshold, 0.5), ``embed_batch_size`` bounds one embedder
    forward pass, ``flip`` adds the mirrored crop's embedding before normalizing. ``landmark_model``
    (a network of :func:`retinaface.landmarks.load_landmark_model`) adds every face's dense
    landmarks and head pose, the faces of one image predicted in one batch.
    """

    def __init__(self, detector: Any, embedder: nn.Module, min_score: float = DISPLAY_THRESHOLD,
                 crop_size: int = ALIGNED_FACE_SIZE, embed_batch_size: int = 64, flip: bool = False,
                 device: Union[str, torch.device, None] = None,
                 landmark_model: Optional[LandmarkModel] = None) -> None:
        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if embed_batch_size < 1:
            raise ValueError(f"embed_batch_size must be >= 1, got {embed_batch_size}")
        self.detector = detector
        if device is None:
            device = getattr(embedder, "device", None) or next(embedder.parameters()).device
        self.device = torch.device(device)
        self.embedder = embedder.to(self.device).eval() if isinstance(embedder, nn.Module) else embedder
        self.min_score = float(min_score)
        self.crop_size = int(crop_size)
        self.embed_batch_size = int(embed_batch_size)
        self.flip = bool(flip)
        self.landmark_model = landmark_model

    @classmethod
    def from_checkpoints(cls, detector: Union[str, Path], embedder: Union[str, Path], device: str = "cpu",
                         width: Optional[float] = None, landmarks: Union[str, Path, None] = None,
                         **kwargs: Any) -> "FaceAnalyzer":
        """From a detector checkpoint (or ``.onnx``) and an embedder checkpoint (``width`` for a
        channel-prioritised embedder); ``landmarks``: a landmark checkpoint of ``retinaface
        train-landmarks`` for dense landmarks and head poses."""
        landmark_model = load_landmark_model(landmarks, device) if landmarks is not None else None
        return cls(Detector.from_checkpoint(detector, device=device), load_embedder(embedder, device, width),
                   landmark_model=landmark_model, **kwargs)

    # -- pieces -----------------------------------------------------------------------------
    def select(self, detections: np.ndarray) -> np.ndarray:
        """The detections at or above ``min_score``."""
        detections = np.asarray(detections, dtype=np.float32).reshape(-1, 15)
        return detections[detections[:, DET_SCORE] >= self.min_score]

    def align(self, image: np.ndarray, detections: np.ndarray) -> np.ndarray:
        """Aligned crops ``uint8 (N, S, S, 3)`` of ``detections`` in ``image``."""
        if len(detections) == 0:
            return np.zeros((0, self.crop_size, self.crop_size, 3), dtype=np.uint8)
        return align_faces(image, detections, self.crop_size)

    @torch.inference_mode()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalized float32 ``(N, D)`` embeddings of aligned BGR uint8 crops ``(N, S, S, 3)``,
        ``embed_batch_size`` crops per forward pass."""
        crops = np.asarray(crops)
        out = []
        for start in range(0, len(crops), self.embed_batch_size):
            batch = preprocess(crops[start:start + self.embed_batch_size]).to(self.device)
            emb = self.embedder(batch).float()
            if self.flip:
                emb = emb + self.embedder(torch.flip(batch, dims=[3])).float()
            out.append(torch.nn.functional.normalize(emb, dim=1).cpu().numpy())
        if not out:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    @property
    def embedding_size(self) -> int:
        config = getattr(self.embedder, "config", None)
        size = getattr(config, "embedding_size", None)
        return int(size) if size is not None else 0

    # -- the pipeline -------------------------------------------------------------------------
    def analyze(self, image: np.ndarray) -> List[Face]:
        """Faces of one BGR uint8 image, strongest first."""
        return self.analyze_batch([image])[0]

    def analyze_batch(self, images: Sequence[np.ndarray], batch_size: int = 16) -> List[List[Face]]:
        """Faces of several images: ``batch_size`` images per detector pass, then every face of the
        call through the embedder in batches of ``embed_batch_size`` (and, with a landmark model,
        each image's faces through it in one batch)."""
        detections = [self.select(d) for d in self.detector.detect_batch(list(images), batch_size=batch_size)]
        crops = [self.align(image, dets) for image, dets in zip(images, detections)]
        counts = [len(c) for c in crops]
        all_crops = np.concatenate(crops) if sum(counts) else np.zeros((0, self.crop_size, self.crop_size, 3),
                                                                        np.uint8)
        embeddings = self.embed(all_crops) if len(all_crops) else None
        out: List[List[Face]] = []
        offset = 0
        for image, dets, image_crops, n in zip(images, detections, crops, counts):
            dense = dense_faces(self.landmark_model, image, dets[:, :4]) if self.landmark_model is not None else None
            faces = []
            for i in range(n):
                faces.append(Face(box=dets[i, DET_BOX].copy(), score=float(dets[i, DET_SCORE]),
                                  landmarks=dets[i, DET_LANDMARKS].reshape(NUM_LANDMARKS, 2).copy(),
                                  crop=image_crops[i], embedding=embeddings[offset + i],
                                  dense_landmarks=dense.points[i] if dense is not None else None,
                                  head_pose=tuple(float(v) for v in dense.poses[i])
                                  if dense is not None and dense.poses is not None else None))
            offset += n
            out.append(faces)
        return out

    def __repr__(self) -> str:
        return (f"FaceAnalyzer(detector={self.detector!r}, embedder={type(self.embedder).__name__}, "
                f"min_score={self.min_score}, flip={self.flip})")
