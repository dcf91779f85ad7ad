"""``retinaface train-recognition``: train a face-embedding network (MobiFace + ArcFace on the
built-in synthetic identities by default) and print its verification accuracy."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from ..checkpoint import CheckpointError
from ..engine.config import add_config_arguments, given_options
from ..engine.task import task_config_from_options
from ..engine.trainer import NonFiniteLossError
from ..recognition.checkpoint import EMBEDDER_FORMAT
from ..recognition.config import RecognitionConfig
from ..recognition.training import RecognitionTrainer
from .common import fail


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line: an error raised in a DataLoader worker arrives wrapped
    in the worker's traceback, whose last line is ``module.ErrorClass: message``."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and head.replace(".", "").replace("_", "").isalnum() else last


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Train a face-embedding network with a margin loss (ArcFace / CosFace / "
        "softmax + center loss); verification accuracy on held-out pairs every --eval-every epochs. "
        "Run under torchrun for several processes.")
    add_config_arguments(parser, RecognitionConfig)
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    prog = prog or "retinaface train-recognition"
    args = build_parser(prog).parse_args(argv)
    given = given_options(args, RecognitionConfig)
    try:
        config = task_config_from_options(RecognitionConfig, given, EMBEDDER_FORMAT, "recognition")
    except (ValueError, CheckpointError) as exc:
        return fail(prog, str(exc))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        trainer = RecognitionTrainer(config)  # claims the run folder: refused when it holds a run
        trainer.setup()
        print(f"training {config.network} ({config.loss}) on {config.data}: {len(trainer.train_set)} crops of "
              f"{trainer.num_classes} identities -> {trainer.output}")
        summary = trainer.fit()
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, NonFiniteLossError) as exc:
        return fail(prog, _one_line(exc))
    result = getattr(trainer, "last_verification", None)
    if result is not None:
        print(result.summary())
    print(f"checkpoints in {summary.output}")
    return 0
