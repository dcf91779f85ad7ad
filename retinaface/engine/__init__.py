"""Training engine: optimisers, SAM and schedules (``retinaface.engine.optim``)."""
from retinaface.engine.optim import (OPTIMIZERS, REFERENCE_RECIPES, SAM, SCHEDULES, ScheduleFactor,
                                     build_optimizer, build_scheduler, frozen_bn_stats, parameter_groups,
                                     reference_recipe, sam_step)

__all__ = ["OPTIMIZERS", "REFERENCE_RECIPES", "SAM", "SCHEDULES", "ScheduleFactor", "build_optimizer",
           "build_scheduler", "frozen_bn_stats", "parameter_groups", "reference_recipe", "sam_step"]
