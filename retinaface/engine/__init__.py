"""Training engine: the one trainer and its task interface, the options, optimizers / SAM /
schedules, torchrun plumbing, and channel prioritisation's training stages.

* :mod:`.config` -- :class:`BaseTrainConfig` (the options every task shares) and :class:`TrainConfig`
  (detection), every option once, and the flags made from them;
* :mod:`.trainer` -- :class:`Trainer` (the loop, for every task) and :class:`TrainHook`;
* :mod:`.task` -- :class:`Task`, what a kind of model tells the loop (data, model, loss,
  evaluation, checkpoint format); :mod:`.detection_task` -- :class:`DetectionTask`;
* :mod:`.builders` -- detection data and model, optimization; :mod:`.state` -- RNG, checkpoint
  policy, run folders, resume;
* :mod:`.optim` -- optimizers, SAM, schedules, the reference recipes;
* :mod:`.prioritize` / :mod:`.adaptive_hooks` -- the three stages of channel prioritisation.

Names are loaded on first use (PEP 562), so ``import retinaface.engine.config`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Trainer": ".trainer", "TrainHook": ".trainer", "TrainSummary": ".trainer",
    "NonFiniteLossError": ".trainer", "NoFaceMatchedError": ".detection_task",
    "Task": ".task", "TaskModel": ".task", "TrainData": ".task", "TotalLoss": ".task",
    "DetectionTask": ".detection_task",
    "BaseTrainConfig": ".config", "TrainConfig": ".config", "add_config_arguments": ".config",
    "shared_option": ".config",
    "PrioritizeConfig": ".prioritize", "run_prioritization": ".prioritize",
    "MultiWidthHook": ".adaptive_hooks", "PrioritizationHook": ".adaptive_hooks",
    "OPTIMIZERS": ".optim", "REFERENCE_RECIPES": ".optim", "SAM": ".optim", "SCHEDULES": ".optim",
    "ScheduleFactor": ".optim", "build_optimizer": ".optim", "build_scheduler": ".optim",
    "frozen_bn_stats": ".optim", "parameter_groups": ".optim", "reference_recipe": ".optim",
    "sam_step": ".optim",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
