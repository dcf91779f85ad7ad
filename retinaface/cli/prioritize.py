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
from typing import List, Optional

from .common import ArgumentParser, fail

EXAMPLES = """examples:
  retinaface prioritize --data synthetic --output runs/prioritize
  retinaface prioritize --data data/widerface --pretrain-epochs 250 --finetune-epochs 50 --batch-size 32
"""


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    from ..engine.config import TrainConfig, add_config_arguments
    from ..engine.prioritize import STAGE_OWNED, PrioritizeConfig

    parser = ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Channel-prioritised RetinaFace: one checkpoint that runs at widths 1.0 / 0.75 / 0.5. "
                    "Training flags left unset take the trainer's recipe for the data.")
    add_config_arguments(parser, PrioritizeConfig, group_title="prioritisation")
    add_config_arguments(parser, TrainConfig, exclude=STAGE_OWNED, group_title="training (both stages)")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    from ..checkpoint import CheckpointError
    from ..engine.config import TrainConfig, given_options
    from ..engine.prioritize import PrioritizeConfig, run_prioritization
    from ..engine.trainer import NonFiniteLossError
    from .train import one_line

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
