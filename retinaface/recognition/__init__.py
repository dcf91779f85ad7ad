"""Face recognition: aligned crops -> embeddings, margin losses, recognition data sets.

Names are resolved lazily (PEP 562), so ``import retinaface.recognition`` is cheap and does not
import torch until a torch-backed name (a network, a loss, ``preprocess``) is used.

* :mod:`~retinaface.recognition.transforms` -- ``preprocess`` (the one input transform) and
  ``FaceTrainTransform`` (rotation / scale / shift / flip augmentation).
* :mod:`~retinaface.recognition.models` -- the embedder registry: ``mobiface``, ``mobilefacenet``,
  ``timm:<name>``.
* :mod:`~retinaface.recognition.losses` -- ArcFace, CosFace, softmax + center loss.
* :mod:`~retinaface.recognition.data` -- folder-per-identity and RecordIO training sets, LFW
  ``pairs.txt`` and insightface ``.bin`` verification sets.
* :mod:`~retinaface.recognition.synthetic` -- built-in synthetic identities.
* :mod:`~retinaface.recognition.config` -- ``RecognitionConfig``; :mod:`~retinaface.recognition.task`
  -- ``RecognitionTask`` (what the one ``retinaface.engine.Trainer`` trains); :mod:`~retinaface.recognition.training`
  -- ``RecognitionTrainer`` (that Trainer with the recognition task); :mod:`~retinaface.recognition.checkpoint`
  -- embedder checkpoints; :mod:`~retinaface.recognition.verification` -- the 10-fold protocol, TAR at FAR.
* :mod:`~retinaface.recognition.analyzer` -- ``FaceAnalyzer`` (detect, align, embed; dense landmarks);
  :mod:`~retinaface.recognition.gallery` -- search; :mod:`~retinaface.recognition.export` -- ONNX.
* :mod:`~retinaface.recognition.adaptive_embedder` -- channel-prioritised embedders (one checkpoint, three
  widths); :mod:`~retinaface.recognition.prioritize` -- the experiment that trains them.
"""
from __future__ import annotations

from typing import Dict

from .._lazy import lazy_names

_NAMES: Dict[str, str] = {
    "preprocess": "transforms",
    "FaceTrainTransform": "transforms",
    "EmbedderConfig": "models",
    "create_embedder": "models",
    "embedder_from_config": "models",
    "list_embedders": "models",
    "register_embedder": "models",
    "ArcFaceLoss": "losses",
    "CosFaceLoss": "losses",
    "SoftmaxCenterLoss": "losses",
    "build_recognition_loss": "losses",
    "list_recognition_losses": "losses",
    "FaceFolderDataset": "data",
    "RecordIODataset": "data",
    "VerificationPairs": "data",
    "RecognitionDataError": "data",
    "load_verification_bin": "data",
    "read_lfw_pairs": "data",
    "RecordIOError": "recordio",
    "RecordIOReader": "recordio",
    "RecordIOWriter": "recordio",
    "SyntheticIdentityPaths": "synthetic",
    "generate_synthetic_identities": "synthetic",
    "Face": "analyzer",
    "FaceAnalyzer": "analyzer",
    "Gallery": "gallery",
    "RecognitionConfig": "config",
    "RecognitionTask": "task",
    "RecognitionTrainer": "training",
    "load_embedder": "checkpoint",
    "save_embedder": "checkpoint",
    "OnnxEmbedder": "export",
    "export_embedder_onnx": "export",
    "AdaptiveEmbedder": "adaptive_embedder",
    "RecognitionPrioritizeConfig": "prioritize",
    "run_recognition_prioritization": "prioritize",
}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_names(__name__, _NAMES)
