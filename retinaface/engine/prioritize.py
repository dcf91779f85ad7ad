"""The three stages of channel prioritisation, run end to end: pre-train, prune, fine-tune.

:func:`run_prioritization` (behind ``retinaface prioritize``) writes, under its output folder,
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

from ..adaptive.prioritize import DEFAULT_LAMBDA_M, DEFAULT_LAMBDA_S
from ..adaptive.prune import DEFAULT_THRESHOLD, PruneReport, prune_by_threshold
from ..adaptive.slim import DEFAULT_WIDTHS, AdaptiveRetinaFace, active_parameters, make_adaptive
from ..checkpoint import save_model
from ..evaluation.predict import evaluate_model
from ..fileio import atomic_write
from ..inference.profiling import count_flops
from .adaptive_hooks import MultiWidthHook, PrioritizationHook
from .config import TrainConfig, check_field, option
from .state import RunFolderError
from .trainer import Trainer

logger = logging.getLogger(__name__)


DEFAULT_PRIORITIZE_OUTPUT = "runs/prioritize"
# TrainConfig options the stages set themselves (epochs per stage, no resume, AP measured at the end)
STAGE_OWNED = ("epochs", "resume", "eval_every", "output")


@dataclasses.dataclass
class PrioritizeConfig:
    """Options of the three stages. ``train`` holds the training options both trainer stages share
    (``None`` fields take the trainer's recipe for the data); its ``epochs`` / ``resume`` /
    ``eval_every`` / ``output`` are set per stage. Each field's metadata is its flag's help."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig, metadata=dict(cli=False))
    output: Optional[str] = option(None, f"output folder (default {DEFAULT_PRIORITIZE_OUTPUT}, or "
                                   f"{DEFAULT_PRIORITIZE_OUTPUT}2, ... when that holds a run); one that holds "
                                   "a run is refused without --overwrite", kind=str)
    pretrain_epochs: Optional[int] = option(None, "stage 1 epochs (default: the recipe's)", kind=int, low=1)
    finetune_epochs: Optional[int] = option(None, "stage 3 epochs (default: the recipe's)", kind=int, low=1)
    lambda_s: float = option(DEFAULT_LAMBDA_S, "sparsity penalty", kind=float, low=0)
    lambda_m: float = option(DEFAULT_LAMBDA_M, "monotonicity penalty", kind=float, low=0)
    init_gamma: bool = option(True, "keep the default gamma = 1 initialisation instead of the monotone one",
                              flag="--no-init-gamma")
    threshold: float = option(DEFAULT_THRESHOLD, "prune channels with |gamma| below this", kind=float, low=0)
    min_channels: int = option(1, "channels every layer keeps at least", kind=int, low=1)
    widths: Tuple[float, ...] = option(DEFAULT_WIDTHS, "utilisation levels", kind=float, low=0, high=1,
                                       low_open=True, nargs="+")
    finetune_lr: Optional[float] = option(None, "stage 3 learning rate (default: a tenth of stage 1's)",
                                          kind=float, low=0, low_open=True)
    finetune_grad_clip: Optional[float] = option(10.0, "stage 3 gradient-norm clip, 0 for none (frozen batch "
                                                 "norms cannot absorb a bad step)", kind=float, low=0)
    evaluate: bool = option(True, "skip the AP per width at the end", flag="--no-eval")
    flops_size: int = option(640, "square input size for GFLOPs", kind=int, low=32)

    @classmethod
    def from_options(cls, **options: object) -> "PrioritizeConfig":
        """Build from one flat set of keyword arguments: this class's fields, the rest
        :class:`TrainConfig`'s (``PrioritizeConfig.from_options(data=..., lr=..., widths=...)``)."""
        own = {f.name for f in dataclasses.fields(cls)} - {"train"}
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = set(options) - own - train_fields
        if unknown:
            raise TypeError(f"unknown prioritisation option(s): {', '.join(sorted(unknown))}")
        train = TrainConfig(**{k: v for k, v in options.items() if k not in own})
        return cls(train=train, **{k: v for k, v in options.items() if k in own})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag for an impossible value (checked before the long
        pre-training starts)."""
        for field in dataclasses.fields(self):
            if field.name != "train":
                check_field(field, getattr(self, field.name))
        self.train.validate()


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
                  **more) -> TrainConfig:
    """The TrainConfig of one stage: the shared options with this stage's folder, epochs and lr."""
    changes = dict(output=str(output), epochs=epochs, eval_every=0, resume=None, overwrite=True)
    if lr is not None:
        changes["lr"] = lr
    changes.update(more)
    return dataclasses.replace(cfg.train, **changes)


def resolve_output(cfg: PrioritizeConfig) -> Path:
    """The output folder: refused when it holds an earlier result unless ``train.overwrite``; the
    default picks the next numbered folder instead."""
    def holds(folder: Path) -> bool:
        return (folder / "adaptive.pth").exists() or (folder / "pruned.pth").exists() or any(
            (folder / stage / "last.pth").exists() for stage in ("pretrain", "finetune"))

    if cfg.output is None:
        base = Path(DEFAULT_PRIORITIZE_OUTPUT)
        if cfg.train.overwrite or not holds(base):
            return base
        n = 2
        while holds(base.with_name(f"{base.name}{n}")):
            n += 1
        return base.with_name(f"{base.name}{n}")
    folder = Path(cfg.output)
    if holds(folder) and not cfg.train.overwrite:
        raise RunFolderError(f"--output {folder} holds an earlier prioritisation run; replace it with "
                             f"--overwrite or choose another --output")
    return folder


def measure_widths(model: AdaptiveRetinaFace, widths: Sequence[float], flops_size: int = 640,
                   data_root: Optional[Path] = None, workers: int = 2,
                   progress: bool = False) -> List[WidthResult]:
    """Active params, GFLOPs at ``flops_size`` squared and (with ``data_root``) val AP per width."""
    results = []
    was = model.width
    try:
        for width in widths:
            model.set_width(width)
            ap = None
            if data_root is not None:
                ap = evaluate_model(model.eval(), data_root, workers=workers, progress=progress).as_dict()
            results.append(WidthResult(width, active_parameters(model),
                                       count_flops(model, flops_size, flops_size) / 1e9, ap))
    finally:
        model.set_width(was)
    return results


def run_prioritization(cfg: PrioritizeConfig, log: Callable[[str], None] = print) -> PrioritizeSummary:
    """Pre-train with the penalties, prune at the threshold, fine-tune over the widths, measure."""
    cfg.validate()
    out = resolve_output(cfg)
    out.mkdir(parents=True, exist_ok=True)
    seconds: Dict[str, float] = {}

    start = time.perf_counter()
    log(f"[1/3] pre-training {cfg.train.backbone} in {out} with monotone gamma init, lambda_s={cfg.lambda_s:g}, "
        f"lambda_m={cfg.lambda_m:g}")
    hook = PrioritizationHook(cfg.lambda_s, cfg.lambda_m, cfg.init_gamma, cfg.threshold)
    trainer = Trainer(_train_config(cfg, out / "pretrain", cfg.pretrain_epochs, None), hooks=[hook])
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
                                    grad_clip=cfg.finetune_grad_clip or None), model=adaptive,
                      hooks=[MultiWidthHook(widths)])
    trainer.fit()
    adaptive = trainer.raw_model.cpu().eval().set_width(1.0)
    checkpoint = out / "adaptive.pth"
    save_model(adaptive, checkpoint, prune=dataclasses.asdict(report))
    seconds["finetune"] = time.perf_counter() - start
    log(f"      {trainer.epoch} epochs in {seconds['finetune']:.0f} s; saved {checkpoint}")

    start = time.perf_counter()
    results = measure_widths(adaptive, widths, cfg.flops_size, data_root if cfg.evaluate else None,
                             trainer.config.workers, cfg.train.progress)
    seconds["measure"] = time.perf_counter() - start
    summary = PrioritizeSummary(checkpoint, pruned_path, report, results, seconds)
    with atomic_write(out / "summary.json") as handle:
        json.dump(summary.to_dict(), handle, indent=1)
    log(summary.table(cfg.flops_size))
    return summary
