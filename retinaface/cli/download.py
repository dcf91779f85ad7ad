"""``retinaface download NAME...``: fetch zoo entries ahead of use, verify them and cache them.

Each file is downloaded to a temporary file, checked against its SHA-256 and only then renamed into
the cache; a file already cached and whole is not downloaded again. An entry without a published
checksum (``retinaface models`` says which) needs ``--allow-unverified``; its hash is printed so it
can be pinned. Exit status: 0 all fetched, 1 some could not be, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .. import zoo
from .common import ArgumentParser, fail


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", metavar="NAME", help="zoo names (`retinaface models`), or 'all'")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="also fetch entries whose checksum is not known (prints the hash they had)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    prog = prog or "retinaface download"
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)

    names = zoo.list_weights() if args.names == ["all"] else args.names
    unknown = [name for name in names if not zoo.is_zoo_name(name)]
    if unknown:
        try:
            zoo.get_weights(unknown[0])
        except zoo.ZooError as exc:
            return fail(prog, str(exc))
    failed = 0
    for name in names:
        entry = zoo.get_weights(name)
        if args.names == ["all"] and not entry.verified and not args.allow_unverified:
            print(f"{name}: skipped (checksum not known; --allow-unverified fetches it)", file=sys.stderr)
            continue
        try:
            path = zoo.fetch(name, allow_unverified=args.allow_unverified, progress=not args.quiet)
        except zoo.ZooError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {path}")
    return 1 if failed else 0
