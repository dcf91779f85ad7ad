"""Times the WIDER FACE evaluation on the full official val set with detector-like predictions:
reading the prediction folder, and evaluating all three settings with the vectorised evaluator
(retinaface.evaluation), against the loop-based reference (tests/widerface_reference.py) on a
random subset of images, extrapolated to the whole set, in the same run.

    python benchmarks/bench_widerface_eval.py [--gt-dir DIR] [--boxes 300] [--subset 200]
                                              [--repeats 5] [--seed 0] [--keep-folder DIR]

The prediction folder is generated in a temporary directory (or --keep-folder): for every face,
up to three jittered boxes with scores that grow with face size (tiny faces are often missed),
then random low-score boxes up to about --boxes per image, sorted by score and written as a
detector at threshold 0.02 writes them (float32 scores, corners truncated to x y w h).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repo root: retinaface/ and tests/

from retinaface.evaluation import evaluate, load_ground_truth, read_predictions, write_predictions  # noqa: E402
from tests.widerface_reference import reference_evaluate_gt  # noqa: E402

DEFAULT_GT = ROOT.parent / "shared" / "widerface" / "ground_truth"


def detector_like(gt, boxes_per_image: int, seed: int) -> dict:
    """(event, image) -> (N, 5) float32 [x1, y1, x2, y2, score], sorted by score, scores > 0.02."""
    rng = np.random.default_rng(seed)
    out = {}
    for event, name, boxes in gt:
        faces = np.asarray(boxes, np.float64)
        faces = faces[(faces[:, 2] > 0) & (faces[:, 3] > 0)]
        size = np.sqrt(faces[:, 2] * faces[:, 3])
        # Found with a probability that grows with the face size (~50 % at 10 px).
        found = faces[rng.random(len(faces)) < 1 / (1 + np.exp(-(size - 10) / 4))]
        parts, scores = [], []
        for copies in range(3):
            keep = found if copies == 0 else found[rng.random(len(found)) < 0.3]
            if not len(keep):
                continue
            wh = keep[:, 2:4]
            jitter = rng.normal(0, 0.06 + 0.05 * copies, keep.shape) * np.repeat(wh, 2, axis=1)
            box = keep + jitter
            parts.append(np.c_[box[:, :2], box[:, :2] + np.maximum(box[:, 2:4], 1)])
            s = 1 / (1 + np.exp(-(np.sqrt(wh[:, 0] * wh[:, 1]) - 12) / 6)) * rng.uniform(0.6, 1.0, len(keep))
            scores.append(np.clip(s * (0.7 ** copies), 0.021, 1.0))
        target = int(rng.integers(int(0.8 * boxes_per_image), int(1.2 * boxes_per_image) + 1))
        n_random = max(0, target - sum(len(p) for p in parts))
        xy = rng.uniform(0, 1024, (n_random, 2))
        wh = np.exp(rng.uniform(np.log(4), np.log(300), (n_random, 1))) * rng.uniform(0.7, 1.3, (n_random, 2))
        parts.append(np.c_[xy, xy + wh])
        # Background: mostly just above the 0.02 cut, a few confident false positives.
        background = 0.02 + rng.beta(1.0, 12.0, n_random) * 0.9 + 1e-6
        confident = rng.random(n_random) < 0.002
        background[confident] = rng.uniform(0.3, 0.8, int(confident.sum()))
        scores.append(background)
        dets = np.c_[np.concatenate(parts), np.concatenate(scores)].astype(np.float32)
        out[event, name] = dets[np.argsort(-dets[:, 4], kind="stable")]
    return out


def timed(fn, repeats: int):
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt-dir", type=Path, default=DEFAULT_GT)
    parser.add_argument("--boxes", type=int, default=300, help="about this many boxes per image")
    parser.add_argument("--subset", type=int, default=200, help="images for the reference run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-folder", type=Path, default=None, help="write the folder here and keep it")
    args = parser.parse_args()

    start = time.perf_counter()
    gt = load_ground_truth(args.gt_dir)
    print(f"ground truth: {gt.num_images} images, {gt.num_faces} faces "
          f"({time.perf_counter() - start:.2f} s to load the .mat files)")

    with tempfile.TemporaryDirectory(prefix="widerface_bench_") as tmp:
        folder = args.keep_folder or Path(tmp) / "predictions"
        start = time.perf_counter()
        dets = detector_like(gt, args.boxes, args.seed)
        write_predictions(folder, dets)
        n_boxes = sum(len(d) for d in dets.values())
        print(f"prediction folder: {len(dets)} files, {n_boxes} boxes ({n_boxes / len(dets):.0f} per image), "
              f"generated and written in {time.perf_counter() - start:.1f} s -> {folder}")

        preds, read_times = timed(lambda: read_predictions(folder, gt), args.repeats)
        result, eval_times = timed(lambda: evaluate(preds, gt), args.repeats)
        _, e2e_times = timed(lambda: evaluate(folder, gt), max(1, args.repeats // 2))
        read_s, eval_s, e2e_s = (statistics.median(t) for t in (read_times, eval_times, e2e_times))
        print(f"AP  {result}")
        print(f"read_predictions (full val)          : {read_s:7.3f} s  (median of {len(read_times)}; "
              f"first {read_times[0]:.3f} s)")
        print(f"evaluate, 3 settings (full val)      : {eval_s:7.3f} s  (median of {len(eval_times)}; "
              f"first {eval_times[0]:.3f} s)")
        print(f"evaluate(folder) end to end          : {e2e_s:7.3f} s")

        # The loop reference on a random subset of images, extrapolated by image count.
        rng = np.random.default_rng(args.seed + 1)
        keys = gt.image_keys()
        chosen = [keys[i] for i in sorted(rng.choice(len(keys), min(args.subset, len(keys)), replace=False))]
        sub_gt = gt.subset(chosen)
        sub_preds = {k: preds[k] for k in chosen}
        start = time.perf_counter()
        ref_aps, _ = reference_evaluate_gt(sub_preds, sub_gt)
        ref_s = time.perf_counter() - start
        sub_fast, sub_times = timed(lambda: evaluate(sub_preds, sub_gt), args.repeats)
        diff = max(abs(getattr(sub_fast, s) - ref_aps[s]) for s in ref_aps)
        sub_boxes = sum(len(v) for v in sub_preds.values())
        ref_full = ref_s * gt.num_images / len(chosen)
        print(f"reference on {len(chosen)} images ({sub_boxes} boxes): {ref_s:7.3f} s  "
              f"(fast on the same: {statistics.median(sub_times):.4f} s; max |AP diff| {diff:.1e})")
        print(f"reference extrapolated to full val   : {ref_full:7.1f} s")
        print(f"speed-up of evaluate over reference  : {ref_full / eval_s:7.0f} x  "
              f"(read + evaluate: {ref_full / (read_s + eval_s):.0f} x)")


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        main()
