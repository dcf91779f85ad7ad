"""The work behind ``embed``, ``identify``, ``benchmark`` and ``export --int8``, called as library
functions (the commands only parse flags and report): what they write, yield and return."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest
import torch

from retinaface.benchmark_matrix import (MatrixCell, benchmark_jobs, matrix_files, measure_models, to_csv,
                                         write_matrix)
from retinaface.inference.embed_files import OUTPUT_FILE, embed_inputs, identify_inputs
from retinaface.inference.sources import iter_sources


@dataclasses.dataclass
class FakeFace:
    box: np.ndarray
    embedding: np.ndarray
    crop: np.ndarray

    def to_dict(self) -> dict:
        return {"box": [float(v) for v in self.box]}


class FakeAnalyzer:
    """One face per 10 grey levels of an image's first pixel; the embedding is that count, one-hot."""

    embedding_size = 4

    def analyze(self, image: np.ndarray) -> List[FakeFace]:
        count = int(image[0, 0, 0]) // 10
        return [FakeFace(np.array([i, i, i + 10, i + 10], np.float32), np.eye(4, dtype=np.float32)[i % 4],
                         np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(count)]


def write_images(folder: Path, counts: dict) -> None:
    folder.mkdir()
    for name, count in counts.items():
        cv2.imwrite(str(folder / name), np.full((16, 16, 3), 10 * count, np.uint8))


def test_embed_inputs_writes_lines_arrays_and_crops(tmp_path):
    write_images(tmp_path / "in", {"a.png": 2, "b.png": 0})
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    warnings: List[str] = []
    sources = iter_sources([str(tmp_path / "in")])
    summary = embed_inputs(FakeAnalyzer(), sources, tmp_path / "out", crops=True, warn=warnings.append)
    assert summary.faces == 2 and summary.inputs == 3
    assert len(summary.failures) == 1 and "broken.jpg" in summary.failures[0] and warnings == summary.failures
    lines = [json.loads(line) for line in (tmp_path / "out" / OUTPUT_FILE).read_text().splitlines()]
    assert [(Path(r["source"]).name, r["rows"], len(r["faces"])) for r in lines] == [("a.png", [0, 2], 2),
                                                                                    ("b.png", [0, 0], 0)]
    a = np.load(tmp_path / "out" / "a.npy")
    assert a.dtype == np.float32 and a.shape == (2, 4) and np.array_equal(a, np.eye(4, dtype=np.float32)[:2])
    assert np.load(tmp_path / "out" / "b.npy").shape == (0, 4)
    assert not (tmp_path / "out" / "broken.npy").exists()  # failed before any face: left out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == ["a_f0_0.jpg", "a_f0_1.jpg"]


class FakeGallery:
    """Ranks people by the embedding's one-hot position; below the threshold is "unknown"."""

    def search(self, queries: np.ndarray, top_k: int = 5, unknown_threshold=None):
        @dataclasses.dataclass
        class Result:
            identity: str

            def to_dict(self) -> dict:
                return {"identity": self.identity}

        return [Result(f"person{int(np.argmax(q))}" if unknown_threshold is None or unknown_threshold < 0.5
                       else "unknown") for q in queries]


def test_identify_inputs_yields_each_face_with_its_ranking(tmp_path):
    write_images(tmp_path / "q", {"a.png": 3, "none.png": 0})
    (tmp_path / "q" / "broken.jpg").write_bytes(b"not an image")
    warnings: List[str] = []
    found = list(identify_inputs(FakeAnalyzer(), FakeGallery(), iter_sources([str(tmp_path / "q")]),
                                 warn=warnings.append))
    assert [(Path(f.source.location).name, f.frame, f.index, f.result.identity) for f in found] == [
        ("a.png", 0, 0, "person0"), ("a.png", 0, 1, "person1"), ("a.png", 0, 2, "person2")]
    assert found[1].to_dict() == {"source": found[1].source.location, "frame": 0, "face": 1,
                                  "box": [1.0, 1.0, 11.0, 11.0], "identity": "person1"}
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]
    unknown = identify_inputs(FakeAnalyzer(), FakeGallery(), iter_sources([str(tmp_path / "q" / "a.png")]),
                              unknown_threshold=0.9)
    assert {f.result.identity for f in unknown} == {"unknown"}


def test_write_matrix_writes_the_tables(tmp_path):
    cells = [MatrixCell("mobilenet0.25", 1.0, (240, 320), runtime, 1, forward, forward * 1.1, 300)
             for runtime, forward in (("pytorch", 4.0), ("onnxruntime", 2.0))]
    written = write_matrix(cells, tmp_path / "m")
    markdown, table, image = matrix_files(tmp_path / "m")
    assert written[:2] == [markdown, table]
    assert "| 320x240 | 4.0 (250) | 2.0 (500) |" in markdown.read_text()
    assert table.read_bytes().decode() == to_csv(cells)
    assert (image in written) == image.exists()


def test_measure_models_one_row_per_job_with_the_width_parameters():
    assert [name for name, _, _ in benchmark_jobs(["mobiface"], widths=[1.0, 0.5])] == ["mobiface @1",
                                                                                     "mobiface @0.5"]
    plain = benchmark_jobs(["mobilenet0.25", "mobiface"])
    assert [(name, width) for name, _, width in plain] == [("mobilenet0.25", None), ("mobiface", None)]
    log: List[str] = []
    torch.manual_seed(0)
    jobs = plain[:1] + benchmark_jobs(["mobilenet0.25"], widths=[0.5])
    rows = measure_models(jobs, 64, 96, repeats=1, detect=False, log=log.append)
    assert [r.name for r in rows] == ["mobilenet0.25", "mobilenet0.25 @0.5"] and len(log) == 2
    assert rows[1].params_m < rows[0].params_m  # the half width computes with fewer weights
    assert all(r.forward_ms > 0 and r.detect_ms is None for r in rows)


def test_export_int8_writes_the_quantised_file_and_reports_it_written(tmp_path):
    pytest.importorskip("onnxruntime")
    import retinaface
    from retinaface.deploy.quantize import export_int8, quantization_info

    images = []
    rng = np.random.default_rng(0)
    for i in range(3):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (96, 64)))
        images.append(path)
    torch.manual_seed(0)
    model = retinaface.create_model("mobilenet0.25").eval()
    seen = []
    done = export_int8(model, tmp_path / "m.int8.onnx", images, calibration_source="test", size=(64, 96),
                       written=seen.append)
    assert seen == [done] and done.report is None and done.seconds > 0
    assert done.result.path == tmp_path / "m.int8.onnx" and done.result.quantized_nodes > 0
    assert quantization_info(tmp_path / "m.int8.onnx")["calibration"] == "test"
    int8 = retinaface.load_runtime(tmp_path / "m.int8.onnx")
    assert int8.config == model.config
