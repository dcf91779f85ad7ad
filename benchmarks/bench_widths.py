#!/usr/bin/env python
"""The README's light-model table: mobilenet0.25, mobilenetv3_small, mobiface and the
channel-prioritised mobilenet0.25 at widths 1.0/0.75/0.5, trained on the synthetic data.

For each row: parameters, GFLOPs at 640x640, CPU forward latency at 640x640 (median, --threads
threads) and WIDER AP (easy/medium/hard) on the synthetic val split. Every model gets the same
training recipe (``--epochs`` at ``--image-size``); the prioritised model pre-trains for as many
epochs with the penalties, is pruned at |gamma| < 0.1 and fine-tuned ``--finetune-epochs`` over the
three widths. Runs live under ``--output``; finished ones are reused (delete a folder to redo it).

  python benchmarks/bench_widths.py                 # writes runs/bench_widths/results.md
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from retinaface import load_model  # noqa: E402
from retinaface.checkpoint import read_checkpoint  # noqa: E402
from retinaface.engine.prioritize import PrioritizeConfig, run_prioritization  # noqa: E402
from retinaface.adaptive.slim import active_parameters  # noqa: E402
from retinaface.engine.builders import SYNTHETIC_ROOT  # noqa: E402
from retinaface.engine.trainer import TrainConfig, Trainer  # noqa: E402
from retinaface.inference.profiling import count_flops, median_latency  # noqa: E402

BASELINES = ("mobilenet0.25", "mobilenetv3_small", "mobiface")


def measure(model, name: str, data_root: Path, size: int, repeats: int) -> dict:
    from retinaface.evaluation.predict import evaluate_model

    model = model.cpu().eval()
    ap = evaluate_model(model, data_root, progress=False).as_dict()
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        latency = median_latency(lambda: model(x), "cpu", warmup=5, repeats=repeats)
    row = {"model": name, "params": active_parameters(model), "gflops": count_flops(model, size, size) / 1e9,
           "latency_ms": latency * 1e3, **{f"ap_{k}": v for k, v in ap.items()}}
    print(f"measured {name}: {json.dumps(row)}", file=sys.stderr)
    return row


def table(rows, size: int, threads: int) -> str:
    head = ["model", "params (M)", f"GFLOPs @{size}x{size}", f"CPU latency (ms, {threads} threads)",
            "AP easy", "AP medium", "AP hard"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.3f} | {r['gflops']:.2f} | {r['latency_ms']:.1f} | "
                     f"{r['ap_easy']:.3f} | {r['ap_medium']:.3f} | {r['ap_hard']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic", help="'synthetic' (default) or a WIDER-layout root")
    p.add_argument("--output", default="runs/bench_widths")
    p.add_argument("--epochs", type=int, default=12, help="training (and pre-training) epochs")
    p.add_argument("--finetune-epochs", type=int, default=6, help="multi-width fine-tuning epochs")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=640, help="square input for GFLOPs and latency")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--models", nargs="+", default=list(BASELINES) + ["prioritized"],
                   help="subset of: %(default)s")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data_root = SYNTHETIC_ROOT if args.data == "synthetic" else Path(args.data)
    common = dict(data=args.data, image_size=args.image_size, batch_size=args.batch_size, workers=args.workers,
                  device="cpu", progress=False)
    # train everything first, then measure (a finished run is reused, so re-running only measures)
    checkpoints = {}
    for name in args.models:
        start = time.perf_counter()
        if name == "prioritized":
            checkpoint = out / "prioritized" / "adaptive.pth"
            if not checkpoint.exists():
                run_prioritization(PrioritizeConfig.from_options(
                    backbone="mobilenet0.25", output=str(out / "prioritized"), pretrain_epochs=args.epochs,
                    finetune_epochs=args.finetune_epochs, evaluate=False, overwrite=True, **common))
        else:
            checkpoint = out / name / "last.pth"
            done = read_checkpoint(checkpoint).get("epoch", 0) if checkpoint.exists() else 0
            if done < args.epochs:  # train, or continue an interrupted run
                Trainer(TrainConfig(backbone=name, epochs=args.epochs, output=str(out / name), eval_every=0,
                                    save_every=0, resume=str(checkpoint) if done else None, **common)).fit()
        checkpoints[name] = checkpoint
        print(f"{name}: trained in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    rows = []
    for name, checkpoint in checkpoints.items():
        if name == "prioritized":
            for width in (1.0, 0.75, 0.5):
                rows.append(measure(load_model(checkpoint, width=width), f"prioritised mobilenet0.25 @{width:g}",
                                    data_root, args.size, args.repeats))
        else:
            rows.append(measure(load_model(checkpoint), name, data_root, args.size, args.repeats))
    text = table(rows, args.size, args.threads)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
