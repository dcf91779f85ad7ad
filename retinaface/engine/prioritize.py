"""The three stages of channel prioritisation, run end to end: pre-train, prune, fine-tune.

:func:`run_prioritization` (behind ``tools/prioritize.py``) writes, under its output folder,
``pretrain/`` (the trainer's run with the penalties), ``pruned.pth`` (the physically pruned plain
network), ``finetune/`` (the multi-width run) and ``adaptive.pth`` (the final checkpoint, loadable
at any width), plus ``summary.json``; it returns a :class:`PrioritizeSummary` with params, GFLOPs
and, when asked, AP per width.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..checkpoint import save_model
from ..fileio import atomic_write
from .prioritize import DEFAULT_LAMBDA_M, DEFAULT_LAMBDA_S
from .prune import DEFAULT_THRESHOLD, PruneReport, prune_by_threshold
from .slim import DEFAULT_WIDTHS, AdaptiveRetinaFace, active_parameters, make_adaptive

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PrioritizeConfig:
    """Options of the three stages; ``None`` takes the trainer's recipe for the data."""

    data: str = "synthetic"
    backbone: str = "mobilenet0.25"
    output: str = "runs/prioritize"
    pretrain_epochs: Optional[int] = None
    finetune_epochs: Optional[int] = None
    lambda_s: float = DEFAULT_LAMBDA_S
    lambda_m: float = DEFAULT_LAMBDA_M
    init_gamma: bool = True
    threshold: float = DEFAULT_THRESHOLD
    min_channels: int = 1
    widths: Tuple[float, ...] = DEFAULT_WIDTHS
    optimizer: Optional[str] = None
    lr: Optional[float] = None
    finetune_lr: Optional[float] = None  # default: a tenth of the pre-training learning rate
    finetune_grad_clip: Optional[float] = 10.0  # frozen batch norms cannot absorb a bad step
    batch_size: Optional[int] = None
    image_size: Optional[int] = None
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    max_steps_per_epoch: Optional[int] = None
    evaluate: bool = True
    flops_size: int = 640
    progress: bool = True
    train_options: Dict[str, object] = dataclasses.field(default_factory=dict)  # other TrainConfig fields


@dataclasses.dataclass
class WidthResult:
    width: float
    params: int
    gflops: float
    ap: Optional[Dict[str, float]] = None


@dataclasses.dataclass
class PrioritizeSummary:
    checkpoint: Path
    pruned_checkpoint: Path
    prune: PruneReport
    widths: List[WidthResult]
    seconds: Dict[str, float]

    def table(self, flops_size: int = 640) -> str:
        """A markdown table of params, GFLOPs and (if measured) AP per width."""
        has_ap = any(r.ap for r in self.widths)
        head = ["width", "params (M)", f"GFLOPs @{flops_size}"]
        head += ["AP easy", "AP medium", "AP hard"] if has_ap else []
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.widths:
            cells = [f"{r.width:g}", f"{r.params / 1e6:.3f}", f"{r.gflops:.3f}"]
            if has_ap:
                cells += [f"{r.ap[k]:.4f}" if r.ap else "-" for k in ("easy", "medium", "hard")]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "pruned_checkpoint": str(self.pruned_checkpoint),
                "prune": dataclasses.asdict(self.prune), "seconds": self.seconds,
                "widths": [dataclasses.asdict(r) for r in self.widths]}


def _train_config(cfg: PrioritizeConfig, output: Path, epochs: Optional[int], lr: Optional[float],
                  **more):
    from ..engine.trainer import TrainConfig

    options = dict(data=cfg.data, backbone=cfg.backbone, optimizer=cfg.optimizer, lr=lr, epochs=epochs,
                   batch_size=cfg.batch_size, image_size=cfg.image_size, workers=cfg.workers,
                   output=str(output), device=cfg.device, seed=cfg.seed,
                   max_steps_per_epoch=cfg.max_steps_per_epoch, progress=cfg.progress, eval_every=0)
    options.update(cfg.train_options)
    options.update(more)
    return TrainConfig(**options)


def measure_widths(model: AdaptiveRetinaFace, widths: Sequence[float], flops_size: int = 640,
                   data_root: Optional[Path] = None, workers: int = 2,
                   progress: bool = False) -> List[WidthResult]:
    """Active params, GFLOPs at ``flops_size`` squared and (with ``data_root``) val AP per width."""
    from ..profiling import count_flops

    results = []
    was = model.width
    try:
        for width in widths:
            model.set_width(width)
            ap = None
            if data_root is not None:
                from ..evaluation.predict import evaluate_model

                ap = evaluate_model(model.eval(), data_root, workers=workers, progress=progress).as_dict()
            results.append(WidthResult(width, active_parameters(model),
                                       count_flops(model, flops_size, flops_size) / 1e9, ap))
    finally:
        model.set_width(was)
    return results


def run_prioritization(cfg: PrioritizeConfig, log: Callable[[str], None] = print) -> PrioritizeSummary:
    """Pre-train with the penalties, prune at the threshold, fine-tune over the widths, measure."""
    from ..engine.trainer import Trainer
    from .training import MultiWidthHook, PrioritizationHook

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    seconds: Dict[str, float] = {}

    start = time.perf_counter()
    log(f"[1/3] pre-training {cfg.backbone} with monotone gamma init, lambda_s={cfg.lambda_s:g}, "
        f"lambda_m={cfg.lambda_m:g}")
    hook = PrioritizationHook(cfg.lambda_s, cfg.lambda_m, cfg.init_gamma, cfg.threshold)
    trainer = Trainer(_train_config(cfg, out / "pretrain", cfg.pretrain_epochs, cfg.lr), hooks=[hook])
    trainer.fit()
    data_root = trainer.data_root
    pretrain_lr = trainer.config.lr  # resolved from the recipe when not given
    model: nn.Module = trainer.raw_model.cpu().eval()
    seconds["pretrain"] = time.perf_counter() - start
    if hook.stats:
        last = hook.stats[-1]
        log(f"      {trainer.epoch} epochs in {seconds['pretrain']:.0f} s; "
            f"{100 * last['below_threshold']:.1f}% of prioritised scales below {cfg.threshold:g}, "
            f"{100 * last['monotonicity_violations']:.1f}% of neighbours out of order")

    start = time.perf_counter()
    log(f"[2/3] pruning channels with |gamma| < {cfg.threshold:g}")
    report = prune_by_threshold(model, cfg.threshold, cfg.min_channels)
    pruned_path = out / "pruned.pth"
    save_model(model, pruned_path, prune=dataclasses.asdict(report))
    seconds["prune"] = time.perf_counter() - start
    log(f"      {report.summary()}; saved {pruned_path}")

    start = time.perf_counter()
    widths = sorted({float(w) for w in cfg.widths}, reverse=True)
    log(f"[3/3] fine-tuning at widths {', '.join(f'{w:g}' for w in widths)} with batch norms frozen")
    adaptive = make_adaptive(model, widths)
    finetune_lr = cfg.finetune_lr if cfg.finetune_lr is not None else 0.1 * pretrain_lr
    trainer = Trainer(_train_config(cfg, out / "finetune", cfg.finetune_epochs, finetune_lr,
                                    grad_clip=cfg.finetune_grad_clip), model=adaptive,
                      hooks=[MultiWidthHook(widths)])
    trainer.fit()
    adaptive = trainer.raw_model.cpu().eval().set_width(1.0)
    checkpoint = out / "adaptive.pth"
    save_model(adaptive, checkpoint, prune=dataclasses.asdict(report))
    seconds["finetune"] = time.perf_counter() - start
    log(f"      {trainer.epoch} epochs in {seconds['finetune']:.0f} s; saved {checkpoint}")

    start = time.perf_counter()
    results = measure_widths(adaptive, widths, cfg.flops_size, data_root if cfg.evaluate else None,
                             cfg.workers, cfg.progress)
    seconds["measure"] = time.perf_counter() - start
    summary = PrioritizeSummary(checkpoint, pruned_path, report, results, seconds)
    with atomic_write(out / "summary.json") as handle:
        json.dump(summary.to_dict(), handle, indent=1)
    log(summary.table(cfg.flops_size))
    return summary
