"""The ``retinaface`` console command: ``retinaface <sub-command> [options]``.

Each sub-command is a module of this package exposing ``build_parser() -> argparse.ArgumentParser``
and ``main(argv) -> int``. Modules are imported only when their sub-command runs, so
``retinaface eval --preds ...`` never loads torch. ``tools/*.py`` and ``python -m retinaface`` are
thin doors onto the same functions.
"""
from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Optional, Sequence

from ..version import __version__

# sub-command -> (module, one-line summary)
COMMANDS: Dict[str, tuple] = {
    "train": ("retinaface.cli.train", "train a detector (reference recipe by default)"),
    "detect": ("retinaface.cli.detect", "detect faces in images, folders, videos and webcams"),
    "eval": ("retinaface.cli.eval", "WIDER FACE easy / medium / hard AP of a checkpoint or a prediction folder"),
    "export": ("retinaface.cli.export", "export to ONNX / TorchScript with a parity check"),
    "benchmark": ("retinaface.cli.benchmark", "params, GFLOPs and latency of backbones (--task landmarks: landmark networks)"),
    "prioritize": ("retinaface.cli.prioritize", "channel-prioritised model: one checkpoint, widths 1.0 / 0.75 / 0.5"),
    "train-recognition": ("retinaface.cli.train_recognition", "train a face-embedding network (MobiFace + ArcFace by default)"),
    "train-landmarks": ("retinaface.cli.train_landmarks", "train a dense-landmark network (PFLD on synthetic faces by default)"),
    "eval-landmarks": ("retinaface.cli.eval_landmarks", "NME / FR@0.1 / AUC@0.1 of landmark weights or a prediction file"),
    "verify": ("retinaface.cli.verify", "face verification: 10-fold accuracy, TAR at FAR, ROC of an embedder"),
    "embed": ("retinaface.cli.embed", "detect, align and embed faces: JSON lines + .npy per input"),
    "identify": ("retinaface.cli.identify", "search faces in a gallery of one folder per person"),
    "env": ("retinaface.cli.env", "versions and optional parts of this install (C kernels, CUDA, runtimes)"),
    "models": ("retinaface.cli.models", "the model zoo: names, sizes, published AP, licence, cached or not"),
    "download": ("retinaface.cli.download", "fetch zoo weights ahead of use (SHA-256 verified, cached)"),
    "data": ("retinaface.cli.data", "download WIDER FACE (verified, resumable) into the layout --data reads"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return ("usage: retinaface <command> [options]\n\ncommands:\n" + rows +
            "\n\n'retinaface <command> --help' describes one command.")


def run_command(name: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Run sub-command ``name`` with ``argv``; returns its exit code (2 for user mistakes, 130 on Ctrl-C)."""
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(list(argv) if argv is not None else None, prog=prog or f"retinaface {name}") or 0)
    except KeyboardInterrupt:
        print(f"retinaface {name}: interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(__version__)
        return 0
    if args[0] not in COMMANDS:
        print(f"retinaface: error: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_command(args[0], args[1:])
