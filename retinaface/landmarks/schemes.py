"""Landmark schemes: how many points a data set marks, which point mirrors which, and which points
define the normalising distances of its metrics.

Conventions, for every scheme here:

* Indices are **0-based** (papers and MATLAB code count from 1: 300W's outer eye corners "37 and 46"
  are 36 and 45 here).
* "Left" and "right" are **as seen in the image**, like the project's five points
  (:data:`retinaface.conventions.LANDMARK_NAMES`): point 36 of the 68-point scheme is the outer
  corner of the eye on the image's left (the subject's right eye).
* ``mirror[i]`` is the index of point ``i``'s partner after a horizontal flip: a flipped image's
  point ``i`` is the original's point ``mirror[i]`` with its x mirrored. Every table is its own
  inverse (flipping twice is the identity) and is checked on the synthetic faces' true geometry
  for the 68- and 98-point schemes.

Sources of the tables (the same pairs every public implementation uses):

* ``ibug68``: the iBUG 68-point mark-up of 300W (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
  mouth 48-67). Outer eye corners 36 / 45 (the 300W challenge's normalisation, its
  ``compute_error.m``); pupils: mean of eye contour points 36-41 and 42-47.
* ``wflw98``: WFLW's 98 points (contour 0-32, brows 33-50, nose 51-59, eyes 60-75, mouth 76-95,
  pupils 96 / 97). Outer eye corners 60 / 72 (WFLW's own normalisation); pupils 96 / 97.
* ``cofw29``: COFW's 29 points (the LFPW 29-point mark-up of Burgos-Artizzu et al., ICCV 2013).
  Outer eye corners 8 / 9: HRNet-Facial-Landmark-Detection ``lib/core/evaluation.py``
  (``L == 29: interocular = norm(pts_gt[8] - pts_gt[9])``) and mmpose's ``FaceCOFWDataset``
  (``gts[:, 8] - gts[:, 9]``); mirror pairs as mmpose's ``cofw.py`` / HRNet's ``MATCHED_PARTS``.
  Pupils 16 / 17 (RCPR's inter-pupil normalisation).
* ``aflw21``: AFLW's 21 points (brows 0-5, eyes 6-11 with eye centres 7 / 10, ears 12 / 16, nose
  13-15, mouth 17-19, chin 20), numbered from the image's left as PRNet's AFLW2000-3D ``pt2d``
  shows. AFLW's metric normalises by the face box (``sqrt(w * h)``), not by the eyes; outer eye
  corners 6 / 11 are given for completeness.
* ``retinaface5``: this project's five points (left eye, right eye, nose, mouth corners); its
  "pupils" are the eye points 0 / 1 and it has no eye corners.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..conventions import MIRROR_ORDER, NUM_LANDMARKS

# One index, or several whose mean is the point (300W's pupils are eye-contour means).
PointRef = Tuple[int, ...]


@dataclass(frozen=True)
class LandmarkScheme:
    """A data set's points: ``name``, ``num_points``, the ``mirror`` permutation, the outer eye
    corners (or ``None``), the pupils (each a tuple of indices whose mean is the pupil) and the
    names of its groups (``{"jaw": range, ...}``) for reports."""

    name: str
    num_points: int
    mirror: Tuple[int, ...]
    outer_eye_corners: Optional[Tuple[int, int]]
    pupils: Tuple[PointRef, PointRef]
    groups: Dict[str, Tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_mirror(self.mirror, self.num_points)

    def pupil_points(self, points: np.ndarray) -> np.ndarray:
        """``(..., 2, 2)``: the left and right pupil of ``points`` ``(..., K, 2)``."""
        points = np.asarray(points, dtype=np.float64)
        return np.stack([points[..., list(ref), :].mean(axis=-2) for ref in self.pupils], axis=-2)


def check_mirror(mirror: Sequence[int], num_points: int) -> None:
    """Raise ``ValueError`` unless ``mirror`` is a permutation of ``range(num_points)`` that is its
    own inverse (a flip applied twice must give the original order back)."""
    perm = list(mirror)
    if sorted(perm) != list(range(num_points)):
        raise ValueError(f"mirror table of {len(perm)} entries is not a permutation of 0..{num_points - 1}")
    bad = [i for i, j in enumerate(perm) if perm[j] != i]
    if bad:
        raise ValueError(f"mirror table is not its own inverse at indices {bad[:5]}")


def mirror_from_pairs(num_points: int, pairs: Sequence[Tuple[int, int]]) -> Tuple[int, ...]:
    """The mirror permutation that swaps each pair and keeps every other point in place."""
    perm = list(range(num_points))
    for a, b in pairs:
        if perm[a] != a or perm[b] != b:
            raise ValueError(f"index in pair ({a}, {b}) already paired")
        perm[a], perm[b] = b, a
    return tuple(perm)


def _ibug68_pairs():
    pairs = [(i, 16 - i) for i in range(8)]                                   # jaw, 8 is the chin
    pairs += [(17 + i, 26 - i) for i in range(5)]                             # brows
    pairs += [(31, 35), (32, 34)]                                             # nostrils, 27-30 and 33 on the midline
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]     # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]               # outer lips, 51 and 57 midline
    pairs += [(60, 64), (61, 63), (65, 67)]                                   # inner lips, 62 and 66 midline
    return pairs


def _wflw98_pairs():
    pairs = [(i, 32 - i) for i in range(16)]                                  # contour, 16 is the chin
    pairs += [(33 + i, 46 - i) for i in range(5)]                             # brows, upper edge
    pairs += [(38, 50), (39, 49), (40, 48), (41, 47)]                         # brows, lower edge
    pairs += [(55, 59), (56, 58)]                                             # nose base, 51-54 and 57 midline
    pairs += [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68)]               # eye corners and upper lids
    pairs += [(65, 75), (66, 74), (67, 73)]                                   # lower lids
    pairs += [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]               # outer lips, 79 and 85 midline
    pairs += [(88, 92), (89, 91), (93, 95)]                                   # inner lips, 90 and 94 midline
    pairs += [(96, 97)]                                                       # pupils
    return pairs


_COFW29_PAIRS = [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19), (22, 23)]
_AFLW21_PAIRS = [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 16), (13, 15), (17, 19)]

IBUG68 = LandmarkScheme(
    "ibug68", 68, mirror_from_pairs(68, _ibug68_pairs()), (36, 45), (tuple(range(36, 42)), tuple(range(42, 48))),
    {"jaw": tuple(range(0, 17)), "brows": tuple(range(17, 27)), "nose": tuple(range(27, 36)),
     "eyes": tuple(range(36, 48)), "mouth": tuple(range(48, 68))})
WFLW98 = LandmarkScheme(
    "wflw98", 98, mirror_from_pairs(98, _wflw98_pairs()), (60, 72), ((96,), (97,)),
    {"contour": tuple(range(0, 33)), "brows": tuple(range(33, 51)), "nose": tuple(range(51, 60)),
     "eyes": tuple(range(60, 76)), "mouth": tuple(range(76, 96)), "pupils": (96, 97)})
COFW29 = LandmarkScheme("cofw29", 29, mirror_from_pairs(29, _COFW29_PAIRS), (8, 9), ((16,), (17,)))
AFLW21 = LandmarkScheme(
    "aflw21", 21, mirror_from_pairs(21, _AFLW21_PAIRS), (6, 11), ((7,), (10,)),
    {"brows": tuple(range(0, 6)), "eyes": tuple(range(6, 12)), "ears": (12, 16), "nose": (13, 14, 15),
     "mouth": (17, 18, 19), "chin": (20,)})
RETINAFACE5 = LandmarkScheme("retinaface5", NUM_LANDMARKS, tuple(MIRROR_ORDER), None, ((0,), (1,)))

SCHEMES: Dict[str, LandmarkScheme] = {s.name: s for s in (IBUG68, WFLW98, COFW29, AFLW21, RETINAFACE5)}
_BY_COUNT: Dict[int, LandmarkScheme] = {s.num_points: s for s in SCHEMES.values()}


def get_scheme(scheme: "str | int | LandmarkScheme") -> LandmarkScheme:
    """A scheme by name (``"ibug68"``), by number of points (68) or as given."""
    if isinstance(scheme, LandmarkScheme):
        return scheme
    if isinstance(scheme, (int, np.integer)) and int(scheme) in _BY_COUNT:
        return _BY_COUNT[int(scheme)]
    if isinstance(scheme, str) and scheme in SCHEMES:
        return SCHEMES[scheme]
    raise ValueError(f"unknown landmark scheme {scheme!r}; known: {sorted(SCHEMES)} or point counts "
                     f"{sorted(_BY_COUNT)}")


def flip_points(points: np.ndarray, width: float, scheme: "str | int | LandmarkScheme",
                pixel_centres: bool = True) -> np.ndarray:
    """``points`` ``(..., K, 2)`` of an image ``width`` px wide, as they are in the horizontally
    flipped image: x mirrored, then reordered with the scheme's mirror permutation so that each
    index keeps its meaning (index 36 stays the outer corner of the eye on the image's left).

    ``pixel_centres=True`` (the toolkit's convention: pixel centres at integer coordinates, as
    ``cv2.flip`` moves pixel ``u`` to ``width - 1 - u``) mirrors ``x -> width - 1 - x``; ``False``
    mirrors continuous edge coordinates ``x -> width - x``.
    """
    table = get_scheme(scheme).mirror
    points = np.array(points, dtype=np.float64, copy=True)
    if points.shape[-2] != len(table):
        raise ValueError(f"{points.shape[-2]} points do not fit a {len(table)}-point mirror table")
    points[..., 0] = (width - 1 if pixel_centres else width) - points[..., 0]
    return points[..., list(table), :]
