"""The model zoo's downloads, against a loopback HTTP server (no internet): verification, mirrors,
time-outs, concurrent fetches, offline mode; with ../shared/real/weights, the real files through
``retinaface detect``."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from retinaface import zoo
from retinaface.zoo import ZooEntry, ZooError

from conftest import REAL, ROOT
from loopback_server import LoopbackServer

FILE = "test-weights.bin"
PAYLOAD = bytes(range(256)) * 1024  # 256 KiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        srv.files[FILE] = PAYLOAD
        yield srv


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv(zoo.ENV_HOME, str(folder))
    for name in (zoo.ENV_MIRROR, zoo.ENV_OFFLINE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(zoo.ENV_TIMEOUT, "5")
    return folder


def _entry(monkeypatch, urls, sha256=PAYLOAD_SHA, name="test-entry") -> ZooEntry:
    entry = ZooEntry(name=name, file_name=FILE, sha256=sha256, urls=tuple(urls), kind="detector",
                     architecture="test", training_data="none", licence="none", source="test", citation="none")
    monkeypatch.setitem(zoo._ZOO, name, entry)
    return entry


def _leftovers(folder: Path):
    """Files in the cache other than lock files: what a failed fetch must not leave."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def test_good_file_is_verified_and_cached_once(server, home, monkeypatch):
    _entry(monkeypatch, [server.url("good", FILE)])
    path = zoo.fetch("test-entry", progress=False)
    assert path == home / FILE and path.read_bytes() == PAYLOAD
    assert _leftovers(home) == [FILE]  # no temporary file left
    assert zoo.fetch("test-entry", progress=False) == path
    assert server.hits[f"/good/{FILE}"] == 1  # the second call used the cache


@pytest.mark.parametrize("mode, says", [("bad", "gave sha256"), ("trunc", "truncated"),
                                         ("html", "an HTML page")])
def test_wrong_bytes_are_refused_and_nothing_cached(server, home, monkeypatch, mode, says):
    url = server.url(mode, FILE)
    _entry(monkeypatch, [url])
    with pytest.raises(ZooError) as info:
        zoo.fetch("test-entry", progress=False)
    message = str(info.value)
    assert url in message and says in message and "nothing was cached" in message
    if mode == "bad":
        assert hashlib.sha256(bytes(255 - b for b in PAYLOAD)).hexdigest() in message and PAYLOAD_SHA in message
    assert _leftovers(home) == []
    assert zoo.cached_file("test-entry") is None


def test_mirrors_in_order_404_then_good_and_redirect(server, home, monkeypatch):
    _entry(monkeypatch, [server.url("missing", FILE), server.url("redirect", FILE)])
    assert zoo.fetch("test-entry", progress=False).read_bytes() == PAYLOAD
    assert server.hits[f"/missing/{FILE}"] == 1
    assert server.hits[f"/redirect/{FILE}"] == 1 and server.hits[f"/good/{FILE}"] == 1


def test_stalled_server_times_out_and_the_next_mirror_serves(server, home, monkeypatch):
    monkeypatch.setenv(zoo.ENV_TIMEOUT, "0.3")
    _entry(monkeypatch, [server.url("stall", FILE), server.url("good", FILE)])
    assert zoo.fetch("test-entry", progress=False).read_bytes() == PAYLOAD
    assert server.hits[f"/stall/{FILE}"] == 1
    _entry(monkeypatch, [server.url("stall", FILE)], name="stall-only")
    (home / FILE).unlink()
    with pytest.raises(ZooError, match="stalled|no answer"):
        zoo.fetch("stall-only", progress=False)
    assert _leftovers(home) == []


def test_all_mirrors_failing_lists_each(server, home, monkeypatch):
    urls = [server.url("missing", FILE), server.url("bad", FILE)]
    _entry(monkeypatch, urls)
    with pytest.raises(ZooError) as info:
        zoo.fetch("test-entry", progress=False)
    assert f"{urls[0]}: HTTP 404" in str(info.value) and f"{urls[1]}: gave sha256" in str(info.value)


def test_concurrent_processes_end_with_one_good_file(server, home, monkeypatch):
    """Two processes fetch one file at once: both get it, the lock lets only one download it."""
    url = server.url("slow", FILE)
    script = ("import sys; from retinaface import zoo; "
              f"zoo.register_weights(zoo.ZooEntry(name='t', file_name={FILE!r}, sha256={PAYLOAD_SHA!r}, "
              f"urls=({url!r},), kind='detector', architecture='', training_data='', licence='', source='', "
              "citation='')); print(zoo.fetch('t', progress=False))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == [str(home / FILE)] * 2
    assert (home / FILE).read_bytes() == PAYLOAD and _leftovers(home) == [FILE]
    assert server.hits[f"/slow/{FILE}"] == 1


def test_concurrent_fetches_without_the_lock_still_leave_one_good_file(server, home, monkeypatch):
    """Where fcntl is missing each fetch writes its own temporary file; the renames keep one whole file."""
    import contextlib

    monkeypatch.setattr(zoo, "_download_lock", lambda folder, name: contextlib.nullcontext())
    _entry(monkeypatch, [server.url("slow", FILE)])
    results, errors = [], []

    def work():
        try:
            results.append(zoo.fetch("test-entry", progress=False))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    assert server.hits[f"/slow/{FILE}"] == 3  # no lock: each downloaded
    assert (home / FILE).read_bytes() == PAYLOAD and _leftovers(home) == [FILE]


def test_offline_never_touches_the_network_and_names_the_file(server, home, monkeypatch):
    _entry(monkeypatch, [server.url("good", FILE)])
    monkeypatch.setenv(zoo.ENV_OFFLINE, "1")
    monkeypatch.setenv(zoo.ENV_MIRROR, server.base)  # a URL mirror is network too
    with pytest.raises(ZooError) as info:
        zoo.fetch("test-entry", progress=False)
    assert FILE in str(info.value) and str(home / FILE) in str(info.value) and zoo.ENV_OFFLINE in str(info.value)
    assert sum(server.hits.values()) == 0
    # a folder mirror is not network: offline it still serves
    folder = home.parent / "mirror"
    folder.mkdir()
    (folder / FILE).write_bytes(PAYLOAD)
    monkeypatch.setenv(zoo.ENV_MIRROR, str(folder))
    assert zoo.fetch("test-entry", progress=False).read_bytes() == PAYLOAD
    assert sum(server.hits.values()) == 0
    # and once cached, offline use needs nothing
    monkeypatch.delenv(zoo.ENV_MIRROR)
    assert zoo.fetch("test-entry", progress=False) == home / FILE


def test_mirror_is_tried_first_and_verified_too(server, home, monkeypatch):
    _entry(monkeypatch, [server.url("good", FILE)])
    folder = home.parent / "mirror"
    folder.mkdir()
    (folder / FILE).write_bytes(PAYLOAD[:-1] + b"x")  # a damaged copy on the mirror
    monkeypatch.setenv(zoo.ENV_MIRROR, str(folder))
    assert zoo.fetch("test-entry", progress=False).read_bytes() == PAYLOAD  # refused, next source
    assert server.hits[f"/good/{FILE}"] == 1
    (home / FILE).unlink()
    monkeypatch.setenv(zoo.ENV_MIRROR, server.base + "/redirect")  # a URL base
    zoo.fetch("test-entry", progress=False)
    assert server.hits[f"/redirect/{FILE}"] == 1 and server.hits[f"/good/{FILE}"] == 2


def test_damaged_cache_is_fetched_again(server, home, monkeypatch):
    _entry(monkeypatch, [server.url("good", FILE)])
    home.mkdir()
    (home / FILE).write_bytes(b"damaged")
    assert zoo.cached_file("test-entry") is None
    assert zoo.fetch("test-entry", progress=False).read_bytes() == PAYLOAD


def test_unknown_checksum_needs_the_flag_and_records_the_hash(server, home, monkeypatch, capsys):
    _entry(monkeypatch, [server.url("good", FILE)], sha256=None)
    with pytest.raises(ZooError, match="--allow-unverified"):
        zoo.fetch("test-entry", progress=False)
    assert sum(server.hits.values()) == 0
    path = zoo.fetch("test-entry", allow_unverified=True, progress=False)
    assert PAYLOAD_SHA in capsys.readouterr().err
    assert zoo.cached_file("test-entry") == path  # checked against the hash recorded at download
    path.write_bytes(b"changed")
    assert zoo.cached_file("test-entry") is None


def test_names_resolve_where_paths_go_and_a_file_wins(server, home, monkeypatch, tmp_path):
    _entry(monkeypatch, [server.url("good", FILE)])
    assert zoo.resolve_weights("test-entry") == home / FILE
    monkeypatch.chdir(tmp_path)
    Path("test-entry").write_bytes(b"a local file of that name")
    assert zoo.resolve_weights("test-entry") == Path("test-entry")
    assert zoo.resolve_weights("no/such.pth") == Path("no/such.pth")
    with pytest.raises(ZooError, match="did you mean retinaface_mnet025"):
        zoo.get_weights("retinaface_mnet25")


def test_registry_entries_are_complete():
    for name in zoo.list_weights():
        entry = zoo.get_weights(name)
        assert entry.urls and entry.licence and entry.citation and entry.architecture, name
        assert all(u.startswith("https://") for u in entry.urls), name
    assert zoo.get_weights(zoo.DEFAULT_DETECTOR).verified
    assert not zoo.get_weights("retinaface_r50").verified


# --------------------------------------------------------------------------- the real weights
REAL_WEIGHTS = REAL / "weights"
needs_real = pytest.mark.skipif(not (REAL_WEIGHTS / "mobilenet0.25_Final.pth").is_file(),
                                reason=f"real weights not found in {REAL_WEIGHTS}")


def _real_photo() -> Path:
    photos = sorted((REAL / "widerface" / "val" / "images").glob("*/*.jpg"))
    if not photos:
        pytest.skip(f"no real val photos in {REAL / 'widerface/val/images'}")
    return photos[0]


@needs_real
def test_detect_without_weights_uses_the_verified_zoo_detector(home, monkeypatch, tmp_path, capsys):
    from retinaface.cli import run_command

    photo = _real_photo()
    monkeypatch.setattr(zoo, "_announced", [])  # said once per process: make this the first time
    with LoopbackServer() as srv:
        srv.files["mobilenet0.25_Final.pth"] = (REAL_WEIGHTS / "mobilenet0.25_Final.pth").read_bytes()
        monkeypatch.setenv(zoo.ENV_MIRROR, srv.base)
        assert run_command("detect", [str(photo), "--output", str(tmp_path / "zoo")]) == 0
        assert srv.hits["/mobilenet0.25_Final.pth"] == 1
    assert "retinaface_mnet025" in capsys.readouterr().err  # says which model it used
    assert run_command("detect", [str(photo), "--output", str(tmp_path / "file"),
                                  "--weights", str(REAL_WEIGHTS / "mobilenet0.25_Final.pth")]) == 0
    by_zoo = (tmp_path / "zoo" / "detections.jsonl").read_text()
    by_file = (tmp_path / "file" / "detections.jsonl").read_text()
    assert by_zoo == by_file  # the same file through two doors of this project's code
    faces = [f for f in json.loads(by_zoo.splitlines()[0])["faces"] if f["score"] >= 0.6]
    assert len(faces) >= 1  # a real detector finds faces in a WIDER photo
    # the library doors: cached now, so they work offline; same detections as the file itself
    import cv2
    import numpy as np

    from retinaface import Detector, load_model

    monkeypatch.setenv(zoo.ENV_OFFLINE, "1")
    image = cv2.imread(str(photo))
    expected = Detector(load_model(REAL_WEIGHTS / "mobilenet0.25_Final.pth")).detect(image)
    assert np.array_equal(Detector().detect(image), expected)
    assert np.array_equal(Detector(load_model("retinaface_mnet025")).detect(image), expected)


@needs_real
def test_corrupted_real_file_is_refused_and_nothing_cached(home, monkeypatch, tmp_path, capsys):
    from retinaface.cli import run_command

    data = bytearray((REAL_WEIGHTS / "mobilenet0.25_Final.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    with LoopbackServer() as srv:
        srv.files["mobilenet0.25_Final.pth"] = bytes(data)
        monkeypatch.setenv(zoo.ENV_MIRROR, srv.base)
        monkeypatch.setitem(zoo._ZOO, "retinaface_mnet025",
                            zoo._ZOO["retinaface_mnet025"].__class__(**{**vars(zoo._ZOO["retinaface_mnet025"]),
                                                                         "urls": ()}))
        assert run_command("detect", [str(_real_photo()), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{srv.base}/mobilenet0.25_Final.pth: gave sha256 {hashlib.sha256(data).hexdigest()}" in err
    assert _leftovers(home) == []
    assert not (tmp_path / "out").exists()


@needs_real
def test_pretrained_mobilenet_starts_from_the_verified_imagenet_weights(home, monkeypatch):
    import torch

    from retinaface.engine.builders import initial_model
    from retinaface.engine.config import TrainConfig

    with LoopbackServer() as srv:
        srv.files["mobilenetV1X0.25_pretrain.tar"] = (REAL_WEIGHTS / "mobilenetV1X0.25_pretrain.tar").read_bytes()
        monkeypatch.setenv(zoo.ENV_MIRROR, srv.base)
        model = initial_model(TrainConfig(backbone="mobilenet0.25", pretrained=True), None)
    reference = torch.load(REAL_WEIGHTS / "mobilenetV1X0.25_pretrain.tar", map_location="cpu",
                           weights_only=True)["state_dict"]
    body = model.body.state_dict()
    assert len(body) > 0
    for key, value in body.items():
        assert torch.equal(value, reference["module." + key]), key


def test_cli_download_and_models(server, home, monkeypatch, capsys, tmp_path):
    from retinaface.cli import run_command

    _entry(monkeypatch, [server.url("good", FILE)])
    assert run_command("models", []) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("test-entry"))
    assert row.split()[-1] == "no"
    assert run_command("download", ["test-entry", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"test-entry: {home / FILE}"
    assert run_command("models", []) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("test-entry"))
    assert row.split()[-1] == "yes"
    assert run_command("download", ["no-such-model"]) == 2
    assert "not a zoo name" in capsys.readouterr().err
    # offline with nothing cached: detect stops with one line naming the file it needs
    monkeypatch.setenv(zoo.ENV_OFFLINE, "1")
    assert run_command("detect", [str(tmp_path), "--weights", "retinaface_mnet025",
                                  "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mobilenet0.25_Final.pth" in err[0] and zoo.ENV_OFFLINE in err[0]
