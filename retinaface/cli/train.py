"""``retinaface train``: train RetinaFace on WIDER FACE (or the built-in synthetic set) on a CPU,
one GPU, or many through torchrun.

Every flag is generated from :class:`retinaface.engine.config.TrainConfig` (help text and ranges in
its field metadata). Flags left unset take the reference recipe's values for the backbone; with
``--resume`` they take the resumed run's saved settings, and a flag that contradicts them is
refused unless it is one that may change on resume.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..checkpoint import CheckpointError
from ..engine.config import (CHANGEABLE_ON_RESUME, TRAIN_FIELDS, TrainConfig, add_config_arguments, flag_name,
                             given_options, merge_resume)
from ..engine.report import write_sample_detection
from ..engine.state import saved_train_config
from ..engine.trainer import NonFiniteLossError, Trainer
from .common import ArgumentParser, fail

EXAMPLES = """examples:
  retinaface train --data synthetic                       # minutes on a CPU, prints val AP
  retinaface train --data data/widerface --backbone resnet50 --pretrained
  retinaface train --resume runs/train/last.pth --epochs 300
  torchrun --nproc_per_node=8 -m retinaface train --data data/widerface --backbone res2net101 \\
      --optimizer adaboundw --batch-size 32 --amp --sync-bn
"""


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    resumable = ", ".join(flag_name(TRAIN_FIELDS[k]) for k in CHANGEABLE_ON_RESUME)
    parser = ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a RetinaFace detector (the reference recipe unless told otherwise). Flags left "
                    "unset take the recipe's values for the backbone; with --resume, the resumed run's. "
                    f"Flags that may change on --resume: {resumable}; others must agree with the run.",
        epilog=EXAMPLES)
    add_config_arguments(parser, TrainConfig)
    parser.add_argument("--sample", default=None, help="after training, write this annotated val image "
                        "(default OUTPUT/sample.jpg)")
    return parser


def train_options(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> Dict[str, Any]:
    """The TrainConfig keyword arguments of a command line: the flags given, over the resumed
    run's saved settings with ``--resume``. Raises ``ValueError`` for a flag that contradicts the
    resumed run."""
    args = build_parser(prog).parse_args(argv)
    given = given_options(args, TrainConfig)
    if given.get("resume"):
        return merge_resume(given, saved_train_config(given["resume"]))
    return given


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line. An error raised in a DataLoader worker arrives with the
    worker's traceback in its text: its last line is the original error."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "DataLoader worker" in lines[0] and len(lines) > 1:
        return lines[-1].strip()
    return " ".join(line.strip() for line in lines)


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    prog = prog or "retinaface train"
    args = build_parser(prog).parse_args(argv)  # --help and flag errors end here
    if args.sample and Path(args.sample).exists() and not getattr(args, "overwrite", False):
        return fail(prog, f"--sample {args.sample} exists; choose another path or add --overwrite")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    user_errors = (ValueError, OSError, CheckpointError, NonFiniteLossError)
    try:
        trainer = Trainer(TrainConfig(**train_options(argv, prog)))
    except (TypeError,) + user_errors as exc:
        return fail(prog, one_line(exc))
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        last = trainer.policy.last
        kept = f"; {last} holds epoch {trainer.epoch} (--resume {last} continues)" if last.exists() else ""
        if trainer.dist.is_main:
            print(f"{prog}: interrupted{kept}", file=sys.stderr)
        return 130
    except user_errors as exc:  # bad data found mid-run (an image replaced meanwhile), a full disk, ...
        return fail(prog, one_line(exc))
    except RuntimeError as exc:  # e.g. --device cuda without CUDA, an unknown timm backbone
        return fail(prog, one_line(exc))
    if not trainer.dist.is_main:
        return 0
    if summary.metrics:
        print(f"easy: {summary.metrics['easy']:.4f}  medium: {summary.metrics['medium']:.4f}  "
              f"hard: {summary.metrics['hard']:.4f}  (official protocol)")
    print(f"checkpoints: {summary.last_checkpoint} (last), {summary.best_checkpoint} (best)")

    sample = args.sample or str(trainer.output / "sample.jpg")
    written = write_sample_detection(trainer.raw_model, trainer.data_root, sample)
    if written:
        print(f"annotated sample: {written}")
    return 0
