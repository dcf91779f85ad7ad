"""``retinaface data widerface --root data/widerface``: download WIDER FACE, verified, into the layout
``retinaface train/eval --data`` reads.

Fetches WIDER_train.zip, WIDER_val.zip and wider_face_split.zip (checked against the MD5 sums
torchvision pins), and with ``--allow-unverified`` also the evaluation ground truth
(eval_tools.zip) and the five-landmark labels (retinaface_gt_v1.1.zip), which have no published
checksum (their SHA-256 is printed). Files already downloaded and verified, and archives already
extracted, are skipped, so an interrupted run is resumed by running it again.
``--verify-only`` checks an existing tree and downloads nothing. ``RETINAFACE_MIRROR`` (a URL or a
folder holding the archives) is tried first; ``RETINAFACE_OFFLINE=1`` uses no network.
Exit status: 0 done, 1 something missing or wrong (named), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .common import ArgumentParser, fail

DATASETS = ("widerface",)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASETS, help="the data set to fetch")
    parser.add_argument("--root", default="data/widerface", help="where to put it (default: %(default)s)")
    parser.add_argument("--verify-only", action="store_true", help="check an existing tree; download nothing")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="also fetch the archives without a published checksum (evaluation .mat files, "
                             "landmark labels)")
    parser.add_argument("--skip", nargs="+", default=[], metavar="ARCHIVE",
                        help="archives to leave out, e.g. WIDER_train.zip")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    prog = prog or "retinaface data"
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    # lazy: 'retinaface data --help' and flag errors answer without loading torch and OpenCV
    from ..data.download import WIDER_TERMS, WIDERFACE_FILES, DataDownloadError, download_widerface, \
        verify_widerface

    known = {item.file_name for item in WIDERFACE_FILES}
    unknown = [name for name in args.skip if name not in known]
    if unknown:
        return fail(prog, f"--skip {unknown[0]}: not an archive of {args.dataset} ({', '.join(sorted(known))})")
    if args.verify_only:
        report = verify_widerface(args.root)
        for name, ok, state in report:
            print(f"{'ok  ' if ok else 'FAIL'}  {name}: {state}")
        return 0 if all(ok for _, ok, _ in report) else 1
    print(WIDER_TERMS)
    try:
        made = download_widerface(args.root, allow_unverified=args.allow_unverified, skip=args.skip,
                                  progress=not args.quiet)
    except DataDownloadError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        return fail(prog, f"--root {args.root}: {exc.strerror or exc}")
    print(f"{args.dataset} is in {args.root}" + (f" (made {', '.join(made)})" if made else "") +
          f"; train with --data {args.root}")
    return 0
