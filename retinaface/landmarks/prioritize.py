"""Channel prioritisation of a landmark network, end to end: one checkpoint for 100 / 75 / 50 % width.

The same three stages as the detector's (:mod:`retinaface.engine.prioritize`) and the embedder's
(:mod:`retinaface.recognition.prioritize`), run by the one :class:`~retinaface.engine.trainer.Trainer`
on the :class:`~retinaface.landmarks.task.LandmarkTask` with the engine's hooks:

1. **pre-train** with batch-norm scales initialised ``1 - (k-1)/N`` and the sparsity and
   monotonicity penalties (:class:`~retinaface.engine.adaptive_hooks.PrioritizationHook`);
2. **prune** every prioritised channel whose |gamma| is below the threshold
   (:func:`~retinaface.landmarks.adaptive.prune_landmark_model`);
3. **fine-tune** the width-switchable network with batch norms frozen and the loss summed over the
   widths (:class:`~retinaface.engine.adaptive_hooks.MultiWidthHook`).

:func:`run_landmark_prioritization` writes ``OUTPUT/{pretrain,finetune}/`` (the stages' runs),
``OUTPUT/adaptive.pth`` (``load_landmark_model(path, width=p)``, ``eval-landmarks --width p``) and,
unless ``baseline`` is off, ``OUTPUT/plain/``: the same network trained plainly for as many epochs
as both stages together. ``OUTPUT/results.json`` and the printed table give NME / FR / AUC on the val
faces, parameters and FLOPs (the seed report's convention, :func:`~retinaface.landmarks.models.model_complexity`)
of the pre-trained network (before pruning), of the adaptive one at each width and of the plain one.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..adaptive.prioritize import DEFAULT_LAMBDA_M, DEFAULT_LAMBDA_S
from ..adaptive.prune import DEFAULT_THRESHOLD, PruneReport
from ..adaptive.slim import DEFAULT_WIDTHS, set_width
from ..engine.adaptive_hooks import MultiWidthHook, PrioritizationHook
from ..engine.config import check_field, option
from ..engine.state import RunFolderError
from ..engine.trainer import Trainer
from ..fileio import atomic_write
from .adaptive import make_adaptive_landmark_model, prune_landmark_model
from .config import LandmarkConfig
from .evaluate import evaluate_landmarks
from .models import model_complexity
from .task import LandmarkTask, load_samples, predict_landmarks, save_landmark_checkpoint

DEFAULT_OUTPUT = "runs/prioritize_landmarks"
# LandmarkConfig options each stage sets itself
STAGE_OWNED = ("output", "epochs", "resume", "overwrite", "eval_every")


@dataclasses.dataclass
class LandmarkPrioritizeConfig:
    """Settings of :func:`run_landmark_prioritization`; ``train`` holds the :class:`LandmarkConfig`
    options both stages (and the plain baseline) share. Each field's metadata is its flag's help."""

    train: Dict[str, Any] = dataclasses.field(default_factory=dict, metadata=dict(cli=False))
    output: str = option(DEFAULT_OUTPUT, "experiment folder; one that holds a run is refused without --overwrite",
                         kind=str)
    overwrite: bool = option(False, "replace the runs in --output")
    pretrain_epochs: Optional[int] = option(None, "stage 1 epochs (default: the recipe's, 20 on the synthetic "
                                            "faces)", kind=int, low=1)
    finetune_epochs: Optional[int] = option(None, "stage 3 epochs (default: a quarter of stage 1's)", kind=int,
                                            low=1)
    lambda_s: float = option(DEFAULT_LAMBDA_S, "sparsity penalty", kind=float, low=0)
    lambda_m: float = option(DEFAULT_LAMBDA_M, "monotonicity penalty", kind=float, low=0)
    threshold: float = option(DEFAULT_THRESHOLD, "prune channels with |gamma| below this", kind=float, low=0)
    min_channels: int = option(1, "channels every group keeps at least", kind=int, low=1)
    widths: Tuple[float, ...] = option(DEFAULT_WIDTHS, "utilisation levels", kind=float, low=0, high=1,
                                       low_open=True, nargs="+")
    finetune_lr: Optional[float] = option(None, "stage 3 learning rate (default: a tenth of stage 1's)",
                                          kind=float, low=0, low_open=True)
    baseline: bool = option(True, "skip the plainly trained network of the same training budget",
                            flag="--no-baseline")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag for an impossible value (before any training)."""
        for field in dataclasses.fields(self):
            if field.name != "train":
                check_field(field, getattr(self, field.name))
        owned = sorted(set(self.train) & set(STAGE_OWNED))
        if owned:
            raise ValueError(f"--{owned[0].replace('_', '-')}: set per stage by the prioritisation")
        LandmarkConfig(**self.train).validate()


@dataclasses.dataclass
class WidthRow:
    """One row of the result table: a model at one width on the val faces."""

    model: str
    width: float
    params: int
    flops: int
    nme: Optional[float]
    failure_rate: Optional[float]
    auc: Optional[float]


@dataclasses.dataclass
class LandmarkPrioritizeResult:
    rows: List[WidthRow]
    checkpoint: Path
    prune: PruneReport
    seconds: Dict[str, float]
    input_size: int

    def table(self) -> str:
        """A markdown table: NME (%), FR@0.1 (%), AUC@0.1, params and MFLOPs per model and width."""
        lines = [f"| model | width | params (M) | MFLOPs @{self.input_size} | NME % | FR@0.1 % | AUC@0.1 |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            scores = (["-"] * 3 if r.nme is None else
                      [f"{100 * r.nme:.3f}", f"{100 * r.failure_rate:.2f}", f"{r.auc:.4f}"])
            lines.append(f"| {r.model} | {r.width:g} | {r.params / 1e6:.4f} | {r.flops / 1e6:.2f} | "
                         + " | ".join(scores) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"rows": [dataclasses.asdict(r) for r in self.rows], "checkpoint": str(self.checkpoint),
                "prune": dataclasses.asdict(self.prune), "seconds": self.seconds, "input_size": self.input_size}


def measure_widths(model: nn.Module, name: str, widths: Sequence[float], samples: Sequence[Any],
                   margin: float) -> List[WidthRow]:
    """Params and FLOPs (at the model's input size) and, with ``samples``, NME / FR@0.1 / AUC@0.1
    of ``model`` at each width (a plain model: ``widths = (1.0,)``); the width is restored."""
    rows = []
    was = float(getattr(model, "width", 1.0))
    try:
        for width in widths:
            set_width(model, width)
            cost = model_complexity(model, int(model.config.input_size))
            scores: Tuple[Optional[float], ...] = (None, None, None)
            if samples:
                result = evaluate_landmarks(predict_landmarks(model, samples, margin), samples)
                scores = (result.nme, result.failure_rate, result.auc)
            rows.append(WidthRow(name, float(width), int(cost["params"]), int(cost["flops"]), *scores))
    finally:
        set_width(model, was)
    return rows


def _holds_run(folder: Path) -> bool:
    return (folder / "adaptive.pth").exists() or any(
        (folder / stage / "last.pth").exists() for stage in ("pretrain", "finetune", "plain"))


def run_landmark_prioritization(config: LandmarkPrioritizeConfig,
                                log: Callable[[str], None] = print) -> LandmarkPrioritizeResult:
    """Pre-train with the penalties, prune, fine-tune over the widths, train the plain baseline and
    measure every width on the val faces (see the module docstring)."""
    config.validate()
    out = Path(config.output)
    if _holds_run(out) and not config.overwrite:
        raise RunFolderError(f"--output {out} holds an earlier prioritisation run; replace it with --overwrite "
                             "or choose another --output")
    base = dict(config.train)
    base.setdefault("tensorboard", False)
    widths = sorted({float(w) for w in config.widths}, reverse=True)
    recipe = LandmarkConfig(**base).resolved()
    pretrain_epochs = config.pretrain_epochs or int(recipe.epochs)
    finetune_epochs = config.finetune_epochs or max(1, pretrain_epochs // 4)
    seconds: Dict[str, float] = {}

    def trainer(stage: str, epochs: int, model: Optional[nn.Module] = None, hooks: Sequence[Any] = (),
                **changes: Any) -> Trainer:
        options = dict(base, output=str(out / stage), epochs=epochs, overwrite=True, eval_every=0, **changes)
        return Trainer(LandmarkTask(LandmarkConfig(**options)), model=model, hooks=list(hooks))

    started = time.perf_counter()
    log(f"[1/3] pre-training {recipe.model} for {pretrain_epochs} epochs with monotone gamma init, "
        f"lambda_s={config.lambda_s:g}, lambda_m={config.lambda_m:g}")
    penalty = PrioritizationHook(config.lambda_s, config.lambda_m, threshold=config.threshold)
    pre = trainer("pretrain", pretrain_epochs, hooks=[penalty])
    pre.fit()
    task: LandmarkTask = pre.task
    val_spec = task.val_spec()
    val = load_samples(val_spec, task.config.image_root) if val_spec else []
    margin = task.config.crop_margin
    pretrain_lr = float(pre.config.lr)
    network = pre.raw_model.cpu().eval()
    seconds["pretrain"] = time.perf_counter() - started

    rows = measure_widths(network, "pre-trained (before pruning)", (1.0,), val, margin)

    started = time.perf_counter()
    channels, report = prune_landmark_model(network, config.threshold, config.min_channels)
    log(f"[2/3] {report.summary()}")
    adaptive = make_adaptive_landmark_model(network, channels, widths)
    seconds["prune"] = time.perf_counter() - started

    started = time.perf_counter()
    lr = config.finetune_lr if config.finetune_lr is not None else pretrain_lr / 10
    log(f"[3/3] fine-tuning at widths {', '.join(f'{w:g}' for w in widths)} for {finetune_epochs} epochs "
        f"(lr {lr:g}) with batch norms frozen")
    fine = trainer("finetune", finetune_epochs, model=adaptive, hooks=[MultiWidthHook(widths)], lr=lr,
                   warmup_epochs=0.0)
    fine.fit()
    adaptive = fine.raw_model.cpu().eval().set_width(1.0)
    checkpoint = out / "adaptive.pth"
    save_landmark_checkpoint(adaptive, checkpoint, task.scheme.name, margin, prune=dataclasses.asdict(report))
    seconds["finetune"] = time.perf_counter() - started

    rows += measure_widths(adaptive, "prioritised", widths, val, margin)
    if config.baseline:
        started = time.perf_counter()
        total = pretrain_epochs + finetune_epochs
        log(f"baseline: the plain network for {total} epochs")
        plain = trainer("plain", total)
        plain.fit()
        rows += measure_widths(plain.raw_model.cpu().eval(), f"plain ({total} epochs)", (1.0,), val, margin)
        seconds["baseline"] = time.perf_counter() - started

    result = LandmarkPrioritizeResult(rows, checkpoint, report, seconds, int(recipe.input_size))
    with atomic_write(out / "results.json") as handle:
        json.dump(result.to_dict(), handle, indent=1)
    log(result.table())
    return result
