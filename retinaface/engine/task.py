"""The task interface: what :class:`~retinaface.engine.trainer.Trainer` needs to know about one
kind of model, and nothing about the loop.

The Trainer owns the loop and everything around it: device and torchrun process group, seeds,
the optimizer (SAM-wrapped when asked), schedule, AMP and loss scaler, DDP, gradient clipping, the
NaN / inf guard (no host sync per step on a GPU), hooks, run folders, atomic checkpoints with every
RNG state, exact resume, best-checkpoint choice, ``log.csv``, tqdm and TensorBoard. A
:class:`Task` supplies the parts that differ between detection, recognition, or any other model:

* :meth:`Task.build_data` -- the data set, its sampler and loader (:class:`TrainData`);
* :meth:`Task.build_model` -- the network and any other trained module (a loss head), resumed
  weights loaded (:class:`TaskModel`);
* :meth:`Task.prepare_batch` / :meth:`Task.compute_loss` -- a loader batch onto the device, and
  its loss as a NamedTuple of scalar tensors whose first field is ``total`` (the one
  backpropagated; the others are logged as parts); never read on the host;
* :meth:`Task.evaluate` -- metrics on held-out data; :attr:`Task.best_metric` names the one that
  picks ``best.pth``;
* :meth:`Task.save_checkpoint` / :meth:`Task.read_resume_state` -- the checkpoint file format.

``docs/architecture.md`` ("Adding a training task") lists the steps; ``tests/test_task_interface.py``
follows them with a toy regression task.
"""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..checkpoint import read_checkpoint
from ..fileio import atomic_torch_save
from .config import BaseTrainConfig, default_workers, merge_resume

#: The :class:`retinaface.engine.trainer.Trainer` running a task (not imported: it imports this
#: module). Tasks read its ``config``, ``device``, ``dist``, ``data``, ``raw_model``, ``epoch`` and
#: ``output``.
RunningTrainer = Any


class TotalLoss(NamedTuple):
    """The loss output of a task with one loss term (no parts to log besides it)."""

    total: torch.Tensor


@dataclasses.dataclass
class TrainData:
    """The training data of one process: root folder (``None`` when there is none), data set,
    sampler, loader and steps per epoch. :meth:`set_epoch` gives the sampler and the data set the
    epoch, so a sample's order and augmentation are functions of (seed, epoch, index)."""

    root: Optional[Path]
    dataset: Any
    sampler: Any
    loader: Any                 # an iterable of batches with len(): a DataLoader or a wrapper of one
    steps_per_epoch: int
    skipped_images: int = 0

    def set_epoch(self, epoch: int) -> None:
        for part in (self.sampler, self.dataset):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


class EpochSampler(Sampler):
    """Indices of one epoch: a permutation drawn from (seed, epoch), this rank's share of it, cut to
    whole batches (every rank gets the same number of steps)."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return (self.size // self.world_size) // self.batch_size * self.batch_size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.size, generator=g)[self.rank::self.world_size].tolist()
        return iter(order[:len(self)])



def epoch_loader(dataset: Dataset, cfg: BaseTrainConfig, dist: Any, device: torch.device, collate_fn: Any,
                 unit: str) -> TrainData:
    """The training data of a task whose samples are independent items (crops, faces): this
    process's share of an :class:`EpochSampler` permutation in whole batches, ``cfg.workers`` (default:
    this process's CPUs, at most 4). ``unit`` names the items in the errors for a batch size that
    does not fit the processes or the data."""
    size = len(dataset)
    per_rank = cfg.batch_size // dist.world_size
    if per_rank < 1:
        raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the {dist.world_size} processes")
    if size // dist.world_size < per_rank:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set ({size} {unit})")
    sampler = EpochSampler(size, per_rank, cfg.seed, dist.rank, dist.world_size)
    workers = cfg.workers if cfg.workers is not None else min(4, default_workers())
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                        drop_last=True, pin_memory=device.type == "cuda")
    return TrainData(None, dataset, sampler, loader, max(1, steps_per_epoch(loader, cfg.max_steps_per_epoch)))


def steps_per_epoch(loader: Any, max_steps: Optional[int]) -> int:
    """Optimizer steps in one epoch: the loader's batches, cut to ``max_steps`` when given."""
    steps = len(loader)
    return min(steps, max_steps) if max_steps else steps


@dataclasses.dataclass
class TaskModel:
    """What :meth:`Task.build_model` returns.

    ``network`` is what checkpoints save as the model and hooks see as ``trainer.raw_model``;
    ``trainable`` is the module the optimizer, gradient clipping and DDP see, and the one passed
    (DDP-wrapped under torchrun) to :meth:`Task.compute_loss`: the network itself, or the network
    together with other trained modules (a margin-loss head) when those must be trained and
    all-reduced with it."""

    network: nn.Module
    trainable: Optional[nn.Module] = None

    def __post_init__(self) -> None:
        if self.trainable is None:
            self.trainable = self.network


class Task(abc.ABC):
    """One kind of model to train; subclass it and pass an instance to
    :class:`~retinaface.engine.trainer.Trainer`.

    ``config`` is the task's :class:`~retinaface.engine.config.BaseTrainConfig` subclass; the
    Trainer replaces it with the resolved one (recipe defaults filled, output folder chosen) before
    calling any method. A task instance serves one run and may keep what its methods build
    (a loss module, the number of classes) as attributes.
    """

    #: Run folder when ``--output`` is not given (numbered ``2``, ``3``, ... when it holds a run).
    default_output: ClassVar[str] = "runs/task"
    #: Column of the log row whose best value picks ``best.pth`` (after :attr:`metric_prefix`);
    #: epochs without it are scored by minus their training loss.
    best_metric: ClassVar[Optional[str]] = None
    #: Whether a higher :attr:`best_metric` is better (accuracy) or a lower one (an error).
    higher_is_better: ClassVar[bool] = True
    #: Prefix of :meth:`evaluate`'s keys in the log row (``ap_`` for detection's ``hard`` -> ``ap_hard``).
    metric_prefix: ClassVar[str] = ""

    def __init__(self, config: BaseTrainConfig) -> None:
        self.config = config

    # -- data and model ---------------------------------------------------------------------
    @abc.abstractmethod
    def build_data(self, trainer: RunningTrainer) -> TrainData:
        """This process's training data (``trainer.dist`` says which share, ``trainer.device`` where
        batches go). Errors in the data are raised here, before any training."""

    @abc.abstractmethod
    def build_model(self, trainer: RunningTrainer, model: Optional[nn.Module],
                    resume_state: Optional[Dict[str, Any]]) -> TaskModel:
        """The network on ``trainer.device`` (``model`` when the caller gave one, e.g. an adaptive
        network) and any other trained module; with ``resume_state`` (what :meth:`read_resume_state`
        returned) its weights are loaded. Called after :meth:`build_data`, with the seeds set."""

    # -- one step -----------------------------------------------------------------------------
    def prepare_batch(self, batch: Sequence[Any], device: torch.device) -> Tuple[Any, ...]:
        """A loader batch on ``device`` (tensors copied ``non_blocking``, lists of tensors too)."""
        def move(item: Any) -> Any:
            if isinstance(item, torch.Tensor):
                return item.to(device, non_blocking=True)
            if isinstance(item, (list, tuple)):
                return type(item)(move(x) for x in item)
            return item
        return tuple(move(item) for item in batch)

    def batch_size(self, batch: Sequence[Any]) -> int:
        """Samples in a prepared batch (for the images-per-second figure)."""
        return len(batch[0])

    @abc.abstractmethod
    def compute_loss(self, model: nn.Module, batch: Tuple[Any, ...]) -> NamedTuple:
        """The loss of one prepared batch: a NamedTuple of scalar tensors whose first field is
        ``total`` (backpropagated; logged as ``loss``), the others logged under their names
        (:class:`TotalLoss` when there are none). ``model`` is ``TaskModel.trainable``, DDP-wrapped
        under torchrun; runs under autocast with ``--amp``. Must not read tensors on the host."""

    # -- epochs, evaluation -----------------------------------------------------------------
    def check_epoch(self, trainer: RunningTrainer, row: Dict[str, float]) -> None:
        """After an epoch's training figures are in ``row`` and before anything is written: raise
        to stop a run that cannot be right (detection: no face matched in epoch 1)."""

    def evaluate(self, trainer: RunningTrainer) -> Dict[str, float]:
        """Metrics of ``trainer.raw_model`` on held-out data (main process only); ``{}`` for none.
        Leave the model in train mode."""
        return {}

    def on_best(self, trainer: RunningTrainer) -> None:
        """After ``best.pth`` was written for the epoch just evaluated (main process only)."""

    def finish(self, trainer: RunningTrainer) -> None:
        """When the run ends, normally or not: undo training-only changes to the network."""

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, network: nn.Module, path: Path, state: Dict[str, Any]) -> None:
        """Write ``network`` and the loop's ``state`` (optimizer, scheduler, scaler, RNG, epoch,
        step, history, best metric, ``train_config``: tensors and plain values) atomically to
        ``path``. Default: ``{"model": state_dict, **state}``, which :meth:`build_model` restores
        from ``resume_state["model"]``."""
        atomic_torch_save({"model": network.state_dict(), **state}, path)

    def read_resume_state(self, path: str) -> Dict[str, Any]:
        """The checkpoint at ``path`` (``torch.load(weights_only=True)``), checked to hold a
        training state to resume (``ValueError`` naming it otherwise)."""
        state = read_checkpoint(path)
        if "optimizer" not in state:
            raise ValueError(f"{path}: holds model weights only, not a training state to resume")
        return state


def task_config_from_options(config_class: type, given: Dict[str, Any], checkpoint_format: str,
                             what: str) -> BaseTrainConfig:
    """The config of a training command: the options ``given`` on its command line, over the run a
    ``--resume`` checkpoint holds (the engine's resume rule, :func:`merge_resume`), validated.
    Raises ``ValueError`` naming the problem (a checkpoint of another kind says it is not a
    ``what`` training checkpoint) and :class:`~retinaface.checkpoint.CheckpointError` for an
    unreadable file."""
    if given.get("resume"):
        saved = read_checkpoint(given["resume"])
        if saved.get("format") != checkpoint_format or not isinstance(saved.get("train_config"), dict):
            raise ValueError(f"--resume: {given['resume']} is not a {what} training checkpoint")
        given = merge_resume(given, saved["train_config"], config_class)
    config = config_class.from_dict(given)
    config.validate()
    return config
