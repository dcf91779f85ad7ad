"""``retinaface prioritize``: channel-prioritised adaptive RetinaFace -- pre-train with penalties,
prune, fine-tune over widths.

Stage 1 trains with the batch-norm scales initialised to 1 - (k-1)/N and the sparsity
(lambda_s * sum|gamma|) and monotonicity (lambda_m * sum max(0, gamma_{k+1} - gamma_k)) penalties;
stage 2 removes every channel with |gamma| below the threshold (a physically smaller network);
stage 3 fine-tunes it with batch norms frozen and the loss summed over the widths. The result,
OUTPUT/adaptive.pth, runs at any width (``retinaface detect --weights OUTPUT/adaptive.pth --width 0.5``).

The flags are generated from :class:`retinaface.engine.prioritize.PrioritizeConfig` and the
training options of :class:`retinaface.engine.config.TrainConfig` it holds, the same as
``retinaface train``'s.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from ..checkpoint import CheckpointError
from ..engine.config import TrainConfig, add_config_arguments, given_options
from ..engine.prioritize import PrioritizeConfig, STAGE_OWNED, run_prioritization
from ..engine.trainer import NonFiniteLossError
from ..landmarks.config import LandmarkConfig
from ..landmarks.formats import LandmarkFormatError
from ..landmarks.prioritize import STAGE_OWNED as LANDMARK_STAGE_OWNED
from ..landmarks.prioritize import LandmarkPrioritizeConfig, run_landmark_prioritization
from ..recognition.prioritize import RecognitionPrioritizeConfig, run_recognition_prioritization
from ..recognition.config import RecognitionConfig
from .common import (ArgumentParser, fail, non_negative_float, number_in_range, positive_float,
                     positive_int)
from .train import one_line

EXAMPLES = """examples:
  retinaface prioritize --data synthetic --output runs/prioritize
  retinaface prioritize --data data/widerface --pretrain-epochs 250 --finetune-epochs 50 --batch-size 32
  retinaface prioritize --task recognition --quick      # the embedding network (retinaface prioritize --task recognition --help)
  retinaface prioritize --task landmarks --model pfld   # a landmark network on the synthetic faces (--task landmarks --help)
"""

TASKS = ("detection", "recognition", "landmarks")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Channel-prioritised RetinaFace: one checkpoint that runs at widths 1.0 / 0.75 / 0.5. "
                    "Training flags left unset take the trainer's recipe for the data.")
    parser.add_argument("--task", choices=TASKS, default="detection",
                        help="what to prioritise: the detector (default) or the embedding network "
                             "(--task recognition --help lists its flags)")
    add_config_arguments(parser, PrioritizeConfig, group_title="prioritisation")
    add_config_arguments(parser, TrainConfig, exclude=STAGE_OWNED, group_title="training (both stages)")
    return parser


def build_recognition_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """Flags of ``--task recognition``: the experiment's own settings, then every
    :class:`~retinaface.recognition.training.RecognitionConfig` option for both stages."""
    parser = ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Channel-prioritised embedding network: one checkpoint at widths 1.0 / 0.75 / 0.5, with "
                    "verification accuracy, multiply-adds and parameters per width next to independently "
                    "trained full-width models of the same sizes.")
    parser.add_argument("--task", choices=TASKS, default="detection", help="what to prioritise")
    own = parser.add_argument_group("prioritisation")
    own.add_argument("--quick", action="store_true",
                     help="small settings that run in a few minutes on 2 CPU cores (mechanics, not the report's accuracies)")
    own.add_argument("--output", default=None, help="experiment folder (default: runs/prioritize_recognition)")
    own.add_argument("--pretrain-epochs", type=positive_int, default=None)
    own.add_argument("--finetune-epochs", type=positive_int, default=None)
    own.add_argument("--lambda-s", type=non_negative_float, default=None, help="sparsity penalty weight")
    own.add_argument("--lambda-m", type=non_negative_float, default=None, help="monotonicity penalty weight")
    own.add_argument("--threshold", type=non_negative_float, default=None, help="prune |gamma| below this")
    own.add_argument("--widths", type=number_in_range(float, 0.0, 1.0, low_open=True), nargs="+", default=None)
    own.add_argument("--finetune-lr", type=positive_float, default=None)
    own.add_argument("--no-baselines", action="store_true", help="skip the independently trained full-width models")
    add_config_arguments(parser, RecognitionConfig, exclude={"output", "epochs", "resume", "overwrite"},
                         group_title="training (both stages)")
    return parser


def main_recognition(argv: List[str], prog: str) -> int:
    """``retinaface prioritize --task recognition``: runs
    :func:`retinaface.recognition.prioritize.run_recognition_prioritization`."""
    try:
        args = build_recognition_parser(prog).parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2), already printed
        return int(exit_.code or 0)
    train = given_options(args, RecognitionConfig)
    own = {k: v for k, v in dict(output=args.output, pretrain_epochs=args.pretrain_epochs,
                                 finetune_epochs=args.finetune_epochs, lambda_s=args.lambda_s,
                                 lambda_m=args.lambda_m, threshold=args.threshold,
                                 widths=tuple(args.widths) if args.widths else None,
                                 finetune_lr=args.finetune_lr).items() if v is not None}
    if args.no_baselines:
        own["baselines"] = False
    try:
        config = (RecognitionPrioritizeConfig.quick(train=train, **own) if args.quick
                  else RecognitionPrioritizeConfig(train=train, **own))
        result = run_recognition_prioritization(config, progress=False)
    except (ValueError, OSError, RuntimeError) as exc:
        return fail(prog, one_line(exc))
    print(f"adaptive embedder: {result.checkpoint}")
    return 0


def build_landmarks_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """Flags of ``--task landmarks``: :class:`~retinaface.landmarks.prioritize.LandmarkPrioritizeConfig`'s,
    then every :class:`~retinaface.landmarks.config.LandmarkConfig` option for both stages."""
    parser = ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Channel-prioritised landmark network: one checkpoint (OUTPUT/adaptive.pth) at widths "
                    "1.0 / 0.75 / 0.5, with NME, parameters and FLOPs per width on the val faces next to the "
                    "same network trained plainly for as many epochs (eval-landmarks --weights "
                    "OUTPUT/adaptive.pth --width 0.5 runs one width).")
    parser.add_argument("--task", choices=TASKS, default="detection", help="what to prioritise")
    add_config_arguments(parser, LandmarkPrioritizeConfig, group_title="prioritisation")
    add_config_arguments(parser, LandmarkConfig, exclude=LANDMARK_STAGE_OWNED, group_title="training (both stages)")
    return parser


def main_landmarks(argv: List[str], prog: str) -> int:
    """``retinaface prioritize --task landmarks``: runs
    :func:`retinaface.landmarks.prioritize.run_landmark_prioritization`."""
    try:
        args = build_landmarks_parser(prog).parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2), already printed
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    own = given_options(args, LandmarkPrioritizeConfig)
    # --output / --overwrite are the experiment's (the two configs share the names), the rest per stage
    train = {k: v for k, v in given_options(args, LandmarkConfig).items() if k not in LANDMARK_STAGE_OWNED}
    try:
        result = run_landmark_prioritization(LandmarkPrioritizeConfig(train=train, **own))
    except (ValueError, OSError, CheckpointError, NonFiniteLossError, LandmarkFormatError) as exc:
        return fail(prog, one_line(exc))
    except RuntimeError as exc:  # no CUDA for --device cuda, an unknown timm network
        return fail(prog, one_line(exc))
    print(f"adaptive landmark checkpoint: {result.checkpoint} (eval-landmarks --weights ... --width p, "
          f"load_landmark_model(path, width=p))")
    return 0


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    prog = prog or "retinaface prioritize"
    argv = list(sys.argv[1:] if argv is None else argv)
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task", choices=TASKS, default="detection")
    known, _ = task.parse_known_args(argv)
    if known.task == "recognition":
        return main_recognition(argv, prog)
    if known.task == "landmarks":
        return main_landmarks(argv, prog)
    argv = [a for i, a in enumerate(argv) if a != "--task" and not (i and argv[i - 1] == "--task")
            and not a.startswith("--task=")]
    return main_detection(argv, prog)


def main_detection(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    prog = prog or "retinaface prioritize"
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    own = given_options(args, PrioritizeConfig)
    train = given_options(args, TrainConfig)
    train.pop("output", None)  # the prioritisation's --output, not a stage's
    try:
        cfg = PrioritizeConfig(train=TrainConfig(**train), **own)
        cfg.validate()  # before the (long) pre-training
        summary = run_prioritization(cfg)
    except (ValueError, OSError, CheckpointError, NonFiniteLossError) as exc:
        return fail(prog, one_line(exc))
    except RuntimeError as exc:  # no CUDA for --device cuda, an unknown timm backbone
        return fail(prog, one_line(exc))
    print(f"adaptive checkpoint: {summary.checkpoint} (load_model(path, width=p) or --width p)")
    return 0
