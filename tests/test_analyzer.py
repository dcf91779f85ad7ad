"""FaceAnalyzer, gallery search, the embed / identify / verify commands and ONNX export of embedders."""
import json

import cv2
import numpy as np
import pytest
import torch

from retinaface.inference.align import norm_crop
from retinaface.cli import run_command
from retinaface.recognition.analyzer import FaceAnalyzer
from retinaface.recognition.gallery import UNKNOWN, Gallery
from retinaface.recognition.models import create_embedder
from retinaface.recognition.training import load_embedder, save_embedder


class FixedDetector:
    """Returns given detections for each image (index by the image's first pixel value)."""

    def __init__(self, table):
        self.table = table

    def detect_batch(self, images, batch_size=16):
        return [self.table[int(im[0, 0, 0])] for im in images]

    def detect(self, image):
        return self.detect_batch([image])[0]


def face_row(cx, cy, scale, score):
    from retinaface.conventions import ARCFACE_TEMPLATE_112

    pts = (np.asarray(ARCFACE_TEMPLATE_112) - 56.0) * scale + [cx, cy]
    return np.concatenate([[cx - 56 * scale, cy - 56 * scale, cx + 56 * scale, cy + 56 * scale, score],
                           pts.reshape(-1)]).astype(np.float32)


@pytest.fixture(scope="module")
def embedder():
    torch.manual_seed(0)
    return create_embedder("mobiface", embedding_size=32, width=0.25, head="pool").eval()


def images_and_table():
    rng = np.random.default_rng(0)
    images = []
    for k in range(3):
        im = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        im[0, 0, 0] = k
        images.append(im)
    table = {0: np.stack([face_row(100, 120, 1.0, 0.9), face_row(230, 110, 0.8, 0.3)]),
             1: np.zeros((0, 15), np.float32),
             2: np.stack([face_row(160, 120, 1.2, 0.99), face_row(60, 60, 0.5, 0.7), face_row(250, 150, 0.6, 0.6)])}
    return images, table


def test_analyze_batch_equals_one_by_one(embedder):
    images, table = images_and_table()
    analyzer = FaceAnalyzer(FixedDetector(table), embedder, min_score=0.5, embed_batch_size=2)
    batched = analyzer.analyze_batch(images)
    assert [len(f) for f in batched] == [1, 0, 3]  # the 0.3 face is below min_score
    for image, faces in zip(images, batched):
        single = analyzer.analyze(image)
        for a, b in zip(faces, single):
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
            assert a.embedding.shape == (32,) and abs(np.linalg.norm(a.embedding) - 1) < 1e-5
    face = batched[2][1]
    np.testing.assert_array_equal(face.crop, norm_crop(images[2], face.landmarks))
    assert face.score == pytest.approx(0.7) and face.box.shape == (4,)
    flipped = FaceAnalyzer(FixedDetector(table), embedder, flip=True).analyze(images[0])[0]
    from retinaface.recognition import preprocess

    with torch.no_grad():
        crop = batched[0][0].crop
        both = embedder(preprocess(np.stack([crop, crop[:, ::-1]]))).sum(0)
    np.testing.assert_allclose(flipped.embedding, (both / both.norm()).numpy(), atol=1e-5)


def test_gallery_search_topk_and_unknown():
    rng = np.random.default_rng(1)
    people = {name: rng.normal(size=(3, 16)) for name in ("ann", "bob", "cy")}
    gallery = Gallery.from_embeddings(people)
    mean = people["bob"] / np.linalg.norm(people["bob"], axis=1, keepdims=True)
    expected = mean.mean(0) / np.linalg.norm(mean.mean(0))
    np.testing.assert_allclose(gallery.templates[1], expected, atol=1e-6)
    query = np.stack([expected + 0.01 * rng.normal(size=16), -expected])
    results = gallery.search(query, top_k=2, unknown_threshold=0.5)
    assert results[0].identity == "bob" and results[0].score > 0.99 and len(results[0].matches) == 2
    assert results[0].matches[0].score >= results[0].matches[1].score
    assert results[1].identity == UNKNOWN
    assert results[1].matches[0].name != "bob"  # the opposite vector matches bob worst
    sims = gallery.scores(query)
    assert sims.shape == (2, 3) and sims[1, 1] == pytest.approx(-1.0, abs=1e-5)
    with pytest.raises(ValueError, match="dimensions"):
        gallery.search(np.zeros((1, 8)))


def test_gallery_file_roundtrip(tmp_path):
    gallery = Gallery.from_embeddings({"a": np.eye(4)[:2], "b": np.eye(4)[2:]})
    gallery.save(tmp_path / "g.npz")
    back = Gallery.load(tmp_path / "g.npz")
    assert back.names == ["a", "b"] and back.counts == [2, 2]
    np.testing.assert_allclose(back.templates, gallery.templates)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.npz"):
        Gallery.load(tmp_path / "bad.npz")


@pytest.fixture(scope="module")
def embedder_file(tmp_path_factory, embedder):
    path = tmp_path_factory.mktemp("emb") / "embedder.pth"
    save_embedder(embedder, path)
    return path


def test_embed_and_identify_commands(tmp_path, fixture_io, legacy_checkpoint, embedder_file, capsys):
    image = fixture_io["image_bgr"]
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "group.png"), image)
    out = tmp_path / "out"
    # the fixture checkpoint is untrained: 750 boxes above 0.5, six above 0.9
    common = ["--detector", str(legacy_checkpoint), "--weights", str(embedder_file), "--min-score", "0.9"]
    assert run_command("embed", [str(photos), "--output", str(out), "--crops", *common]) == 0
    record = json.loads((out / "embeddings.jsonl").read_text().splitlines()[0])
    emb = np.load(out / "group.npy")
    assert emb.shape == (len(record["faces"]), 32) and len(record["faces"]) >= 1
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert record["rows"] == [0, len(emb)] and (out / "group_f0_0.jpg").is_file()
    # a second run never writes into the first run's folder
    assert run_command("embed", [str(photos), "--output", str(out), *common]) == 0
    assert (tmp_path / "out2" / "embeddings.jsonl").is_file()
    assert not list(tmp_path.glob("out*/.retinaface-claim*"))  # claimed while running, released when done
    (tmp_path / "taken.txt").write_text("mine")
    capsys.readouterr()
    assert run_command("embed", [str(photos), "--output", str(tmp_path / "taken.txt"), *common]) == 2
    assert "--output" in capsys.readouterr().err and (tmp_path / "taken.txt").read_text() == "mine"

    gallery = tmp_path / "gallery"
    (gallery / "alice").mkdir(parents=True)
    cv2.imwrite(str(gallery / "alice" / "1.png"), image)
    (gallery / "empty").mkdir()
    (gallery / "empty" / "broken.jpg").write_bytes(b"not an image")
    assert run_command("identify", ["--gallery", str(gallery), "--query", str(photos / "group.png"), *common]) == 2
    assert "empty has no usable image" in capsys.readouterr().err
    (gallery / "empty" / "broken.jpg").unlink()
    (gallery / "empty").rmdir()
    assert run_command("identify", ["--gallery", str(gallery), "--query", str(photos / "group.png"), "--json",
                                    "--unknown-threshold", "0.99", *common]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(record["faces"])
    # the gallery photo's best face is the query's best face: identical embedding, score 1
    best = max(lines, key=lambda r: r["score"])
    assert best["identity"] == "alice" and best["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(r["identity"] in ("alice", UNKNOWN) for r in lines)


def test_verify_command_writes_json_and_roc(tmp_path, embedder_file, capsys):
    from retinaface.recognition.synthetic import generate_synthetic_identities

    faces = generate_synthetic_identities(tmp_path / "ids", 2, 20, 3, pairs_per_fold=2)
    args = ["--weights", str(embedder_file), "--pairs", str(faces.root), "--output", str(tmp_path / "v"), "--flip"]
    assert run_command("verify", args) == 0
    data = json.loads((tmp_path / "v" / "results.json").read_text())
    result = data["results"][0]
    assert result["num_pairs"] == 40 and len(result["fold_accuracies"]) == 10 and data["flip"] is True
    assert (tmp_path / "v" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["results.json", "roc.png"]  # claim released
    assert run_command("verify", ["--weights", str(tmp_path / "missing.pth"), "--pairs", str(faces.root)]) == 2
    assert "missing.pth" in capsys.readouterr().err
    assert run_command("verify", ["--weights", str(embedder_file), "--pairs", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_onnx_export_parity_and_runtime_embedder(tmp_path, embedder):
    from retinaface.recognition.export import OnnxEmbedder, export_embedder_onnx

    report = export_embedder_onnx(embedder, tmp_path / "e.onnx")
    assert report.ok and report.max_abs_diff < 1e-4
    with pytest.raises(FileExistsError):
        export_embedder_onnx(embedder, tmp_path / "e.onnx")
    runtime = OnnxEmbedder(tmp_path / "e.onnx")
    assert runtime.config.to_dict() == embedder.config.to_dict()
    images, table = images_and_table()
    a = FaceAnalyzer(FixedDetector(table), embedder).analyze(images[2])
    b = FaceAnalyzer(FixedDetector(table), runtime).analyze(images[2])
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.embedding, y.embedding, atol=1e-4)


def test_load_embedder_refuses_other_files(tmp_path, legacy_checkpoint):
    from retinaface.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="not a face-embedding checkpoint"):
        load_embedder(legacy_checkpoint)
    with pytest.raises(CheckpointError, match="width 0.5"):
        path = tmp_path / "e.pth"
        save_embedder(create_embedder("mobiface", embedding_size=8, width=0.25, head="pool"), path)
        load_embedder(path, width=0.5)
