"""The training loop: data, model, loss, optimiser, schedule, AMP, DDP, checkpoints and logs.

``Trainer(TrainConfig(...)).fit()`` trains RetinaFace the way the reference recipe does (flags left
unset take the reference defaults of the backbone, see ``retinaface.engine.optim.REFERENCE_RECIPES``),
on a CPU, one GPU, or many through torchrun. Behaviour that other features need to change is
reached through :class:`TrainHook` (extra loss terms, a replacement loss, per-step and per-epoch
callbacks) rather than by editing the loop.

Reproducibility: the sampler order is a function of (seed, epoch) and every sample's augmentation a
function of (seed, epoch, index), so the data a step sees does not depend on the worker count, and a
run resumed from an epoch checkpoint repeats the uninterrupted run's losses.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import read_checkpoint, save_model, split_checkpoint, unwrap_model
from ..fileio import atomic_write
from ..loss import LossOutput, MultiBoxLoss
from ..build import create_model
from ..priors import generate_priors
from .distributed import (DistInfo, all_ranks_agree, all_reduce_mean, barrier, cleanup,
                          init_distributed, resolve_device)
from .optim import SAM, build_optimizer, build_scheduler, reference_recipe, sam_step

logger = logging.getLogger(__name__)

SYNTHETIC_ROOT = Path("data/synthetic")
# The built-in synthetic set trains from scratch in minutes: small images, a higher learning rate
# with warm-up and a cosine decay instead of the reference's 250-epoch recipe.
SYNTHETIC_RECIPE: Dict[str, Any] = dict(lr=0.01, batch_size=16, image_size=320, epochs=12,
                                        schedule="cosine", warmup_epochs=1, decay_epochs=(8, 11))


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without writing a checkpoint."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` means "the recipe's default for this backbone"."""

    data: str = "synthetic"
    backbone: str = "mobilenet0.25"
    pretrained: bool = False
    backbone_weights: Optional[str] = None
    fpn_width: Optional[int] = None
    optimizer: Optional[str] = None
    lr: Optional[float] = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    image_size: Optional[int] = None
    schedule: Optional[str] = None
    decay_epochs: Optional[Tuple[int, ...]] = None
    gamma: float = 0.1
    warmup_epochs: Optional[float] = None
    min_lr: float = 0.0
    sam: bool = False
    sam_rho: float = 0.05
    sam_adaptive: bool = False
    neg_pos_ratio: int = 7
    grad_clip: Optional[float] = None
    workers: Optional[int] = None  # None: min(4, CPU count)
    output: str = "runs/train"
    resume: Optional[str] = None
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "auto"
    sync_bn: bool = False
    channels_last: bool = False  # NHWC input batches (see Trainer.setup)
    seed: int = 0
    skip_bad: bool = False
    eval_every: Optional[int] = None  # None: the last epoch for synthetic data, else never
    gt: Optional[str] = None
    save_every: int = 10
    max_steps_per_epoch: Optional[int] = None
    progress: bool = True
    synthetic_train: int = 400
    synthetic_val: int = 100

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` default filled from the recipe (synthetic data has its own)."""
        recipe = reference_recipe(self.backbone)
        if self.data == "synthetic":
            recipe.update(SYNTHETIC_RECIPE)
        values = dataclasses.asdict(self)
        for key in ("optimizer", "lr", "epochs", "batch_size", "image_size", "decay_epochs", "warmup_epochs"):
            if values[key] is None:
                values[key] = recipe[key]
        if values["schedule"] is None:
            values["schedule"] = recipe["schedule"]
        values["decay_epochs"] = tuple(int(e) for e in values["decay_epochs"])
        if values["eval_every"] is None:
            # the synthetic set exists to show the whole loop: its AP is printed at the end
            values["eval_every"] = values["epochs"] if self.data == "synthetic" else 0
        if values["workers"] is None:
            values["workers"] = min(4, os.cpu_count() or 1)
        out = TrainConfig(**values)
        out.validate()
        return out

    def validate(self) -> None:
        checks = [(self.lr is None or self.lr > 0, "--lr must be > 0"),
                  (self.epochs is None or self.epochs >= 1, "--epochs must be >= 1"),
                  (self.batch_size is None or self.batch_size >= 1, "--batch-size must be >= 1"),
                  # any size works (priors use ceil(size / step)); the reference trains ResNet-50 at 840
                  (self.image_size is None or self.image_size >= 32, "--image-size must be at least 32"),
                  (self.workers is None or self.workers >= 0, "--workers must be >= 0"),
                  (self.sam_rho > 0, "--sam-rho must be > 0"),
                  (self.grad_clip is None or self.grad_clip > 0, "--grad-clip must be > 0"),
                  (self.amp_dtype in ("auto", "bf16", "fp16"), "--amp-dtype must be auto, bf16 or fp16")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["decay_epochs"] = list(out["decay_epochs"]) if out["decay_epochs"] is not None else None
        return out


def resume_options(options: Dict[str, Any], given: Sequence[str]) -> Dict[str, Any]:
    """``options`` (TrainConfig keyword arguments) with every field not in ``given`` taken from the
    training settings saved in ``options["resume"]``, so that resuming with no other flags
    continues the run as it was configured (data, backbone, optimizer, SAM, schedule, output...)."""
    if not options.get("resume"):
        return dict(options)
    saved = read_checkpoint(options["resume"]).get("train_config") or {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = dict(options)
    for key, value in saved.items():
        if key in fields and key not in given and key not in ("resume", "progress"):
            merged[key] = tuple(value) if key == "decay_epochs" and value is not None else value
    return merged


class TrainHook:
    """Callbacks into the training loop; override what you need. Every method may use ``trainer``'s
    attributes (``raw_model``, ``criterion``, ``priors``, ``optimizer``, ``epoch``, ``step``, ...)."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """After the model, optimiser and data are built (and a resume is loaded)."""

    def compute_loss(self, trainer: "Trainer", model: nn.Module, images: torch.Tensor,
                     targets: List[torch.Tensor]) -> Optional[LossOutput]:
        """Return a LossOutput to replace the default loss, or None for the default."""
        return None

    def extra_loss(self, trainer: "Trainer", model: nn.Module) -> Optional[torch.Tensor]:
        """A scalar added to the total loss of every step (e.g. a regulariser), or None."""
        return None

    def after_step(self, trainer: "Trainer") -> None:
        """After each optimiser step."""

    def after_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """After each epoch's checkpoint is written."""


@dataclasses.dataclass
class TrainSummary:
    epochs_run: int
    history: List[Dict[str, float]]
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    metrics: Dict[str, float]


def _rng_state() -> Dict[str, Any]:
    # numpy's position / cached Gaussian and Python's cached Gaussian are part of the state too
    _, keys, pos, has_gauss, cached = np.random.get_state()
    _, py_internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": keys.tolist(),
             "numpy_extra": [int(pos), int(has_gauss), float(cached)],
             "python": list(py_internal), "python_gauss": py_gauss}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = np.random.get_state()
    pos, has_gauss, cached = state.get("numpy_extra", np_state[2:])
    np.random.set_state((np_state[0], np.asarray(state["numpy"], dtype=np.uint32), int(pos), int(has_gauss),
                         float(cached)))
    py_state = random.getstate()
    random.setstate((py_state[0], tuple(state["python"]), state.get("python_gauss", py_state[2])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains a RetinaFace model; see the module docstring."""

    def __init__(self, config: TrainConfig, model: Optional[nn.Module] = None,
                 hooks: Sequence[TrainHook] = ()) -> None:
        self.config = config.resolved()
        self.hooks = list(hooks)
        self._given_model = model
        self.epoch = 0  # epochs completed
        self.step = 0   # optimiser steps taken
        self.history: List[Dict[str, float]] = []
        self.best_metric = -math.inf
        self.output = Path(self.config.output)

    # -- set-up -----------------------------------------------------------------------------
    def _data_root(self) -> Path:
        cfg = self.config
        if cfg.data != "synthetic":
            return Path(cfg.data)
        from ..data.synthetic import generate_synthetic_widerface

        if self.dist.is_main:
            generate_synthetic_widerface(SYNTHETIC_ROOT, num_train=cfg.synthetic_train,
                                         num_val=cfg.synthetic_val, seed=0)
        barrier(self.dist)
        return SYNTHETIC_ROOT

    def _build_data(self) -> None:
        from ..data import TrainTransform, WiderFaceTrainDataset, detection_collate, worker_init_fn
        from ..data.labels import load_training_annotations

        cfg = self.config
        self.data_root = self._data_root()
        annotations, stats = load_training_annotations(self.data_root, check=True, skip_bad=cfg.skip_bad)
        if not annotations:
            raise ValueError(f"{self.data_root}: no training images")
        self.dataset = WiderFaceTrainDataset(annotations, TrainTransform(cfg.image_size), seed=cfg.seed)
        # one sampler for 1..N processes: its permutation depends only on (seed, epoch)
        self.sampler = DistributedSampler(self.dataset, num_replicas=self.dist.world_size,
                                          rank=self.dist.rank, shuffle=True, seed=cfg.seed)
        per_rank = max(1, cfg.batch_size // self.dist.world_size)
        self.loader = DataLoader(self.dataset, batch_size=per_rank, sampler=self.sampler,
                                 num_workers=cfg.workers, collate_fn=detection_collate,
                                 worker_init_fn=worker_init_fn, pin_memory=self.device.type == "cuda",
                                 persistent_workers=cfg.workers > 0, drop_last=False)
        self.steps_per_epoch = len(self.loader)
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)

    def _build_model(self, resume_state: Optional[Dict[str, Any]]) -> None:
        cfg = self.config
        if self._given_model is not None:
            model = self._given_model
        elif resume_state is not None:
            config, _ = split_checkpoint(resume_state)
            model = create_model(config=config)
        else:
            overrides = {} if cfg.fpn_width is None else {"fpn_width": cfg.fpn_width}
            model = create_model(cfg.backbone, pretrained=cfg.pretrained,
                                 backbone_weights=cfg.backbone_weights, **overrides)
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
        model.to(self.device)
        if self.dist.enabled and cfg.sync_bn:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif self.dist.is_main:
                # torch's SyncBatchNorm runs on CUDA only; gloo runs keep per-process statistics
                logger.warning("--sync-bn ignored: SyncBatchNorm needs CUDA devices (running on %s)",
                               self.device.type)
        self.raw_model = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            self.model = model

    def _build_optimisation(self) -> None:
        cfg = self.config
        base = build_optimizer(cfg.optimizer, self.raw_model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.optimizer = SAM(base, rho=cfg.sam_rho, adaptive=cfg.sam_adaptive) if cfg.sam else base
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.epochs, self.steps_per_epoch,
                                         cfg.decay_epochs, cfg.gamma, cfg.warmup_epochs, cfg.min_lr)
        self.amp_dtype: Optional[torch.dtype] = None
        if cfg.amp:
            if self.device.type == "cuda":
                bf16_ok = torch.cuda.is_bf16_supported()
                wanted = cfg.amp_dtype if cfg.amp_dtype != "auto" else ("bf16" if bf16_ok else "fp16")
                self.amp_dtype = torch.bfloat16 if wanted == "bf16" else torch.float16
            else:
                self.amp_dtype = torch.bfloat16  # CPU autocast supports bf16 only
        # a loss scaler is needed for fp16 only; bf16 has float32's range
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = MultiBoxLoss(neg_pos_ratio=cfg.neg_pos_ratio, variances=self.raw_model.config.variances)
        mc = self.raw_model.config
        self.priors = generate_priors(cfg.image_size, cfg.image_size, mc.min_sizes, mc.steps, self.device)

    def setup(self) -> None:
        cfg = self.config
        self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist: DistInfo = init_distributed(self.device)
        # NHWC steps run ~25 % faster on CPU, but there their float32 gradients are 3-7x further from
        # float64 ones than NCHW's (benchmarks/bench_channels_last.py): opt-in only
        self.channels_last = cfg.channels_last
        seed_everything(cfg.seed + self.dist.rank)
        resume_state = read_checkpoint(cfg.resume) if cfg.resume else None
        if resume_state is not None and "optimizer" not in resume_state:
            raise ValueError(f"{cfg.resume}: holds model weights only, not a training state to resume")
        self._build_data()
        self._build_model(resume_state)
        self._build_optimisation()
        if resume_state is not None:
            self._load_training_state(resume_state)
        if self.dist.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
        for hook in self.hooks:
            hook.on_train_start(self)

    # -- checkpoints ------------------------------------------------------------------------
    def training_state(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "rng": _rng_state(), "train_config": self.config.to_dict(),
                "history": self.history, "best_metric": self.best_metric}

    def _load_training_state(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state.get("history", []))
        self.best_metric = float(state.get("best_metric", -math.inf))
        _set_rng_state(state["rng"])
        logger.info("resumed from %s at epoch %d, step %d", self.config.resume, self.epoch, self.step)

    def save_checkpoint(self, path: Path) -> None:
        if self.dist.is_main:
            save_model(self.raw_model, path, **self.training_state())

    def _epoch_checkpoint_due(self, epoch: int) -> bool:
        """``epoch_NNN.pth`` every ``save_every`` epochs and, with the step schedule, every
        ``save_every // 2`` after the first decay (the reference: every 10, every 5 after it)."""
        cfg = self.config
        if not cfg.save_every:
            return False
        if epoch % cfg.save_every == 0:
            return True
        half = cfg.save_every // 2
        return (cfg.schedule == "step" and bool(cfg.decay_epochs) and half > 0
                and epoch > min(cfg.decay_epochs) and epoch % half == 0)

    # -- the loop ---------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loss(self, images: torch.Tensor, targets: List[torch.Tensor]) -> LossOutput:
        with self._autocast():
            output = None
            for hook in self.hooks:
                output = hook.compute_loss(self, self.model, images, targets)
                if output is not None:
                    break
            if output is None:
                output = self.criterion(self.model(images), self.priors, targets)
            for hook in self.hooks:
                extra = hook.extra_loss(self, self.raw_model)
                if extra is not None:
                    output = output._replace(total=output.total + extra)
        return output

    def _check_finite(self, output: LossOutput) -> None:
        finite = bool(torch.isfinite(output.total).item())
        if not all_ranks_agree(finite, self.device, self.dist):
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.epoch + 1}, step {self.step + 1} (box {output.box.item():.4g}, "
                f"class {output.cls.item():.4g}, landmark {output.landmark.item():.4g}); stopped without "
                f"saving: the last good checkpoint in {self.output} is intact. Try a lower --lr, "
                f"--grad-clip, or --amp-dtype bf16")

    def _check_finite_weights(self) -> None:
        """Before anything is written: a finite loss can still give NaN / inf gradients (e.g. a sqrt
        at 0), and without a loss scaler the last step of an epoch would put them into the weights
        that the epoch's checkpoints save (the next step's loss check would come too late)."""
        tensors = [t for t in self.raw_model.state_dict().values() if t.is_floating_point()]
        finite = bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all().item()) if tensors else True
        if not all_ranks_agree(finite, self.device, self.dist):
            raise NonFiniteLossError(
                f"non-finite weights after epoch {self.epoch + 1}, step {self.step} (a finite loss gave NaN/inf "
                f"gradients); stopped without saving: the last good checkpoint in {self.output} is intact. "
                f"Try a lower --lr, --grad-clip, or --amp-dtype bf16")

    def _optimiser_step(self, images: torch.Tensor, targets: List[torch.Tensor]) -> LossOutput:
        cfg = self.config
        if isinstance(self.optimizer, SAM):
            def closure():
                output = self._loss(images, targets)
                self._check_finite(output)
                return output
            return sam_step(self.model, self.optimizer, closure, self.scaler, clip_grad_norm=cfg.grad_clip)
        self.optimizer.zero_grad(set_to_none=True)
        output = self._loss(images, targets)
        self._check_finite(output)
        self.scaler.scale(output.total).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return output

    def train_epoch(self) -> Dict[str, float]:
        from tqdm import tqdm

        cfg = self.config
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        sums = torch.zeros(4, device=self.device)
        images_seen = 0
        data_wait = 0.0
        start = time.perf_counter()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and self.dist.is_main), leave=False, dynamic_ncols=True)
        loader = iter(self.loader)
        for i in range(self.steps_per_epoch):
            fetch = time.perf_counter()
            images, targets = next(loader)
            data_wait += time.perf_counter() - fetch
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = [t.to(self.device, non_blocking=True) for t in targets]
            output = self._optimiser_step(images, targets)
            self.scheduler.step()
            self.step += 1
            parts = torch.stack([output.total.detach(), output.box.detach(), output.cls.detach(),
                                 output.landmark.detach()]).float()
            sums += parts
            images_seen += images.shape[0] * self.dist.world_size
            for hook in self.hooks:
                hook.after_step(self)
            if bar.disable is False:
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{parts[0]:.3f}", box=f"{parts[1]:.3f}", cls=f"{parts[2]:.3f}",
                                lmk=f"{parts[3]:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                ips=f"{images_seen / elapsed:.1f}")
                bar.update(1)
        bar.close()
        del loader
        elapsed = time.perf_counter() - start
        means = all_reduce_mean(sums / max(self.steps_per_epoch, 1), self.dist).tolist()
        return {"epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                "loss": means[0], "box": means[1], "cls": means[2], "landmark": means[3],
                "images_per_s": images_seen / elapsed, "data_wait_share": data_wait / elapsed,
                "seconds": elapsed}

    def evaluate(self) -> Dict[str, float]:
        """WIDER AP on the val split (rank 0 only; other ranks return {})."""
        if not self.dist.is_main:
            return {}
        from ..evaluation.predict import evaluate_model

        gt_dir = self.config.gt or (self.data_root / "val" / "ground_truth")
        result = evaluate_model(self.raw_model.eval(), self.data_root, gt_dir,
                                workers=min(self.config.workers, 2), progress=self.config.progress)
        self.raw_model.train()
        return result.as_dict()

    def _log(self, row: Dict[str, float]) -> None:
        if not self.dist.is_main:
            return
        path = self.output / "log.csv"
        rows = self.history
        fields = list(dict.fromkeys(k for r in rows for k in r))  # first-seen order
        with atomic_write(path) as handle:  # rewritten whole, so a resumed run's log stays one table
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        if self._tensorboard is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    self._tensorboard.add_scalar(f"train/{key}", value, row["epoch"])

    def fit(self) -> TrainSummary:
        """Run (or continue) training; returns the history and the checkpoint paths."""
        self.setup()
        cfg = self.config
        self._tensorboard = None
        if self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tensorboard = SummaryWriter(str(self.output / "tensorboard"))
            except ImportError:
                pass
        last = self.output / "last.pth"
        best = self.output / "best.pth"
        metrics: Dict[str, float] = {}
        try:
            while self.epoch < cfg.epochs:
                row = self.train_epoch()
                self._check_finite_weights()
                self.epoch += 1
                if cfg.eval_every and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
                    metrics = self.evaluate()
                    row.update({f"ap_{k}": v for k, v in metrics.items()})
                self.history.append(row)
                self._log(row)
                # best: highest hard AP when evaluated, else lowest training loss
                score = row.get("ap_hard", -row["loss"])
                improved = score > self.best_metric
                if improved:
                    self.best_metric = score
                self.save_checkpoint(last)
                if improved:
                    self.save_checkpoint(best)
                if self._epoch_checkpoint_due(self.epoch):
                    self.save_checkpoint(self.output / f"epoch_{self.epoch:03d}.pth")
                if self.dist.is_main:
                    logger.info("epoch %d: loss %.4f (box %.4f cls %.4f landmark %.4f) %.1f img/s%s",
                                self.epoch, row["loss"], row["box"], row["cls"], row["landmark"],
                                row["images_per_s"],
                                "".join(f" AP {k[3:]} {v:.4f}" for k, v in row.items() if k.startswith("ap_")))
                for hook in self.hooks:
                    hook.after_epoch(self, self.epoch)
                barrier(self.dist)
        finally:
            if self._tensorboard is not None:
                self._tensorboard.close()
            cleanup(self.dist)
        return TrainSummary(self.epoch, self.history, last if last.exists() else None,
                            best if best.exists() else None, metrics)
