"""The block structure of the official WIDER FACE box lists (``wider_face_{train,val}_bbx_gt.txt``).

Owns :func:`read_bbx_blocks`: each block is an image path line, a face count, then one line per
face (``x y w h blur expression illumination invalid occlusion pose``); a zero count is followed
by one line of zeros, which is consumed. The training reader (:mod:`retinaface.data.labels`) and
the text ground truth (:mod:`retinaface.formats.ground_truth`) both read the file
through it and interpret the face lines themselves. Errors are ``ValueError("path:line: ...")``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, NamedTuple, Tuple, Union

from ..fileio import read_text_lines

PathLike = Union[str, "os.PathLike[str]"]

BBX_FIELDS = 10  # x y w h blur expression illumination invalid occlusion pose


class BbxBlock(NamedTuple):
    """One image of the file: its path as written, the line it is on, and ``(line, tokens)`` per face."""

    path: str
    lineno: int
    faces: List[Tuple[int, List[str]]]


def is_number(token: str) -> bool:
    """Whether ``token`` parses as a float."""
    try:
        float(token)
        return True
    except ValueError:
        return False


def read_bbx_blocks(path: PathLike) -> List[BbxBlock]:
    """Split a WIDER box-list file into blocks, checking the structure (not the face values).

    Image paths may contain spaces (the path is the whole line); a UTF-8 byte-order mark is read.
    """
    path = Path(path)
    lines = read_text_lines(path)  # a BOM is dropped; bytes that are not UTF-8 are named path:line

    def error(lineno: int, what: str) -> ValueError:
        return ValueError(f"{path}:{lineno}: {what}")

    blocks: List[BbxBlock] = []
    n, pos = len(lines), 0
    while pos < n:
        image = lines[pos].strip()
        if not image:
            pos += 1
            continue
        image_lineno = pos + 1
        # the path stands alone on its line and may contain spaces; a line of numbers is a face line
        if all(is_number(t) for t in image.split()):
            raise error(image_lineno, f"expected an image path '<event>/<file>.jpg', got {image!r}")
        pos += 1
        if pos >= n:
            raise error(pos + 1, f"file ends before the face count of {image}")
        count_text = lines[pos].strip()
        try:
            count = int(count_text)
        except ValueError:
            raise error(pos + 1, f"expected the number of faces of {image}, got {count_text!r}") from None
        if count < 0:
            raise error(pos + 1, f"negative face count {count}")
        pos += 1
        if count == 0 and pos < n:
            tokens = lines[pos].split()
            if len(tokens) >= 4 and all(is_number(t) and float(t) == 0 for t in tokens):
                pos += 1
        faces = []
        for k in range(count):
            if pos >= n:
                raise error(pos + 1, f"file ends after {k} of {count} faces of {image}")
            tokens = lines[pos].split()
            if len(tokens) == 1 and not is_number(tokens[0]):
                raise error(pos + 1, f"found an image path where face {k + 1} of {count} of {image} was "
                                     f"expected (count does not match)")
            if len(tokens) < 4:
                raise error(pos + 1, f"expected 'x y w h blur expression illumination invalid occlusion "
                                     f"pose', got {lines[pos]!r}")
            faces.append((pos + 1, tokens))
            pos += 1
        blocks.append(BbxBlock(image, image_lineno, faces))
    return blocks
