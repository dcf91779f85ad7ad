"""``retinaface train-landmarks``: train a dense-landmark network (PFLD on the built-in synthetic faces
by default) and print its NME, FR@0.1 and AUC@0.1 on the val faces.

The default run (``retinaface train-landmarks``: 800 synthetic faces, half-width PFLD at 64 px,
20 epochs) reaches NME 0.041 (inter-ocular) on the 200 synthetic val faces in about 4 minutes on
one core of a 2-core machine (README, "Dense landmarks"). ``--model pipnet_mobilenetv3`` trains
PIPNet's heatmap + offset head instead (128 px on the synthetic faces: NME 0.029 in about 3 minutes).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from ..checkpoint import CheckpointError
from ..engine.config import add_config_arguments, given_options
from ..engine.task import task_config_from_options
from ..engine.trainer import NonFiniteLossError, Trainer
from ..landmarks.config import LandmarkConfig
from ..landmarks.formats import LandmarkFormatError
from ..landmarks.task import LANDMARK_FORMAT, LandmarkTask
from .common import fail
from .train_recognition import _one_line

# measured: README "Dense landmarks" (the default command under taskset -c 1: 4 min 6 s)
SYNTHETIC_NME = "0.041"
SYNTHETIC_MINUTES = "4"


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Train a dense-landmark network (WFLW 98 / 300W 68 points, ...) with the wing, "
        f"L1 or MSE loss; NME (inter-ocular), FR@0.1 and AUC@0.1 on held-out faces every --eval-every epochs. "
        f"The default (synthetic faces) reaches NME {SYNTHETIC_NME} on the synthetic val split in about "
        f"{SYNTHETIC_MINUTES} minutes on one CPU core. Run under torchrun for several processes.")
    add_config_arguments(parser, LandmarkConfig)
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    prog = prog or "retinaface train-landmarks"
    args = build_parser(prog).parse_args(argv)
    given = given_options(args, LandmarkConfig)
    try:
        config = task_config_from_options(LandmarkConfig, given, LANDMARK_FORMAT, "landmark")
    except (ValueError, CheckpointError) as exc:
        return fail(prog, str(exc))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        trainer = Trainer(LandmarkTask(config))  # claims the run folder: refused when it holds a run
        trainer.setup()
        task, resolved = trainer.task, trainer.config
        losses = (f"score {resolved.score_loss} + offsets {resolved.loss}, {resolved.neighbours} neighbours"
                  if resolved.heatmap_model else f"{resolved.loss} loss")
        print(f"training {resolved.model} ({losses}, {task.scheme.name}) at {resolved.input_size} px on "
              f"{config.data}: {len(task.train_set)} faces, {len(task.val_samples)} val faces -> {trainer.output}")
        summary = trainer.fit()
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, NonFiniteLossError,
            LandmarkFormatError) as exc:
        return fail(prog, _one_line(exc))
    result = trainer.task.last_evaluation
    if result is not None:
        print(result.table())
    print(f"checkpoints in {summary.output}")
    return 0
