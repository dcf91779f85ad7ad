"""The two WIDER FACE evaluation protocols: the spec's minimal cases with their stated values, the
vectorised evaluator against each loop-by-loop reference on random adversarial cases, and each
protocol's reading rules (file lookup, count line, order, "Invalid format", missing files)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from retinaface.evaluation import (InvalidPredictionWarning, MissingPredictionsWarning, PredictionCountWarning,
                                   WiderGroundTruth, evaluate, read_prediction_folder, read_predictions)
from tests.widerface_official_reference import official_evaluate, official_evaluate_gt, official_read_folder
from tests.widerface_reference import reference_evaluate_gt, reference_read_predictions

SETTINGS = ("easy", "medium", "hard")
TOL = 1e-6
REFERENCES = {"official": official_evaluate_gt, "python-port": reference_evaluate_gt}


def one_image(faces, keep) -> WiderGroundTruth:
    faces = np.asarray(faces, np.int32).reshape(-1, 4)
    return WiderGroundTruth(["0--E"], [["img"]], [[faces]], {s: [[np.asarray(keep, np.int64)]] for s in SETTINGS})


FAR = [500, 500, 9, 9]

# The spec's minimal cases: (faces, counted, detections, official AP, port AP).
MINIMAL = {
    "first qualifying face is the ignored one": ([[0, 0, 9, 9], [2, 0, 9, 9]], [2],
                                                 [[2, 0, 9, 9, 0.9], FAR + [0.1]], 0.0, 1.0),
    "first face instead of the best": ([[0, 0, 9, 9], [2, 0, 9, 9]], [1, 2],
                                       [[2, 0, 9, 9, 0.9], [0, 0, 9, 9, 0.8]], 0.5, 1.0),
    # a far-away box at a lower score keeps the normalization defined (one score alone is 0 / 0)
    "rounded corner and union": ([[0, 0, 9, 9]], [1], [[3.5, 0, 8, 9, 0.9], FAR + [0.1]], 0.0, 1.0),
    "sorted on reading": ([[0, 0, 9, 9]], [1], [FAR + [0.2], [0, 0, 9, 9, 0.9]], 1.0, 0.5),
}


@pytest.mark.parametrize("case", list(MINIMAL))
def test_spec_minimal_cases(case):
    faces, keep, dets, want_official, want_port = MINIMAL[case]
    gt = one_image(faces, keep)
    preds = {("0--E", "img"): np.array(dets, np.float64)}
    for protocol, want in (("official", want_official), ("python-port", want_port)):
        result = evaluate(preds, gt, protocol=protocol)
        ref, _ = REFERENCES[protocol](preds, gt)
        for s in SETTINGS:
            assert getattr(result, s) == pytest.approx(want, abs=1e-12), (protocol, s)
            assert ref[s] == pytest.approx(want, abs=1e-12), (protocol, s)


def test_normalization_differs_for_raw_logits_and_negative_scores():
    gt = one_image([[0, 0, 9, 9], [100, 0, 9, 9]], [1, 2])
    # Equal raw logits: the port's lo = min(1, 2) = 1 maps them to 1, every threshold passes; the
    # official min-max divides 0 by 0, no threshold passes.
    equal = {("0--E", "img"): np.array([[0, 0, 9, 9, 2.0], [100, 0, 9, 9, 2.0]])}
    assert evaluate(equal, gt, protocol="python-port").easy == 1.0
    assert evaluate(equal, gt, protocol="official").easy == 0.0
    # Spread logits and negative scores: the curves differ between the protocols, each matching
    # its own program (the official running max starts at realmin('single') > 0).
    for shift in (0.0, -10.0):
        preds = {("0--E", "img"): np.array([[0, 0, 9, 9, 5.0 + shift], FAR + [3.0 + shift],
                                            [100, 0, 9, 9, 2.0 + shift]])}
        results = {p: evaluate(preds, gt, protocol=p) for p in REFERENCES}
        for p, result in results.items():
            assert_matches(result, *REFERENCES[p](preds, gt), (shift, p))
        if shift == 0.0:
            assert not np.array_equal(results["official"].curves["easy"][0], results["python-port"].curves["easy"][0])


# ============================================================================ random adversarial
def adversarial_case(rng: np.random.Generator):
    """A small ground truth and in-memory predictions built to separate the protocols: near-
    duplicate and overlapping faces, fractional and .5 coordinates, ties, unsorted files, scores
    above 1 and below 0, duplicates, ignored faces, images without a file or without boxes."""
    images, preds = [], {}
    for i in range(int(rng.integers(1, 5))):
        k = int(rng.choice([0, 1, 2, 3, 6]))
        base = rng.integers(0, 60, (k, 2))
        wh = rng.integers(-1, 25, (k, 2))
        if k > 1 and rng.random() < 0.6:  # a neighbour shifted by a pixel or two: official vs best face
            base[1] = base[0] + rng.integers(0, 3, 2)
            wh[1] = wh[0] + rng.integers(-1, 2, 2)
        faces = np.c_[base, wh].astype(np.int32)
        keep = {s: np.sort(rng.choice(np.arange(1, k + 1), int(rng.integers(0, k + 1)), replace=False))
                for s in SETTINGS} if k else {s: np.zeros(0, np.int64) for s in SETTINGS}
        images.append((f"{i % 2}--Ev", f"im{i}", faces, keep))
        r = rng.random()
        if r < 0.1:
            continue  # no file
        parts = []
        if k:
            chosen = faces[rng.random(k) < 0.8].astype(np.float64)
            jitter = rng.choice([0.0, 0.5, 1.0, 1.5, 2.0, 3.5], chosen.shape) * rng.choice([-1, 1], chosen.shape)
            frac = rng.random(chosen.shape) < 0.3
            jitter[frac] = rng.uniform(-3, 3, int(frac.sum()))
            parts.append(chosen + jitter * (rng.random(chosen.shape) < 0.5))
        n_rand = int(rng.integers(0, 6))
        parts.append(np.c_[rng.uniform(-10, 80, (n_rand, 2)), rng.uniform(-2, 30, (n_rand, 2))])
        xywh = np.concatenate(parts)
        if len(xywh) and rng.random() < 0.4:
            xywh = np.concatenate([xywh, xywh[rng.integers(0, len(xywh), 2)]])  # duplicates
        if rng.random() < 0.4:
            xywh = np.round(xywh * 2) / 2  # halves
        n = len(xywh)
        preds[images[-1][0], images[-1][1]] = np.c_[xywh, np.zeros(n)]
    mode = rng.choice(["unit", "ties", "logits", "negative", "wide"])
    for key, v in preds.items():
        n = len(v)
        v[:, 4] = {"unit": lambda: rng.uniform(0.02, 1.0, n), "ties": lambda: rng.choice([0.3, 0.5, 0.5, 0.9], n),
                   "logits": lambda: rng.uniform(1.5, 9.0, n), "negative": lambda: rng.uniform(-6.0, -0.5, n),
                   "wide": lambda: rng.uniform(-3.0, 4.0, n)}[mode]()
        if rng.random() < 0.5:
            preds[key] = v[rng.permutation(n)]
    order, per = [], {}
    for event, name, faces, keep in images:
        if event not in per:
            order.append(event)
            per[event] = []
        per[event].append((name, faces, keep))
    gt = WiderGroundTruth(order, [[n for n, _, _ in per[e]] for e in order], [[f for _, f, _ in per[e]] for e in order],
                          {s: [[k[s] for _, _, k in per[e]] for e in order] for s in SETTINGS})
    return gt, preds


def assert_matches(result, ref_aps, ref_curves, what):
    for s in SETTINGS:
        a, b = getattr(result, s), ref_aps[s]
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= TOL, (what, s, a, b)
        for got, want in zip(result.curves[s], ref_curves[s]):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=str(what))


@pytest.mark.parametrize("block", range(4))
def test_random_adversarial_cases_match_both_references(block):
    """300 cases in all (75 per block), each under both protocols; most with 50 thresholds to
    keep the loop references quick, every fifth with the full 1,000."""
    gaps = []
    for case in range(75):
        seed = 10_000 + block * 75 + case
        rng = np.random.default_rng(seed)
        gt, preds = adversarial_case(rng)
        T = 1000 if case % 5 == 0 else 50
        for protocol, reference in REFERENCES.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MissingPredictionsWarning)
                result = evaluate(preds, gt, protocol=protocol, num_thresholds=T)
            assert_matches(result, *reference(preds, gt, num_thresholds=T), (seed, protocol))
            gaps.append(result.hard)
    # the cases do separate the protocols (otherwise this test would prove little)
    official, port = np.array(gaps[0::2]), np.array(gaps[1::2])
    ok = ~(np.isnan(official) | np.isnan(port))
    assert np.mean(np.abs(official[ok] - port[ok]) > 1e-3) > 0.2


# ============================================================================ reading rules
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


FACES = [[10, 10, 40, 40], [100, 10, 40, 40]]


def two_faces_gt(names=("a", "b", "c", "d")) -> WiderGroundTruth:
    faces = np.array(FACES, np.int32)
    return WiderGroundTruth(["0--E"], [list(names)], [[faces] * len(names)],
                            {s: [[np.array([1, 2])] * len(names)] for s in SETTINGS})


@pytest.mark.parametrize("body,why", [
    ("a\n3\n10 10 40 40 0.9\n", "count line says 3 boxes, the file has 1"),
    ("a\n2\n10 10 40 40 0.9\n\n100 10 40 40 0.8\n", "blank line"),
    ("a\n1\n10 10 40 40\n", "fewer than five numbers"),
    ("a\n1\n10 10 40 40 0.9 eye\n", "not a number"),
    ("a\nmany\n10 10 40 40 0.9\n", "unreadable count"),
    ("a\n1.5\n10 10 40 40 0.9\n", "not a whole number"),
    ("a\n", "no count line"),
])
def test_official_invalid_format_means_no_detections_and_is_named(tmp_path, body, why):
    gt = two_faces_gt(("a", "b"))
    bad = write(tmp_path / "0--E" / "a.txt", body)
    write(tmp_path / "0--E" / "b.txt", "b\n2\n10 10 40 40 0.9\n100 10 40 40 0.5\n")
    with pytest.warns(InvalidPredictionWarning, match=re.escape(str(bad)) + ".*" + re.escape(why)):
        result = evaluate(tmp_path, gt)
    assert result.invalid_files == 1
    assert result.hard == pytest.approx(0.5)  # image a: no detections, its two faces are missed
    assert official_evaluate(official_read_folder(tmp_path, gt.events, gt.images), gt.events, gt.images,
                             gt.boxes, gt.keep, sort=False)[0]["hard"] == pytest.approx(0.5)


def test_official_reads_exactly_count_lines_and_warns_under_both(tmp_path):
    gt = two_faces_gt(("a", "b"))
    # count 1: the second box (and the garbage after it) is not read by official; the port reads it
    a = write(tmp_path / "0--E" / "a.txt", "a\n1\n10 10 40 40 0.9\n100 10 40 40 0.8\n")
    write(tmp_path / "0--E" / "b.txt", "b\n2\n10 10 40 40 0.7\n100 10 40 40 0.6\n")
    for protocol, hard in (("official", 0.75), ("python-port", 1.0)):
        with pytest.warns(PredictionCountWarning, match=re.escape(str(a))):
            assert evaluate(tmp_path, gt, protocol=protocol).hard == pytest.approx(hard)
    write(tmp_path / "0--E" / "a.txt", "a\n1\n10 10 40 40 0.9\nnot a box\n")
    with pytest.warns(PredictionCountWarning):
        assert evaluate(tmp_path, gt).hard == pytest.approx(0.75)
    with pytest.raises(ValueError, match=re.escape(f"{a}:4:")):
        evaluate(tmp_path, gt, protocol="python-port")  # the port reads every line: an error


def test_file_lookup_follows_the_protocol(tmp_path):
    gt = two_faces_gt(("a", "b"))
    # the file of image a is named after something else: the port finds it by its line 1,
    # official looks for 0--E/a.txt and counts image a as missing
    write(tmp_path / "0--E" / "renamed.txt", "a\n2\n10 10 40 40 0.9\n100 10 40 40 0.8\n")
    write(tmp_path / "0--E" / "b.txt", "b\n2\n10 10 40 40 0.7\n100 10 40 40 0.6\n")
    assert evaluate(tmp_path, gt, protocol="python-port").hard == pytest.approx(1.0)
    with pytest.warns(MissingPredictionsWarning, match=r"1 of 2 images.*0--E/a\.txt"):
        result = evaluate(tmp_path, gt)
    assert result.missing_images == 1 and result.hard == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(6))
def test_random_folders_match_the_references_reading_included(tmp_path, seed):
    """Folders with count mismatches, invalid files, missing files, renamed files, extra tokens,
    CRLF and blank lines: fast evaluation of the folder == reference reader + reference metric."""
    rng = np.random.default_rng(500 + seed)
    gt, preds = adversarial_case(rng)
    while len(preds) < 2 * gt.num_images // 3 + 1:  # at most a third missing: no --allow-missing needed
        gt, preds = adversarial_case(rng)
    port_ok = True
    for i, ((event, name), dets) in enumerate(preds.items()):
        lines = [f"{event}/{name}.jpg" if rng.random() < 0.5 else name]
        count = len(dets) + int(rng.choice([0, 0, 0, -1, 1, 2]))
        lines.append(str(max(count, 0)))
        for row in dets:
            tokens = [repr(float(v)) for v in row]
            if rng.random() < 0.1:
                tokens += ["3", "4.5"]
            lines.append(" ".join(tokens))
        if rng.random() < 0.15:
            lines.insert(3, "")  # a blank line: invalid for official if within the count
        eol = "\r\n" if rng.random() < 0.2 else "\n"
        write(tmp_path / event / f"{name}.txt", eol.join(lines) + eol)
    for protocol in ("official", "python-port"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = evaluate(tmp_path, gt, protocol=protocol)
        if protocol == "official":
            read = official_read_folder(tmp_path, gt.events, gt.images)
            ref = official_evaluate(read, gt.events, gt.images, gt.boxes, gt.keep, sort=False)
        else:
            ref = reference_evaluate_gt(reference_read_predictions(tmp_path), gt)
        assert fast.missing_images == gt.num_images - len(preds)
        assert_matches(fast, *ref, (seed, protocol))
    assert port_ok


def test_a_folder_that_matches_nothing_is_an_error_naming_what_was_expected(tmp_path):
    gt = two_faces_gt(("a", "b"))
    write(tmp_path / "run" / "0--E" / "a.txt", "a\n0\n")
    write(tmp_path / "run" / "0--E" / "b.txt", "b\n0\n")
    for protocol in ("official", "python-port"):
        with pytest.raises(ValueError, match=r"no prediction file matches.*expected .*0--E/a\.txt.*one level down, "
                                             r"in .*run"):
            evaluate(tmp_path, gt, protocol=protocol)
    other = tmp_path / "other"
    write(other / "9--Test" / "x.txt", "x\n0\n")
    with pytest.raises(ValueError, match=r"no prediction file matches.*another split"):
        evaluate(other, gt)
    with pytest.raises(ValueError, match=r"not in the ground truth.*9--Test/x"):
        evaluate(other, gt, protocol="python-port")


def test_more_than_half_missing_is_an_error_unless_allowed(tmp_path):
    gt = two_faces_gt(("a", "b", "c"))
    write(tmp_path / "0--E" / "a.txt", "a\n2\n10 10 40 40 0.9\n100 10 40 40 0.8\n")
    for protocol in ("official", "python-port"):
        with pytest.raises(ValueError, match=r"2 of 3 ground-truth images have no prediction file.*--allow-missing"):
            read_prediction_folder(tmp_path, gt, protocol)
        with pytest.warns(MissingPredictionsWarning, match="2 of 3 images"):
            result = evaluate(tmp_path, gt, protocol=protocol, allow_missing=True)
        assert result.missing_images == 2 and result.hard == pytest.approx(1 / 3)


def test_official_sorting_is_done_for_in_memory_predictions_too(tmp_path):
    # Unsorted, with tied scores (the sort's stability is checked against the reference, with
    # ties, in the random cases).
    gt = two_faces_gt(("a",))
    dets = np.array([FAR + [0.5], [10, 10, 40, 40, 0.9], [100, 10, 40, 40, 0.5], FAR + [0.1]])
    in_memory = evaluate({("0--E", "a"): dets}, gt)
    write(tmp_path / "0--E" / "a.txt", "a\n4\n" + "".join(" ".join(map(repr, r.tolist())) + "\n" for r in dets))
    from_folder = evaluate(tmp_path, gt)
    ref, _ = official_evaluate_gt({("0--E", "a"): dets}, gt)
    assert in_memory.hard == from_folder.hard == pytest.approx(ref["hard"], abs=1e-12)
    # the port keeps the file order: the far box at 0.1 written last is every threshold's last position
    assert evaluate({("0--E", "a"): dets}, gt, protocol="python-port").hard != in_memory.hard
    assert read_predictions(tmp_path, gt)["0--E", "a"].tolist() == dets.tolist()  # reading keeps file order
