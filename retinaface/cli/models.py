"""``retinaface models``: the model zoo, one line per entry (name, size, published AP, licence, cached).

Names work wherever a checkpoint path does (``--weights retinaface_mnet025``,
``load_model("retinaface_mnet025")``); files are fetched, verified by SHA-256 and cached on first use
(``retinaface download`` fetches ahead). Cache: ``$RETINAFACE_HOME``, else torch hub's
``checkpoints`` folder. ``RETINAFACE_MIRROR=<URL or folder>`` is tried first; ``RETINAFACE_OFFLINE=1``
never uses the network.
"""
from __future__ import annotations

import argparse
import json
from typing import List, Optional

from .. import zoo
from .common import ArgumentParser, fail


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default=None, help="describe this entry in full")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _size(size_bytes: Optional[int]) -> str:
    return f"{size_bytes / 1e6:.1f} MB" if size_bytes else "?"


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    prog = prog or "retinaface models"
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)

    try:
        names = [zoo.get_weights(args.name).name] if args.name else zoo.list_weights()
        cached = {name: zoo.cached_file(name) for name in names}
        folder = zoo.cache_dir()
    except zoo.ZooError as exc:
        return fail(prog, str(exc))
    entries = [zoo.get_weights(name) for name in names]
    if args.json:
        rows = [dict(vars(e), urls=list(e.urls), cached=str(cached[e.name]) if cached[e.name] else None)
                for e in entries]
        print(json.dumps(rows, indent=1))
        return 0
    if args.name:
        entry = entries[0]
        for label, value in (("name", entry.name), ("file", entry.file_name), ("kind", entry.kind),
                             ("architecture", entry.architecture), ("training data", entry.training_data),
                             ("published AP", _ap(entry) + (f" ({entry.ap_protocol})" if entry.ap else "")),
                             ("sha256", entry.sha256 or "not known (fetch with --allow-unverified)"),
                             ("size", _size(entry.size_bytes)), ("licence", entry.licence),
                             ("source", entry.source), ("citation", entry.citation),
                             ("mirrors", "  ".join(entry.urls)),
                             ("cached", str(cached[entry.name] or f"no (would go to {folder})"))):
            print(f"{label + ':':<15} {value}")
        return 0
    header = ("name", "kind", "size", "AP easy/med/hard", "licence", "cached")
    rows = [(e.name, e.kind, _size(e.size_bytes), _ap(e), e.licence,
             "yes" if cached[e.name] else ("no" if e.verified else "no (checksum not known)")) for e in entries]
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(f"{str(cell):<{w}}" for cell, w in zip(row, widths)).rstrip())
    print(f"\ncache: {folder}; AP: WIDER FACE val at original size, as published (retinaface models NAME)")
    return 0


def _ap(entry) -> str:
    return " / ".join(f"{v:.2f}" for v in entry.ap) if entry.ap else "-"
