"""The trainer hooks of channel prioritisation: penalties in pre-training, multi-width fine-tuning.

* :class:`PrioritizationHook` -- at the start of pre-training sets the prioritised batch-norm scales
  to ``1 - (k-1)/N`` and adds ``lambda_s * sum|gamma| + lambda_m * sum max(0, gamma_{k+1} - gamma_k)``
  to every step's loss.
* :class:`MultiWidthHook` -- fine-tuning of a width-switchable model: batch norms frozen (scales,
  shifts and running statistics), the loss of each step summed over the utilisation levels.

Both work for any task whose network torch-pruning can trace (detection, dense landmarks): the
batches go through the task's own ``prepare_batch`` and ``compute_loss``. Both plug into :class:`retinaface.engine.trainer.Trainer` through its ``TrainHook`` interface; they
live in the engine layer because they import it (the adaptive layer below knows nothing of training).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from ..adaptive.prioritize import (DEFAULT_LAMBDA_M, DEFAULT_LAMBDA_S, PrioritizedBN, fraction_below, freeze_batchnorm,
                                   init_monotonic_gamma, monotonicity_violations, prioritization_penalty,
                                   prioritized_bns)
from ..adaptive.prune import DEFAULT_THRESHOLD
from ..adaptive.slim import DEFAULT_WIDTHS, set_width
from ..models.wrappers import unwrap_model
from .trainer import TrainHook

logger = logging.getLogger(__name__)


class PrioritizationHook(TrainHook):
    """Monotone gamma initialisation plus the sparsity and monotonicity penalties."""

    def __init__(self, lambda_s: float = DEFAULT_LAMBDA_S, lambda_m: float = DEFAULT_LAMBDA_M,
                 init_gamma: bool = True, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.lambda_s = lambda_s
        self.lambda_m = lambda_m
        self.init_gamma = init_gamma
        self.threshold = threshold  # for the progress statistic only
        self.layers: List[PrioritizedBN] = []
        self.stats: List[dict] = []

    def on_train_start(self, trainer) -> None:
        # built here, after the trainer's final module set-up (SyncBN conversion replaces modules)
        self.layers = prioritized_bns(trainer.raw_model)
        if self.init_gamma and trainer.epoch == 0:  # a resumed run keeps its learned scales
            init_monotonic_gamma(self.layers)

    def extra_loss(self, trainer, model: nn.Module) -> Optional[Tensor]:
        if not self.layers or (self.lambda_s == 0 and self.lambda_m == 0):
            return None
        return prioritization_penalty(self.layers, self.lambda_s, self.lambda_m)

    def after_epoch(self, trainer, epoch: int) -> None:
        stats = {"epoch": epoch, "below_threshold": fraction_below(self.layers, self.threshold),
                 "monotonicity_violations": monotonicity_violations(self.layers)}
        self.stats.append(stats)
        logger.info("epoch %d: %.1f%% of prioritised scales below %g, %.1f%% of neighbours out of order",
                    epoch, 100 * stats["below_threshold"], self.threshold,
                    100 * stats["monotonicity_violations"])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, max_batches: int,
                          device: Optional[torch.device] = None) -> int:
    """Re-estimate every batch norm's running statistics as the plain average over up to
    ``max_batches`` training batches (weights untouched); returns the batches used.

    Pruning changes what later layers see (a removed channel with a non-zero shift no longer adds
    its constant), and a short pre-training leaves running statistics that lag the weights; frozen
    batch norms would otherwise carry those errors through all of fine-tuning.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, m.training) for m in bns]
    was_training = model.training
    used = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
            m.train()
        for images, *_ in batches:
            if used >= max_batches:
                break
            model(images.to(device) if device is not None else images)
            used += 1
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
    return used


class MultiWidthHook(TrainHook):
    """Each step's loss is the sum of the task's losses at every width (batch norms frozen).

    Before the first step, batch-norm statistics are re-estimated at width 1.0 on
    ``recalibrate_batches`` training batches (0 to skip), then frozen.
    """

    def __init__(self, widths: Sequence[float] = DEFAULT_WIDTHS, recalibrate_batches: int = 20) -> None:
        self.widths = sorted({float(w) for w in widths}, reverse=True)
        self.recalibrate_batches = recalibrate_batches

    def on_train_start(self, trainer) -> None:
        raw = trainer.raw_model
        if self.recalibrate_batches and trainer.epoch == 0:
            set_width(raw, 1.0)
            # the task's own preparation: a landmark loader gives uint8 crops, a detection one float images
            prepared = (trainer.task.prepare_batch(batch, trainer.device) for batch in trainer.loader)
            used = recalibrate_batchnorm(raw, prepared, self.recalibrate_batches)
            logger.info("batch-norm statistics re-estimated on %d batches", used)
        freeze_batchnorm(raw)

    def compute_loss(self, trainer, model: nn.Module, *batch: Any) -> NamedTuple:
        raw = unwrap_model(model)
        freeze_batchnorm(raw)  # the trainer switches the whole model to train mode every epoch
        total = None
        try:
            for width in self.widths:
                set_width(raw, width)
                out = trainer.task.compute_loss(model, batch)
                total = out if total is None else type(out)(*(a + b for a, b in zip(total, out)))
        finally:
            set_width(raw, 1.0)
        return total
