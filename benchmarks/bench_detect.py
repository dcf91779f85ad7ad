#!/usr/bin/env python
"""Cost of the full detect path against the bare forward pass, memory layouts, and batching.

mobilenet0.25 on a 640x480 image, 2 CPU threads. The class heads are recalibrated so that about
300 priors score above 0.02, with a trained model's spread of scores (untrained weights put
thousands there; profiling.calibrate_score_bias).
Prints, each pair timed in alternation so machine load affects both alike:
  1. forward vs full detect (the target: detect costs at most 10 % more), in the Detector's
     default layout;
  2. forward latency in the contiguous (NCHW) and channels-last (NHWC) layouts;
  3. images/s of detect_batch at batch 1, 2, 4 and 8 against one image at a time;
  4. with ``--runtimes``, the detect path on each runtime stage by stage (docs/edge.md's figures):
     transform, forward, post-processing warm (alone) and cold (right after a forward pass, as in
     detect), detect, the network call and the rest timed inside the same detect calls (the
     steadiest overhead figure: no drift between two separate medians), and detect through the
     float batch written over each call (the default except on OpenVINO, which takes the uint8
     image) vs a fresh batch each call.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from retinaface.build import create_model
from retinaface.inference.detector import Detector
from retinaface.inference.profiling import calibrate_score_bias, paired_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mobilenet0.25")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--runtimes", nargs="*", default=[], choices=["pytorch", "onnxruntime", "openvino"],
                        help="also split the detect path into stages on these runtimes (1 torch thread)")
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
    if args.runtimes:
        stages(model, image, args.runtimes, args.threads, max(args.repeats, 40))


def stages(model, image: np.ndarray, runtimes, threads: int, repeats: int) -> None:
    """Median ms of each stage of ``Detector.detect`` on each runtime, torch on one thread."""
    import statistics
    import tempfile
    import time
    from pathlib import Path

    from retinaface.deploy.export import export_onnx
    from retinaface.deploy.runtime import load_runtime

    def median_ms(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    torch.set_num_threads(1)  # as `retinaface detect` does on external runtimes
    print(f"\n| runtime ({threads} runtime threads) | transform | forward | post warm / after forward | "
          f"detect | inside detect: network / the rest | detect via float batch: reused / fresh |"
          f"\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        path = Path(tmp) / "m.onnx"
        export_onnx(model, path, dynamic=True)
        for runtime in runtimes:
            net = model if runtime == "pytorch" else load_runtime(path, runtime, threads=threads)
            det = Detector(net)
            batch = det.transform([image])[0]
            transform = median_ms(lambda: det.transform([image], out=batch))
            forward = median_ms(lambda: det.forward(batch))
            loc, conf, landms = det.forward(batch)
            priors = det.priors(batch.shape[-2], batch.shape[-1], det.device, loc.dtype)

            def post():
                return det.postprocess(loc[0], conf[0], landms[0], priors, batch.shape[-2:], 1.0)
            warm = median_ms(post)
            cold = median_ms(lambda: (det.forward(batch), post())) - forward
            detect = median_ms(lambda: det.detect(image))
            via_float = Detector(net)
            via_float._takes_uint8 = False  # the float batch even where the model takes uint8
            reused = median_ms(lambda: via_float.detect(image))
            fresh = median_ms(lambda: (setattr(via_float._batches, "last", None), via_float.detect(image)))
            inside, outside = split_inside_detect(det, image, repeats)
            if runtime == runtimes[0]:
                probe = {what: post_after(post, before, repeats) for what, before in (
                    ("nothing", lambda: None), ("5 ms asleep", lambda: time.sleep(0.005)),
                    ("a 5 ms Python loop", _python_loop_5ms), ("the forward", lambda: det.forward(batch)))}
            print(f"| {runtime} | {transform:.2f} | {forward:.2f} | {warm:.2f} / {cold:.2f} | "
                  f"{detect:.2f} (+{detect / forward - 1:.0%}) | {inside:.2f} / {outside:.2f} "
                  f"(+{outside / inside:.0%}) | {reused:.2f} / {fresh:.2f} |")
    print(f"\npost-processing ({runtimes[0]}'s outputs) timed right after: "
          + ", ".join(f"{what} {ms:.2f} ms" for what, ms in probe.items()))


def _python_loop_5ms() -> None:
    import time

    end = time.perf_counter() + 0.005
    while time.perf_counter() < end:
        pass


def post_after(post, before, repeats: int) -> float:
    """Median ms of ``post()`` timed right after ``before()``: what the post-processing costs once
    the core has done something else (here 0.2 ms of work takes 2-4x as long after anything of a
    few milliseconds, even sleeping, not only after the network's forward pass)."""
    import statistics
    import time

    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        post()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


class _TimedNetwork:
    """Stands in for a Detector's model and records how long each network call takes."""

    def __init__(self, net) -> None:
        self.net, self.spans = net, []

    def __getattr__(self, name):
        return getattr(self.net, name)

    def _timed(self, fn, *args):
        import time

        start = time.perf_counter()
        out = fn(*args)
        self.spans.append(time.perf_counter() - start)
        return out

    def __call__(self, batch):
        return self._timed(self.net, batch)

    def forward_uint8(self, pixels, mean):
        return self._timed(self.net.forward_uint8, pixels, mean)


def split_inside_detect(det: Detector, image: np.ndarray, repeats: int):
    """Median ms of the network call inside ``det.detect(image)`` and of everything else in the
    same call (pre-processing, the runtime wrapper's copies, post-processing): the overhead
    measured call by call, free of the run-to-run drift of two separate medians."""
    import statistics
    import time

    timed = _TimedNetwork(det.model)
    det.model = timed
    try:
        for _ in range(3):
            det.detect(image)
        network, rest = [], []
        for _ in range(repeats):
            timed.spans.clear()
            start = time.perf_counter()
            det.detect(image)
            total = time.perf_counter() - start
            network.append(timed.spans[0])
            rest.append(total - timed.spans[0])
    finally:
        det.model = timed.net
    return statistics.median(network) * 1e3, statistics.median(rest) * 1e3


if __name__ == "__main__":
    main()
