"""Whole-process time of ``retinaface eval --preds`` on the full WIDER FACE val set, both protocols,
next to the straightforward loop references (tests/widerface_reference.py for the python port,
tests/widerface_official_reference.py for the official program), measured in the same run.

    python benchmarks/bench_widerface_eval.py [--gt-dir DIR] [--boxes 400] [--repeats 3]
                                              [--reference-images 150] [--seed 0] [--keep-folder DIR]

The prediction folder is generated from the real ground truth (default ../shared/widerface/
ground_truth) in a temporary directory: for every face, up to three jittered boxes with scores that
grow with face size (tiny faces are often missed), then random low-score boxes up to about --boxes
per image, sorted by score and written as a detector at threshold 0.02 writes them (float32 scores,
corners truncated to x y w h). Each evaluation runs as a fresh process (``python -m retinaface eval
--preds ...``), start to finish: interpreter, imports, .mat reading, folder reading, metric. The
references run as fresh processes too, on --reference-images random images (their loops per
threshold make the full set take minutes to hours), and are extrapolated by image count; the
printed AP difference is on that subset. Also prints the AP gap between the protocols.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from retinaface.evaluation import evaluate
from retinaface.formats import load_ground_truth, read_predictions, to_wider_rows

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GT = ROOT.parent / "shared" / "widerface" / "ground_truth"

# Runs one reference on a subset of the folder as a separate process; prints its APs as JSON.
REFERENCE_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.widerface_official_reference import official_evaluate, official_read_folder
from tests.widerface_reference import reference_evaluate, reference_load_mat_ground_truth, reference_read_predictions
protocol, gt_dir, pred_dir, wanted = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
events, images, boxes, keep = reference_load_mat_ground_truth(gt_dir)
# the chosen images only (the same subset for both references)
wanted = {tuple(k) for k in wanted}
sel = [[i for i, n in enumerate(images[e]) if (ev, n) in wanted] for e, ev in enumerate(events)]
images = [[images[e][i] for i in s] for e, s in enumerate(sel)]
boxes = [[boxes[e][i] for i in s] for e, s in enumerate(sel)]
keep = {k: [[v[e][i] for i in s] for e, s in enumerate(sel)] for k, v in keep.items()}
if protocol == "official":
    preds = official_read_folder(pred_dir, events, images)
    aps, _ = official_evaluate(preds, events, images, boxes, keep, sort=False)
else:
    preds = {k: v for k, v in reference_read_predictions(pred_dir).items() if k in wanted}
    aps, _ = reference_evaluate(preds, events, images, boxes, keep)
print(json.dumps(aps))
"""


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


def write_folder(folder: Path, dets: dict) -> int:
    """The layout write_prediction_file writes, without its per-file fsync (3,226 of them would
    dominate the set-up); returns the number of boxes."""
    total = 0
    for (event, name), d in dets.items():
        rows = to_wider_rows(d)
        (folder / event).mkdir(parents=True, exist_ok=True)
        lines = "".join(f"{int(x)} {int(y)} {int(w)} {int(h)} {s}\n"
                        for (x, y, w, h), s in zip(rows[:, :4].tolist(), (str(v) for v in d[:, 4])))
        (folder / event / f"{name}.txt").write_text(f"{name}\n{len(rows)}\n{lines}")
        total += len(rows)
    return total


def run(cmd: list) -> tuple:
    """-> (wall seconds, CPU seconds (user + system) of the child, its stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt-dir", type=Path, default=DEFAULT_GT)
    parser.add_argument("--boxes", type=int, default=400, help="about this many boxes per image")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each evaluation process (median shown)")
    parser.add_argument("--reference-images", type=int, default=150, help="images for the reference processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-folder", type=Path, default=None, help="write the folder here and keep it")
    args = parser.parse_args()

    gt = load_ground_truth(args.gt_dir)
    with tempfile.TemporaryDirectory(prefix="widerface_bench_") as tmp:
        folder = args.keep_folder or Path(tmp) / "predictions"
        start = time.perf_counter()
        n_boxes = write_folder(folder, detector_like(gt, args.boxes, args.seed))
        print(f"prediction folder: {gt.num_images} files, {n_boxes} boxes ({n_boxes / gt.num_images:.0f} per "
              f"image), written in {time.perf_counter() - start:.1f} s -> {folder}")

        rng = np.random.default_rng(args.seed + 1)
        keys = gt.image_keys()
        chosen = [keys[i] for i in sorted(rng.choice(len(keys), min(args.reference_images, len(keys)),
                                                     replace=False))]
        results = {}
        # Wall time depends on what else runs; CPU time (user + system) much less so.
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; times are whole processes, "
              f"wall (CPU)")
        print(f"{'protocol':<12} {'retinaface eval (s)':>20} {'reference (s, extrapolated)':>28} {'ratio':>7}  AP")
        for protocol in ("official", "python-port"):
            cmd = [sys.executable, "-m", "retinaface", "eval", "--preds", str(folder), "--gt", str(args.gt_dir),
                   "--protocol", protocol, "--json"]
            times, cpus = [], []
            for _ in range(args.repeats):
                elapsed, cpu, out = run(cmd)
                times.append(elapsed)
                cpus.append(cpu)
            results[protocol] = json.loads(out.strip().splitlines()[-1])
            fast_s, fast_cpu = statistics.median(times), statistics.median(cpus)
            ref_s, ref_cpu, ref_out = run([sys.executable, "-c", REFERENCE_SCRIPT, str(ROOT), protocol,
                                           str(args.gt_dir), str(folder), json.dumps(chosen)])
            ref_full = ref_s * gt.num_images / len(chosen)
            ref_full_cpu = ref_cpu * gt.num_images / len(chosen)
            ref_aps = json.loads(ref_out.strip().splitlines()[-1])
            # the fast evaluator on the reference's subset, to show that they agree
            sub_gt = gt.subset(chosen)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                preds = read_predictions(folder, protocol=protocol)
                sub = evaluate({k: preds[k] for k in chosen}, sub_gt, protocol=protocol)
            diff = max(abs(getattr(sub, s) - ref_aps[s]) for s in ref_aps)
            aps = results[protocol]
            print(f"{protocol:<12} {fast_s:>9.2f} ({fast_cpu:5.2f} cpu) {ref_full:>14.1f} ({ref_full_cpu:6.1f} cpu) "
                  f"{ref_full_cpu / fast_cpu:>6.0f}x  "
                  f"easy {aps['easy']:.6f} medium {aps['medium']:.6f} hard {aps['hard']:.6f}")
            print(f"{'':<12} runs {', '.join(f'{t:.2f}' for t in times)} s; reference process on {len(chosen)} "
                  f"images {ref_s:.1f} s; max |AP fast - reference| on them {diff:.1e}")
        gap = {s: results["official"][s] - results["python-port"][s] for s in ("easy", "medium", "hard")}
        print("official - python-port AP: " + "  ".join(f"{s} {v:+.2e}" for s, v in gap.items()))


if __name__ == "__main__":
    main()
