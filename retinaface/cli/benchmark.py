"""``retinaface benchmark``: params, GFLOPs and latency of RetinaFace variants as a markdown table.

One backbone (``--backbone``, untrained), every built-in backbone (``--all``), or a checkpoint
(``--weights``). With ``--widths 1.0 0.75 0.5`` it measures one adaptive (channel-prioritised)
model at each width: the ``--weights`` checkpoint (see ``retinaface prioritize``) or an untrained
width-switchable ``--backbone``; ``--data ROOT`` adds the WIDER AP of each width on ROOT's val split.
Forward and detect are timed in alternation, so their ratio survives a busy machine. The work is
:mod:`retinaface.benchmark_matrix`'s; this command parses the flags and prints.

``--task landmarks`` measures the dense-landmark networks instead (``retinaface.landmarks``): per
network params, FLOPs (thop's count x 2, the seed report's convention: its mobilenetv3_small with 21
points at 224 is 1,560,906 params and 0.122993904 GFLOPs), and CPU latency per crop; with
``--weights`` (a landmark checkpoint) and ``--data`` (a WFLW list or .pts folder) also NME, the mean
pixel distance at the network's input size and the seed's ranking score
``params (M) x FLOPs (G) x e^(pixel distance)``. ``--json`` prints the rows as JSON on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from ..runtime_interface import MATRIX_RUNTIMES
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


def _size(text: str):
    """``HxW`` -> ``(H, W)``, both >= 32."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 32:
        raise argparse.ArgumentTypeError(f"expected HxW with both >= 32 (e.g. 480x640), got {text!r}")
    return (int(parts[0]), int(parts[1]))


def _matrix(args: argparse.Namespace, prog: str) -> int:
    # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch, OpenCV and timm
    from ..benchmark_matrix import matrix_files, run_matrix, to_markdown, write_matrix
    from ..models import BackboneError

    sizes = [s if isinstance(s, tuple) else _size(s) for s in args.matrix_sizes]
    if args.matrix_output:
        existing = [str(t) for t in matrix_files(args.matrix_output) if t.exists()]
        if existing:
            return fail(prog, f"--matrix-output {args.matrix_output}: {', '.join(existing)} already exist(s); "
                              f"choose another prefix")
    try:
        cells = run_matrix(args.matrix_backbones, args.matrix_widths, sizes, args.matrix_runtimes,
                           args.matrix_threads, repeats=args.repeats,
                           log=lambda line: print(line, file=sys.stderr))
    except (BackboneError, ValueError) as exc:
        return fail(prog, str(exc).strip().splitlines()[0])
    print(to_markdown(cells))
    if args.matrix_output:
        written = write_matrix(cells, args.matrix_output)
        print(f"wrote {', '.join(map(str, written))}" + ("" if len(written) == 3 else " (no plot: matplotlib missing)"),
              file=sys.stderr)
    return 0


def _measure(args: argparse.Namespace, prog: str) -> int:
    """One row per model (or per width); each width loads the model afresh (timing recalibrates the
    class heads: scaled and shifted when untrained, shifted only for ``--weights``)."""
    # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch and OpenCV
    from ..benchmark_matrix import benchmark_jobs, measure_models
    from ..checkpoint import CheckpointError
    from ..models import BackboneError, list_backbones
    from ..inference.profiling import markdown_table

    height, width = args.size
    jobs = benchmark_jobs(list_backbones() if args.all else [args.backbone], weights=args.weights,
                          widths=args.widths, device=args.device)
    try:
        rows = measure_models(jobs, height, width, args.device, args.repeats, detect=not args.no_detect,
                              data_root=args.data if args.widths else None, trained=bool(args.weights),
                              log=lambda line: print(line, file=sys.stderr))
    except (CheckpointError, BackboneError, ValueError, RuntimeError, OSError) as exc:
        return fail(prog, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    print(markdown_table(rows, height, width))
    return 0


def _landmarks(args: argparse.Namespace, prog: str) -> int:
    """One row per landmark network: params, FLOPs, latency; with --weights and --data the accuracy."""
    if args.all or args.widths or args.matrix:
        return fail(prog, "--task landmarks takes --weights / --data / --threads / --repeats / --json, not "
                          "--all, --widths or --matrix")
    if args.data and not args.weights:
        return fail(prog, "--task landmarks: --data goes with --weights (the NME of that checkpoint)")
    if args.weights and not os.path.isfile(args.weights):
        return fail(prog, f"--weights {args.weights}: file not found")
    # lazy: 'retinaface benchmark --help' and flag errors answer without loading torch and OpenCV
    import torch

    from ..landmarks.benchmark import measure_landmark_models

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = measure_landmark_models(args.weights, args.data, args.repeats)
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
