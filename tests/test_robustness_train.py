"""Training and data guards (issue 12): a new run never replaces an earlier one, interrupted writes
are cleaned up, labels that do not fit their images and images that do not decode are caught up
front, impossible settings are refused naming the flag, a resumed run cannot be silently changed,
Ctrl-C ends with one line and exit code 130, and checkpoints that hold code or NaN are refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from retinaface import CheckpointError, create_model, load_model, save_model
from retinaface.checkpoint import read_checkpoint
from retinaface.data.labels import load_training_annotations, read_retinaface_labels, read_val_list
from retinaface.engine.config import TrainConfig
from retinaface.engine.state import RunFolderError, prepare_run_folder
from retinaface.engine.trainer import NoFaceMatchedError, Trainer
from retinaface.fileio import atomic_write, clean_stale_temporaries

LM = " ".join(["12.0 14.0 0.0"] * 5)
SMALL = dict(backbone="mobilenet0.25", image_size=128, batch_size=4, max_steps_per_epoch=2, workers=0,
             device="cpu", progress=False, optimizer="sgd", lr=1e-3, schedule="cosine", warmup_epochs=0,
             save_every=0, eval_every=0)


def write_image(path: Path, height: int = 96, width: int = 128, ext: str = ".jpg") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(ext, np.full((height, width, 3), 90, np.uint8))
    path.write_bytes(data.tobytes())
    return path


def make_data(root: Path, faces: str, names=("a.jpg",), **image) -> Path:
    """A one-split data root: ``train/label.txt`` (each image with the ``faces`` lines) and images."""
    lines = []
    for name in names:
        write_image(root / "train" / "images" / "0--Parade" / name, **image)
        lines += [f"# 0--Parade/{name}", faces]
    (root / "train" / "label.txt").write_text("\n".join(lines) + "\n")
    return root


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- run folders
@pytest.mark.parametrize("marker", ["last.pth", "best.pth", "log.csv"])
def test_an_output_folder_holding_a_run_is_refused(tmp_path, marker):
    (tmp_path / marker).write_bytes(b"earlier run")
    with pytest.raises(RunFolderError, match=f"--output {tmp_path} holds an earlier run .*{marker}.*--resume"):
        Trainer(TrainConfig(data=str(tmp_path), output=str(tmp_path)))
    assert (tmp_path / marker).read_bytes() == b"earlier run"
    Trainer(TrainConfig(data=str(tmp_path), output=str(tmp_path), overwrite=True))  # allowed when asked


def test_train_cli_refuses_a_finished_run_in_one_line(tmp_path, capsys):
    from retinaface.cli.train import main

    (tmp_path / "last.pth").write_bytes(b"earlier run")
    assert main(["--data", str(tmp_path), "--output", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds an earlier run" in err and "--overwrite" in err
    assert (tmp_path / "last.pth").read_bytes() == b"earlier run"


def test_the_default_output_moves_on_to_a_numbered_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Trainer(TrainConfig(data="somewhere")).output == Path("runs/train")  # claimed: created
    for name in ("train", "train2"):
        (tmp_path / "runs" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / name / "log.csv").write_text("epoch\n1\n")
    trainer = Trainer(TrainConfig(data="somewhere"))
    assert trainer.output == Path("runs/train3") and trainer.config.output == "runs/train3"


def test_overwrite_removes_only_the_earlier_runs_files(tmp_path):
    for name in ("last.pth", "best.pth", "log.csv", "epoch_010.pth", "notes.txt"):
        (tmp_path / name).write_text("x")
    prepare_run_folder(tmp_path, overwrite=True, resuming=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_stale_temporaries_of_killed_writers_are_cleaned_and_nothing_else(tmp_path):
    gone = tmp_path / f".last.pth.{dead_pid()}-abcd1234.tmp"
    live = tmp_path / f".best.pth.{os.getpid()}-abcd1234.tmp"      # a writer still running: kept
    old_style = tmp_path / ".log.csv.k3j_x9q2.tmp"                    # earlier naming, an hour old
    user = tmp_path / "mine.tmp"
    for path in (gone, live, old_style, user):
        path.write_text("x")
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    prepare_run_folder(tmp_path, overwrite=False, resuming=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, user.name])
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_atomic_write_names_its_temporary_after_the_writer(tmp_path):
    with atomic_write(tmp_path / "x.txt") as handle:
        names = [p.name for p in tmp_path.iterdir()]
        handle.write("done")
    assert len(names) == 1 and names[0].startswith(f".x.txt.{os.getpid()}-") and names[0].endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


# --------------------------------------------------------------------------- labels vs images
@pytest.mark.parametrize("box", ["200 10 30 30", "-60 10 30 30", "10 10 1e30 30", "10 90 30 40"])
def test_boxes_outside_their_image_are_refused_naming_file_and_line(tmp_path, box):
    root = make_data(tmp_path, f"5 5 20 20 {LM} 0.5\n{box} {LM} 0.5")   # the second face is bad
    with pytest.raises(ValueError, match=rf"{tmp_path / 'train' / 'label.txt'}:3: face box .* outside .*128x96"):
        load_training_annotations(root)


def test_boxes_overhanging_the_border_slightly_are_accepted(tmp_path):
    root = make_data(tmp_path, f"-2 -2 40 40 {LM} 0.5\n100 70 30 28 {LM} 0.5")  # to x 130, y 98
    annotations, stats = load_training_annotations(root)
    assert stats.num_faces == 2


def test_labels_normalized_to_0_1_are_refused(tmp_path):
    root = make_data(tmp_path, "0.1 0.2 0.3 0.25\n0.5 0.5 0.2 0.2")
    with pytest.raises(ValueError, match="normalized to 0..1"):
        load_training_annotations(root)


def test_undecodable_images_are_found_up_front_and_skipped_and_counted(tmp_path):
    root = make_data(tmp_path, f"5 5 20 20 {LM} 0.5", names=("good.jpg", "cut.jpg", "fake.png"))
    folder = root / "train" / "images" / "0--Parade"
    cut = folder / "cut.jpg"
    cut.write_bytes(cut.read_bytes()[:200])                      # a JPEG cut short
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 40)  # PNG magic, then garbage
    with pytest.raises(FileNotFoundError) as info:
        load_training_annotations(root)
    message = str(info.value)
    assert "2 of 3" in message and "cut.jpg (does not decode" in message and "fake.png (does not decode" in message
    annotations, stats = load_training_annotations(root, skip_bad=True)
    assert [Path(a.path).name for a in annotations] == ["good.jpg"] and stats.num_skipped_bad == 2


def test_a_run_whose_first_epoch_matches_no_face_stops_with_a_clear_error(tmp_path):
    # 3-pixel faces: no 16-pixel anchor reaches IoU 0.35, so the loss is exactly 0 every step
    root = make_data(tmp_path / "data", "\n".join(f"{x} {y} 3 3 {LM} 0.5" for x in (20, 60) for y in (20, 60)),
                     names=tuple(f"{i}.jpg" for i in range(8)), height=160, width=160)
    trainer = Trainer(TrainConfig(**dict(SMALL, data=str(root), epochs=2, output=str(tmp_path / "out"))))
    with pytest.raises(NoFaceMatchedError, match="epoch 1 matched no face to any prior"):
        trainer.fit()
    assert not (tmp_path / "out" / "last.pth").exists()


# --------------------------------------------------------------------------- label file encodings and names
def test_a_label_file_with_a_byte_order_mark_is_read(tmp_path):
    label = tmp_path / "label.txt"
    label.write_bytes(b"\xef\xbb\xbf" + f"# 0--Parade/a.jpg\n10 20 30 40 {LM} 0.8\n".encode())
    annotations, stats = read_retinaface_labels(label)
    assert stats.num_faces == 1 and annotations[0].name == "a"


def test_non_utf8_bytes_are_named_with_file_and_line(tmp_path):
    label = tmp_path / "label.txt"
    label.write_bytes(b"# 0--Parade/a.jpg\n10 20 30 40\n# 0--Parade/caf\xe9.jpg\n")
    with pytest.raises(ValueError, match=rf"{label}:3: not UTF-8 text \(byte 0xe9 at column 16\)"):
        read_retinaface_labels(label)


def test_image_names_with_spaces_are_accepted(tmp_path):
    root = make_data(tmp_path, f"5 5 20 20 {LM} 0.5", names=("my photo 1.jpg",))
    annotations, _ = load_training_annotations(root)
    assert annotations[0].path.endswith("0--Parade/my photo 1.jpg") and annotations[0].name == "my photo 1"
    listing = tmp_path / "val" / "wider_val.txt"
    listing.parent.mkdir()
    listing.write_text("/0--Parade/my photo 1.jpg\n")
    assert read_val_list(listing)[0].name == "my photo 1"


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize("flags, flag, allowed", [
    (["--gamma", "-1"], "--gamma", "(0, 1]"),
    (["--momentum", "5"], "--momentum", "[0, 1)"),
    (["--neg-pos-ratio", "-1"], "--neg-pos-ratio", "[1, inf)"),
    (["--warmup-epochs", "-1"], "--warmup-epochs", "[0, inf)"),
    (["--lr", "0"], "--lr", "(0, inf)"),
    (["--prefetch-factor", "0"], "--prefetch-factor", "[1, inf)"),
    (["--decay-epochs", "10", "-2"], "--decay-epochs", "[1, inf)"),
])
def test_impossible_settings_are_refused_naming_the_flag_and_range(flags, flag, allowed, capsys):
    from retinaface.cli.train import main

    with pytest.raises(SystemExit) as info:
        main(flags)
    err = capsys.readouterr().err
    assert info.value.code == 2 and flag in err and allowed in err and len(err.strip().splitlines()) == 1
    field = flag[2:].replace("-", "_")
    value = [10, -2] if field == "decay_epochs" else float(flags[1])
    with pytest.raises(ValueError, match=rf"^{flag}: .*allowed range"):
        TrainConfig(**{field: value}).resolved()


def test_min_lr_above_lr_is_refused(capsys):
    from retinaface.cli.train import main

    assert main(["--lr", "0.01", "--min-lr", "0.1", "--data", "nowhere"]) == 2
    assert "--min-lr: 0.1 must be below --lr (0.01)" in capsys.readouterr().err


def _fake_run(tmp_path: Path) -> str:
    """A resumable checkpoint whose saved settings are a mobilenet0.25 / adamw run."""
    config = TrainConfig(**dict(SMALL, data=str(tmp_path), optimizer="adamw", epochs=3,
                                output=str(tmp_path))).resolved()
    path = tmp_path / "last.pth"
    save_model(create_model("mobilenet0.25"), path, optimizer={}, train_config=config.to_dict())
    return str(path)


def test_resume_refuses_a_flag_that_contradicts_the_run_naming_both_values(tmp_path, capsys):
    from retinaface.cli.train import main, train_options

    last = _fake_run(tmp_path)
    assert main(["--resume", last, "--backbone", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "--backbone resnet50 contradicts the resumed run" in err and "mobilenet0.25" in err
    # options that may change on resume do; machine settings are this machine's
    options = train_options(["--resume", last, "--epochs", "9", "--workers", "1"])
    assert (options["epochs"], options["workers"], options["optimizer"], options["backbone"]) == \
        (9, 1, "adamw", "mobilenet0.25")


def test_help_lists_the_flags_that_may_change_on_resume(capsys):
    from retinaface.cli.train import build_parser

    text = " ".join(build_parser("retinaface train").format_help().split())
    assert "Flags that may change on --resume: --epochs, --workers, --prefetch-factor" in text
    assert "--eval-every" in text.split("may change on --resume:")[1].split(";")[0]


def test_train_prioritize_flags_come_from_one_config():
    import dataclasses

    from retinaface.cli.prioritize import build_parser as prioritize_parser
    from retinaface.cli.train import build_parser as train_parser
    from retinaface.engine.config import flag_name
    from retinaface.engine.prioritize import STAGE_OWNED

    def flags(parser):
        return {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}

    train, prioritize = flags(train_parser()), flags(prioritize_parser())
    for field in dataclasses.fields(TrainConfig):
        assert train[flag_name(field)].startswith(field.metadata["help"].replace("%", "%%"))
        if field.name not in STAGE_OWNED:
            assert prioritize[flag_name(field)] == train[flag_name(field)]


# --------------------------------------------------------------------------- data loader options
def test_loader_options_pin_memory_only_for_cuda_and_keep_workers():
    from retinaface.engine.builders import loader_options

    cpu = loader_options(TrainConfig(workers=2).resolved(), torch.device("cpu"))
    assert cpu == dict(num_workers=2, pin_memory=False, persistent_workers=True)
    assert loader_options(TrainConfig(workers=0).resolved(), torch.device("cpu")) == \
        dict(num_workers=0, pin_memory=False)
    cuda = loader_options(TrainConfig(workers=4, prefetch_factor=6).resolved(), torch.device("cuda", 0))
    assert cuda == dict(num_workers=4, pin_memory=True, persistent_workers=True, prefetch_factor=6)
    with pytest.raises(ValueError, match="--prefetch-factor: needs --workers"):
        TrainConfig(workers=0, prefetch_factor=2).resolved()


def test_default_workers_share_the_cpus_of_this_process_among_local_ranks(monkeypatch):
    from retinaface.engine import config

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(40)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert config.default_workers() == 5                     # a DGX-1: 40 cores, 8 GPUs
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert config.default_workers() == config.MAX_DEFAULT_WORKERS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert TrainConfig().resolved().workers == 2             # this 2-core machine: as before


# --------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_of_nan_weights_is_refused_naming_the_first_bad_tensor(tmp_path):
    model = create_model("mobilenet0.25")
    name = next(n for n, p in model.named_parameters() if n.startswith("fpn"))
    with torch.no_grad():
        dict(model.named_parameters())[name].view(-1)[3] = float("nan")
    save_model(model, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=rf"nan.pth: weights are not finite .* first in {name}"):
        load_model(tmp_path / "nan.pth")


def test_a_code_running_pickle_is_refused_as_code(tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for protocol in (2, 4):
        path = tmp_path / f"evil{protocol}.pth"
        path.write_bytes(pickle.dumps({"model": Payload()}, protocol=protocol))
        with pytest.raises(CheckpointError, match="refusing to load it: the file holds code"):
            read_checkpoint(path)
        with pytest.raises(CheckpointError, match="holds code"):
            load_model(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_during_training_prints_one_line_exits_130_and_keeps_last_pth(tiny_synthetic, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "retinaface", "train", "--data", str(tiny_synthetic), "--output", str(out),
               "--epochs", "200", "--image-size", "64", "--batch-size", "4", "--max-steps-per-epoch", "2",
               "--workers", "0", "--device", "cpu", "--no-progress", "--save-every", "0", "--eval-every", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (out / "log.csv").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last_line = err.strip().splitlines()[-1]
    assert "interrupted" in last_line and "last.pth holds epoch" in last_line
    assert read_checkpoint(out / "last.pth")["epoch"] >= 1
