"""Dense landmarks on detected faces from the library and the command: Detector.detect_and_landmark is
landmarks.inference.detect_and_landmark, FaceAnalyzer carries points and head pose per face, and
`retinaface detect --landmarks` draws the points and writes landmarks_dense / head_pose per face.

The landmark model here is a tiny PFLD whose last layer is set to give one fixed shape (the 68 true
points of a drawn face, in its crop): whatever the crop shows, the points of a face are that shape
mapped into the face's box by the crop policy's inverse, which the tests compute independently, and
its head pose is the drawn face's."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from retinaface.inference.detector import Detector
from retinaface.landmarks.crop import crop_transform
from retinaface.landmarks.inference import DenseFaces, dense_faces, detect_and_landmark
from retinaface.landmarks.models import create_landmark_model
from retinaface.landmarks.pose import head_pose, head_poses
from retinaface.landmarks.synthetic import render_landmark_face
from retinaface.landmarks.task import load_landmark_model, save_landmark_checkpoint
from retinaface.recognition.analyzer import FaceAnalyzer
from retinaface.recognition.checkpoint import save_embedder
from retinaface.recognition.models import create_embedder
from retinaface.runtime_interface import LandmarkModel
from tests.conftest import ROOT

INPUT = 48
MARGIN = 0.15


@pytest.fixture(scope="module")
def drawn_face():
    # a drawn face turned 13.8 degrees in the image plane, with almost no drawn yaw
    face = render_landmark_face(seed=5, index=7)
    size = (face.image.shape[1], face.image.shape[0])
    return face, head_pose(face.points68, "ibug68", size)


@pytest.fixture(scope="module")
def fixed_shape(drawn_face):
    """The drawn face's 68 points in normalised coordinates of its crop (the crop policy at MARGIN)."""
    face, _ = drawn_face
    transform = crop_transform(face.box, INPUT, MARGIN)
    return transform.normalise(transform.to_crop(face.points68))


@pytest.fixture(scope="module")
def landmark_model(fixed_shape):
    torch.manual_seed(0)
    model = create_landmark_model("pfld", 68, INPUT, width=0.25)
    with torch.no_grad():  # zero weights: the output is the bias, exactly, for every crop
        model.body.fc.weight.zero_()
        model.body.fc.bias.copy_(torch.from_numpy(fixed_shape.reshape(-1)))
    model.crop_margin = MARGIN
    return model.eval()


@pytest.fixture(scope="module")
def landmark_checkpoint(landmark_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("landmarks") / "best.pth"
    save_landmark_checkpoint(landmark_model, path, "ibug68", MARGIN, epoch=1)
    return path


@pytest.fixture(scope="module")
def detector(legacy_checkpoint):
    return Detector.from_checkpoint(legacy_checkpoint)


def expected_points(fixed_shape, boxes):
    """The fixed shape mapped into each box by the crop policy's inverse."""
    return np.stack([crop_transform(box[:4], INPUT, MARGIN).normalised_to_image(fixed_shape) for box in boxes])


def test_detector_detect_and_landmark_is_the_landmark_package_function(detector, landmark_model, fixture_io,
                                                                      fixed_shape):
    image = fixture_io["image_bgr"]
    assert isinstance(landmark_model, LandmarkModel)
    faces, points = detector.detect_and_landmark(image, landmark_model)
    theirs_faces, theirs_points = detect_and_landmark(detector, landmark_model, image)
    np.testing.assert_array_equal(faces, theirs_faces)
    np.testing.assert_array_equal(points, theirs_points)
    assert len(faces) >= 1 and faces[:, 4].min() >= 0.5  # the display threshold by default
    assert points.shape == (len(faces), 68, 2)
    # every face's points: the fixed shape in that face's box (to float32 rounding of the crop map)
    np.testing.assert_allclose(points, expected_points(fixed_shape, faces), atol=1e-3, rtol=0)
    for box, face_points in zip(faces, points):  # so they lie in the box, a margin around it at most
        side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * MARGIN)
        centre = (box[:2] + box[2:4]) / 2
        assert np.all(np.abs(face_points - centre) <= side / 2)
    strict, strict_points = detector.detect_and_landmark(image, landmark_model, min_score=0.95)
    assert len(strict) < len(detector.detect(image)) and strict_points.shape == (len(strict), 68, 2)
    none, no_points = detector.detect_and_landmark(np.zeros((64, 64, 3), np.uint8), landmark_model, min_score=1.0)
    assert none.shape == (0, 15) and no_points.shape == (0, 68, 2)


def test_dense_faces_gives_points_and_head_poses(landmark_model, drawn_face, fixed_shape):
    face, pose = drawn_face
    dense = dense_faces(landmark_model, face.image, [face.box, face.box + [3, -2, 3, -2]])
    assert isinstance(dense, DenseFaces) and dense.points.shape == (2, 68, 2) and dense.poses.shape == (2, 3)
    # the first box is the face's own: the points are the drawn ones, the pose the drawn face's
    np.testing.assert_allclose(dense.points[0], face.points68, atol=1e-3)
    np.testing.assert_allclose(dense.poses[0], pose, atol=0.05)
    np.testing.assert_array_equal(dense.poses, head_poses(dense.points, "ibug68", (160, 160)))
    five = create_landmark_model("pfld", 5, INPUT, width=0.25).eval()  # a scheme without pose points
    assert five.scheme == "retinaface5" and dense_faces(five, face.image, [face.box]).poses is None


class TableDetector:
    """A detector stand-in: the given rows for every image."""

    def __init__(self, rows):
        self.rows = rows

    def detect_batch(self, images, batch_size=16):
        return [self.rows for _ in images]


def test_face_analyzer_adds_dense_landmarks_and_head_pose(landmark_model, landmark_checkpoint, drawn_face,
                                                          legacy_checkpoint, tmp_path):
    face, pose = drawn_face
    p = face.points68  # the five points for alignment: eye centres, nose tip, mouth corners
    five = np.concatenate([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
    rows = np.array([[*face.box, 0.9, *five], [*(face.box + [4, 4, -4, -4]), 0.3, *five]], np.float32)
    torch.manual_seed(0)
    embedder = create_embedder("mobiface", embedding_size=32, width=0.25, head="pool").eval()
    analyzer = FaceAnalyzer(TableDetector(rows), embedder, landmark_model=landmark_model)
    faces = analyzer.analyze(face.image)
    assert len(faces) == 1  # the 0.3 row is under min_score
    np.testing.assert_array_equal(faces[0].dense_landmarks,
                                  landmark_model.landmarks_in_boxes(face.image, rows[:1, :4])[0])
    np.testing.assert_allclose(faces[0].head_pose, pose, atol=0.05)
    record = faces[0].to_dict()
    assert len(record["landmarks_dense"]) == 68 and set(record["head_pose"]) == {"yaw", "pitch", "roll"}
    assert record["head_pose"]["roll"] == round(faces[0].head_pose[2], 2)
    plain = FaceAnalyzer(TableDetector(rows), embedder).analyze(face.image)[0]
    assert plain.dense_landmarks is None and plain.head_pose is None
    assert "landmarks_dense" not in plain.to_dict() and "head_pose" not in plain.to_dict()
    np.testing.assert_array_equal(plain.embedding, faces[0].embedding)

    embedder_path = tmp_path / "embedder.pth"
    save_embedder(embedder, embedder_path)
    loaded = FaceAnalyzer.from_checkpoints(legacy_checkpoint, embedder_path, landmarks=landmark_checkpoint)
    assert loaded.landmark_model.scheme == "ibug68" and loaded.landmark_model.crop_margin == MARGIN
    np.testing.assert_array_equal(loaded.landmark_model.landmarks_in_boxes(face.image, rows[:, :4]),
                                  landmark_model.landmarks_in_boxes(face.image, rows[:, :4]))


def run_detect(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "detect.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_detect_cli_writes_dense_landmarks_and_head_pose(tmp_path, fixture_io, legacy_checkpoint,
                                                         landmark_checkpoint, detector, fixed_shape, drawn_face):
    image = fixture_io["image_bgr"]
    folder = tmp_path / "inputs"
    folder.mkdir()
    cv2.imwrite(str(folder / "face.png"), image)
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5,
                             (image.shape[1], image.shape[0]))
    for _ in range(2):
        writer.write(image)
    writer.release()
    out, plain_out = tmp_path / "out", tmp_path / "plain"
    # the fixture detector's weights are random: its 750 boxes score 0.67 to 0.92, seven of them >= 0.9
    flags = ["--weights", legacy_checkpoint, "--conf", "0.85", "--vis-threshold", "0.9"]
    result = run_detect(*flags, folder / "face.png", folder / "clip.avi", "--output", out,
                        "--landmarks", landmark_checkpoint)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (f"tools/detect.py: note: {folder / 'clip.avi'}: dense landmarks are drawn and "
                                     f"written for images only; videos and webcams get the detector's five points")
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [r["source"].endswith("face.png") for r in records] == [True, False, False]
    faces = records[0]["faces"]
    shown = [f for f in faces if f["score"] >= 0.9]
    assert shown and len(shown) < len(faces)  # --conf keeps weaker faces, which get no dense fields
    assert all("landmarks_dense" not in f and "head_pose" not in f for f in faces if f["score"] < 0.9)
    dets = detector.detect(image)
    dets = dets[dets[:, 4] >= 0.9]
    assert len(dets) == len(shown)
    points = np.array([f["landmarks_dense"] for f in shown])
    assert points.shape == (len(shown), 68, 2)
    np.testing.assert_allclose(points, expected_points(fixed_shape, dets), atol=0.02, rtol=0)
    # the pose of each face's points in this image: the drawn face's shape, moved and scaled, seen
    # frontally off the optical axis of a 320-px-wide camera (some boxes reach past the image's
    # corners), so turned by the perspective
    poses = head_poses(expected_points(fixed_shape, dets), "ibug68", (image.shape[1], image.shape[0]))
    assert all(list(f["head_pose"]) == ["yaw", "pitch", "roll"] for f in shown)
    np.testing.assert_allclose([list(f["head_pose"].values()) for f in shown], poses, atol=0.05, rtol=0)
    _, drawn_pose = drawn_face
    centred = np.argmin(np.abs((dets[:, 0] + dets[:, 2]) / 2 - image.shape[1] / 2))
    assert abs(poses[centred][2] - drawn_pose.roll) < 3.0  # the face near the centre keeps its roll
    assert all("landmarks_dense" not in f for r in records[1:] for f in r["faces"])

    plain = run_detect(*flags, folder / "face.png", "--output", plain_out)
    assert plain.returncode == 0, plain.stderr
    with_points = cv2.imread(str(out / "face.jpg")).astype(int)
    without = cv2.imread(str(plain_out / "face.jpg")).astype(int)
    changed = np.abs(with_points - without).sum(axis=2) > 40
    assert changed.any()  # the dense points are drawn, and only near the faces
    ys, xs = np.nonzero(changed)
    margin = 6
    inside = np.zeros_like(changed)
    for box in dets[:, :4]:
        x1, y1, x2, y2 = (int(v) for v in box)
        inside[max(0, y1 - margin):y2 + margin, max(0, x1 - margin):x2 + margin] = True
    assert inside[ys, xs].mean() > 0.95


def test_detect_cli_bad_landmarks_is_one_line_naming_the_flag(tmp_path, fixture_io, legacy_checkpoint):
    cv2.imwrite(str(tmp_path / "face.png"), fixture_io["image_bgr"])
    missing = tmp_path / "nothing.pth"
    result = run_detect("--weights", legacy_checkpoint, tmp_path / "face.png", "--output", tmp_path / "o",
                        "--landmarks", missing)
    assert result.returncode == 2
    assert result.stderr.strip() == f"tools/detect.py: error: --landmarks {missing}: checkpoint file not found"
    assert not (tmp_path / "o").exists()
    # a detector checkpoint is no landmark model
    result = run_detect("--weights", legacy_checkpoint, tmp_path / "face.png", "--output", tmp_path / "o",
                        "--landmarks", legacy_checkpoint)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"tools/detect.py: error: --landmarks {legacy_checkpoint}: not a landmark checkpoint")
    assert not (tmp_path / "o").exists()


def test_loaded_checkpoint_predicts_as_the_saved_model(landmark_checkpoint, landmark_model, drawn_face):
    face, _ = drawn_face
    loaded = load_landmark_model(landmark_checkpoint)
    assert loaded.scheme == "ibug68" and loaded.crop_margin == MARGIN
    np.testing.assert_array_equal(loaded.landmarks_in_boxes(face.image, [face.box]),
                                  landmark_model.landmarks_in_boxes(face.image, [face.box]))


def test_a_box_the_crop_policy_refuses_fails_that_input_naming_it(tmp_path, landmark_model, drawn_face):
    from retinaface.inference.detect_files import DetectOptions, detect_inputs

    face, _ = drawn_face
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    rows = np.array([[*face.box, 0.99, *np.zeros(10)]], np.float32)
    broken = rows.copy()
    broken[0, 2] = broken[0, 0]  # a box of no width: no crop can be made of it

    class MarkedDetector:
        def detect(self, image):  # the "bad" image is told apart by a marked pixel
            return broken if image[0, 0, 0] == 7 else rows

    for path, mark in ((good, 200), (bad, 7)):
        marked = face.image.copy()
        marked[0, 0] = mark
        cv2.imwrite(str(path), marked)
    reports = []
    out = tmp_path / "out"
    out.mkdir()
    summary = detect_inputs(MarkedDetector(), [str(good), str(bad)], out, DetectOptions(),
                            lambda kind, message: reports.append((kind, message)),
                            landmarker=lambda image, boxes: dense_faces(landmark_model, image, boxes))
    assert len(reports) == 1 and reports[0][0] == "error"
    assert reports[0][1].startswith(f"{bad}: dense landmarks: face box must be finite")
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 1 and len(records[0]["faces"][0]["landmarks_dense"]) == 68
    assert summary.failures == [reports[0][1]]
