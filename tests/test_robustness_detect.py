"""Detect-side guards of issue 12: never write over an input or an earlier run, refuse impossible
settings and wrongly typed images with one line, run fixed-size ONNX files on any image, keep
results on Ctrl-C, and benchmark the checkpoint that was named."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from retinaface import Detector, load_model
from retinaface.cli import detect as detect_cli
from retinaface.cli import run_command


@pytest.fixture(scope="module")
def photos(tmp_path_factory, fixture_io):
    """A folder of two small photos (re-created by copying for tests that write near it)."""
    folder = tmp_path_factory.mktemp("photos_src")
    image = fixture_io["image_bgr"]
    cv2.imwrite(str(folder / "good1.jpg"), image)
    cv2.imwrite(str(folder / "good2.png"), np.ascontiguousarray(image[:, ::-1]))
    return folder


def copy_photos(photos, target):
    target.mkdir(parents=True)
    for path in photos.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return {p.name: p.read_bytes() for p in target.iterdir()}


def detect(*args):
    return detect_cli.main([str(a) for a in args], prog="detect")


def records(folder):
    return [json.loads(line) for line in (folder / "detections.jsonl").read_text().splitlines()]


def test_output_equal_to_the_input_folder_leaves_the_originals_alone(tmp_path, photos, legacy_checkpoint, capsys):
    folder = tmp_path / "photos"
    originals = copy_photos(photos, folder)
    assert detect("--weights", legacy_checkpoint, folder, "--output", folder, "--conf", "0.5") == 0
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == originals
    used = tmp_path / "photos2"
    assert f"writing this run to {used}" in capsys.readouterr().err
    assert sorted(p.name for p in used.iterdir()) == ["detections.jsonl", "good1.jpg", "good2.jpg"]


def test_second_run_inside_a_photo_folder_skips_the_first_runs_output(tmp_path, photos, legacy_checkpoint,
                                                                      monkeypatch):
    folder = tmp_path / "photos"
    copy_photos(photos, folder)
    monkeypatch.chdir(folder)
    for _ in range(3):  # detect.py --weights W .   (default output ./detections, then detections2 ...)
        assert detect("--weights", legacy_checkpoint, ".", "--conf", "0.5") == 0
    for name in ("detections", "detections2", "detections3"):
        sources = sorted(r["source"] for r in records(folder / name))
        assert sources == ["good1.jpg", "good2.png"], name  # no annotated copy was detected again


def test_rerun_into_the_same_output_writes_a_complete_new_set_elsewhere(tmp_path, photos, legacy_checkpoint):
    folder = tmp_path / "photos"
    copy_photos(photos, folder)
    out = tmp_path / "out"
    assert detect("--weights", legacy_checkpoint, folder, "--output", out, "--conf", "0.5") == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (folder / "good2.png").unlink()  # the second run has one input fewer
    assert detect("--weights", legacy_checkpoint, folder, "--output", out, "--conf", "0.5") == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # the first run is intact
    second = tmp_path / "out2"
    assert sorted(p.name for p in second.iterdir()) == ["detections.jsonl", "good1.jpg"]  # nothing stale
    assert [r["source"] for r in records(second)] == [str(folder / "good1.jpg")]


@pytest.mark.parametrize("flag, value", [("--max-size", "0"), ("--max-size", "-5"), ("--max-size", "1"),
                                         ("--target-size", "0"), ("--max-frames", "-3"), ("--max-frames", "0"),
                                         ("--conf", "1.5"), ("--conf", "-0.1"), ("--nms", "0"), ("--nms", "2"),
                                         ("--width", "0"), ("--vis-threshold", "nan")])
def test_impossible_settings_are_refused_naming_the_flag(tmp_path, photos, legacy_checkpoint, capsys, flag, value):
    out = tmp_path / "out"
    assert detect("--weights", legacy_checkpoint, photos, "--output", out, flag, value) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"detect: error: argument {flag}:") and ("allowed range" in last or "finite" in last)
    assert not out.exists()


@pytest.mark.parametrize("name, value", [("max_size", 0), ("max_size", -5), ("max_size", 1), ("target_size", 0),
                                         ("conf_threshold", 1.5), ("nms_threshold", 0.0), ("post_nms_topk", 0),
                                         ("pre_nms_topk", -1)])
def test_detector_refuses_impossible_settings_naming_the_parameter(legacy_checkpoint, name, value):
    model = load_model(legacy_checkpoint)
    with pytest.raises(ValueError, match=name):
        Detector(model, **{name: value})


@pytest.mark.parametrize("convert, hint", [
    (lambda img: img.astype(np.float32) / 255, r"\* 255"),
    (lambda img: img.astype(np.uint16) * 257, ">> 8"),
    (lambda img: img > 128, "astype"),
    (lambda img: img.astype(np.int64), "clip"),
])
def test_non_uint8_images_are_refused_with_how_to_convert(legacy_checkpoint, fixture_io, convert, hint):
    detector = Detector(load_model(legacy_checkpoint))
    image = convert(fixture_io["image_bgr"])
    with pytest.raises(ValueError, match=rf"image 0: expected dtype uint8 .*, got {image.dtype}; .*{hint}"):
        detector.detect(image)


def test_output_that_is_a_file_or_unwritable_is_one_line(tmp_path, photos, legacy_checkpoint, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    assert detect("--weights", legacy_checkpoint, photos, "--output", existing) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"detect: error: --output {existing}: is an existing file; name a folder"]
    assert existing.read_text() == "keep me"
    below_a_file = existing / "out"
    assert detect("--weights", legacy_checkpoint, photos, "--output", below_a_file) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"detect: error: --output {below_a_file}: cannot write there")


def test_ctrl_c_keeps_every_detection_written_so_far(tmp_path, photos, legacy_checkpoint, monkeypatch, capsys):
    original, calls = Detector.detect, []

    def interrupted(self, image):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, image)

    monkeypatch.setattr(Detector, "detect", interrupted)
    out = tmp_path / "out"
    code = run_command("detect", ["--weights", str(legacy_checkpoint), str(photos), "--output", str(out),
                                  "--conf", "0.5"])
    assert code == 130
    assert [r["source"] for r in records(out)] == [str(photos / "good1.jpg")]
    assert (out / "good1.jpg").is_file()
    assert "interrupted" in capsys.readouterr().err


def test_fixed_size_onnx_runs_on_other_sizes_and_maps_boxes_back(tmp_path, fixture_io, legacy_checkpoint, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from retinaface.deploy.export import export_onnx

    model = load_model(legacy_checkpoint)
    image = fixture_io["image_bgr"]  # 240 x 320, the file's fixed size
    static = tmp_path / "static.onnx"
    export_onnx(model, static, dynamic=False, size=image.shape[:2])
    onnx_detector = Detector.from_checkpoint(static, conf_threshold=0.5)
    torch_detector = Detector(model, conf_threshold=0.5)
    same = onnx_detector.detect(image)
    assert same.shape == torch_detector.detect(image).shape
    # twice as large: letterboxed to 240 x 320 (scale 0.5), detections reported in its own pixels
    big = np.ascontiguousarray(np.repeat(np.repeat(image, 2, axis=0), 2, axis=1))
    dets = onnx_detector.detect_batch([big, np.ascontiguousarray(image[:200, :300])])
    # the same input PyTorch sees with the long side capped at 320: equal detections
    reference = Detector(model, conf_threshold=0.5, max_size=320).detect(big)
    assert len(dets[0]) > 0 and dets[0].shape == reference.shape
    close = np.abs(dets[0][:, None, :] - reference[None, :, :]).max(-1).min(1) < 1e-2
    assert close.mean() > 0.99
    assert len(dets[1]) > 0  # smaller: padded into the fixed input
    # the command runs it too, and writes its detections
    photo = tmp_path / "big.jpg"
    cv2.imwrite(str(photo), big)
    assert detect("--weights", static, photo, "--output", tmp_path / "out", "--conf", "0.5") == 0
    assert len(records(tmp_path / "out")[0]["faces"]) > 0


def test_benchmark_with_weights_and_no_widths_measures_that_checkpoint(tmp_path, capsys):
    from retinaface import create_model, save_model
    from retinaface.cli import benchmark

    weights = tmp_path / "narrow_run.pth"
    narrow = create_model("mobilenet0.25", fpn_width=32)  # not what --backbone's default builds
    save_model(narrow, weights)
    expected = sum(p.numel() for p in narrow.parameters()) / 1e6
    assert expected != pytest.approx(sum(p.numel() for p in create_model("mobilenet0.25").parameters()) / 1e6)
    assert benchmark.main(["--weights", str(weights), "--no-detect", "--repeats", "1", "--size", "64", "64"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    row = [cell.strip() for cell in table[-1].strip("|").split("|")]
    assert row[0] == "narrow_run" and float(row[1]) == pytest.approx(expected, abs=1e-3)
