"""Training face-embedding networks (behind ``retinaface train-recognition``): the recognition task
run by the one :class:`~retinaface.engine.trainer.Trainer`.

:class:`RecognitionTrainer` is ``Trainer(RecognitionTask(config), ...)`` under its former name
with the task's attributes readable on it; it adds no loop. The parts live in
:mod:`.config` (:class:`RecognitionConfig`), :mod:`.task` (:class:`RecognitionTask`: data, model
and margin-loss head, loss, verification) and :mod:`.checkpoint` (:func:`save_embedder`,
:func:`load_embedder`); every name this module offered before is still importable from it.

The Trainer brings what every task gets: the six optimizers and SAM around any of them, step /
cosine schedules with warm-up, AMP (bf16, or fp16 with a loss scaler on CUDA), torchrun DDP,
gradient clipping, the NaN / inf guard without a host sync per step on a GPU, atomic checkpoints
with every RNG state, exact resume, tqdm progress, optional TensorBoard, hooks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

from torch import nn
from torch.utils.data import Dataset

from ..engine.state import holds_run, next_free_folder
from ..engine.trainer import NonFiniteLossError, Trainer, TrainHook, TrainSummary
from .checkpoint import (EMBEDDER_FORMAT, EMBEDDER_FORMAT_VERSION, build_embedder_from_config,  # noqa: F401
                         embedder_config_dict, load_embedder, save_embedder)
from .config import (DEFAULT_OUTPUT, DEFAULT_RECIPE, FIELDS, LOSSES, RESUMABLE, SYNTHETIC_ARCFACE,  # noqa: F401
                     SYNTHETIC_DATA, SYNTHETIC_RECIPE, SYNTHETIC_ROOT, RecognitionConfig, merge_resume,
                     synthetic_root)
from .task import (AugmentedFaces, EpochSampler, RecognitionTask, _TrainModule, collate_crops,  # noqa: F401
                   load_pairs, synthetic_paths, training_dataset)

#: The summary :meth:`RecognitionTrainer.fit` returns (the Trainer's; ``output`` is the run folder).
RecognitionSummary = TrainSummary


class RecognitionHook(TrainHook):
    """A :class:`~retinaface.engine.trainer.TrainHook` of a recognition run: ``compute_loss(trainer,
    model, images, labels)`` may return a :class:`~retinaface.engine.task.TotalLoss` to replace the
    margin loss (``model`` is network + head: ``model(images, labels)`` is the loss),
    ``extra_loss(trainer, model)`` a scalar added to it; ``trainer.raw_model`` is the network."""


def choose_output(config: RecognitionConfig) -> Path:
    """The run folder: ``--output`` unless it holds a run; the default name then moves on to
    ``runs/recognition2``, ``3``, ...; any other name is refused (never overwrite a run). The
    Trainer applies the same rule and claims the folder
    (:func:`retinaface.engine.state.resolve_run_folder`)."""
    if config.output is None:
        return next_free_folder(Path(DEFAULT_OUTPUT))
    folder = Path(config.output)
    if config.resume or config.overwrite or not holds_run(folder):
        return folder
    raise FileExistsError(f"--output: {folder} already holds a run; pass --resume {folder / 'last.pth'} to "
                          f"continue it, --overwrite to replace it, or another --output")


class RecognitionTrainer(Trainer):
    """``Trainer(RecognitionTask(config, train_set, val_pairs), model, hooks)``: trains an
    embedding network (``model`` replaces the one the config names, e.g. an adaptive embedder;
    ``hooks`` change the loss or observe the loop). It adds no loop of its own, only the task's
    attributes under their former names."""

    def __init__(self, config: RecognitionConfig, model: Optional[nn.Module] = None,
                 hooks: Sequence[TrainHook] = (), train_set: Optional[Dataset] = None,
                 val_pairs: Optional[Any] = None) -> None:
        super().__init__(RecognitionTask(config, train_set=train_set, val_pairs=val_pairs), model=model,
                         hooks=hooks)

    @property
    def train_set(self) -> Optional[Dataset]:
        return self.task.train_set

    @property
    def classes(self) -> List[str]:
        return self.task.classes

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    @property
    def val_pairs(self):
        return self.task.val_pairs

    @property
    def criterion(self) -> Optional[nn.Module]:
        return self.task.criterion

    @property
    def last_verification(self):
        return self.task.last_verification

    @property
    def train_module(self) -> Optional[nn.Module]:
        """Network and loss head as one module (the Trainer's ``trainable``)."""
        return self.trainable

    @property
    def module(self) -> Optional[nn.Module]:
        """``train_module``, DDP-wrapped under torchrun (the Trainer's ``model``)."""
        return self.model


def train_recognition(config: RecognitionConfig, **kw: Any) -> TrainSummary:
    """``RecognitionTrainer(config, **kw).fit()``."""
    return RecognitionTrainer(config, **kw).fit()


__all__ = ["EMBEDDER_FORMAT", "NonFiniteLossError", "RecognitionConfig", "RecognitionHook", "RecognitionSummary",
           "RecognitionTask", "RecognitionTrainer", "choose_output", "load_embedder", "load_pairs", "merge_resume",
           "save_embedder", "synthetic_root", "train_recognition", "training_dataset"]
