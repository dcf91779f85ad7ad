"""``retinaface data widerface`` against a loopback server of small stand-in archives (no internet),
and the project's reading of the official column order of the WIDER box lists."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from retinaface import zoo
from retinaface.data.download import WIDERFACE_FILES, DataDownloadError, download_widerface, verify_widerface

from loopback_server import LoopbackServer

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64  # starts like a JPEG; the layout is what is tested here
TRAIN_BBX = "0--Parade/0_Parade_a.jpg\n1\n10 20 30 40 0 0 0 0 0 0\n"
VAL_BBX = "0--Parade/0_Parade_b.jpg\n1\n5 6 7 8 0 0 0 0 0 0\n"
LABEL = "# 0--Parade/0_Parade_a.jpg\n10 20 30 40 15 25 0 30 25 0 20 30 0 15 35 0 30 35 0 0.9\n"


def _zip(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


ARCHIVES = {
    "WIDER_train.zip": _zip({"WIDER_train/images/0--Parade/0_Parade_a.jpg": JPEG}),
    "WIDER_val.zip": _zip({"WIDER_val/images/0--Parade/0_Parade_b.jpg": JPEG}),
    "wider_face_split.zip": _zip({"wider_face_split/wider_face_train_bbx_gt.txt": TRAIN_BBX,
                                  "wider_face_split/wider_face_val_bbx_gt.txt": VAL_BBX}),
    "eval_tools.zip": _zip({f"eval_tools/ground_truth/wider_{s}_val.mat": b"mat" for s in
                            ("face", "easy", "medium", "hard")}),
    "retinaface_gt_v1.1.zip": _zip({"train/label.txt": LABEL, "val/label.txt": "# 0--Parade/0_Parade_b.jpg\n"}),
}


@pytest.fixture
def served(monkeypatch):
    for name in (zoo.ENV_MIRROR, zoo.ENV_OFFLINE):
        monkeypatch.delenv(name, raising=False)
    with LoopbackServer() as srv:
        srv.files.update(ARCHIVES)
        files = [dataclasses.replace(item, urls=(srv.url("good", item.file_name),),
                                     md5=hashlib.md5(ARCHIVES[item.file_name]).hexdigest() if item.md5 else None)
                 for item in WIDERFACE_FILES]
        yield srv, files


def test_download_lays_out_both_layouts_and_resumes(served, tmp_path):
    from retinaface.data import load_training_annotations
    from retinaface.data.labels import detect_label_format, read_val_list

    srv, files = served
    root = tmp_path / "widerface"
    lines = []
    download_widerface(root, allow_unverified=True, files=files, progress=False, say=lines.append)
    fmt, label, images = detect_label_format(root, "train")
    assert fmt == "retinaface" and label == root / "train" / "label.txt"  # the landmark layout is preferred
    annotations, stats = load_training_annotations(root, check=False)
    assert len(annotations) == 1 and stats.num_without_landmarks == 0
    assert (images / "0--Parade" / "0_Parade_a.jpg").is_file()
    assert len(read_val_list(root / "val" / "wider_val.txt")) == 1
    assert (root / "val" / "wider_val.txt").read_text().split() == ["/0--Parade/0_Parade_b.jpg"]
    assert sorted(p.name for p in (root / "val" / "ground_truth").iterdir()) == \
        sorted(f"wider_{s}_val.mat" for s in ("face", "easy", "medium", "hard"))
    assert any("sha256 " + hashlib.sha256(ARCHIVES["eval_tools.zip"]).hexdigest() in line for line in lines)
    hits = dict(srv.hits)
    # a second run finds every archive verified and extracted: nothing is fetched again
    lines.clear()
    download_widerface(root, allow_unverified=True, files=files, progress=False, say=lines.append)
    assert dict(srv.hits) == hits
    assert sum("already downloaded" in line for line in lines) == len(files)
    assert all(ok for _, ok, _ in verify_widerface(root, files))


def test_without_the_flag_only_checksummed_archives_and_the_official_layout(served, tmp_path):
    from retinaface.data.labels import detect_label_format

    srv, files = served
    root = tmp_path / "widerface"
    download_widerface(root, files=files, progress=False, say=lambda line: None)
    assert srv.hits.get("/good/eval_tools.zip", 0) == 0 and srv.hits.get("/good/retinaface_gt_v1.1.zip", 0) == 0
    assert detect_label_format(root, "train")[0] == "wider"


def test_a_wrong_checksum_is_refused_and_verify_only_finds_damage(served, tmp_path):
    srv, files = served
    root = tmp_path / "widerface"
    bad = [dataclasses.replace(files[2], md5="0" * 32)]
    with pytest.raises(DataDownloadError, match="gave md5"):
        download_widerface(root, files=bad, progress=False, say=lambda line: None)
    assert not (root / "downloads" / "wider_face_split.zip").exists()
    download_widerface(root, files=files[:3], progress=False, say=lambda line: None)
    archive = root / "downloads" / "WIDER_val.zip"
    archive.write_bytes(archive.read_bytes()[:-10])
    report = {name: (ok, state) for name, ok, state in verify_widerface(root, files[:3])}
    assert report["WIDER_val.zip"][0] is False and "DOES NOT MATCH" in report["WIDER_val.zip"][1]
    assert report["WIDER_train.zip"][0] is True


def test_cli_verify_only_downloads_nothing(served, tmp_path, capsys):
    from retinaface.cli import run_command

    srv, _ = served
    assert run_command("data", ["widerface", "--root", str(tmp_path / "none"), "--verify-only"]) == 1
    assert sum(srv.hits.values()) == 0
    assert "FAIL" in capsys.readouterr().out


def test_official_column_order_invalid_occlusion_pose(tmp_path):
    """The box lists' last three columns are invalid, occlusion, pose (the official readme's order;
    torchvision names them occlusion, pose, invalid). Only the face flagged in the invalid column
    is left out."""
    from retinaface.data.labels import read_wider_bbx_labels

    images = tmp_path / "WIDER_train" / "images" / "0--Parade"
    images.mkdir(parents=True)
    (images / "0_Parade_a.jpg").write_bytes(JPEG)
    gt = tmp_path / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    gt.parent.mkdir()
    gt.write_text("0--Parade/0_Parade_a.jpg\n4\n"
                  "10 10 20 20 0 0 0 1 0 0\n"     # invalid=1: left out
                  "40 10 20 20 0 0 0 0 0 1\n"     # pose=1 (atypical): kept; torchvision's order reads invalid
                  "70 10 20 20 0 0 0 0 2 0\n"     # occlusion=2 (heavy): kept
                  "100 10 20 20 2 1 1 0 1 1\n")   # blur, expression, illumination, occlusion, pose: kept
    annotations, stats = read_wider_bbx_labels(gt, tmp_path / "WIDER_train" / "images")
    assert stats.num_skipped_invalid == 1
    assert sorted(annotations[0].boxes[:, 0].tolist()) == [40, 70, 100]
