"""Training engine: the trainer and its options, optimizers / SAM / schedules, torchrun plumbing,
and channel prioritisation's training stages.

* :mod:`.config` -- :class:`TrainConfig`, every option once, and the flags made from it;
* :mod:`.trainer` -- :class:`Trainer` (the loop) and :class:`TrainHook`;
* :mod:`.builders` -- data, model with DDP, optimization; :mod:`.state` -- RNG, checkpoint
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
    "NonFiniteLossError": ".trainer", "NoFaceMatchedError": ".trainer",
    "TrainConfig": ".config", "add_config_arguments": ".config",
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
