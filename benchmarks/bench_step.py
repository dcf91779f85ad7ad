"""Where a training step's time goes, and training images/s against a straightforward loop over
the same recipe, measured side by side in one run.

    python benchmarks/bench_step.py [--backbone mobilenet0.25] [--batch 32] [--size 640] [--steps 3]
                                    [--threads 2] [--device cpu] [--skip-compare]

Data: synthetic WIDER-like JPEGs (1024 x 768, ~12 faces, benchmarks/bench_data.py), augmented in
this process each step (no DataLoader workers, so "data" is the per-step CPU cost of producing a
batch on one process). The split table times, per step, data / forward / matching / loss / backward
/ optimizer (SGD, momentum 0.9, weight decay 5e-4), each synchronised on a GPU.

The comparison runs, step by step in alternation from the same initial weights:

* straightforward: benchmarks/recipe_reference.py augmentation, per-image matching and the loss as
  written in tests/matching_reference.py, NCHW;
* library, NCHW: retinaface.data.augment + batched matching + retinaface.engine.loss.MultiBoxLoss, NCHW
  (the trainer's ``--no-channels-last``);
* library, channels_last: the same with NHWC batches and, on CPU, ChannelsLastBatchNorm2d: the
  trainer's CPU default.

The split table is of the trainer's default layout on the device (channels-last on CPU).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/matching_reference.py

import bench_data  # noqa: E402
import recipe_reference  # noqa: E402
from retinaface import create_model  # noqa: E402
from retinaface.data.augment import TrainTransform  # noqa: E402
from retinaface.engine.loss import MultiBoxLoss  # noqa: E402
from retinaface.engine.builders import to_channels_last  # noqa: E402
from retinaface.priors import generate_priors  # noqa: E402
from tests.matching_reference import multibox_loss_reference  # noqa: E402


class Clock:
    """Adds the wall time of named phases, synchronising the device at each boundary."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: Dict[str, float] = {}
        self._t = 0.0

    def start(self) -> None:
        self._sync()
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.totals[name] = self.totals.get(name, 0.0) + now - self._t
        self._t = now

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def batch_library(transform: TrainTransform, samples, step: int):
    items = [transform.load(*s, np.random.default_rng([step, i])) for i, s in enumerate(samples)]
    images = torch.from_numpy(np.stack([x for x, _ in items]))
    return images, [torch.from_numpy(t) for _, t in items]


def batch_reference(size: int, samples, step: int):
    items = [recipe_reference.load_and_transform(*s, np.random.default_rng([step, i]), image_size=size)
             for i, s in enumerate(samples)]
    images = torch.from_numpy(np.stack([x for x, _ in items]))
    return images, [torch.from_numpy(t) for _, t in items]


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)


def split_steps(model, samples, size: int, steps: int, device: torch.device) -> Dict[str, float]:
    """Median-free mean seconds per step of each phase of the library's step, in the trainer's
    default layout."""
    channels_last = device.type == "cpu"  # the trainer's default layout there
    if channels_last:
        model = to_channels_last(model, device)
    transform, criterion = TrainTransform(size), MultiBoxLoss()
    priors = generate_priors(size, size, device=device)
    optimizer = make_optimizer(model)
    clock = Clock(device)
    for step in range(steps + 1):
        if step == 1:
            clock.totals.clear()  # step 0 warms up allocators and kernels
        clock.start()
        images, targets = batch_library(transform, samples, step)
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = [t.to(device, non_blocking=True) for t in targets]
        clock.lap("data")
        predictions = model(images)
        clock.lap("forward")
        match = criterion.matcher(targets, priors)
        clock.lap("matching")
        loss = criterion.from_match(predictions, match)
        clock.lap("loss")
        loss.total.backward()
        clock.lap("backward")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.lap("optimizer")
    return {k: v / steps for k, v in clock.totals.items()}


def compare(model, samples, size: int, steps: int, device: torch.device) -> Dict[str, float]:
    """Seconds per step of the three loops, run in alternation (ABCABC...) from the same weights."""
    priors = generate_priors(size, size, device=device)
    criterion, transform = MultiBoxLoss(), TrainTransform(size)
    loops: Dict[str, Callable[[int], None]] = {}
    for name in ("straightforward", "library, NCHW", "library, channels_last"):
        m = copy.deepcopy(model).to(device)
        if name.endswith("channels_last"):
            m = to_channels_last(m, device)
        opt = make_optimizer(m)

        def step_fn(step: int, m=m, opt=opt, name=name) -> None:
            if name == "straightforward":
                images, targets = batch_reference(size, samples, step)
                images, targets = images.to(device), [t.to(device) for t in targets]
                loss_l, loss_c, loss_landm = multibox_loss_reference(m(images), priors, targets)
                total = 2.0 * loss_l + loss_c + loss_landm
            else:
                images, targets = batch_library(transform, samples, step)
                images = images.to(device, non_blocking=True)
                if name.endswith("channels_last"):
                    images = images.contiguous(memory_format=torch.channels_last)
                total = criterion(m(images), priors, [t.to(device, non_blocking=True) for t in targets]).total
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        loops[name] = step_fn
    times: Dict[str, List[float]] = {name: [] for name in loops}
    for step in range(steps + 1):
        for name, fn in loops.items():
            start = time.perf_counter()
            fn(step)
            if step > 0:  # step 0: warm-up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet0.25")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-compare", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = create_model(args.backbone).train().to(device)

    with tempfile.TemporaryDirectory() as tmp:
        samples = bench_data.make_inputs(Path(tmp), args.batch)
        print(f"{args.backbone}, batch {args.batch} at {args.size}, device {device}, "
              f"{torch.get_num_threads()} torch threads, {np.mean([len(s[1]) for s in samples]):.1f} faces/image")
        split = split_steps(copy.deepcopy(model), samples, args.size, args.steps, device)
        total = sum(split.values())
        print("\n| phase | ms / step | share |\n|---|---|---|")
        for name, seconds in split.items():
            print(f"| {name} | {seconds * 1e3:.1f} | {seconds / total:.1%} |")
        overhead = split["matching"] + split["loss"] + split["optimizer"]
        print(f"| matching + loss + optimizer | {overhead * 1e3:.1f} | {overhead / total:.1%} |")
        print(f"| step | {total * 1e3:.1f} | {args.batch / total:.2f} images/s |")
        if args.skip_compare:
            return
        times = compare(model, samples, args.size, args.steps, device)
        base = times["straightforward"]
        print("\n| loop | s / step | images/s | vs straightforward |\n|---|---|---|---|")
        for name, seconds in times.items():
            print(f"| {name} | {seconds:.3f} | {args.batch / seconds:.2f} | x{base / seconds:.2f} |")


if __name__ == "__main__":
    main()
