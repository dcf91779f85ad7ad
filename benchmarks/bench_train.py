"""Training throughput: images/s and the share of step time spent waiting for data, per backbone,
plus batched prior matching against the per-image loop and the up-front data check (header size +
1/8-size JPEG decode) against decoding every image in full, all measured in this run.

    python benchmarks/bench_train.py [--data data/synthetic] [--steps 6] [--workers 2] [--device cpu]
        [--configs mobilenet0.25:640:8 resnet50:840:2]

Each config is ``backbone:image_size:batch``; the defaults are the reference recipe's backbones at
their training sizes (the batch is kept small enough for a CPU; raise it on a GPU). Every config
trains two short epochs on the synthetic set (generated under data/synthetic if missing); the
second is reported, so DataLoader start-up is not counted.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # retinaface/ and tests/

from bench_matching import make_targets, timed  # noqa: E402

from retinaface.engine.trainer import TrainConfig, Trainer  # noqa: E402
from retinaface.engine.matching import match_priors  # noqa: E402
from retinaface.priors import generate_priors  # noqa: E402
from tests.matching_reference import match_reference  # noqa: E402


def measure_training(data: str, backbone: str, image_size: int, batch: int, steps: int, workers: int,
                     device: str, amp: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(data=data, backbone=backbone, image_size=image_size, batch_size=batch, epochs=2,
                             max_steps_per_epoch=steps, workers=workers, device=device, amp=amp,
                             optimizer="sgd", lr=1e-3, schedule="cosine", warmup_epochs=0, eval_every=0,
                             save_every=0, progress=False, output=out)
        summary = Trainer(config).fit()
    return summary.history[-1]


def measure_data_check(data: str) -> None:
    """Seconds per image of the trainer's up-front check against a full decode of every image."""
    import time

    import cv2

    from retinaface.data.labels import (check_images, detect_label_format, read_retinaface_labels,
                                        read_wider_bbx_labels)
    from retinaface.engine.builders import SYNTHETIC_ROOT

    root = SYNTHETIC_ROOT if data == "synthetic" else Path(data)
    fmt, label_file, image_root = detect_label_format(root)
    reader = read_retinaface_labels if fmt == "retinaface" else read_wider_bbx_labels
    annotations, _ = reader(label_file, image_root)
    start = time.perf_counter()
    for a in annotations:
        cv2.imread(a.path, cv2.IMREAD_COLOR)
    full = time.perf_counter() - start
    start = time.perf_counter()
    check_images(annotations, decode=True, check_boxes=True)
    check = time.perf_counter() - start
    n = len(annotations)
    print(f"\nup-front data check, {n} images: {check / n * 1e3:.2f} ms/image (threads), full decode "
          f"{full / n * 1e3:.2f} ms/image (one thread); ratio check/full {check / full:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic", help="data root, or 'synthetic' (default)")
    parser.add_argument("--configs", nargs="+", default=["mobilenet0.25:640:8", "resnet50:840:2"])
    parser.add_argument("--steps", type=int, default=6, help="steps per measured epoch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--match-batch", type=int, default=32)
    args = parser.parse_args()

    print(f"device {args.device}, torch threads {torch.get_num_threads()}, workers {args.workers}")
    print("| backbone | size | batch | images/s | data wait share | step time (s) |")
    print("|---|---|---|---|---|---|")
    for spec in args.configs:
        backbone, size, batch = spec.split(":")
        row = measure_training(args.data, backbone, int(size), int(batch), args.steps, args.workers,
                               args.device, args.amp)
        step_s = row["seconds"] / args.steps
        print(f"| {backbone} | {size} | {batch} | {row['images_per_s']:.2f} | "
              f"{row['data_wait_share']:.1%} | {step_s:.3f} |", flush=True)

    device = torch.device(args.device)
    priors = generate_priors(640, 640, device=device)
    targets = [t.to(device) for t in make_targets(args.match_batch, 640, 1, 50)]
    t_batched = timed(lambda: match_priors(targets, priors), 5, device)
    t_loop = timed(lambda: match_reference(targets, priors), 5, device)
    print(f"\nprior matching, batch {args.match_batch} at 640: batched {t_batched * 1e3:.1f} ms, "
          f"per-image loop {t_loop * 1e3:.1f} ms, ratio loop/batched {t_loop / t_batched:.2f}x")
    measure_data_check(args.data)


if __name__ == "__main__":
    main()
