#!/usr/bin/env python
"""Cost of the full detect path against the bare forward pass, memory layouts, and batching.

mobilenet0.25 on a 640x480 image, 2 CPU threads. The class-head bias is shifted so that about
300 priors score above 0.02, as with a trained model (untrained weights put thousands there).
Prints, each pair timed in alternation so machine load affects both alike:
  1. forward vs full detect (the target: detect costs at most 10 % more), in the Detector's
     default layout;
  2. forward latency in the contiguous (NCHW) and channels-last (NHWC) layouts;
  3. images/s of detect_batch at batch 1, 2, 4 and 8 against one image at a time.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from retinaface.build import create_model
from retinaface.detector import Detector
from retinaface.profiling import calibrate_score_bias, paired_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mobilenet0.25")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    model = create_model(args.backbone).eval()
    calibrate_score_bias(model, image, args.candidates)
    contiguous = Detector(copy.deepcopy(model), channels_last=False)
    detector = Detector(model)  # the default layout for this device
    batch = detector.transform([image])[0]
    candidates = int((detector.forward(batch)[1][0, :, 1] > 0.02).sum())

    forward, detect = paired_latency([lambda: detector.forward(batch), lambda: detector.detect(image)],
                                     repeats=args.repeats)
    layout = "channels-last" if detector.channels_last else "contiguous"
    print(f"{args.backbone} 640x480, {args.threads} threads, {candidates} candidates above 0.02, "
          f"default layout {layout}")
    print(f"forward only      : {forward * 1e3:7.2f} ms")
    print(f"full detect       : {detect * 1e3:7.2f} ms")
    print(f"ratio             : {detect / forward:7.3f}  (target <= 1.10)")

    nchw_batch = contiguous.transform([image])[0]
    nhwc_detector = detector if detector.channels_last else Detector(copy.deepcopy(model), channels_last=True)
    nhwc_batch = nhwc_detector.transform([image])[0]
    nchw, nhwc = paired_latency([lambda: contiguous.forward(nchw_batch), lambda: nhwc_detector.forward(nhwc_batch)],
                                repeats=args.repeats)
    print(f"forward NCHW      : {nchw * 1e3:7.2f} ms")
    print(f"forward NHWC      : {nhwc * 1e3:7.2f} ms  (x{nchw / nhwc:.2f})")

    n = max(args.batches)
    images = [image] * n
    runs = [lambda: [detector.detect(img) for img in images]]
    runs += [lambda b=b: detector.detect_batch(images, batch_size=b) for b in args.batches]
    times = paired_latency(runs, repeats=max(3, args.repeats // 5))
    print(f"one at a time     : {n / times[0]:7.2f} images/s")
    for b, t in zip(args.batches, times[1:]):
        print(f"batch of {b:<2}       : {n / t:7.2f} images/s  (x{times[0] / t:.2f})")


if __name__ == "__main__":
    main()
