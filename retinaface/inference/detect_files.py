"""Detection over what a user names: image files, folders, video files and webcams, into one output
folder of annotated copies, optional aligned crops and ``detections.jsonl``.

Owns :func:`detect_inputs` (the loop ``retinaface detect`` runs; the command only parses flags and
reports), :class:`DetectOptions` and :class:`DetectSummary`. Every input is taken once by its real
path (:func:`retinaface.inference.sources.collect_sources`); every JSON line names its source and the
annotated copy (and crops) written for it; a JPEG that decodes only partly counts as unreadable
unless ``allow_partial``; an image whose forward pass would exceed ``max_pixels`` input pixels is
tiled (or, under a resize policy, downscaled) and said so; a progress bar runs when asked. With a
``landmarker`` (``retinaface detect --landmarks``), every image face at the display threshold gets
its dense points drawn and ``landmarks_dense`` / ``head_pose`` in its JSON line; videos and webcams
are detected without them.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from .align import align_faces
from ..conventions import ALIGNED_FACE_SIZE, DEFAULT_MAX_PIXELS, DET_SCORE, TILE_OVERLAP, VIS_THRESHOLD
from ..fileio import atomic_write
from .sources import OUTPUT_MARKER, OutputNames, Source, SourceError, collect_sources, dense_landmark_fields, \
    detections_record, iter_frames
from .tiling import detect_tiled
from .video import VideoError, process_video
from .visualize import draw_dense_landmarks, draw_detections

# DEFAULT_MAX_PIXELS, the default cap on a forward pass's input pixels, is the conventions' (and why
# 24 MP: there). Tile side used when an image over the cap is tiled automatically (with the pyramid
# of retinaface.inference.tiling, so large faces are kept).
AUTO_TILE = 1024
AUTO_OVERLAP = TILE_OVERLAP

# report(kind, message): kind is "error" (an input failed), "warning" or "note"
Report = Callable[[str, str], None]
# landmarker(image, boxes (N, 4)) -> (points (N, K, 2), poses (N, 3) yaw pitch roll or None): the dense
# landmarks of the faces in boxes. retinaface.landmarks.inference.dense_faces with a model bound is
# one; the command hands it in, as this layer lies below retinaface.landmarks.
Landmarker = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, Optional[np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class DetectOptions:
    """How :func:`detect_inputs` runs (the detector holds the thresholds and resize policy)."""

    vis_threshold: float = VIS_THRESHOLD
    max_frames: Optional[int] = None
    batch: int = 1
    tile: Optional[int] = None
    overlap: int = TILE_OVERLAP
    crops_folder: Optional[Path] = None
    crop_size: int = ALIGNED_FACE_SIZE
    allow_partial: bool = False
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
    progress: bool = False


@dataclasses.dataclass
class DetectSummary:
    """What a run did: frames detected, faces at ``vis_threshold``, failed inputs (their messages),
    inputs left out as repeats, images tiled or downscaled for the pixel cap, and whether Ctrl-C
    ended it."""

    frames: int = 0
    faces: int = 0
    failures: List[str] = dataclasses.field(default_factory=list)
    repeated: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    capped: List[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False


def forward_pixels(detector: Any, height: int, width: int) -> int:
    """Input pixels of the forward pass ``detector`` runs for an ``height x width`` image (after
    its resize policy)."""
    transform = getattr(detector, "transform", None)
    scale = transform.scale_for(height, width) if transform is not None else 1.0
    return int(round(height * scale)) * int(round(width * scale))


class ImageDetector:
    """The per-image detect function of a run: ``--tile`` tiling, or the detector's own pass, with
    the ``max_pixels`` cap applied (tiles when the detector runs at the original size, a smaller
    long side under a resize policy). ``notes`` receives one line per capped image."""

    def __init__(self, detector: Any, options: DetectOptions, note: Callable[[str], None]) -> None:
        self.detector, self.options, self.note = detector, options, note
        self.capped: List[str] = []

    def __call__(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        options = self.options
        if options.tile is not None:
            return detect_tiled(self.detector, image, size=options.tile, overlap=options.overlap)
        height, width = image.shape[:2]
        pixels = forward_pixels(self.detector, height, width)
        if options.max_pixels is None or pixels <= options.max_pixels:
            return self.detector.detect(image)
        self.capped.append(name)
        limit = f"{pixels / 1e6:.1f} MP forward pass is over --max-pixels {options.max_pixels / 1e6:g} MP"
        transform = getattr(self.detector, "transform", None)
        resizes = transform is not None and (transform.target_size is not None or transform.max_size is not None
                                             or transform.fixed_size is not None)
        if not resizes:
            self.note(f"{name}: {width}x{height}: {limit}; detecting in {AUTO_TILE}-px tiles (with "
                      f"downscaled levels for large faces)")
            return detect_tiled(self.detector, image, size=AUTO_TILE, overlap=AUTO_OVERLAP)
        factor = math.sqrt(options.max_pixels / pixels)
        long_side = max(height, width) * transform.scale_for(height, width)
        cap = max(32, int(long_side * factor))
        self.note(f"{name}: {width}x{height}: {limit}; downscaling its long side to {cap} px")
        return self.detector.run([image], transform=transform.replace(max_size=cap, target_size=None))[0]


def detect_inputs(detector: Any, inputs: Sequence[str], output: Path, options: DetectOptions,
                  report: Report, landmarker: Optional[Landmarker] = None) -> DetectSummary:
    """Detect faces in every input; write ``output/<name>.jpg`` per image, ``.mp4`` per video or
    webcam, crops into ``options.crops_folder``, and one JSON line per frame into
    ``output/detections.jsonl`` (written atomically when the run ends, Ctrl-C included).

    Unreadable inputs are reported (``report("error", ...)``) and counted; the others run. Inputs
    repeating one already taken (a second link, a symbolic-link loop) are left out with one warning
    naming them. Ctrl-C stops the run and keeps what was detected (``interrupted``). ``landmarker``
    adds dense landmarks and head poses to the image faces at ``options.vis_threshold`` (drawn and
    in the JSON lines); a video or webcam is detected without them, said once."""
    summary = DetectSummary()
    found = collect_sources(inputs, skip=[output])
    summary.repeated = found.repeated
    bar = tqdm(total=len(found.sources), desc="detect", unit="input", disable=not options.progress)

    def say(kind: str, message: str) -> None:
        if options.progress:
            bar.clear()
        report(kind, message)
        if options.progress:
            bar.refresh()

    if found.repeated:
        first, original = found.repeated[0]
        more = f" and {len(found.repeated) - 1} more" if len(found.repeated) > 1 else ""
        say("warning", f"skipped {len(found.repeated)} input(s) already taken under another path "
                       f"(a second link or a symbolic-link loop): {first} (= {original}){more}")
    output_names = OutputNames(output)  # inputs never overwrite each other's outputs
    crop_names = OutputNames(options.crops_folder) if options.crops_folder is not None else None
    per_image = ImageDetector(detector, options, lambda message: say("note", message))
    video_noted = False
    try:
        with atomic_write(output / OUTPUT_MARKER) as log:
            try:
                for source in found.sources:
                    try:
                        if source.kind == "image":
                            _detect_image(source, per_image, options, output_names, crop_names, log, summary,
                                          landmarker)
                        else:
                            if landmarker is not None and not video_noted:
                                video_noted = True
                                say("note", f"{source.location}: dense landmarks are drawn and written for "
                                            f"images only; videos and webcams get the detector's five points")
                            _detect_video(detector, per_image, source, output_names(source, ".mp4"), options,
                                          log, summary)
                    except (SourceError, ValueError) as exc:  # unreadable, or one the model refuses
                        say("error", str(exc))
                        summary.failures.append(str(exc))
                    bar.update(1)
            except KeyboardInterrupt:
                # Ctrl-C is how a webcam run ends: keep what was detected so far (the JSON lines file
                # is written atomically and would otherwise be thrown away with everything in it)
                summary.interrupted = True
    finally:
        bar.close()
    summary.capped = per_image.capped
    return summary


def _faces_at(dets: np.ndarray, threshold: float) -> int:
    return int((dets[:, DET_SCORE] >= threshold).sum())


def _detect_image(source: Source, per_image: ImageDetector, options: DetectOptions, names: OutputNames,
                  crop_names: Optional[OutputNames], log, summary: DetectSummary,
                  landmarker: Optional[Landmarker] = None) -> None:
    for index, image in iter_frames(source, allow_partial=options.allow_partial):
        dets = per_image(image, source.location)
        target = names(source, ".jpg")
        shown = dets[:, DET_SCORE] >= options.vis_threshold
        crops = _write_crops(image, dets[shown], source, crop_names,
                             options.crop_size) if crop_names is not None else None
        annotated = draw_detections(image, dets, options.vis_threshold)
        dense = None
        if landmarker is not None:
            try:
                points, poses = landmarker(image, dets[shown, :4])
            except ValueError as exc:  # a box the crop policy refuses (no width or height): name the input
                raise SourceError(f"{source.location}: dense landmarks: {exc}") from None
            annotated = draw_dense_landmarks(annotated, points)
            dense = [None] * len(dets)  # faces under the display threshold get no dense fields
            for k, row in enumerate(np.flatnonzero(shown)):
                dense[row] = dense_landmark_fields(points[k], None if poses is None else poses[k])
        if not cv2.imwrite(str(target), annotated):
            raise SourceError(f"{source.location}: could not write {target}")
        log.write(detections_record(source.location, index, dets, target.name, crops, dense) + "\n")
        summary.frames += 1
        summary.faces += _faces_at(dets, options.vis_threshold)


def _write_crops(image: np.ndarray, dets: np.ndarray, source: Source, names: OutputNames, size: int) -> List[str]:
    """One aligned crop per row of ``dets``: ``<stem>_<k>.jpg`` (k from 0, in score order); their names."""
    if len(dets) == 0:
        return []
    written = []
    for k, crop in enumerate(align_faces(image, dets, size)):
        path = names(source, f"_{k}.jpg")
        cv2.imwrite(str(path), crop)
        written.append(path.name)
    return written


def _detect_video(detector: Any, per_image: ImageDetector, source: Source, target: Path, options: DetectOptions,
                  log, summary: DetectSummary) -> None:
    """One video or webcam through the threaded pipeline (retinaface.inference.video): decode, detect, annotate
    and encode overlap; every detected frame is logged as it comes. Re-raises Ctrl-C after the
    frames detected so far are logged and the video is closed."""
    if source.kind == "video" and not Path(source.location).is_file():
        raise SourceError(f"{source.location}: no such file")
    location = int(source.location) if source.kind == "webcam" else source.location
    counted = [0]

    def on_frame(index: int, dets: np.ndarray) -> None:
        log.write(detections_record(source.location, index, dets, target.name) + "\n")
        counted[0] += 1
        summary.frames += 1
        summary.faces += _faces_at(dets, options.vis_threshold)

    if options.batch == 1 or options.tile is not None:
        detect = lambda frames: [per_image(frame, source.location) for frame in frames]  # noqa: E731
    else:
        detect = lambda frames: detector.detect_batch(frames, batch_size=len(frames))  # noqa: E731
    try:
        result = process_video(detector, location, target, batch_size=options.batch,
                               draw_threshold=options.vis_threshold, progress=options.progress,
                               max_frames=options.max_frames, on_frame=on_frame, detect=detect)
    except VideoError as exc:
        raise SourceError(str(exc).replace("cannot open this video", f"cannot open {source.kind}")) from None
    if result.interrupted:
        raise KeyboardInterrupt
    if result.frames == 0:
        raise SourceError(f"{source.location}: no frames could be read")
    expected = result.expected_frames if source.kind == "video" and options.max_frames is None else 0
    # the container's frame count is an estimate for some formats: a shortfall of a frame or two
    # (or 1 %) is not taken for damage
    if expected and result.frames < expected - max(2, expected // 100):
        raise SourceError(f"{source.location}: stopped after {result.frames} of {expected} frames "
                          f"(truncated or damaged video)")


__all__ = ["DEFAULT_MAX_PIXELS", "DetectOptions", "DetectSummary", "ImageDetector", "Landmarker", "detect_inputs",
           "forward_pixels"]
