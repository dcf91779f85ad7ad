#!/usr/bin/env python
"""Train RetinaFace on WIDER FACE (or the built-in synthetic set) on CPU, one GPU, or many via torchrun.

Examples:
  python tools/train.py --data synthetic                       # minutes on a CPU, prints val AP
  python tools/train.py --data data/widerface --backbone resnet50 --pretrained
  torchrun --nproc_per_node=8 tools/train.py --data data/widerface --backbone res2net101 \\
      --optimizer adaboundw --batch-size 32 --amp --sync-bn
Flags left unset take the reference recipe's values for the backbone (with --resume: the checkpoint's).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Set

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retinaface.engine.optim import OPTIMIZERS, SCHEDULES  # noqa: E402
from retinaface.engine.trainer import TrainConfig, Trainer, resume_options  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic", help="data root (either WIDER layout) or 'synthetic' (default)")
    p.add_argument("--backbone", default="mobilenet0.25")
    p.add_argument("--pretrained", action="store_true", help="start from timm ImageNet weights")
    p.add_argument("--backbone-weights", default=None, help="local ImageNet weights for the backbone")
    p.add_argument("--fpn-width", type=int, default=None)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (split over processes)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--schedule", choices=SCHEDULES, default=None)
    p.add_argument("--decay-epochs", type=int, nargs="+", default=None, help="step schedule: epochs of x gamma")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--sam", action="store_true", help="wrap the optimizer in Sharpness-Aware Minimization")
    p.add_argument("--sam-rho", type=float, default=0.05)
    p.add_argument("--sam-adaptive", action="store_true", help="ASAM")
    p.add_argument("--neg-pos-ratio", type=int, default=7)
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: min(4, CPU count))")
    p.add_argument("--output", default="runs/train")
    p.add_argument("--resume", default=None, help="a last.pth/epoch_N.pth to continue from (flags not "
                   "given take the checkpoint's training settings)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 or fp16 with a loss scaler)")
    p.add_argument("--amp-dtype", choices=("auto", "bf16", "fp16"), default="auto")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC input batches: ~25%% faster steps on CPU, slightly less precise gradients there")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-bad", action="store_true", help="skip missing/unreadable images instead of stopping")
    p.add_argument("--eval-every", type=int, default=None,
                   help="WIDER AP on the val split every K epochs (default: at the end for synthetic data)")
    p.add_argument("--gt", default=None, help="val ground-truth .mat folder (default DATA/val/ground_truth)")
    p.add_argument("--save-every", type=int, default=10,
                   help="epoch_NNN.pth every N epochs, every N//2 after the first step decay (0: none)")
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cut epochs short (smoke tests)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--sample", default=None, help="after training, write this annotated val image")
    return p


def given_flags(argv=None) -> Set[str]:
    """The option names given on the command line (as opposed to left at their defaults)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def train_options(argv=None) -> Dict[str, Any]:
    """The TrainConfig keyword arguments for a command line. With --resume, the flags not given
    take the checkpoint's saved training settings (data, backbone, optimizer, SAM, schedule, output,
    ...), so that ``--resume runs/x/last.pth`` alone continues that run."""
    args = build_parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("no_progress", "sample")}
    options["progress"] = not args.no_progress
    options = resume_options(options, given_flags(argv))
    if options["decay_epochs"] is not None:
        options["decay_epochs"] = tuple(options["decay_epochs"])
    return options


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        trainer = Trainer(TrainConfig(**train_options(argv)))
        summary = trainer.fit()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not trainer.dist.is_main:
        return 0
    if summary.metrics:
        print(f"easy: {summary.metrics['easy']:.4f}  medium: {summary.metrics['medium']:.4f}  "
              f"hard: {summary.metrics['hard']:.4f}")
    print(f"checkpoints: {summary.last_checkpoint} (last), {summary.best_checkpoint} (best)")
    sample = args.sample or str(trainer.output / "sample.jpg")
    from retinaface.engine.report import write_sample_detection

    written = write_sample_detection(trainer.raw_model, trainer.data_root, sample)
    if written:
        print(f"annotated sample: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
