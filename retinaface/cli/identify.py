"""``retinaface identify``: who is in these photos? Each query face against a gallery of people.

The gallery is a folder with one sub-folder per person holding photos of them (their most confident
face is used; ``--aligned-gallery`` for folders of aligned 112 x 112 crops), or a ``.npz`` written
by ``--save-gallery``. Each face found in a query is compared with every person's mean embedding by
cosine similarity; the top-k people are printed with their scores, and the face is "unknown" when
the best score is below ``--unknown-threshold``. The search loop is
:func:`retinaface.inference.embed_files.identify_inputs`; this command parses the flags and prints.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from ..recognition.gallery import Gallery
from .common import fail, number_in_range, positive_int
from .embed import add_model_arguments, build_analyzer


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Search query faces in a gallery of one folder per person.")
    parser.add_argument("--gallery", required=True, help="folder of person folders, or a .npz from --save-gallery")
    parser.add_argument("--query", required=True, nargs="+", metavar="INPUT", help="images, folders, videos")
    parser.add_argument("--top-k", type=positive_int, default=5, help="people listed per face (default 5)")
    parser.add_argument("--unknown-threshold", type=number_in_range(float, -1.0, 1.0), default=0.3,
                        help="best cosine similarity below this is 'unknown' (default 0.3)")
    parser.add_argument("--aligned-gallery", action="store_true",
                        help="gallery images are aligned crops, not photos")
    parser.add_argument("--save-gallery", default=None, help="write the gallery's templates to this .npz (new file)")
    parser.add_argument("--json", action="store_true", help="one JSON line per query face instead of text")
    add_model_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    # lazy: 'retinaface identify --help' and flag errors answer without loading OpenCV
    from ..inference.embed_files import identify_inputs
    from ..inference.sources import iter_sources

    prog = prog or "retinaface identify"
    args = build_parser(prog).parse_args(argv)
    if args.save_gallery and Path(args.save_gallery).exists():
        return fail(prog, f"--save-gallery: {args.save_gallery} already exists (choose a new name)")
    analyzer = build_analyzer(args, prog)
    if isinstance(analyzer, int):
        return analyzer
    try:
        if Path(args.gallery).suffix == ".npz":
            gallery = Gallery.load(args.gallery)
        else:
            gallery = Gallery.from_folder(args.gallery, analyzer, aligned=args.aligned_gallery)
    except (FileNotFoundError, ValueError) as exc:
        return fail(prog, str(exc))
    for path, why in gallery.skipped:
        print(f"{prog}: warning: gallery image {path}: {why}", file=sys.stderr)
    if args.save_gallery:
        gallery.save(args.save_gallery)
    if not args.json:
        print(f"gallery: {len(gallery)} people")
    failures: List[str] = []

    def warn(message: str) -> None:
        failures.append(message)
        print(f"{prog}: warning: {message}", file=sys.stderr)

    for found in identify_inputs(analyzer, gallery, iter_sources(args.query), top_k=args.top_k,
                                 unknown_threshold=args.unknown_threshold, warn=warn):
        if args.json:
            print(json.dumps(found.to_dict()))
        else:
            where = found.source.location + (f" frame {found.frame}" if found.source.kind != "image" else "")
            box = " ".join(f"{v:.0f}" for v in found.face.box)
            ranked = ", ".join(f"{m.name} {m.score:.3f}" for m in found.result.matches)
            print(f"{where} face {found.index} [{box}]: {found.result.identity} ({ranked})")
    return 0 if not failures else 1
