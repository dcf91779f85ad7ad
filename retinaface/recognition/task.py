"""Face-embedding training as a task of the one :class:`~retinaface.engine.trainer.Trainer`:
aligned crops with identity labels in, a margin loss (ArcFace / CosFace / softmax + center loss)
whose class weights are trained with the network, verification accuracy on held-out pairs, and
embedder checkpoints (:mod:`.checkpoint`) that also hold the loss head.

Reproducibility: the epoch's sample order is a function of (seed, epoch) (:class:`~retinaface.engine.task.EpochSampler`)
and every sample's augmentation of (seed, epoch, index) (:class:`AugmentedFaces`), independent of
the worker count, so a run resumed from an epoch checkpoint repeats the uninterrupted run's losses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import read_checkpoint
from ..engine.task import (EpochSampler, RunningTrainer, Task, TaskModel, TotalLoss, TrainData,  # noqa: F401
                           epoch_loader)  # (EpochSampler re-exported: it lived here)
from .adaptive_embedder import build_adaptive_embedder
from .checkpoint import EMBEDDER_FORMAT, save_embedder
from .config import DEFAULT_OUTPUT, SYNTHETIC_DATA, RecognitionConfig, synthetic_root
from .data import FaceFolderDataset, RecognitionDataError, RecordIODataset, VerificationPairs
from .losses import build_recognition_loss
from .models import create_embedder
from .synthetic import generate_synthetic_identities
from .transforms import FaceTrainTransform, preprocess
from .verification import verify


# ---------------------------------------------------------------------------------------------
# Data: deterministic order and augmentation


class AugmentedFaces(Dataset):
    """``(crop uint8 (H, W, 3) BGR, label)`` with the augmentation of sample ``i`` in epoch ``e``
    drawn from ``np.random.default_rng([seed, e, i])``; ``epoch`` is set before each epoch
    (:meth:`set_epoch`; the workers are started afresh per epoch and copy it)."""

    def __init__(self, base: Dataset, transform: Any, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        image = np.asarray(image)
        if self.transform is not None:
            rng = np.random.default_rng([abs(self.seed), self.epoch, int(index)])
            image = self.transform(image, rng)
        return np.ascontiguousarray(image), int(label)


def collate_crops(batch):
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels


def synthetic_paths(config: RecognitionConfig):
    """Generate (once) the built-in synthetic identities; returns the generator's paths object."""
    return generate_synthetic_identities(
        synthetic_root(config), num_train_identities=config.synthetic_identities,
        num_test_identities=config.synthetic_test_identities, images_per_identity=config.synthetic_images,
        seed=0)


def training_dataset(config: RecognitionConfig) -> Dataset:
    """The identity-labelled crop data set ``config.data`` names (no augmentation)."""
    if config.data == SYNTHETIC_DATA:
        paths = synthetic_paths(config)
        return FaceFolderDataset(paths.train)
    path = Path(config.data)
    if path.suffix == ".rec":
        if not path.is_file():
            raise FileNotFoundError(f"--data: {path} does not exist")
        return RecordIODataset(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--data: {path} is neither 'synthetic', a folder of identity folders nor a .rec file")
    return FaceFolderDataset(path)


def load_pairs(spec: Union[str, Path], image_root: Optional[Union[str, Path]] = None):
    """:class:`~retinaface.recognition.data.VerificationPairs` from an insightface ``.bin``, an LFW
    ``pairs.txt`` (images under ``image_root``; default its folder, or ``test/`` beside it as the
    synthetic set lays them out) or a synthetic-set folder. Missing files and malformed lines raise
    :class:`~retinaface.recognition.data.RecognitionDataError` naming the file and line."""
    path = Path(spec)
    if not path.exists():
        raise RecognitionDataError(f"{path}: verification pairs file not found")
    if image_root is not None and path.is_file() and path.suffix != ".bin":
        return VerificationPairs.from_lfw(path, image_root)
    if path.is_file() and path.suffix == ".txt" and (path.parent / "test").is_dir():
        return VerificationPairs.from_lfw(path, path.parent / "test")
    return VerificationPairs.load(path)

# ---------------------------------------------------------------------------------------------
# The task


class _TrainModule(nn.Module):
    """Network and loss head as one module, so DDP all-reduces the class weights too."""

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = self.model(images)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self.criterion(embeddings.float(), labels)


class RecognitionTask(Task):
    """Trains an embedding network with a margin loss (see the module docstring).

    ``train_set`` replaces the data set ``config.data`` names (``(crop, label)`` items with
    ``classes``, ``labels`` or ``num_classes``); ``val_pairs`` the verification pairs of
    ``config.val``. After :meth:`build_data` and :meth:`build_model` the task holds ``train_set``
    (augmented), ``classes``, ``num_classes``, ``val_pairs`` and ``criterion`` (the loss with its
    class weights); after an evaluation ``last_verification``.
    """

    default_output = DEFAULT_OUTPUT
    best_metric = "val_accuracy"

    def __init__(self, config: RecognitionConfig, train_set: Optional[Dataset] = None,
                 val_pairs: Optional[Any] = None) -> None:
        super().__init__(config)
        self.config: RecognitionConfig = config
        self._given_train_set = train_set
        self._given_val = val_pairs
        self.train_set: Optional[AugmentedFaces] = None
        self.classes: List[str] = []
        self.num_classes = 0
        self.val_pairs = None
        self.criterion: Optional[nn.Module] = None
        self.last_verification = None

    def build_data(self, trainer: RunningTrainer) -> TrainData:
        cfg, dist, device = self.config, trainer.dist, trainer.device
        base = self._given_train_set if self._given_train_set is not None else training_dataset(cfg)
        self.classes = list(getattr(base, "classes", []) or [])
        labels = getattr(base, "labels", None)
        if self.classes:
            self.num_classes = len(self.classes)
        elif labels is not None:
            self.num_classes = int(max(labels)) + 1
        else:
            self.num_classes = int(getattr(base, "num_classes"))
        if self.num_classes < 2:
            raise ValueError(f"--data: {cfg.data} has {self.num_classes} identity; training needs at least 2")
        transform = FaceTrainTransform(rotation=cfg.rotation, scale=cfg.aug_scale, shift=cfg.shift,
                                       flip=cfg.flip)
        self.train_set = AugmentedFaces(base, transform, cfg.seed)
        data = epoch_loader(self.train_set, cfg, dist, device, collate_crops, "crops")
        self.val_pairs = self._given_val
        if self.val_pairs is None and cfg.eval_every:
            spec = cfg.val
            if spec is None and cfg.data == SYNTHETIC_DATA:
                spec = str(synthetic_root(cfg))
            if spec and spec != "none":
                self.val_pairs = load_pairs(spec, cfg.val_root)
        return data

    def build_model(self, trainer: RunningTrainer, model: Optional[nn.Module],
                    resume_state: Optional[Dict[str, Any]]) -> TaskModel:
        cfg = self.config
        if model is None and resume_state is not None and resume_state.get("adaptive"):
            model = build_adaptive_embedder(resume_state["config"], resume_state["adaptive"])
        elif model is None:
            kw: Dict[str, Any] = {"width": cfg.network_width}
            if cfg.head is not None:
                kw["head"] = cfg.head
            model = create_embedder(cfg.network, embedding_size=cfg.embedding_size, **kw)
        loss_kw: Dict[str, Any] = {}
        if cfg.margin is not None:
            loss_kw["margin"] = cfg.margin
        if cfg.scale is not None:
            loss_kw["scale"] = cfg.scale
        criterion = build_recognition_loss(cfg.loss, num_classes=self.num_classes,
                                           embedding_size=cfg.embedding_size, **loss_kw)
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
            criterion.load_state_dict(resume_state["head"])
        model = model.to(trainer.device)
        self.criterion = criterion.to(trainer.device)
        return TaskModel(model, _TrainModule(model, self.criterion))

    def prepare_batch(self, batch: Sequence[Any], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        crops, labels = batch
        return (preprocess(crops.numpy()).to(device, non_blocking=True),
                labels.to(device, non_blocking=True))

    def compute_loss(self, model: nn.Module, batch: Tuple[torch.Tensor, torch.Tensor]) -> TotalLoss:
        images, labels = batch
        return TotalLoss(model(images, labels))

    def evaluate(self, trainer: RunningTrainer) -> Dict[str, float]:
        """Verification on the configured pairs; empty when there are none."""
        if self.val_pairs is None:
            return {}
        result = verify(trainer.raw_model, self.val_pairs, flip=self.config.eval_flip, name=self.val_pairs.name)
        self.last_verification = result
        out = {"val_accuracy": result.accuracy, "val_accuracy_std": result.accuracy_std, "val_auc": result.auc}
        for t in result.tar_at_far:
            out[f"val_tar@far={t.far_target:g}"] = t.tar
        return out

    def save_checkpoint(self, network: nn.Module, path: Path, state: Dict[str, Any]) -> None:
        save_embedder(network, path, **state, head=self.criterion.state_dict(), classes=self.classes,
                      num_classes=self.num_classes)

    def read_resume_state(self, path: str) -> Dict[str, Any]:
        state = read_checkpoint(path)
        if state.get("format") != EMBEDDER_FORMAT or "optimizer" not in state:
            raise ValueError(f"--resume: {path} is not a recognition training checkpoint")
        return state
