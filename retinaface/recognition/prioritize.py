"""Channel-prioritised embedding networks: one checkpoint that runs at 100 / 75 / 50 % width.

The adaptive-ConvNets report's own experiment, on a face-embedding network, with the generic parts
of :mod:`retinaface.adaptive`:

1. **pre-train** with batch-norm scales initialised ``gamma_k = 1 - (k-1)/N`` and the sparsity and
   monotonicity penalties (:class:`PrioritizeEmbedderHook`; ``adaptive.prioritize``);
2. **prune** every prioritised channel whose |gamma| is below a global threshold
   (:func:`prune_embedder`; torch-pruning's dependency graph, ``adaptive.groups``);
3. **fine-tune** the width-switchable network (``adaptive.slim``'s ``SlimConv2d`` /
   ``SlimBatchNorm2d``) with batch norms frozen and the loss summed over the widths
   (:class:`MultiWidthEmbedderHook`).

:func:`run_recognition_prioritization` runs the three stages on the synthetic identities (or given
data), trains independent full-width networks of the same sizes (width multipliers matching the
prioritised model's parameter counts at each level, same epochs) and returns a table of
verification accuracy, multiply-adds and parameters per width.

Which channels are prioritised: every group of coupled channels with a batch norm whose members are
all plain / depthwise convolutions and batch norms. The embedding head's fully connected layer (and
the last convolution's channels it reads, through pooling or flattening) and the embedding's
batch norm never shrink, so the embedding size is the same at every width.

Why not ``adaptive.prune_by_threshold`` / ``make_adaptive`` as they are: they trace the network at
64 x 64 (a flattening embedding head needs its own input size) and rebuild shapes through
RetinaFace's ``ModelConfig`` (``channels`` / ``adaptive`` fields and ``retinaface.create_model``);
this module does those two steps for embedders and stores the description next to the embedder
config in the checkpoint instead.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..adaptive.prioritize import (DEFAULT_LAMBDA_M, DEFAULT_LAMBDA_S, fraction_below, freeze_batchnorm,
                                   init_monotonic_gamma,
                                   monotonicity_violations, prioritization_penalty, prioritized_bns)
from ..adaptive.prune import DEFAULT_THRESHOLD
from ..adaptive.slim import DEFAULT_WIDTHS, active_parameters
from ..inference.profiling import count_flops
from .adaptive_embedder import (ADAPTIVE_EMBEDDER_FORMAT, AdaptiveEmbedder, EmbedderPruneReport,  # noqa: F401 (re-exported)
                                _input_size, build_adaptive_embedder, embedder_groups, make_adaptive_embedder,
                                prune_embedder)
from .models import create_embedder
from ..engine.task import TotalLoss
from .checkpoint import save_embedder
from .config import RecognitionConfig, synthetic_root
from .task import load_pairs
from .training import RecognitionHook, RecognitionTrainer
from .transforms import preprocess
from .verification import verify, write_json

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Training hooks


class PrioritizeEmbedderHook(RecognitionHook):
    """Monotone gamma initialisation (fresh runs) plus the sparsity and monotonicity penalties."""

    def __init__(self, lambda_s: float = DEFAULT_LAMBDA_S, lambda_m: float = DEFAULT_LAMBDA_M,
                 init_gamma: bool = True, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.lambda_s, self.lambda_m, self.init_gamma, self.threshold = lambda_s, lambda_m, init_gamma, threshold
        self.layers: list = []
        self.stats: List[dict] = []

    def on_train_start(self, trainer: RecognitionTrainer) -> None:
        self.layers = prioritized_bns(trainer.raw_model, embedder_groups(trainer.raw_model))
        if self.init_gamma and trainer.epoch == 0:
            init_monotonic_gamma(self.layers)

    def extra_loss(self, trainer: RecognitionTrainer, model: nn.Module) -> Optional[torch.Tensor]:
        if not self.layers:
            return None
        return prioritization_penalty(self.layers, self.lambda_s, self.lambda_m)

    def after_epoch(self, trainer: RecognitionTrainer, epoch: int) -> None:
        self.stats.append({"epoch": epoch, "below_threshold": fraction_below(self.layers, self.threshold),
                           "monotonicity_violations": monotonicity_violations(self.layers)})


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, max_batches: int, device: torch.device) -> int:
    """Running statistics re-estimated as the plain average over up to ``max_batches`` batches of
    crops (pruning changed what later layers see)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    was = model.training
    used = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for crops, _ in loader:
            if used >= max_batches:
                break
            model(preprocess(crops.numpy()).to(device))
            used += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was)
    return used


class MultiWidthEmbedderHook(RecognitionHook):
    """Each step's loss is the sum of the recognition losses at every width, batch norms frozen
    (re-estimated once at width 1.0 on ``recalibrate_batches`` batches before the first step)."""

    def __init__(self, widths: Sequence[float] = DEFAULT_WIDTHS, recalibrate_batches: int = 10) -> None:
        self.widths = sorted({float(w) for w in widths}, reverse=True)
        self.recalibrate_batches = recalibrate_batches

    def on_train_start(self, trainer: RecognitionTrainer) -> None:
        model = trainer.raw_model
        if self.recalibrate_batches and trainer.epoch == 0:
            model.set_width(1.0)
            recalibrate_batchnorm(model, trainer.loader, self.recalibrate_batches, trainer.device)
        freeze_batchnorm(model)

    def compute_loss(self, trainer: RecognitionTrainer, model: nn.Module, images: torch.Tensor,
                     labels: torch.Tensor) -> TotalLoss:
        network = trainer.raw_model
        freeze_batchnorm(network)  # the trainer puts everything in train mode each epoch
        total = None
        try:
            for width in self.widths:
                network.set_width(width)
                loss = model(images, labels)  # network + loss head (DDP-wrapped under torchrun)
                total = loss if total is None else total + loss
        finally:
            network.set_width(1.0)
        return TotalLoss(total)


# ---------------------------------------------------------------------------------------------
# The experiment


@dataclasses.dataclass
class RecognitionPrioritizeConfig:
    """Settings of :func:`run_recognition_prioritization`; ``train`` holds the shared
    :class:`RecognitionConfig` options (data, network, loss, optimizer, batch size ...)."""

    output: str = "runs/prioritize_recognition"
    pretrain_epochs: int = 6
    finetune_epochs: int = 3
    lambda_s: float = DEFAULT_LAMBDA_S
    lambda_m: float = DEFAULT_LAMBDA_M
    threshold: float = DEFAULT_THRESHOLD
    widths: Tuple[float, ...] = DEFAULT_WIDTHS
    finetune_lr: Optional[float] = None  # default: a tenth of the pre-training lr
    baselines: bool = True
    train: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def quick(cls, output: str = "runs/prioritize_recognition_quick", **changes: Any) -> "RecognitionPrioritizeConfig":
        """Small settings that run the whole experiment in a few minutes on 2 CPU cores: 30
        synthetic identities x 10 images, MobiFace x0.5 with a 128-d embedding, 4 + 2 epochs.
        The figures show the mechanics (widths, costs); their accuracies are not the report's."""
        train = dict(data="synthetic", synthetic_identities=30, synthetic_test_identities=20, synthetic_images=10,
                     network="mobiface", network_width=0.5, head="pool", embedding_size=128, batch_size=32,
                     lr=0.1, warmup_epochs=0.5)
        train.update(changes.pop("train", {}))
        return cls(output=output, pretrain_epochs=4, finetune_epochs=2, train=train, **changes)


@dataclasses.dataclass
class WidthRow:
    model: str
    width: float
    params: int
    macs: int
    accuracy: Optional[float]
    accuracy_std: Optional[float]


@dataclasses.dataclass
class RecognitionPrioritizeResult:
    rows: List[WidthRow]
    checkpoint: Path
    prune: EmbedderPruneReport
    seconds: Dict[str, float]

    def table(self) -> str:
        lines = ["| model | params (M) | MMACs @112x112 | verification accuracy |", "|---|---|---|---|"]
        for r in self.rows:
            acc = "-" if r.accuracy is None else f"{r.accuracy:.4f} +- {r.accuracy_std:.4f}"
            lines.append(f"| {r.model} | {r.params / 1e6:.3f} | {r.macs / 1e6:.1f} | {acc} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"rows": [dataclasses.asdict(r) for r in self.rows], "checkpoint": str(self.checkpoint),
                "prune": dataclasses.asdict(self.prune), "seconds": self.seconds}


def count_macs(model: nn.Module) -> int:
    """Multiply-adds of one 112 x 112 forward pass at the model's current width."""
    size = _input_size(model)
    was = model.training
    model.eval()
    try:
        return int(count_flops(model, size, size)) // 2
    finally:
        model.train(was)


def _accuracy(model: nn.Module, pairs) -> Tuple[Optional[float], Optional[float]]:
    if pairs is None:
        return None, None
    result = verify(model, pairs)
    return result.accuracy, result.accuracy_std


def _matching_width(config: RecognitionConfig, target_params: int) -> float:
    """The width multiplier (a 0.01 grid up to the pre-trained width) whose plain network's
    parameter count is closest to ``target_params``. Channel counts are rounded to multiples of 8,
    so the count is a step function of the multiplier and the match is approximate."""
    kw = {"head": config.head} if config.head else {}
    top = float(config.network_width or 1.0)
    best, best_gap, last = top, math.inf, None
    for step in range(1, int(round(top * 100)) + 1):
        w = step / 100
        net = create_embedder(config.network, embedding_size=config.embedding_size, width=w, **kw)
        count = sum(p.numel() for p in net.parameters())
        if count == last:
            continue  # same rounded channel counts as the previous multiplier
        last = count
        if abs(count - target_params) < best_gap:
            best, best_gap = w, abs(count - target_params)
    return best


def run_recognition_prioritization(config: RecognitionPrioritizeConfig, progress: bool = False) -> RecognitionPrioritizeResult:
    """Pre-train with the penalties, prune, fine-tune over the widths; measure every width; train the
    full-width baselines of the same sizes. Writes ``OUTPUT/{pretrain,finetune,baseline_*}/`` runs,
    ``OUTPUT/adaptive.pth`` and ``OUTPUT/results.json``; prints and returns the table."""
    out = Path(config.output)
    times: Dict[str, float] = {}
    base = dict(config.train)
    base.setdefault("progress", progress)
    base.setdefault("eval_every", 0)
    base.setdefault("tensorboard", False)

    def run(name: str, epochs: int, **more) -> RecognitionTrainer:
        options = dict(base, output=str(out / name), epochs=epochs)
        options.update({k: v for k, v in more.items() if k in RecognitionConfig.__dataclass_fields__})
        trainer = RecognitionTrainer(RecognitionConfig(**options), model=more.get("model"),
                                     hooks=more.get("hooks", ()))
        trainer.fit()
        return trainer

    started = time.perf_counter()
    penalty = PrioritizeEmbedderHook(config.lambda_s, config.lambda_m, threshold=config.threshold)
    pre = run("pretrain", config.pretrain_epochs, hooks=[penalty])
    times["pretrain"] = time.perf_counter() - started
    pairs = pre.val_pairs
    if pairs is None:
        cfg = pre.config
        spec = cfg.val or (str(synthetic_root(cfg)) if cfg.data == "synthetic" else None)
        pairs = load_pairs(spec, cfg.val_root) if spec and spec != "none" else None

    started = time.perf_counter()
    pruned = copy.deepcopy(pre.raw_model).cpu()
    channels, report = prune_embedder(pruned, config.threshold)
    logger.info(report.summary())
    adaptive = make_adaptive_embedder(pruned, channels, config.widths)
    times["prune"] = time.perf_counter() - started

    started = time.perf_counter()
    lr = config.finetune_lr if config.finetune_lr is not None else pre.config.lr / 10
    fine = run("finetune", config.finetune_epochs, model=adaptive, lr=lr, warmup_epochs=0.0,
               hooks=[MultiWidthEmbedderHook(config.widths)])
    adaptive = fine.raw_model.cpu().eval()
    times["finetune"] = time.perf_counter() - started
    checkpoint = out / "adaptive.pth"
    save_embedder(adaptive, checkpoint)

    rows: List[WidthRow] = []
    for width in sorted(config.widths, reverse=True):
        adaptive.set_width(width)
        acc, std = _accuracy(adaptive, pairs)
        rows.append(WidthRow(f"prioritised @{width:g}", width, active_parameters(adaptive), count_macs(adaptive),
                             acc, std))
    adaptive.set_width(1.0)

    if config.baselines:
        started = time.perf_counter()
        for row in list(rows):
            w = _matching_width(pre.config, row.params)
            trainer = run(f"baseline_{row.width:g}", config.pretrain_epochs + config.finetune_epochs,
                          network_width=w)
            model = trainer.raw_model.cpu().eval()
            acc, std = _accuracy(model, pairs)
            rows.append(WidthRow(f"independent x{w:g}", w, sum(p.numel() for p in model.parameters()),
                                 count_macs(model), acc, std))
        times["baselines"] = time.perf_counter() - started

    result = RecognitionPrioritizeResult(rows, checkpoint, report, times)
    write_json(result.to_dict(), out / "results.json")
    print(report.summary())
    print(result.table())
    return result
