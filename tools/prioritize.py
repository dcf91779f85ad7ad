#!/usr/bin/env python
"""Channel-prioritised adaptive RetinaFace: pre-train with penalties, prune, fine-tune over widths.

Stage 1 trains with the batch-norm scales initialised to 1 - (k-1)/N and the sparsity
(lambda_s * sum|gamma|) and monotonicity (lambda_m * sum max(0, gamma_{k+1} - gamma_k)) penalties;
stage 2 removes every channel with |gamma| below the threshold (a physically smaller network);
stage 3 fine-tunes it with batch norms frozen and the loss summed over the widths. The result,
OUTPUT/adaptive.pth, runs at any width:
  python tools/detect.py --weights OUTPUT/adaptive.pth --width 0.5 photo.jpg

Examples:
  python tools/prioritize.py --data synthetic --output runs/prioritize
  python tools/prioritize.py --data data/widerface --pretrain-epochs 250 --finetune-epochs 50 --batch-size 32
Flags left unset take the trainer's recipe for the data (see tools/train.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retinaface.adaptive.pipeline import PrioritizeConfig, run_prioritization  # noqa: E402
from retinaface.adaptive.prioritize import DEFAULT_LAMBDA_M, DEFAULT_LAMBDA_S  # noqa: E402
from retinaface.adaptive.prune import DEFAULT_THRESHOLD  # noqa: E402
from retinaface.engine.optim import OPTIMIZERS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic", help="data root (WIDER layout) or 'synthetic' (default)")
    p.add_argument("--backbone", default="mobilenet0.25")
    p.add_argument("--output", default="runs/prioritize")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="stage 1 epochs (default: the recipe's)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="stage 3 epochs (default: the recipe's)")
    p.add_argument("--lambda-s", type=float, default=DEFAULT_LAMBDA_S,
                   help="sparsity penalty (default %(default)g)")
    p.add_argument("--lambda-m", type=float, default=DEFAULT_LAMBDA_M,
                   help="monotonicity penalty (default %(default)g)")
    p.add_argument("--no-init-gamma", action="store_true", help="keep the default gamma = 1 initialisation")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="prune channels with |gamma| below this (default %(default)g)")
    p.add_argument("--min-channels", type=int, default=1, help="channels every layer keeps at least")
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.75, 0.5], help="utilisation levels")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="stage 3 learning rate (default: a tenth of stage 1's)")
    p.add_argument("--finetune-grad-clip", type=float, default=10.0,
                   help="stage 3 gradient-norm clip, 0 for none (default %(default)g)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cut epochs short (smoke tests)")
    p.add_argument("--no-eval", action="store_true", help="skip the AP per width at the end")
    p.add_argument("--flops-size", type=int, default=640, help="square input size for GFLOPs")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if any(not 0 < w <= 1 for w in args.widths):
        print("error: --widths must be in (0, 1]", file=sys.stderr)
        return 2
    if args.min_channels < 1:  # checked here, not after the pre-training
        print("error: --min-channels must be at least 1", file=sys.stderr)
        return 2
    cfg = PrioritizeConfig(data=args.data, backbone=args.backbone, output=args.output,
                           pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs,
                           lambda_s=args.lambda_s, lambda_m=args.lambda_m, init_gamma=not args.no_init_gamma,
                           threshold=args.threshold, min_channels=args.min_channels, widths=tuple(args.widths),
                           optimizer=args.optimizer, lr=args.lr, finetune_lr=args.finetune_lr,
                           finetune_grad_clip=args.finetune_grad_clip or None,
                           batch_size=args.batch_size, image_size=args.image_size, workers=args.workers,
                           device=args.device, seed=args.seed, max_steps_per_epoch=args.max_steps_per_epoch,
                           evaluate=not args.no_eval, flops_size=args.flops_size, progress=not args.no_progress)
    try:
        summary = run_prioritization(cfg)
    except (ValueError, FileNotFoundError, FileExistsError, OSError, RuntimeError) as exc:
        # RuntimeError: no CUDA for --device cuda, an unknown timm backbone, a non-finite loss
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"adaptive checkpoint: {summary.checkpoint} (load_model(path, width=p) or --width p)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
