"""benchmarks/bench_peers.py's logic that needs none of the peers: where the BlazeFace model and the
Haar cascade come from (cache, download, bundled, skip reasons), the table's ratios, and a run with
every peer missing that still returns."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_TFLITE = b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "bench_peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_bundled(bench, monkeypatch):
    monkeypatch.setattr(bench, "bundled_blazeface", lambda: None)


def test_given_model_wins(bench, tmp_path):
    path, source = bench.blazeface_model(str(tmp_path / "mine.tflite"), cache=tmp_path)
    assert path == tmp_path / "mine.tflite" and source == "--blazeface-model"


def test_download_then_cache(bench, tmp_path, no_bundled):
    remote = tmp_path / "remote.tflite"
    remote.write_bytes(FAKE_TFLITE)
    cache = tmp_path / "cache"
    path, source = bench.blazeface_model(None, url=remote.as_uri(), cache=cache)
    assert path == cache / bench.BLAZEFACE_FILE and source.startswith("downloaded")
    assert path.read_bytes() == FAKE_TFLITE
    remote.unlink()  # the second call must not need the network
    path, source = bench.blazeface_model(None, url=remote.as_uri(), cache=cache)
    assert path == cache / bench.BLAZEFACE_FILE and source.startswith("cached")


def test_offline_gives_one_line_reason(bench, tmp_path, no_bundled):
    path, reason = bench.blazeface_model(None, url=(tmp_path / "absent").as_uri(), cache=tmp_path / "c")
    assert path is None and "download failed" in reason and "--blazeface-model" in reason
    assert "\n" not in reason
    path, reason = bench.blazeface_model(None, allow_download=False, cache=tmp_path / "c")
    assert path is None and "--no-download" in reason


def test_download_that_is_not_a_model_is_not_cached(bench, tmp_path, no_bundled):
    page = tmp_path / "portal.html"
    page.write_text("<html>sign in</html>")
    cache = tmp_path / "cache"
    path, reason = bench.blazeface_model(None, url=page.as_uri(), cache=cache)
    assert path is None and "not a .tflite" in reason
    assert list(cache.iterdir()) == []  # neither the page nor a .part file stays


def test_bundled_model_when_offline(bench, tmp_path, monkeypatch):
    bundled = tmp_path / "face_detection_short_range.tflite"
    bundled.write_bytes(FAKE_TFLITE)
    monkeypatch.setattr(bench, "bundled_blazeface", lambda: bundled)
    path, source = bench.blazeface_model(None, allow_download=False, cache=tmp_path / "c")
    assert path == bundled and source.startswith("bundled")


def test_haar_xml(bench, tmp_path):
    no_class = types.SimpleNamespace(__version__="5.0.0")
    path, reason = bench.haar_xml(no_class, None)
    assert path is None and "<5" in reason
    folder = tmp_path / "haar"
    folder.mkdir()
    cv2 = types.SimpleNamespace(__version__="4.14.0", CascadeClassifier=object,
                                data=types.SimpleNamespace(haarcascades=str(folder) + "/"))
    path, reason = bench.haar_xml(cv2, None)
    assert path is None and "--haar-xml" in reason
    (folder / bench.HAAR_FILE).write_text("<opencv_storage/>")
    assert bench.haar_xml(cv2, None) == (folder / bench.HAAR_FILE, "")
    assert bench.haar_xml(cv2, "/x/mine.xml") == (Path("/x/mine.xml"), "")


def test_table_ratios(bench):
    ms = {"ours a": 10.0, "ours b": 5.0, "peer fast": 2.5, "peer slow": 20.0}
    rows = bench.table(ms, ["ours a", "ours b"], {"peer fast": "640x480 -> 128x128"})
    body = [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]
    assert [r[0] for r in body] == ["peer fast", "ours b", "ours a", "peer slow"]
    assert body[0][1] == "640x480 -> 128x128" and body[0][4] == "2.00x faster"
    assert body[1][4] == "our fastest" and body[1][3] == "200"
    assert body[2][4] == "2.00x slower" and body[3][4] == "4.00x slower"


def test_missing_files_are_one_line_errors(bench, tmp_path):
    with pytest.raises(SystemExit, match="--blazeface-model .*: file not found"):
        bench.main(["--blazeface-model", str(tmp_path / "absent.tflite")])
    with pytest.raises(SystemExit, match="checkpoint not found"):
        bench.main(["--weights", str(tmp_path / "absent.pth")])


def test_every_peer_missing_still_returns(bench, tmp_path, monkeypatch, no_bundled):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # None in sys.modules: ImportError on import
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    args = bench.parse_args(["--no-download", "--haar-xml", str(tmp_path / "broken.xml")])
    (tmp_path / "broken.xml").write_text("not a cascade")
    calls, inputs, notes, closers = bench.peers(args, [np.zeros((48, 64, 3), np.uint8)])
    assert calls == {} and closers == []
    assert len(notes) == 3 and all(n.startswith("skipped: ") and "\n" not in n for n in notes)


def test_bundled_blazeface_found_in_an_old_mediapipe(bench, tmp_path, monkeypatch):
    package = tmp_path / "site" / "mediapipe"
    (package / "modules" / "face_detection").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    model = package / "modules" / "face_detection" / "face_detection_short_range.tflite"
    model.write_bytes(FAKE_TFLITE)
    monkeypatch.delitem(sys.modules, "mediapipe", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert bench.bundled_blazeface() == model
