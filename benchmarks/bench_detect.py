#!/usr/bin/env python
"""Cost of the full detect path against the bare forward pass, and batched throughput.

mobilenet0.25 on a 640x480 image, 2 CPU threads. The class-head bias is shifted so that about
300 priors score above 0.02, as with a trained model (untrained weights put thousands there).
Prints both times and their ratio (the target is at most 1.10), then images/s for batch 1 vs 8.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from retinaface import Detector, create_model  # noqa: E402
from retinaface.profiling import calibrate_score_bias, median_latency  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="mobilenet0.25")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    model = create_model(args.backbone).eval()
    calibrate_score_bias(model, image, args.candidates)
    detector = Detector(model, channels_last=args.channels_last)
    batch = detector.to_batch([image])
    candidates = int((detector.forward(batch)[1][0, :, 1] > 0.02).sum())

    forward = median_latency(lambda: detector.forward(batch), repeats=args.repeats)
    detect = median_latency(lambda: detector.detect(image), repeats=args.repeats)
    print(f"{args.backbone} 640x480, {args.threads} threads, {candidates} candidates above 0.02")
    print(f"forward only : {forward * 1e3:7.2f} ms")
    print(f"full detect  : {detect * 1e3:7.2f} ms")
    print(f"ratio        : {detect / forward:7.3f}  (target <= 1.10)")

    images = [image] * 8
    one = median_latency(lambda: [detector.detect(img) for img in images], repeats=max(3, args.repeats // 5))
    batched = median_latency(lambda: detector.detect_batch(images, batch_size=8), repeats=max(3, args.repeats // 5))
    print(f"one by one   : {8 / one:7.2f} images/s")
    print(f"batch of 8   : {8 / batched:7.2f} images/s  (x{one / batched:.2f})")


if __name__ == "__main__":
    main()
