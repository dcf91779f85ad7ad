"""``retinaface env``: versions and optional parts of this install (torch, CUDA, OpenCV, the C
extension, ONNX Runtime, OpenVINO), for bug reports and for checking a deployment image.

Exit 0 always: an absent optional part is reported, not an error. ``--json`` prints the rows as
one JSON list on the last line.
"""
from __future__ import annotations

import argparse
import json
from typing import List, Optional


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--json", action="store_true", help="print the report as one JSON list")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    # lazy: 'retinaface env --help' and flag errors answer without loading torch and OpenCV
    from ..environment import collect_environment, format_environment

    rows = collect_environment()
    print(json.dumps([row.as_dict() for row in rows]) if args.json else format_environment(rows))
    return 0
