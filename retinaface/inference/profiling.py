"""Model cost measurements: parameter counts, FLOPs (``torch.utils.flop_counter``) and latency.

Latency is the median of repeated runs after warm-up, measured with ``time.perf_counter`` (and
``torch.cuda.synchronize`` on GPU). Used by ``tools/benchmark.py`` and ``benchmarks/``.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .detector import Detector


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, height: int, width: int, batch: int = 1) -> int:
    """FLOPs of one forward pass (a multiply-add counts as 2 FLOPs, as torch's counter does)."""
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, height, width, device=device)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_latency(fn: Callable[[], object], device: torch.device | str = "cpu", warmup: int = 3,
                   repeats: int = 20) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_latency(fns: Sequence[Callable[[], object]], device: torch.device | str = "cpu", warmup: int = 3,
                   repeats: int = 20) -> List[float]:
    """Median seconds per call of each of ``fns``, timed in alternation (a, b, a, b, ...) so that
    load changes on a shared machine affect every candidate alike: use it for ratios."""
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns:
            fn()
    _synchronize(device)
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            _synchronize(device)
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


# std of the face-logit margin over all priors of the README's trained mobilenet0.25 on a 640x480
# image: 1.3-1.4 logits (random and synthetic images); untrained heads give ~0.09
TRAINED_MARGIN_SPREAD = 1.3


def face_margins(model: nn.Module, image: np.ndarray) -> torch.Tensor:
    """The face-logit margin ``logit(face) - logit(background)`` of every prior on ``image``."""
    detector = Detector(model)
    with torch.inference_mode():
        _, scores, _ = detector.forward(detector.transform([image])[0])
    # the eval-mode softmax gives back the logit margin as log(p1) - log(p0)
    return scores[0, :, 1].log() - scores[0, :, 0].log()


def calibrate_score_bias(model: nn.Module, image: np.ndarray, candidates: int,
                         threshold: float = 0.02, spread: Optional[float] = TRAINED_MARGIN_SPREAD) -> None:
    """Give untrained class heads a trained detector's score statistics on ``image``, for realistic
    timing of the post-processing: the face-logit margins are scaled to a std of ``spread`` logits
    (``None``: left as they are) and shifted so that about ``candidates`` priors score above
    ``threshold``. Untrained weights put thousands of priors above the threshold, and their margins
    are so close together (std ~0.09) that INT8 quantisation of the head's output leaves all or
    none of them above it."""
    heads = [head.conv1x1 for head in model.ClassHead]
    if spread is not None:
        with torch.no_grad():
            for conv in heads:  # equal logit biases: the margins are then the weights' part alone
                bias = conv.bias.view(-1, 2)
                bias[:, 1] = bias[:, 0]
            factor = spread / max(float(face_margins(model, image).std()), 1e-12)
            for conv in heads:  # both logits scaled, so the margins scale alike
                conv.weight.mul_(factor)
    ranked = face_margins(model, image).sort(descending=True).values
    # softmax score > t  <=>  logit margin > log(t / (1 - t))
    target = float(np.log(threshold / (1 - threshold)))
    shift = target - float(ranked[min(candidates, ranked.numel() - 1)])
    with torch.no_grad():
        for conv in heads:
            conv.bias.view(-1, 2)[:, 1] += shift


@dataclasses.dataclass
class BenchmarkRow:
    name: str
    params_m: float
    gflops: float
    forward_ms: float
    detect_ms: Optional[float] = None
    extra: Dict[str, float] = dataclasses.field(default_factory=dict)


def benchmark_model(model: nn.Module, height: int, width: int, name: str = "",
                    device: str = "cpu", repeats: int = 20, detect: bool = True,
                    candidates: int = 300, spread: Optional[float] = TRAINED_MARGIN_SPREAD) -> BenchmarkRow:
    """Params, GFLOPs and median latency of the forward pass (and of ``Detector.detect``).

    With ``detect`` the model's class heads are recalibrated (:func:`calibrate_score_bias`, with
    ``spread``; ``None`` for a trained model, whose margins only get shifted): use a model you no
    longer need for detection.
    """
    model = model.to(device).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    params = count_parameters(model) / 1e6
    gflops = count_flops(model, height, width) / 1e9
    detector = Detector(model, device=device)
    batch = detector.transform([image])[0]
    if not detect:
        forward = median_latency(lambda: detector.forward(batch), device, repeats=repeats)
        return BenchmarkRow(name or model.config.backbone, params, gflops, forward * 1e3, None)
    # the recalibration changes no cost of the forward pass; it gives the detect path a trained
    # model's candidate count. Both timed in alternation, so their ratio survives machine load.
    calibrate_score_bias(model, image, candidates, spread=spread)
    forward, detect_s = paired_latency([lambda: detector.forward(batch), lambda: detector.detect(image)],
                                       device, repeats=repeats)
    return BenchmarkRow(name or model.config.backbone, params, gflops, forward * 1e3, detect_s * 1e3)


def markdown_table(rows: Sequence[BenchmarkRow], height: int, width: int) -> str:
    extra_keys: List[str] = sorted({k for r in rows for k in r.extra})
    header = ["model", "params (M)", f"GFLOPs @{height}x{width}", "forward (ms)", "detect (ms)"] + extra_keys
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.name, f"{r.params_m:.3f}", f"{r.gflops:.2f}", f"{r.forward_ms:.1f}",
                 "-" if r.detect_ms is None else f"{r.detect_ms:.1f}"]
        cells += [f"{r.extra[k]:.4f}" if k in r.extra else "-" for k in extra_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
