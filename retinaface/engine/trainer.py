"""The training loop: ``Trainer(TrainConfig(...)).fit()``.

Trains RetinaFace the way the reference recipe does (options left unset take the reference defaults
of the backbone, see ``retinaface.engine.optim.REFERENCE_RECIPES``), on a CPU, one GPU, or many
through torchrun. What the loop is built from lives in :mod:`.builders` (data, model with DDP,
optimization), what it carries across restarts in :mod:`.state` (RNG, checkpoint policy, run
folders, resume) and its options in :mod:`.config`. Behaviour that other features need to change
is reached through :class:`TrainHook` (extra loss terms, a replacement loss, per-step and
per-epoch callbacks) rather than by editing the loop.

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
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..batch_norm import restore_batch_norm
from ..conventions import VAL_GROUND_TRUTH
from ..checkpoint import save_model
from ..evaluation.predict import evaluate_model
from ..fileio import atomic_write
from ..loss import LossOutput
from .builders import (SYNTHETIC_ROOT, Optimization, TrainData, build_data, build_model_for_training,
                       build_optimization, uses_channels_last)
from .config import (DEFAULT_OUTPUT, SYNTHETIC_RECIPE, TrainConfig, describe_conflict, merge_resume,
                     resume_conflicts)
from .distributed import (DistInfo, all_ranks_agree, all_reduce_mean, barrier, cleanup, init_distributed,
                          resolve_device)
from .optim import SAM, sam_step
from .report import BEST_CURVES, write_best_curves
from .state import (CheckpointPolicy, prepare_run_folder, read_resume_state, resolve_run_folder,
                    rng_state, saved_train_config, seed_everything, set_rng_state)

logger = logging.getLogger(__name__)

__all__ = ["NoFaceMatchedError", "NonFiniteLossError", "SYNTHETIC_RECIPE", "SYNTHETIC_ROOT", "TrainConfig",
           "TrainHook", "TrainSummary", "Trainer", "resume_options"]

class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without writing a checkpoint."""


# steps between host looks at the loss guard on a GPU (each look waits for the queued kernels)
GPU_FINITE_CHECK_EVERY = 50


class NonFiniteLossGuard:
    """Watches every step's loss for NaN / inf without a host-device synchronisation per step.

    Reading a CUDA tensor on the host waits for every queued kernel, so a check per step would stall
    the GPU once a step. The guard keeps, on the loss's device, the first bad step and its loss parts
    (a few element-wise kernels per step) and the host looks at them every ``check_every`` steps and
    before anything is written; the error names the step where the loss first went bad. On CPU
    reading is free and ``check_every`` is 1: training stops at the bad step itself. Steps run after a
    bad one on a GPU train NaN weights that no checkpoint ever sees.
    """

    def __init__(self, device: torch.device, check_every: int = 1) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.check_every = int(check_every)
        self._first = torch.full((4,), math.nan, device=device)  # loss parts of the first bad step
        self._first_step = torch.full((), -1, dtype=torch.long, device=device)
        self._step = torch.zeros((), dtype=torch.long, device=device)
        self._unchecked = 0

    def record(self, output: LossOutput, step: int) -> bool:
        """Note the loss of step ``step``; True when a host check is due (every ``check_every``)."""
        parts = torch.stack([output.total.detach(), output.box.detach(), output.cls.detach(),
                             output.landmark.detach()]).float()
        self._step.fill_(step)  # a scalar kernel argument: no copy, no wait
        first_bad = ~torch.isfinite(parts[0]) & (self._first_step < 0)
        self._first_step = torch.where(first_bad, self._step, self._first_step)
        self._first = torch.where(first_bad, parts, self._first)
        self._unchecked += 1
        return self._unchecked >= self.check_every

    def first_bad(self) -> Optional[tuple]:
        """``(step, total, box, class, landmark)`` of the first non-finite loss, or None (syncs)."""
        self._unchecked = 0
        step = int(self._first_step.item())
        if step < 0:
            return None
        return (step, *self._first.tolist())


class NoFaceMatchedError(ValueError):
    """A run's first epoch matched no face to any prior: it would train on nothing."""


def resume_options(options: Dict[str, Any], given: Sequence[str]) -> Dict[str, Any]:
    """``options`` (TrainConfig keyword arguments) with every field not in ``given`` taken from the
    training settings saved in ``options["resume"]``; a given option that contradicts the saved run
    (and may not change on resume) raises ``ValueError`` naming both values."""
    if not options.get("resume"):
        return dict(options)
    return merge_resume({k: v for k, v in options.items() if k in given or k == "resume"},
                        saved_train_config(options["resume"]))


class TrainHook:
    """Callbacks into the training loop; override what you need. Every method may use ``trainer``'s
    attributes (``raw_model``, ``criterion``, ``priors``, ``optimizer``, ``epoch``, ``step``, ...)."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """After the model, optimizer and data are built (and a resume is loaded)."""

    def compute_loss(self, trainer: "Trainer", model: nn.Module, images: torch.Tensor,
                     targets: List[torch.Tensor]) -> Optional[LossOutput]:
        """Return a LossOutput to replace the default loss, or None for the default."""
        return None

    def extra_loss(self, trainer: "Trainer", model: nn.Module) -> Optional[torch.Tensor]:
        """A scalar added to the total loss of every step (e.g. a regulariser), or None."""
        return None

    def after_step(self, trainer: "Trainer") -> None:
        """After each optimizer step."""

    def after_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """After each epoch's checkpoint is written."""


@dataclasses.dataclass
class TrainSummary:
    epochs_run: int
    history: List[Dict[str, float]]
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    metrics: Dict[str, float]


class Trainer:
    """Trains a RetinaFace model; see the module docstring.

    ``model`` replaces the network the config describes (e.g. an adaptive one); ``hooks`` see the
    loop's events. Construction only checks the config and the output folder (an explicit folder
    holding a run is refused unless resuming or ``overwrite``); :meth:`setup` (called by
    :meth:`fit`) builds everything, filling the attributes declared here.
    """

    def __init__(self, config: TrainConfig, model: Optional[nn.Module] = None,
                 hooks: Sequence[TrainHook] = ()) -> None:
        resolved = config.resolved()
        self.output: Path = resolve_run_folder(resolved.output, DEFAULT_OUTPUT, resolved.resume,
                                               resolved.overwrite)
        self.config: TrainConfig = dataclasses.replace(resolved, output=str(self.output))
        self.hooks: List[TrainHook] = list(hooks)
        self._given_model = model
        self.policy = CheckpointPolicy(self.output, self.config.save_every, self.config.schedule,
                                       self.config.decay_epochs)
        # loop state: what a checkpoint saves and a resume restores
        self.epoch = 0  # epochs completed
        self.step = 0   # optimizer steps taken
        self.history: List[Dict[str, float]] = []
        self.best_metric = -math.inf
        self._last_eval = None
        # built by setup()
        self.device: Optional[torch.device] = None
        self.dist: DistInfo = DistInfo()
        self.channels_last = self.config.channels_last
        self.data: Optional[TrainData] = None
        self.data_root: Optional[Path] = None
        self.dataset = None
        self.sampler = None
        self.loader = None
        self.steps_per_epoch = 0
        self.raw_model: Optional[nn.Module] = None
        self.model: Optional[nn.Module] = None
        self.optimization: Optional[Optimization] = None
        self.optimizer = None
        self.scheduler = None
        self.scaler: Optional[torch.amp.GradScaler] = None
        self.amp_dtype: Optional[torch.dtype] = None
        self.criterion = None
        self.priors: Optional[torch.Tensor] = None
        self._tensorboard = None

    # -- set-up -----------------------------------------------------------------------------
    def _check_resume_settings(self, state: Dict[str, Any]) -> None:
        """A resumed run continues the saved one: options that shape it must agree."""
        saved = state.get("train_config") or {}
        given = {k: v for k, v in self.config.to_dict().items() if k != "output"}
        conflicts = resume_conflicts(given, saved)
        if conflicts:
            raise ValueError(describe_conflict(*conflicts[0], self.config.resume))

    def build_training_data(self) -> TrainData:
        """This process's training data (labels checked, data set, sampler, loader); a subclass may
        feed the loop another way (``benchmarks/gpu_decode.py`` decodes on the GPU)."""
        return build_data(self.config, self.dist, self.device)

    def setup(self) -> None:
        """Device and process group, seeds, the resumed state, data, model and optimization."""
        cfg = self.config
        self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device)
        seed_everything(cfg.seed + self.dist.rank)
        resume_state = read_resume_state(cfg.resume) if cfg.resume else None
        if resume_state is not None:
            self._check_resume_settings(resume_state)
        if self.dist.is_main:
            # before the (long) data check: stale temporaries go, an --overwrite'n run's files too
            prepare_run_folder(self.output, cfg.overwrite, resuming=resume_state is not None)
        self.data = self.build_training_data()
        self.data_root, self.dataset = self.data.root, self.data.dataset
        self.sampler, self.loader = self.data.sampler, self.data.loader
        self.steps_per_epoch = self.data.steps_per_epoch
        self.raw_model, self.model = build_model_for_training(cfg, self.dist, self.device, self._given_model,
                                                              resume_state)
        self.channels_last = uses_channels_last(cfg, self.device, self.raw_model)
        self.optimization = build_optimization(cfg, self.raw_model, self.steps_per_epoch, self.device)
        opt = self.optimization
        self.optimizer, self.scheduler, self.scaler = opt.optimizer, opt.scheduler, opt.scaler
        self.amp_dtype, self.criterion, self.priors = opt.amp_dtype, opt.criterion, opt.priors
        self.finite_guard = NonFiniteLossGuard(self.device, GPU_FINITE_CHECK_EVERY if self.device.type == "cuda" else 1)
        if resume_state is not None:
            self._load_training_state(resume_state)
        for hook in self.hooks:
            hook.on_train_start(self)

    # -- checkpoints ------------------------------------------------------------------------
    def training_state(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "rng": rng_state(), "train_config": self.config.to_dict(),
                "history": self.history, "best_metric": self.best_metric}

    def _load_training_state(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state.get("history", []))
        self.best_metric = float(state.get("best_metric", -math.inf))
        set_rng_state(state["rng"])
        logger.info("resumed from %s at epoch %d, step %d", self.config.resume, self.epoch, self.step)

    def save_checkpoint(self, path: Path) -> None:
        if self.dist.is_main:
            save_model(self.raw_model, path, **self.training_state())

    def _epoch_checkpoint_due(self, epoch: int) -> bool:
        return self.policy.epoch_due(epoch)

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
        if self.finite_guard.record(output, self.step + 1):
            self._raise_if_nonfinite()

    def _raise_if_nonfinite(self) -> None:
        bad = self.finite_guard.first_bad()
        if all_ranks_agree(bad is None, self.device, self.dist):
            return
        where = (f"step {bad[0]} (box {bad[2]:.4g}, class {bad[3]:.4g}, landmark {bad[4]:.4g})"
                 if bad is not None else "a step on another rank")
        raise NonFiniteLossError(
            f"non-finite loss at epoch {self.epoch + 1}, {where}; stopped without "
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

    def _optimizer_step(self, images: torch.Tensor, targets: List[torch.Tensor]) -> LossOutput:
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

    def _to_device(self, images: torch.Tensor, targets: List[torch.Tensor]):
        # non_blocking: from pinned memory (CUDA) the copy overlaps the step; a no-op on CPU
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, [t.to(self.device, non_blocking=True) for t in targets]

    def train_epoch(self) -> Dict[str, float]:
        """One epoch (or ``max_steps_per_epoch`` steps); returns its row of the log."""
        from tqdm import tqdm

        cfg = self.config
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        sums = torch.zeros(4, device=self.device)
        faces = 0  # face boxes in this process's crops
        images_seen = 0
        data_wait = 0.0
        start = time.perf_counter()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and self.dist.is_main), leave=False, dynamic_ncols=True)
        loader = iter(self.loader)
        for _ in range(self.steps_per_epoch):
            fetch = time.perf_counter()
            images, targets = next(loader)
            data_wait += time.perf_counter() - fetch
            faces += sum(len(t) for t in targets)
            images, targets = self._to_device(images, targets)
            output = self._optimizer_step(images, targets)
            self.scheduler.step()
            self.step += 1
            parts = torch.stack([output.total.detach(), output.box.detach(), output.cls.detach(),
                                 output.landmark.detach()]).float()
            sums += parts
            images_seen += images.shape[0] * self.dist.world_size
            for hook in self.hooks:
                hook.after_step(self)
            if bar.disable is False:
                bar.update(1)
            # formatting the losses reads them on the host: on a GPU not every step
            if bar.disable is False and (self.device.type != "cuda" or self.step % GPU_FINITE_CHECK_EVERY == 0):
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{parts[0]:.3f}", box=f"{parts[1]:.3f}", cls=f"{parts[2]:.3f}",
                                lmk=f"{parts[3]:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                ips=f"{images_seen / elapsed:.1f}")
        bar.close()
        self._raise_if_nonfinite()  # a bad step since the last look stops the run before any write
        del loader
        elapsed = time.perf_counter() - start
        means = all_reduce_mean(sums / max(self.steps_per_epoch, 1), self.dist).tolist()
        if self.epoch == 0:
            seen = all_reduce_mean(torch.tensor(float(faces), device=self.device), self.dist)
            self._check_faces_matched(means, int(round(seen.item() * self.dist.world_size)))
        return {"epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                "loss": means[0], "box": means[1], "cls": means[2], "landmark": means[3],
                "images_per_s": images_seen / elapsed, "data_wait_share": data_wait / elapsed,
                "seconds": elapsed}

    def _check_faces_matched(self, means: List[float], faces: int) -> None:
        """After the first epoch: the classification loss counts hard negatives in proportion to
        the positives, so it is exactly 0 only when no face matched any prior on any step."""
        if means[2] != 0.0 or means[1] != 0.0:
            return
        if faces == 0:
            why = "the training crops held no faces at all"
        else:
            smallest = min(min(s) for s in self.raw_model.config.min_sizes)
            why = (f"{faces} face(s) were in the crops, but none overlapped a prior (IoU >= 0.35): the boxes do "
                   f"not fit their images or are far smaller than the smallest anchor ({smallest} px at "
                   f"--image-size {self.config.image_size})")
        raise NoFaceMatchedError(f"epoch 1 matched no face to any prior (loss 0 on every step): {why}; check the "
                                 f"labels of {self.data_root}. Stopped without saving a checkpoint")

    def evaluate(self) -> Dict[str, float]:
        """WIDER AP on the val split (rank 0 only; other ranks return {})."""
        if not self.dist.is_main:
            return {}

        gt_dir = self.config.gt or (self.data_root / VAL_GROUND_TRUTH)
        result = evaluate_model(self.raw_model.eval(), self.data_root, gt_dir,
                                workers=min(self.config.workers, 2), progress=self.config.progress)
        self.raw_model.train()
        self._last_eval = result  # its curves are drawn if this epoch becomes the best
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
        """Run (or continue) training; returns the history and the checkpoint paths.

        An interruption (Ctrl-C) propagates after the process group is closed; ``last.pth`` then
        holds the last completed epoch (every checkpoint is written atomically)."""
        self.setup()
        cfg = self.config
        if self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tensorboard = SummaryWriter(str(self.output / "tensorboard"))
            except ImportError:
                pass
        policy = self.policy
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
                score = policy.score(row)
                improved = score > self.best_metric
                if improved:
                    self.best_metric = score
                self.save_checkpoint(policy.last)
                if improved:
                    self.save_checkpoint(policy.best)
                    if "ap_hard" in row and self.dist.is_main and self._last_eval is not None:
                        write_best_curves(self._last_eval, self.output / BEST_CURVES, self.epoch)
                if policy.epoch_due(self.epoch):
                    self.save_checkpoint(policy.epoch_path(self.epoch))
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
            restore_batch_norm(self.raw_model)  # plain BatchNorm2d for whoever uses the model next
        return TrainSummary(self.epoch, self.history, policy.last if policy.last.exists() else None,
                            policy.best if policy.best.exists() else None, metrics)
