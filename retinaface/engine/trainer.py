"""The training loop, one for every task: ``Trainer(task).fit()``.

A :class:`~retinaface.engine.task.Task` says what is trained (data, model, loss, evaluation,
checkpoint format): :class:`~retinaface.engine.detection_task.DetectionTask` (``Trainer(TrainConfig(...))``
runs it), :class:`~retinaface.recognition.task.RecognitionTask`, or a new one. The loop owns the
rest, the same for all: CPU, one GPU, or many through torchrun (DDP); seeds; the optimizer, SAM and
the schedule (:mod:`.optim`); AMP with a loss scaler for fp16; gradient clipping; the NaN / inf
guard, which reads nothing on the host per step on a GPU; run folders and atomic checkpoints with
every RNG state (:mod:`.state`); exact resume; ``best.pth`` by the task's metric; ``log.csv``,
progress bars and TensorBoard when it is installed. Behaviour that other features need to change
is reached through :class:`TrainHook` (extra loss terms, a replacement loss, per-step and
per-epoch callbacks) rather than by editing the loop.

Reproducibility: the tasks' samplers order an epoch as a function of (seed, epoch) and augment
every sample as a function of (seed, epoch, index), so the data a step sees does not depend on the
worker count, and a run resumed from an epoch checkpoint repeats the uninterrupted run's losses.
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
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..fileio import atomic_write
from .builders import SYNTHETIC_ROOT, amp_dtype, build_optimization
from .config import SYNTHETIC_RECIPE, BaseTrainConfig, TrainConfig, describe_conflict, merge_resume, resume_conflicts
from .detection_task import DetectionTask, NoFaceMatchedError
from .distributed import (DistInfo, all_ranks_agree, all_reduce_mean, barrier, cleanup, init_distributed,
                          resolve_device, wrap_ddp)
from .optim import SAM, sam_step
from .state import (CheckpointPolicy, prepare_run_folder, resolve_run_folder, rng_state, saved_train_config,
                    seed_everything, set_rng_state)
from .task import Task, TrainData

logger = logging.getLogger(__name__)

__all__ = ["NoFaceMatchedError", "NonFiniteLossError", "NonFiniteLossGuard", "SYNTHETIC_RECIPE", "SYNTHETIC_ROOT",
           "TrainConfig", "TrainHook", "TrainSummary", "Trainer", "resume_options"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without writing a checkpoint."""


# steps between host looks at the loss guard on a GPU (each look waits for the queued kernels)
GPU_FINITE_CHECK_EVERY = 50


def loss_parts(output: NamedTuple) -> torch.Tensor:
    """A task's loss output (a NamedTuple of scalar tensors, ``total`` first) as one detached
    float32 vector on its device: no host read."""
    return torch.stack([part.detach() for part in output]).float()


def loss_names(output: NamedTuple) -> Tuple[str, ...]:
    """The log columns of a loss output: ``loss`` for its ``total``, then its other fields' names."""
    fields = getattr(output, "_fields", None)
    if not fields or fields[0] != "total":
        raise TypeError(f"a task's loss (or a hook's) must be a NamedTuple of scalar tensors whose first field is "
                        f"'total' (e.g. retinaface.engine.task.TotalLoss), got {type(output).__name__}")
    return ("loss",) + tuple(fields[1:])


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
        self._device = device
        self._first: Optional[torch.Tensor] = None  # loss parts of the first bad step (sized at the first record)
        self._first_step = torch.full((), -1, dtype=torch.long, device=device)
        self._step = torch.zeros((), dtype=torch.long, device=device)
        self._unchecked = 0

    def record(self, output: NamedTuple, step: int) -> bool:
        """Note the loss of step ``step``; True when a host check is due (every ``check_every``)."""
        parts = loss_parts(output)
        if self._first is None:
            self._first = torch.full(parts.shape, math.nan, device=parts.device)
        self._step.fill_(step)  # a scalar kernel argument: no copy, no wait
        first_bad = ~torch.isfinite(parts[0]) & (self._first_step < 0)
        self._first_step = torch.where(first_bad, self._step, self._first_step)
        self._first = torch.where(first_bad, parts, self._first)
        self._unchecked += 1
        return self._unchecked >= self.check_every

    def first_bad(self) -> Optional[tuple]:
        """``(step, total, *other parts)`` of the first non-finite loss, or None (syncs)."""
        self._unchecked = 0
        step = int(self._first_step.item())
        if step < 0:
            return None
        return (step, *self._first.tolist())


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
    attributes (``task``, ``raw_model``, ``model``, ``optimizer``, ``loader``, ``device``, ``epoch``,
    ``step``, ``last_output`` ...)."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """After the model, optimizer and data are built (and a resume is loaded)."""

    def compute_loss(self, trainer: "Trainer", model: nn.Module, *batch: Any) -> Optional[NamedTuple]:
        """Return a loss output to replace the task's (the same NamedTuple type as
        ``trainer.task.compute_loss`` returns), or None for the task's. ``model`` is the trained
        module (DDP-wrapped under torchrun), ``batch`` the task's prepared batch (detection:
        ``images, targets``; recognition: ``images, labels``)."""
        return None

    def extra_loss(self, trainer: "Trainer", model: nn.Module) -> Optional[torch.Tensor]:
        """A scalar added to the total loss of every step (e.g. a regulariser of ``model``, the
        network), or None."""
        return None

    def after_step(self, trainer: "Trainer") -> None:
        """After each optimizer step (``trainer.last_output`` is its loss, on the device)."""

    def after_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """After each epoch's checkpoint is written."""


@dataclasses.dataclass
class TrainSummary:
    epochs_run: int
    history: List[Dict[str, float]]
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    metrics: Dict[str, float]
    output: Optional[Path] = None


def task_of(task_or_config: Union[Task, BaseTrainConfig]) -> Task:
    """``task_or_config`` if it is a task; a :class:`TrainConfig` means detection."""
    if isinstance(task_or_config, Task):
        return task_or_config
    if isinstance(task_or_config, TrainConfig):
        return DetectionTask(task_or_config)
    raise TypeError(f"Trainer takes a Task (DetectionTask(TrainConfig(...)), RecognitionTask(RecognitionConfig(...)), "
                    f"...) or a TrainConfig, not {type(task_or_config).__name__}")


class Trainer:
    """Trains what ``task`` describes (a :class:`TrainConfig` means detection); see the module
    docstring.

    ``model`` replaces the network the config describes (e.g. an adaptive one); ``hooks`` see the
    loop's events. Construction only resolves the config (recipe defaults) and claims the output
    folder (an explicit folder holding a run is refused unless resuming or ``overwrite``);
    :meth:`setup` (called by :meth:`fit` when needed) builds everything, filling the attributes
    declared here.
    """

    def __init__(self, task: Union[Task, BaseTrainConfig], model: Optional[nn.Module] = None,
                 hooks: Sequence[TrainHook] = ()) -> None:
        task = task_of(task)
        resolved = task.config.resolved()
        self.output: Path = resolve_run_folder(resolved.output, task.default_output, resolved.resume,
                                               resolved.overwrite)
        task.config = dataclasses.replace(resolved, output=str(self.output))
        self.task: Task = task
        self.config = task.config
        self.hooks: List[TrainHook] = list(hooks)
        self._given_model = model
        metric = task.metric_prefix + task.best_metric if task.best_metric else None
        self.policy = CheckpointPolicy(self.output, self.config.save_every, self.config.schedule,
                                       self.config.decay_epochs or (), metric=metric,
                                       higher_is_better=task.higher_is_better)
        # loop state: what a checkpoint saves and a resume restores
        self.epoch = 0  # epochs completed
        self.step = 0   # optimizer steps taken
        self.history: List[Dict[str, float]] = []
        self.best_metric = -math.inf
        # built by setup()
        self.device: Optional[torch.device] = None
        self.dist: DistInfo = DistInfo()
        self.data: Optional[TrainData] = None
        self.data_root: Optional[Path] = None
        self.dataset = None
        self.sampler = None
        self.loader = None
        self.steps_per_epoch = 0
        self.raw_model: Optional[nn.Module] = None   # the network: what checkpoints save
        self.trainable: Optional[nn.Module] = None   # the network and any trained loss head
        self.model: Optional[nn.Module] = None       # ``trainable``, DDP-wrapped under torchrun
        self.optimizer = None
        self.scheduler = None
        self.scaler: Optional[torch.amp.GradScaler] = None
        self.amp_dtype: Optional[torch.dtype] = None
        self.finite_guard: Optional[NonFiniteLossGuard] = None
        self.last_output: Optional[NamedTuple] = None  # the latest step's loss, on the device
        self.loss_names: Tuple[str, ...] = ()
        self._tensorboard = None
        self._ready = False

    # -- set-up -----------------------------------------------------------------------------
    def _check_resume_settings(self, state: Dict[str, Any]) -> None:
        """A resumed run continues the saved one: options that shape it must agree."""
        saved = state.get("train_config") or {}
        given = {k: v for k, v in self.config.to_dict().items() if k != "output"}
        conflicts = resume_conflicts(given, saved, type(self.config))
        if conflicts:
            raise ValueError(describe_conflict(*conflicts[0], self.config.resume, config_class=type(self.config)))

    def build_training_data(self) -> TrainData:
        """This process's training data, from the task; a subclass may feed the loop another way
        (``benchmarks/gpu_decode.py`` decodes on the GPU)."""
        return self.task.build_data(self)

    def setup(self) -> None:
        """Device and process group, seeds, the resumed state, data, model and optimization."""
        if self._ready:
            return
        cfg = self.config
        self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device)
        seed_everything(cfg.seed + self.dist.rank)
        resume_state = self.task.read_resume_state(cfg.resume) if cfg.resume else None
        if resume_state is not None:
            self._check_resume_settings(resume_state)
        if self.dist.is_main:
            # before the (long) data check: stale temporaries go, an --overwrite'n run's files too
            prepare_run_folder(self.output, cfg.overwrite, resuming=resume_state is not None)
        self.data = self.build_training_data()
        self.data_root, self.dataset = self.data.root, self.data.dataset
        self.sampler, self.loader = self.data.sampler, self.data.loader
        self.steps_per_epoch = self.data.steps_per_epoch
        built = self.task.build_model(self, self._given_model, resume_state)
        self.raw_model, self.trainable = built.network, built.trainable
        self.model = wrap_ddp(self.trainable, self.device, self.dist)
        self.optimizer, self.scheduler = build_optimization(cfg, self.trainable, self.steps_per_epoch)
        self.amp_dtype = amp_dtype(cfg, self.device)
        # a loss scaler is needed for fp16 only; bf16 has float32's range
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.finite_guard = NonFiniteLossGuard(self.device, GPU_FINITE_CHECK_EVERY if self.device.type == "cuda" else 1)
        if resume_state is not None:
            self._load_training_state(resume_state)
        # configs with a --no-tensorboard switch may turn it off; the others log when it is installed
        if self.dist.is_main and getattr(cfg, "tensorboard", True):
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tensorboard = SummaryWriter(str(self.output / "tensorboard"))
            except ImportError:
                logger.info("tensorboard is not installed: no TensorBoard logs (log.csv has the figures)")
        self._ready = True
        for hook in self.hooks:
            hook.on_train_start(self)

    # -- checkpoints ------------------------------------------------------------------------
    def training_state(self) -> Dict[str, Any]:
        """What a checkpoint holds besides the network: optimizer, scheduler, scaler, position,
        every RNG state, the settings, the log and the best score so far."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "rng": rng_state(), "train_config": self.config.to_dict(),
                "history": self.history, "best_metric": self.best_metric}

    def _load_training_state(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty from a run without a scaler; absent from older recognition runs
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state.get("history") or [])
        best = state.get("best_metric")
        self.best_metric = -math.inf if best is None else float(best)
        set_rng_state(state["rng"])
        logger.info("resumed from %s at epoch %d, step %d", self.config.resume, self.epoch, self.step)

    def save_checkpoint(self, path: Path) -> None:
        if self.dist.is_main:
            self.task.save_checkpoint(self.raw_model, path, self.training_state())

    def _epoch_checkpoint_due(self, epoch: int) -> bool:
        return self.policy.epoch_due(epoch)

    # -- the loop ---------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loss(self, batch: Tuple[Any, ...]) -> NamedTuple:
        with self._autocast():
            output = None
            for hook in self.hooks:
                output = hook.compute_loss(self, self.model, *batch)
                if output is not None:
                    break
            if output is None:
                output = self.task.compute_loss(self.model, batch)
            for hook in self.hooks:
                extra = hook.extra_loss(self, self.raw_model)
                if extra is not None:
                    output = output._replace(total=output.total + extra)
        return output

    def _check_finite(self, output: NamedTuple) -> None:
        if not self.loss_names:
            self.loss_names = loss_names(output)
        if self.finite_guard.record(output, self.step + 1):
            self._raise_if_nonfinite()

    def _hint(self) -> str:
        hints = ["a lower --lr", "--grad-clip"] + (["--amp-dtype bf16"] if hasattr(self.config, "amp_dtype") else [])
        return f"Try {', '.join(hints[:-1])}{',' if len(hints) > 2 else ''} or {hints[-1]}"

    def _raise_if_nonfinite(self) -> None:
        bad = self.finite_guard.first_bad()
        if all_ranks_agree(bad is None, self.device, self.dist):
            return
        if bad is None:
            where = "a step on another rank"
        else:
            parts = ", ".join(f"{name} {value:.4g}" for name, value in zip(self.loss_names[1:], bad[2:]))
            where = f"step {bad[0]}" + (f" ({parts})" if parts else "")
        raise NonFiniteLossError(
            f"non-finite loss at epoch {self.epoch + 1}, {where}; stopped without saving: the last good "
            f"checkpoint in {self.output} is intact. {self._hint()}")

    def _check_finite_weights(self) -> None:
        """Before anything is written: a finite loss can still give NaN / inf gradients (e.g. a sqrt
        at 0), and without a loss scaler the last step of an epoch would put them into the weights
        that the epoch's checkpoints save (the next step's loss check would come too late)."""
        tensors = [t for t in self.trainable.state_dict().values() if t.is_floating_point()]
        finite = bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all().item()) if tensors else True
        if not all_ranks_agree(finite, self.device, self.dist):
            raise NonFiniteLossError(
                f"non-finite weights after epoch {self.epoch + 1}, step {self.step} (a finite loss gave NaN/inf "
                f"gradients); stopped without saving: the last good checkpoint in {self.output} is intact. "
                f"{self._hint()}")

    def _optimizer_step(self, batch: Tuple[Any, ...]) -> NamedTuple:
        cfg = self.config
        if isinstance(self.optimizer, SAM):
            def closure():
                output = self._loss(batch)
                self._check_finite(output)
                return output
            return sam_step(self.model, self.optimizer, closure, self.scaler, clip_grad_norm=cfg.grad_clip)
        self.optimizer.zero_grad(set_to_none=True)
        output = self._loss(batch)
        self._check_finite(output)
        self.scaler.scale(output.total).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return output

    def train_epoch(self) -> Dict[str, float]:
        """One epoch (or ``max_steps_per_epoch`` steps); returns its row of the log. The losses
        are summed on the device and read once, at the end."""
        from tqdm import tqdm

        self.setup()
        cfg = self.config
        self.model.train()
        self.data.set_epoch(self.epoch)
        sums: Optional[torch.Tensor] = None
        images_seen = 0
        data_wait = 0.0
        start = time.perf_counter()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and self.dist.is_main), leave=False, dynamic_ncols=True)
        loader = iter(self.loader)
        try:
            for _ in range(self.steps_per_epoch):
                fetch = time.perf_counter()
                batch = next(loader)
                data_wait += time.perf_counter() - fetch
                batch = self.task.prepare_batch(batch, self.device)
                output = self._optimizer_step(batch)
                self.scheduler.step()
                self.step += 1
                self.last_output = output
                parts = loss_parts(output)
                sums = parts if sums is None else sums + parts
                images_seen += self.task.batch_size(batch) * self.dist.world_size
                for hook in self.hooks:
                    hook.after_step(self)
                if bar.disable is False:
                    bar.update(1)
                # formatting the losses reads them on the host: on a GPU not every step
                if bar.disable is False and (self.device.type != "cuda" or self.step % GPU_FINITE_CHECK_EVERY == 0):
                    shown = {name: f"{value:.3f}" for name, value in zip(self.loss_names, parts.tolist())}
                    bar.set_postfix(**shown, lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                    ips=f"{images_seen / (time.perf_counter() - start):.1f}")
        finally:
            bar.close()
        self._raise_if_nonfinite()  # a bad step since the last look stops the run before any write
        del loader
        elapsed = time.perf_counter() - start
        if sums is None:
            sums = torch.zeros(len(self.loss_names) or 1, device=self.device)
        means = all_reduce_mean(sums / max(self.steps_per_epoch, 1), self.dist).tolist()
        row = {"epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update(zip(self.loss_names or ("loss",), means))
        row.update(images_per_s=images_seen / elapsed, data_wait_share=data_wait / elapsed, seconds=elapsed)
        self.task.check_epoch(self, row)
        return row

    def evaluate(self) -> Dict[str, float]:
        """The task's metrics (main process only; other ranks return {})."""
        if not self.dist.is_main:
            return {}
        return self.task.evaluate(self)

    def _log(self, row: Dict[str, float]) -> None:
        if not self.dist.is_main:
            return
        path = self.output / "log.csv"
        rows = self.history
        fields = list(dict.fromkeys(k for r in rows for k in r))  # first-seen order
        with atomic_write(path, newline="") as handle:  # rewritten whole, so a resumed run's log stays one table
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        if self._tensorboard is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    self._tensorboard.add_scalar(f"train/{key}", value, row["epoch"])

    def _epoch_line(self, row: Dict[str, float], metrics: Dict[str, float]) -> str:
        parts = " ".join(f"{name} {row[name]:.4f}" for name in self.loss_names[1:])
        return (f"epoch {self.epoch}/{self.config.epochs}: loss {row['loss']:.4f}" + (f" ({parts})" if parts else "")
                + f" {row['images_per_s']:.1f} img/s" + "".join(f" {k} {v:.4f}" for k, v in metrics.items()))

    def fit(self) -> TrainSummary:
        """Run (or continue) training; returns the history and the checkpoint paths.

        An interruption (Ctrl-C) propagates after the process group is closed; ``last.pth`` then
        holds the last completed epoch (every checkpoint is written atomically)."""
        self.setup()
        cfg = self.config
        policy = self.policy
        metrics: Dict[str, float] = {}
        try:
            while self.epoch < cfg.epochs:
                row = self.train_epoch()
                self._check_finite_weights()
                self.epoch += 1
                shown: Dict[str, float] = {}
                if cfg.eval_every and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
                    metrics = self.evaluate()
                    shown = {f"{self.task.metric_prefix}{k}": v for k, v in metrics.items()}
                    row.update(shown)
                self.history.append(row)
                self._log(row)
                score = policy.score(row)
                improved = score > self.best_metric
                if improved:
                    self.best_metric = score
                self.save_checkpoint(policy.last)
                if improved:
                    self.save_checkpoint(policy.best)
                    if self.dist.is_main and policy.metric in row:
                        self.task.on_best(self)
                if policy.epoch_due(self.epoch):
                    self.save_checkpoint(policy.epoch_path(self.epoch))
                if self.dist.is_main:
                    logger.info("%s", self._epoch_line(row, shown))
                for hook in self.hooks:
                    hook.after_epoch(self, self.epoch)
                barrier(self.dist)
        finally:
            if self._tensorboard is not None:
                self._tensorboard.close()
            cleanup(self.dist)
            self.task.finish(self)
        return TrainSummary(self.epoch, self.history, policy.last if policy.last.exists() else None,
                            policy.best if policy.best.exists() else None, metrics, self.output)
