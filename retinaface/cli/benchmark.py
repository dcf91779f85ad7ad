"""``retinaface benchmark``: params, GFLOPs and latency of RetinaFace variants as a markdown table.

One backbone (``--backbone``, untrained), every built-in backbone (``--all``), or a checkpoint
(``--weights``). With ``--widths 1.0 0.75 0.5`` it measures one adaptive (channel-prioritised)
model at each width: the ``--weights`` checkpoint (see ``retinaface prioritize``) or an untrained
width-switchable ``--backbone``; ``--data ROOT`` adds the WIDER AP of each width on ROOT's val split.
Forward and detect are timed in alternation, so their ratio survives a busy machine.

``--task landmarks`` measures the dense-landmark networks instead (``retinaface.landmarks``): per
network params, FLOPs (thop's count x 2, the seed report's convention: its mobilenetv3_small with 21
points at 224 is 1,560,906 params and 0.122993904 GFLOPs), and CPU latency per crop; with
``--weights`` (a landmark checkpoint) and ``--data`` (a WFLW list or .pts folder) also NME, the mean
pixel distance at the network's input size and the seed's ranking score
``params (M) x FLOPs (G) x e^(pixel distance)``. ``--json`` prints the rows as JSON on the last line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..fileio import atomic_write
from ..landmarks.evaluate import evaluate_landmarks
from ..landmarks.metrics import mean_pixel_distance, ranking_score
from .common import ArgumentParser, fail, number_in_range, positive_int, weights_available


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of ``retinaface benchmark`` (no heavy imports)."""
    parser = ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("detection", "landmarks"), default="detection",
                        help="what to measure: face detectors (default) or dense-landmark networks")
    parser.add_argument("--backbone", default="mobilenet0.25", help="backbone name (see --list)")
    parser.add_argument("--all", action="store_true", help="every built-in backbone, as a markdown table")
    parser.add_argument("--list", action="store_true", help="list the built-in backbones and exit")
    parser.add_argument("--size", nargs=2, type=number_in_range(int, 32), default=(480, 640), metavar=("H", "W"),
                        help="input height and width (>= 32; default 480 640)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (>= 1)")
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument("--no-detect", action="store_true", help="time the forward pass only")
    parser.add_argument("--widths", type=number_in_range(float, 0.0, 1.0, low_open=True), nargs="+", default=None,
                        help="measure an adaptive model at these widths in (0, 1] (e.g. 1.0 0.75 0.5)")
    parser.add_argument("--weights", default=None,
                        help="checkpoint or zoo name to measure (with --widths: an adaptive one); not with --all")
    parser.add_argument("--data", default=None, help="with --widths: also the val AP per width on this data root; "
                        "with --task landmarks --weights: NME and ranking score on this WFLW list / .pts folder")
    parser.add_argument("--json", action="store_true", help="--task landmarks: the rows as JSON on the last line")
    matrix = parser.add_argument_group("deployment matrix (retinaface.benchmark_matrix; docs/edge.md)")
    matrix.add_argument("--matrix", action="store_true",
                        help="backbones x widths x sizes x runtimes x threads: median forward ms, FPS, detect overhead")
    matrix.add_argument("--matrix-backbones", nargs="+", default=["mobilenet0.25", "mobiface", "resnet50"])
    matrix.add_argument("--matrix-widths", nargs="+", type=number_in_range(float, 0.0, 1.0, low_open=True),
                        default=[1.0], help="adaptive widths in (0, 1] (default: 1.0)")
    matrix.add_argument("--matrix-sizes", nargs="+", type=_size, default=["240x320", "480x640", "720x1280", "1080x1920"],
                        help="HxW input sizes (default: 240x320 480x640 720x1280 1080x1920)")
    matrix.add_argument("--matrix-runtimes", nargs="+", default=list(MATRIX_RUNTIMES), choices=MATRIX_RUNTIMES)
    matrix.add_argument("--matrix-threads", nargs="+", type=positive_int, default=[1, 2])
    matrix.add_argument("--matrix-output", default=None, metavar="PREFIX",
                        help="also write PREFIX.md, PREFIX.csv and PREFIX.png (existing files are not overwritten)")
    return parser


# spelled here so --help stays light (retinaface.benchmark_matrix.MATRIX_RUNTIMES)
MATRIX_RUNTIMES = ("pytorch", "pytorch-fused", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8")


def _size(text: str):
    """``HxW`` -> ``(H, W)``, both >= 32."""
    import argparse as _argparse

    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 32:
        raise _argparse.ArgumentTypeError(f"expected HxW with both >= 32 (e.g. 480x640), got {text!r}")
    return (int(parts[0]), int(parts[1]))


def _matrix(args: argparse.Namespace, prog: str) -> int:
    # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch, OpenCV and timm
    from ..benchmark_matrix import plot, run_matrix, to_csv, to_markdown
    from ..models import BackboneError

    sizes = [s if isinstance(s, tuple) else _size(s) for s in args.matrix_sizes]
    targets = []
    if args.matrix_output:
        targets = [Path(f"{args.matrix_output}{ext}") for ext in (".md", ".csv", ".png")]
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            return fail(prog, f"--matrix-output {args.matrix_output}: {', '.join(existing)} already exist(s); "
                              f"choose another prefix")
    try:
        cells = run_matrix(args.matrix_backbones, args.matrix_widths, sizes, args.matrix_runtimes,
                           args.matrix_threads, repeats=args.repeats,
                           log=lambda line: print(line, file=sys.stderr))
    except (BackboneError, ValueError) as exc:
        return fail(prog, str(exc).strip().splitlines()[0])
    text = to_markdown(cells)
    print(text)
    if targets:
        with atomic_write(targets[0]) as handle:
            handle.write(text)
        with atomic_write(targets[1]) as handle:
            handle.write(to_csv(cells))
        written = plot(cells, targets[2])
        print(f"wrote {targets[0]}, {targets[1]}" + (f", {targets[2]}" if written else " (no plot: matplotlib missing)"),
              file=sys.stderr)
    return 0


def _measure(args: argparse.Namespace, prog: str) -> int:
    """One row per model (or per width); each width loads the model afresh (timing recalibrates the
    class heads: scaled and shifted when untrained, shifted only for ``--weights``)."""
    # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch and OpenCV
    from ..build import create_model
    from ..checkpoint import CheckpointError, load_model
    from ..models import BackboneError, list_backbones
    from ..profiling import TRAINED_MARGIN_SPREAD, benchmark_model, markdown_table

    height, width = args.size
    if args.widths:
        # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch
        from ..adaptive import make_adaptive
        from ..adaptive.slim import active_parameters

        def build(w: float):
            if args.weights:
                return load_model(args.weights, device=args.device, width=w)
            return make_adaptive(create_model(args.backbone)).set_width(w)

        label = Path(args.weights).stem if args.weights else args.backbone
        jobs = [(f"{label} @{w:g}", lambda w=w: build(w), w) for w in args.widths]
    elif args.weights:
        jobs = [(Path(args.weights).stem, lambda: load_model(args.weights, device=args.device), None)]
    else:
        names = list_backbones() if args.all else [args.backbone]
        jobs = [(name, lambda name=name: create_model(name), None) for name in names]
    rows = []
    for name, build_model, w in jobs:
        try:
            model = build_model()
        except (CheckpointError, BackboneError, ValueError, RuntimeError, OSError) as exc:
            return fail(prog, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        extra = {}
        if args.data and w is not None:
            # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch and OpenCV
            from ..evaluation.predict import evaluate_model

            ap = evaluate_model(model.eval(), args.data, progress=False).as_dict()
            extra = {f"AP {k}": v for k, v in ap.items()}
        row = benchmark_model(model, height, width, name, args.device, args.repeats, detect=not args.no_detect,
                              spread=None if args.weights else TRAINED_MARGIN_SPREAD)
        if w is not None:
            row.params_m = active_parameters(model) / 1e6  # the weights this width computes with
        row.extra.update(extra)
        rows.append(row)
        print(f"measured {name}", file=sys.stderr)
    print(markdown_table(rows, height, width))
    return 0


# (name, points, input size): the seed report's network first, then PFLD at WFLW's and 300W's counts
LANDMARK_MODELS = (("mobilenetv3_small", 21, 224), ("pfld", 98, 112), ("pfld", 68, 112),
                   ("mobilenetv3_small", 98, 224))


def _landmarks(args: argparse.Namespace, prog: str) -> int:
    """One row per landmark network: params, FLOPs, latency; with --weights and --data the accuracy."""
    if args.all or args.widths or args.matrix:
        return fail(prog, "--task landmarks takes --weights / --data / --threads / --repeats / --json, not "
                          "--all, --widths or --matrix")
    if args.data and not args.weights:
        return fail(prog, "--task landmarks: --data goes with --weights (the NME of that checkpoint)")
    if args.weights and not Path(args.weights).is_file():
        return fail(prog, f"--weights {args.weights}: file not found")
    # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch and OpenCV
    import json
    import statistics
    import time

    import torch

    from ..landmarks.models import create_landmark_model, model_complexity

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    try:
        if args.weights:
            # lazy: only a checkpoint needs the task's readers
            from ..landmarks.task import load_landmark_model

            model = load_landmark_model(args.weights, "cpu")
            jobs = [(Path(args.weights).stem, model)]
        else:
            jobs = [(f"{name} {k}pt@{size}", create_landmark_model(name, k, size)) for name, k, size in LANDMARK_MODELS]
        for label, model in jobs:
            size = int(model.config.input_size)
            stats = model_complexity(model, size)
            model.eval()
            x = torch.zeros(1, 3, size, size)
            times = []
            with torch.no_grad():
                for i in range(args.repeats + 2):
                    start = time.perf_counter()
                    model(x)
                    if i >= 2:  # the first passes allocate
                        times.append(1000 * (time.perf_counter() - start))
            row = {"model": label, "network": model.config.name, "points": model.num_points, "input_size": size,
                   "params": stats["params"], "gflops": round(stats["gflops"], 9),
                   "latency_ms": round(statistics.median(times), 3), "threads": torch.get_num_threads()}
            if args.data:
                row.update(_landmark_accuracy(model, args.data, stats))
            rows.append(row)
            print(f"measured {label}", file=sys.stderr)
    except (ValueError, OSError, RuntimeError) as exc:
        return fail(prog, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    print("FLOPs: thop's count x 2 (the seed report's convention); latency: median ms per crop, batch 1, CPU")
    header = ["model", "params", "gflops", "latency_ms"] + (["nme", "pixel_distance", "ranking_score"] if args.data else [])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{row[h]:,}" if h == "params" else str(row[h]) for h in header) + " |")
    if args.json:
        print(json.dumps(rows))
    return 0


def _landmark_accuracy(model, data: str, stats) -> dict:
    """NME, the seed's mean pixel distance (at the network's input size) and its ranking score."""
    # lazy: 'retinaface benchmark --help' answers without loading torch and OpenCV
    import numpy as np

    from ..landmarks.task import face_crops, load_samples, predict_crops

    samples = load_samples(data)
    if any(s.num_points != model.num_points for s in samples):
        raise ValueError(f"--data {data}: its faces do not have the {model.num_points} points the model predicts")
    size = int(model.config.input_size)
    crops, transforms = face_crops(samples, size, getattr(model, "crop_margin", 0.1))
    normalised = predict_crops(model, crops)
    images = np.stack([t.normalised_to_image(p) for t, p in zip(transforms, normalised)])
    result = evaluate_landmarks(images, samples)
    gt_crop = np.stack([t.to_crop(s.points) for t, s in zip(transforms, samples)])
    pixels = mean_pixel_distance(np.stack([t.denormalise(p) for t, p in zip(transforms, normalised)]), gt_crop)
    return {"nme": round(result.nme, 6), "pixel_distance": round(pixels, 4),
            "ranking_score": round(ranking_score(stats["params_millions"], stats["gflops"], pixels), 4)}


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run ``retinaface benchmark``; returns the exit status (0, 2 bad arguments)."""
    prog = prog or "retinaface benchmark"
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2), already printed by argparse
        return int(exit_.code or 0)
    if args.task == "landmarks":
        return _landmarks(args, prog)
    if args.list:
        # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch
        from ..models import list_backbones

        print("\n".join(list_backbones()))
        return 0
    if args.all and args.weights:
        return fail(prog, "--all measures the built-in backbones; --weights measures one checkpoint: use one")
    if args.data and not args.widths:
        return fail(prog, "--data goes with --widths (the AP of each width)")
    if args.weights and not weights_available(args.weights):
        return fail(prog, f"--weights {args.weights}: checkpoint file not found (and not a zoo name: "
                          f"`retinaface models`)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.matrix:
        return _matrix(args, prog)
    return _measure(args, prog)
