"""benchmarks/gpu_check.py's reduced CPU version: every check runs, gives its row, and the exit code
says whether any failed."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(text: str):
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in r] for r in rows[1:]]  # without the header


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = load_gpu_check().main(["--cpu"])
    return rc, out.getvalue()


def test_reduced_cpu_version_runs_every_check(reduced_run):
    rc, text = reduced_run
    assert text.startswith("## GPU check: CPU"), text[:200]
    rows = table_rows(text)
    by_check = {}
    for check, setting, result, status in rows:
        by_check.setdefault(check, []).append((setting, result, status))
    assert rc == 0, "\n".join(" | ".join(r) for r in rows if r[3] != "ok")
    for name in ("train fp32", "train fp32 channels_last", "train AMP bf16", "train AMP fp16 + loss scaler"):
        assert [s for *_, s in by_check[name]] == ["ok"], name
        assert "img/s" in by_check[name][0][1]
    assert "rel diff" in by_check["train AMP fp16 + loss scaler"][0][1]
    assert by_check["torch.compile"][0][2] == "skipped"
    (sync,) = by_check["host syncs per step"]
    assert sync[2] == "skipped" and "needs CUDA" in sync[1]
    (decode,) = by_check["GPU JPEG decode"]
    assert decode[2] == "skipped" and "reduced CPU version" in decode[1] and "cpu vs cuda" in decode[0] and "gpu_decode.py" in decode[1]
    (uint8,) = by_check["uint8 batches (mean on the device)"]
    assert uint8[2] == "ok" and "rel diff 0.0e+00" in uint8[1], uint8   # the same batches, bit for bit
    assert "world size 1" in by_check["DDP + SyncBatchNorm"][0][0]
    settings = [s for s, *_ in by_check["Trainer images/s"]]
    assert any(s.startswith("mobilenet0.25") for s in settings) and any(s.startswith("resnet50") for s in settings)
    assert all("data wait" in r for _, r, _ in by_check["Trainer images/s"])
    assert len(by_check["Detector FPS"]) == 3 and all("images/s" in r for _, r, _ in by_check["Detector FPS"])
    assert "AP easy" in by_check["evaluation"][0][1]


def test_a_failing_check_gives_its_row_and_exit_code_1(tmp_path, capsys):
    rc = load_gpu_check().main(["--cpu", "--only", "train", "--data", str(tmp_path / "missing")])
    rows = table_rows(capsys.readouterr().out)
    assert rc == 1
    assert rows and all(r[0] == "Trainer images/s" and r[3] == "FAIL" for r in rows)
    assert all("\n" not in r[2] and r[2] for r in rows)


def test_decode_comparison_gives_the_speed_up_the_verdict_and_the_loss_check():
    compare = load_gpu_check().decode_comparison
    cpu = {"images_per_s": 400.0, "data_wait_share": 0.6, "loss": 10.0}
    text, ok = compare(cpu, {"images_per_s": 600.0, "data_wait_share": 0.05, "loss": 10.1}, 0.05)
    assert ok and "x1.50" in text and "helps with this many workers" in text and "data wait 60%" in text
    text, ok = compare(cpu, {"images_per_s": 410.0, "data_wait_share": 0.5, "loss": 10.0}, 0.05)
    assert ok and "does not help: keep decoding in the workers" in text
    text, ok = compare(cpu, {"images_per_s": 600.0, "data_wait_share": 0.0, "loss": 12.0}, 0.05)
    assert not ok and "rel diff 20.00%" in text
    assert "|" not in text and "\n" not in text


def test_host_sync_count_reads_the_debug_mode_warnings():
    import warnings

    count = load_gpu_check().count_host_syncs
    modes = []

    def epoch():
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation", UserWarning)
        warnings.warn("something else", UserWarning)

    n, text = count(20, epoch, set_mode=modes.append)
    assert n == 3 and text == "3 host syncs in 20 steps (epoch end included)"
    assert modes == ["warn", 0]  # switched on for the run, and off again
