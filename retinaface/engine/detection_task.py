"""RetinaFace detection as a training task: WIDER FACE (or the synthetic set) in, the multi-box
loss (box, class, landmark) per step, WIDER AP on the val split, ``best.pth`` by hard AP.

``Trainer(TrainConfig(...))`` runs this task; so does ``Trainer(DetectionTask(TrainConfig(...)))``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..deploy.batch_norm import restore_batch_norm
from ..checkpoint import save_model
from ..conventions import VAL_GROUND_TRUTH
from ..evaluation.predict import evaluate_model
from .loss import LossOutput, MultiBoxLoss
from ..priors import generate_priors
from .builders import build_data, prepare_model, uses_channels_last
from .config import DEFAULT_OUTPUT, TrainConfig
from .distributed import all_reduce_mean
from .report import BEST_CURVES, write_best_curves
from .state import read_resume_state
from .task import RunningTrainer, Task, TaskModel, TrainData

logger = logging.getLogger(__name__)


class NoFaceMatchedError(ValueError):
    """A run's first epoch matched no face to any prior: it would train on nothing."""


class DetectionTask(Task):
    """Trains a RetinaFace model the way the reference recipe does (see :class:`TrainConfig`)."""

    default_output = DEFAULT_OUTPUT
    best_metric = "hard"
    metric_prefix = "ap_"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.config: TrainConfig = config
        self.criterion: Optional[MultiBoxLoss] = None
        self.priors: Optional[torch.Tensor] = None
        self.channels_last = False
        self.faces_seen = 0          # face boxes in this process's crops of the first epoch
        self.last_evaluation = None  # its PR curves are drawn if its epoch becomes the best

    def build_data(self, trainer: RunningTrainer) -> TrainData:
        return build_data(self.config, trainer.dist, trainer.device)

    def build_model(self, trainer: RunningTrainer, model: Optional[nn.Module],
                    resume_state: Optional[Dict[str, Any]]) -> TaskModel:
        cfg, device = self.config, trainer.device
        model = prepare_model(cfg, trainer.dist, device, model, resume_state)
        self.channels_last = uses_channels_last(cfg, device, model)
        mc = model.config
        self.criterion = MultiBoxLoss(neg_pos_ratio=cfg.neg_pos_ratio, variances=mc.variances)
        self.priors = generate_priors(cfg.image_size, cfg.image_size, mc.min_sizes, mc.steps, device)
        return TaskModel(model)

    def prepare_batch(self, batch: Sequence[Any], device: torch.device) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        images, targets = batch
        self.faces_seen += sum(len(t) for t in targets)  # host-side lists: no device read
        # non_blocking: from pinned memory (CUDA) the copy overlaps the step; a no-op on CPU
        images = images.to(device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, [t.to(device, non_blocking=True) for t in targets]

    def compute_loss(self, model: nn.Module, batch: Tuple[torch.Tensor, List[torch.Tensor]]) -> LossOutput:
        images, targets = batch
        return self.criterion(model(images), self.priors, targets)

    def check_epoch(self, trainer: RunningTrainer, row: Dict[str, float]) -> None:
        """After the first epoch: the classification loss counts hard negatives in proportion to
        the positives, so it is exactly 0 only when no face matched any prior on any step."""
        if trainer.epoch != 0:
            return
        seen = all_reduce_mean(torch.tensor(float(self.faces_seen), device=trainer.device), trainer.dist)
        faces = int(round(seen.item() * trainer.dist.world_size))
        if row["cls"] != 0.0 or row["box"] != 0.0:
            return
        if faces == 0:
            why = "the training crops held no faces at all"
        else:
            smallest = min(min(s) for s in trainer.raw_model.config.min_sizes)
            why = (f"{faces} face(s) were in the crops, but none overlapped a prior (IoU >= 0.35): the boxes do "
                   f"not fit their images or are far smaller than the smallest anchor ({smallest} px at "
                   f"--image-size {self.config.image_size})")
        raise NoFaceMatchedError(f"epoch 1 matched no face to any prior (loss 0 on every step): {why}; check the "
                                 f"labels of {trainer.data.root}. Stopped without saving a checkpoint")

    def evaluate(self, trainer: RunningTrainer) -> Dict[str, float]:
        """WIDER AP (easy / medium / hard) on the val split."""
        gt_dir = self.config.gt or (trainer.data.root / VAL_GROUND_TRUTH)
        result = evaluate_model(trainer.raw_model.eval(), trainer.data.root, gt_dir,
                                workers=min(self.config.workers, 2), progress=self.config.progress)
        trainer.raw_model.train()
        self.last_evaluation = result
        return result.as_dict()

    def on_best(self, trainer: RunningTrainer) -> None:
        if self.last_evaluation is not None:
            write_best_curves(self.last_evaluation, trainer.output / BEST_CURVES, trainer.epoch)

    def finish(self, trainer: RunningTrainer) -> None:
        if trainer.raw_model is not None:
            restore_batch_norm(trainer.raw_model)  # plain BatchNorm2d for whoever uses the model next

    def save_checkpoint(self, network: nn.Module, path: Path, state: Dict[str, Any]) -> None:
        save_model(network, path, **state)

    def read_resume_state(self, path: str) -> Dict[str, Any]:
        return read_resume_state(path)
