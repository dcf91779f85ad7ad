#!/usr/bin/env python
"""A landmark network's INT8 ONNX file against its float one: NME on the synthetic val faces and on
the real WFLW test faces (when ../shared/real is there), its spread over calibration draws, and the
latency ratio on ONNX Runtime, all measured in this run.

For each float-layer policy, ``--draws`` INT8 files are quantised, each calibrated on another random
``--calibration-faces`` of the synthetic train split (crops by the landmark crop policy, as
``retinaface export --int8`` makes them). Each file's NME is set against the float file's on the
same faces; the table gives the mean, min and max of the change over the draws. Latency: median
of ``--repeats`` calls per file at batch 1 and batch ``--batch``, float and INT8 timed in rotating
blocks (:func:`retinaface.deploy.quantize.median_latency_ms`); the ratio is float / INT8.

Policies: ``default`` is ``retinaface export --int8``'s for landmark networks (the output tail and
the stem float, depthwise inputs equalized,
:data:`~retinaface.landmarks.export.LANDMARK_QUANTIZE_OPTIONS`); ``highres-float`` also keeps the
layers finer than stride 8 float (the detector's policy); ``no-equalize`` skips the equalization.

Example: python benchmarks/bench_landmark_int8.py --weights runs/landmarks/best.pth --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_WFLW = ROOT.parent / "shared" / "real" / "landmarks" / "wflw_test" / "list_98pt_rect_attr_test.txt"

POLICIES = {
    "default": {},
    "highres-float": dict(high_resolution_float=True),
    "no-equalize": dict(equalize=False),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="runs/landmarks/best.pth", help="a landmark checkpoint")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--draws", type=int, default=5, help="calibration draws per policy")
    parser.add_argument("--calibration-faces", type=int, default=64)
    parser.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--batch", type=int, default=32, help="the larger batch timed")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="the rows as JSON on the last line")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from retinaface.deploy.quantize import median_latency_ms
    from retinaface.landmarks.evaluate import evaluate_landmarks
    from retinaface.landmarks.export import (calibration_faces, export_landmark_int8, export_landmark_onnx,
                                             landmark_faces)
    from retinaface.landmarks.runtime import LandmarkOnnxModel
    from retinaface.landmarks.task import face_crops, load_landmark_model, load_samples, normalise_crops, \
        predict_crops

    torch.set_num_threads(args.threads)
    model = load_landmark_model(args.weights)
    size, margin = int(model.config.input_size), float(model.crop_margin)
    sets = {"synthetic val": landmark_faces("synthetic", model.num_points, "val")[0]}
    if REAL_WFLW.is_file() and model.num_points == 98:
        sets["real WFLW test"] = load_samples(REAL_WFLW)
    else:
        print(f"real WFLW faces: skipped ({REAL_WFLW} absent or the model is not 98-point)")
    crops = {name: face_crops(samples, size, margin) for name, samples in sets.items()}

    def nme(runtime) -> dict:
        out = {}
        for name, (batch, transforms) in crops.items():
            normalised = predict_crops(runtime, batch)
            points = np.stack([t.normalised_to_image(p) for t, p in zip(transforms, normalised)])
            out[name] = evaluate_landmarks(points, sets[name]).nme
        return out

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-landmark-int8-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        export_landmark_onnx(model, float_path)
        float_model = LandmarkOnnxModel(float_path, threads=args.threads)
        float_nme = nme(float_model)
        print(f"{args.weights}: {model.config.name} {model.num_points} points at {size} px; float ONNX NME "
              + ", ".join(f"{k} {100 * v:.3f} %" for k, v in float_nme.items()))
        inputs = {b: normalise_crops(crops["synthetic val"][0][:b]) for b in (1, args.batch)}
        for policy in args.policies:
            changes = {name: [] for name in sets}
            kept = None
            for draw in range(args.draws):
                faces, source = calibration_faces("synthetic", model.num_points, args.calibration_faces, seed=draw)
                path = Path(tmp) / f"{policy}-{draw}.onnx"
                done = export_landmark_int8(model, path, faces, source, method=args.method, **POLICIES[policy])
                kept = len(done.result.float_nodes)
                int8_nme = nme(LandmarkOnnxModel(path, threads=args.threads))
                for name in sets:
                    changes[name].append(int8_nme[name] - float_nme[name])
            int8_model = LandmarkOnnxModel(Path(tmp) / f"{policy}-0.onnx", threads=args.threads)
            latency = {}
            for b, x in inputs.items():
                ms = median_latency_ms({"float": lambda x=x: float_model(x), "int8": lambda x=x: int8_model(x)},
                                       repeats=args.repeats)
                latency[b] = (ms["float"], ms["int8"])
            row = {"policy": policy, "float_nodes": kept, "draws": args.draws,
                   "nme_change": {name: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                                  for name, v in changes.items()},
                   "float_nme": float_nme,
                   "latency_ms": {str(b): {"float": f, "int8": i, "speedup": f / i} for b, (f, i) in latency.items()}}
            rows.append(row)
            cells = "; ".join(f"{name}: NME change mean {100 * c['mean']:+.3f} points (min {100 * c['min']:+.3f}, "
                              f"max {100 * c['max']:+.3f})" for name, c in row["nme_change"].items())
            speed = ", ".join(f"batch {b}: float {v['float']:.3f} ms, int8 {v['int8']:.3f} ms, {v['speedup']:.2f}x"
                              for b, v in row["latency_ms"].items())
            print(f"{policy:<12} ({kept} nodes float, {args.draws} draws) {cells}\n{'':<14}{speed}")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
