"""Times batched prior matching (retinaface.engine.matching) against the reference's per-image loop
(tests/matching_reference.py) on a realistic training batch, and checks they agree.

    python benchmarks/bench_matching.py [--batch 32] [--size 640] [--min-faces 1] [--max-faces 50]
                                        [--repeats 5] [--device cpu|cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: retinaface/ and tests/

from retinaface.engine.matching import match_priors  # noqa: E402
from retinaface.priors import generate_priors  # noqa: E402
from tests.matching_reference import match_reference  # noqa: E402


def make_targets(batch: int, size: int, min_faces: int, max_faces: int, seed: int = 0) -> list:
    """WIDER-like faces: 8..400 px (log-uniform), anywhere in the image, 70 % with landmarks."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(batch):
        k = int(torch.randint(min_faces, max_faces + 1, (1,), generator=gen))
        side = torch.exp(torch.empty(k, 1).uniform_(math.log(8), math.log(400), generator=gen)) / size
        wh = side * torch.empty(k, 2).uniform_(0.7, 1.0, generator=gen)
        centre = torch.rand(k, 2, generator=gen)
        boxes = torch.cat([centre - wh / 2, centre + wh / 2], 1).clamp(0, 1)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1.0 / size)
        label = torch.where(torch.rand(k, 1, generator=gen) < 0.7, 1.0, -1.0)
        lm = centre.repeat(1, 5) + (torch.rand(k, 10, generator=gen) - 0.5) * wh.repeat(1, 5)
        lm[label[:, 0] < 0] = -1.0
        targets.append(torch.cat([boxes, lm, label], 1))
    return targets


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--min-faces", type=int, default=1)
    parser.add_argument("--max-faces", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    priors = generate_priors(args.size, args.size, device=device)
    targets = make_targets(args.batch, args.size, args.min_faces, args.max_faces)
    targets_dev = [t.to(device) for t in targets]
    faces = sum(len(t) for t in targets)

    batched = match_priors(targets, priors)
    loc, conf, landm = match_reference(targets_dev, priors)
    agree = torch.equal(batched.labels, conf) and torch.equal(batched.loc, loc) and \
        torch.equal(batched.landmarks, landm)

    t_batched = timed(lambda: match_priors(targets, priors), args.repeats, device)
    t_loop = timed(lambda: match_reference(targets_dev, priors), args.repeats, device)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.size}x{args.size} -> {priors.shape[0]} priors, {faces} faces "
          f"({args.min_faces}-{args.max_faces} per image), positives {int((batched.labels != 0).sum())}")
    print(f"identical to the per-image reference: {agree}")
    print(f"batched matching      : {t_batched * 1e3:9.2f} ms  (median of {args.repeats})")
    print(f"per-image Python loop : {t_loop * 1e3:9.2f} ms")
    print(f"speed-up              : {t_loop / t_batched:9.2f} x")


if __name__ == "__main__":
    main()
