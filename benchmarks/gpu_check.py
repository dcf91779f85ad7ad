"""One-command check of a GPU machine: precision modes, memory layout, torch.compile, DDP through
torchrun with SyncBatchNorm, training images/s per DataLoader worker count, GPU-side JPEG decoding,
detection FPS and evaluation, printed as one markdown table. Exits 1 if any check fails (its row
says why).

    python benchmarks/gpu_check.py [--only amp train sync ddp decode uint8 detect eval compile] [--data synthetic]
                                   [--cpu] [--workers 0 4 8 16] [--decode-workers 4]

On a CUDA machine (about 8 minutes on one modern GPU): fp32 vs AMP bf16 vs AMP fp16 with the loss
scaler over 50 identical steps (losses must agree), channels_last, torch.compile of the model;
``torchrun`` on all visible GPUs (NCCL, world size 1 is fine) with ``--sync-bn``; training
images/s and data-wait share through ``Trainer`` for mobilenet0.25 at 640 px batch 32 and ResNet-50
at 840 px batch 8 with 0 / 4 / 8 / 16 workers; the mobilenet0.25 run again with the JPEGs decoded
by the workers vs on the GPU (``benchmarks/gpu_decode.py``) at ``--decode-workers`` workers (the
speed-up says whether GPU decoding would pay on this machine; the losses of the two runs must agree,
they train on the same samples), and with
``--no-normalize-on-device`` vs the CUDA default (uint8 batches, the mean subtracted on the GPU: the
same batches, so the losses must agree to float noise); the host
syncs of a training epoch under ``torch.cuda.set_sync_debug_mode`` (none may happen per step);
``Detector`` FPS at 640x480 for batch 1 / 8 / 32 and at 1920x1080; evaluation over the synthetic
val split on the GPU.

Without CUDA (or with ``--cpu``) it runs a reduced version on the CPU (tiny sizes, a few steps,
gloo instead of NCCL, fp16 without compile, no GPU decoding) in well under a minute, so CI
exercises every path.
"""
from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("amp", "compile", "ddp", "train", "sync", "decode", "uint8", "detect", "eval")


@dataclass
class Profile:
    """Sizes of one run: the full GPU check or the reduced CPU one."""

    device: str
    amp_steps: int
    amp_size: int
    amp_batch: int
    train: List[Tuple[str, int, int, int]]       # backbone, image size, batch, steps per epoch
    workers: List[int]
    detect: List[Tuple[int, int, int, int]]      # width, height, batch, images
    compile: bool
    synthetic: Tuple[int, int, Tuple[int, int]]  # train / val images, (height, width)
    # mean relative loss difference allowed over the precision check's steps: their trajectories
    # drift apart, more so with tiny batches
    drift_limit: float = 0.05
    notes: List[str] = field(default_factory=list)


def gpu_profile() -> Profile:
    return Profile("cuda", 50, 640, 32, [("mobilenet0.25", 640, 32, 12), ("resnet50", 840, 8, 20)],
                   [0, 4, 8, 16], [(640, 480, 1, 64), (640, 480, 8, 128), (640, 480, 32, 256), (1920, 1080, 1, 32)],
                   True, (400, 100, (480, 640)))


def cpu_profile() -> Profile:
    # fp16 convolutions on a CPU are emulated and slow: the precision check runs at 32 px there
    return Profile("cpu", 3, 32, 2, [("mobilenet0.25", 64, 2, 2), ("resnet50", 64, 2, 1)], [0],
                   [(160, 120, 1, 2), (160, 120, 2, 2), (320, 180, 1, 1)], False, (8, 4, (96, 128)),
                   drift_limit=0.25, notes=["reduced CPU version: tiny sizes, few steps, gloo, no torch.compile"])


class Table:
    def __init__(self) -> None:
        self.rows: List[Tuple[str, str, str, str]] = []

    def add(self, check: str, setting: str, result: str, ok: bool = True, status: Optional[str] = None) -> None:
        self.rows.append((check, setting, result, status or ("ok" if ok else "FAIL")))

    @property
    def failed(self) -> bool:
        return any(r[3].startswith("FAIL") for r in self.rows)

    def markdown(self) -> str:
        lines = ["| check | setting | result | status |", "|---|---|---|---|"]
        lines += [f"| {c} | {s} | {r} | {st} |" for c, s, r, st in self.rows]
        return "\n".join(lines)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:200].replace("|", "/")


def training_batches(size: int, batch: int, count: int, seed: int = 0):
    """``count`` augmented batches of synthetic 480x640 scenes (fixed, so every mode sees the same)."""
    from retinaface.data.augment import TrainTransform
    from retinaface.data.synthetic import SCENES, _render_image

    transform = TrainTransform(size)
    out = []
    for b in range(count):
        images, targets = [], []
        for i in range(batch):
            img, faces = _render_image(seed, 0, b * batch + i, SCENES[(b + i) % len(SCENES)], 480, 640)
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (f.box for f in faces)], np.float32)
            lms = np.array([f.landmarks.reshape(10) for f in faces], np.float32)
            x, t = transform(img, boxes.reshape(-1, 4), lms.reshape(-1, 10), np.ones(len(faces)),
                             np.random.default_rng([seed, b, i]))
            images.append(torch.from_numpy(x))
            targets.append(torch.from_numpy(t))
        out.append((torch.stack(images), targets))
    return out


def train_steps(model: torch.nn.Module, batches, device: torch.device, dtype: Optional[torch.dtype],
                channels_last: bool = False) -> Tuple[List[float], float]:
    """SGD steps over ``batches`` under autocast ``dtype`` (None: fp32), with a loss scaler for
    fp16. Returns the per-step losses and the images/s of all but the first step."""
    from retinaface.engine.loss import MultiBoxLoss
    from retinaface.priors import generate_priors

    size = batches[0][0].shape[-1]
    priors = generate_priors(size, size, device=device)
    criterion = MultiBoxLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    losses: List[float] = []
    start = None
    for i, (images, targets) in enumerate(batches):
        if i == 1:
            sync(device)
            start = time.perf_counter()
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = [t.to(device, non_blocking=True) for t in targets]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(model(images), priors, targets).total
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    sync(device)
    elapsed = time.perf_counter() - start if start is not None else float("nan")
    images_seen = sum(b[0].shape[0] for b in batches[1:])
    return losses, images_seen / elapsed if elapsed > 0 else float("nan")


def agreement(losses: Sequence[float], reference: Sequence[float]) -> Tuple[float, float]:
    rel = [abs(a - b) / max(abs(b), 1e-8) for a, b in zip(losses, reference)]
    return float(np.mean(rel)), float(np.max(rel))


def check_amp(table: Table, p: Profile, device: torch.device) -> None:
    from retinaface import create_model

    torch.manual_seed(0)
    base = create_model("mobilenet0.25").train()
    batches = training_batches(p.amp_size, p.amp_batch, p.amp_steps)
    modes: List[Tuple[str, Optional[torch.dtype], bool]] = [("fp32", None, False), ("fp32 channels_last", None, True)]
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        modes.append(("AMP bf16", torch.bfloat16, False))
    modes.append(("AMP fp16 + loss scaler", torch.float16, False))
    setting = f"mobilenet0.25, {p.amp_size} px, batch {p.amp_batch}, {p.amp_steps} steps"
    reference = None
    for name, dtype, nhwc in modes:
        try:
            model = copy.deepcopy(base).to(device)
            if nhwc:  # as the trainer trains NHWC
                from retinaface.engine.builders import to_channels_last
                to_channels_last(model, device)
            losses, ips = train_steps(model, batches, device, dtype, nhwc)
            if not all(math.isfinite(v) for v in losses):
                raise FloatingPointError(f"non-finite loss at step {next(i for i, v in enumerate(losses) if not math.isfinite(v)) + 1}")
            if reference is None:
                reference = losses
                table.add(f"train {name}", setting, f"{ips:.1f} img/s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
                continue
            mean_rel, _ = agreement(losses, reference)
            # the first step with a non-zero loss compares one forward pass from the same weights
            # (rounding only: tight); later steps compare trajectories that drift apart (hard
            # negative mining amplifies tiny differences)
            k = next((i for i, v in enumerate(reference) if v > 0), None)
            if k is None:
                raise AssertionError("every step's fp32 loss is 0: no face was matched")
            first = agreement(losses[k:k + 1], reference[k:k + 1])[0]
            first_limit = 1e-3 if dtype is None else 3e-2
            ok = first < first_limit and mean_rel < p.drift_limit
            table.add(f"train {name}", setting, f"{ips:.1f} img/s, loss vs fp32: step {k + 1} rel diff "
                      f"{first:.2e} (limit {first_limit:.0e}), mean over steps {mean_rel:.2%} "
                      f"(limit {p.drift_limit:.0%})", ok)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row
            table.add(f"train {name}", setting, one_line(exc), False)


def check_compile(table: Table, p: Profile, device: torch.device) -> None:
    from retinaface import create_model

    setting = f"mobilenet0.25, {p.amp_size} px, batch {p.amp_batch}"
    if not p.compile:
        table.add("torch.compile", setting, "not run in the reduced CPU version", status="skipped")
        return
    try:
        torch.manual_seed(0)
        base = create_model("mobilenet0.25").train()
        batches = training_batches(p.amp_size, p.amp_batch, 12)
        eager_losses, eager_ips = train_steps(copy.deepcopy(base).to(device), batches, device, None)
        start = time.perf_counter()
        compiled = torch.compile(copy.deepcopy(base).to(device))
        losses, ips = train_steps(compiled, batches, device, None)
        total = time.perf_counter() - start
        mean_rel, _ = agreement(losses, eager_losses)
        ok = agreement(losses[:1], eager_losses[:1])[0] < 1e-3 and mean_rel < p.drift_limit
        table.add("torch.compile", setting, f"{ips:.1f} img/s vs eager {eager_ips:.1f} (x{ips / eager_ips:.2f}); "
                  f"first call + 12 steps {total:.0f} s; loss vs eager mean rel diff {mean_rel:.2%}", ok)
    except Exception as exc:  # noqa: BLE001
        table.add("torch.compile", setting, one_line(exc), False)


def make_data(p: Profile, data: str, tmp: Path) -> str:
    """The data root to train on: ``data`` as given, or for 'synthetic' a set of the profile's size."""
    if data != "synthetic":
        return data
    from retinaface.data.synthetic import generate_synthetic_widerface

    num_train, num_val, shape = p.synthetic
    if p.device == "cuda":
        return "synthetic"   # the trainer's own set (data/synthetic), generated once
    root = tmp / "synthetic"
    generate_synthetic_widerface(root, num_train=num_train, num_val=num_val, image_size=shape, seed=0)
    return str(root)


def train_run(p: Profile, data: str, out: Path, backbone: str, size: int, batch: int, steps: int, workers: int,
              trainer_class: Optional[type] = None, **options) -> Tuple[dict, Optional[Path]]:
    """Two short ``Trainer`` (or ``trainer_class``) epochs; returns the second epoch's log row (worker
    start-up is not counted) and the last checkpoint. ``options`` are further ``TrainConfig`` fields."""
    from retinaface.engine.trainer import TrainConfig, Trainer

    config = TrainConfig(data=data, backbone=backbone, image_size=size, batch_size=batch, epochs=2,
                         max_steps_per_epoch=steps, workers=workers, device=p.device,
                         optimizer="sgd", lr=1e-3, schedule="cosine", warmup_epochs=0, eval_every=0,
                         save_every=0, progress=False, output=str(out), **options)
    summary = (trainer_class or Trainer)(config).fit()
    row = summary.history[-1]
    if not math.isfinite(row["loss"]):
        raise FloatingPointError(f"non-finite epoch loss {row['loss']}")
    return row, summary.last_checkpoint


def check_train(table: Table, p: Profile, device: torch.device, data: str, tmp: Path) -> Optional[Path]:
    """Trainer throughput per worker count; returns the last mobilenet checkpoint (for eval)."""
    checkpoint = None
    for backbone, size, batch, steps in p.train:
        for workers in p.workers:
            setting = f"{backbone}, {size} px, batch {batch}, {workers} workers"
            try:
                row, last = train_run(p, data, tmp / f"train_{backbone}_{workers}", backbone, size, batch, steps,
                                      workers)
                table.add("Trainer images/s", setting, f"{row['images_per_s']:.1f} img/s, "
                          f"data wait {row['data_wait_share']:.0%}, loss {row['loss']:.3f}")
                if backbone == "mobilenet0.25" and last is not None:
                    checkpoint = last
            except Exception as exc:  # noqa: BLE001
                table.add("Trainer images/s", setting, one_line(exc), False)
    return checkpoint


def count_host_syncs(steps: int, run: Callable[[], object],
                     set_mode: Optional[Callable[[object], None]] = None) -> Tuple[int, str]:
    """Synchronizing CUDA calls made by ``run`` (``torch.cuda.set_sync_debug_mode("warn")``, or
    ``set_mode``): their count, and the row's text. Fewer than ``steps`` means no step synchronises:
    what remains are the epoch's end (loss means, the NaN guard's look, the first epoch's face count)."""
    import warnings

    set_mode = set_mode or torch.cuda.set_sync_debug_mode
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        set_mode("warn")
        try:
            run()
        finally:
            set_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    return len(syncs), f"{len(syncs)} host syncs in {steps} steps (epoch end included)"


def check_sync(table: Table, p: Profile, data: str, tmp: Path) -> None:
    """No host-device synchronisation inside a training step: one fp32 epoch of the first training
    setting, counted by torch's sync debug mode."""
    from retinaface.engine.trainer import TrainConfig, Trainer

    backbone, size, batch, steps = p.train[0]
    setting = f"{backbone}, {size} px, batch {batch}, {steps} steps, fp32, 0 workers"
    if p.device != "cuda":
        table.add("host syncs per step", setting, "needs CUDA (torch.cuda.set_sync_debug_mode); on CPU nothing "
                  "waits for a device", status="skipped")
        return
    config = TrainConfig(data=data, backbone=backbone, image_size=size, batch_size=batch, epochs=1,
                         max_steps_per_epoch=steps, workers=0, device=p.device, optimizer="sgd", lr=1e-3,
                         eval_every=0, save_every=0, progress=False, output=str(tmp / "sync"))
    trainer = Trainer(config)
    trainer.train_epoch()  # warm-up: cuDNN autotuning and allocator growth are not the loop's
    count, text = count_host_syncs(steps, trainer.train_epoch)
    table.add("host syncs per step", setting, text, count < steps)


# GPU decoding must beat the CPU decoders by this much to be called helpful (run-to-run noise
# of a 12-step epoch is a few per cent)
DECODE_GAIN = 1.05


def paired_runs(first: Tuple[str, dict], second: Tuple[str, dict]) -> Tuple[str, float, float]:
    """Two training runs of the same samples side by side: ``"<name> N img/s (data wait P%), ..."``,
    the second's speed-up over the first and the relative difference of their epoch losses."""
    text = ", ".join(f"{name} {row['images_per_s']:.1f} img/s (data wait {row['data_wait_share']:.0%})"
                     for name, row in (first, second))
    a, b = first[1], second[1]
    return text, b["images_per_s"] / a["images_per_s"], abs(b["loss"] - a["loss"]) / max(abs(a["loss"]), 1e-8)


def decode_comparison(cpu_row: dict, cuda_row: dict, drift_limit: float) -> Tuple[str, bool]:
    """The GPU-decode row's text and whether it passes: images/s and data wait of both runs, the
    speed-up and the verdict, and the epoch losses (the same samples: they must agree within
    ``drift_limit``, relative)."""
    runs, speedup, rel = paired_runs(("cpu", cpu_row), ("cuda", cuda_row))
    verdict = ("helps with this many workers: a measurement for bringing gpu_decode into the package"
               if speedup >= DECODE_GAIN else "does not help: keep decoding in the workers")
    text = (f"{runs}: x{speedup:.2f}, {verdict}; loss {cpu_row['loss']:.3f} vs {cuda_row['loss']:.3f} "
            f"(rel diff {rel:.2%}, limit {drift_limit:.0%})")
    return text, rel < drift_limit


def check_decode(table: Table, p: Profile, data: str, tmp: Path, workers: int) -> None:
    """Training images/s with the JPEGs decoded by the workers (OpenCV) vs on the GPU (nvJPEG,
    ``benchmarks/gpu_decode.py``), mobilenet0.25 at the profile's first training size."""
    backbone, size, batch, steps = p.train[0]
    setting = f"{backbone}, {size} px, batch {batch}, {workers} workers, decoded on cpu vs cuda"
    if p.device != "cuda":
        table.add("GPU JPEG decode", setting, "not run in the reduced CPU version: benchmarks/gpu_decode.py "
                  "decodes on the training GPU (tests/test_gpu_decode.py runs the same code on the CPU)",
                  status="skipped")
        return
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_decode.py sits beside this script
        from gpu_decode import DeviceDecodingTrainer

        rows = {"cpu": train_run(p, data, tmp / "decode_cpu", backbone, size, batch, steps, workers)[0],
                "cuda": train_run(p, data, tmp / "decode_cuda", backbone, size, batch, steps, workers,
                                  trainer_class=DeviceDecodingTrainer)[0]}
        text, ok = decode_comparison(rows["cpu"], rows["cuda"], p.drift_limit)
        table.add("GPU JPEG decode", setting, text, ok)
    except Exception as exc:  # noqa: BLE001
        table.add("GPU JPEG decode", setting, one_line(exc), False)


def uint8_comparison(float_row: dict, uint8_row: dict, limit: float) -> Tuple[str, bool]:
    """The uint8-batch row's text and whether it passes: images/s and data wait of both runs and the
    epoch losses, which must agree within ``limit`` (relative): the batches are the same."""
    runs, speedup, rel = paired_runs(("float batches", float_row), ("uint8 batches", uint8_row))
    text = (f"{runs}: x{speedup:.2f}; loss {float_row['loss']:.4f} vs {uint8_row['loss']:.4f} "
            f"(rel diff {rel:.1e}, limit {limit:.0e})")
    return text, rel < limit


def check_uint8(table: Table, p: Profile, data: str, tmp: Path, workers: int) -> None:
    """Training with the workers' float batches (``--no-normalize-on-device``) vs uint8 batches made
    float on the device (``--normalize-on-device``, the CUDA default), mobilenet0.25 at the
    profile's first training size: same samples, so the same losses (bit for bit on the CPU, float
    noise of non-deterministic GPU kernels on CUDA)."""
    backbone, size, batch, steps = p.train[0]
    workers = workers if p.device == "cuda" else 0
    setting = f"{backbone}, {size} px, batch {batch}, {workers} workers, --no-normalize-on-device vs on"
    try:
        rows = {flag: train_run(p, data, tmp / f"uint8_{flag}", backbone, size, batch, steps, workers,
                                normalize_on_device=flag)[0] for flag in (False, True)}
        text, ok = uint8_comparison(rows[False], rows[True], 1e-3 if p.device == "cuda" else 1e-7)
        table.add("uint8 batches (mean on the device)", setting, text, ok)
    except Exception as exc:  # noqa: BLE001
        table.add("uint8 batches (mean on the device)", setting, one_line(exc), False)


def check_ddp(table: Table, p: Profile, data: str, tmp: Path) -> None:
    world = torch.cuda.device_count() if p.device == "cuda" else 1
    backend = "NCCL" if p.device == "cuda" else "gloo"
    backbone, size, batch, steps = p.train[0]
    batch = batch * world  # the global batch: the per-GPU batch of the single-process runs
    setting = f"torchrun, {backend}, world size {world}, --sync-bn, {backbone} {size} px, batch {batch}"
    out = tmp / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
               str(ROOT / "tools" / "train.py"), "--data", data, "--backbone", backbone, "--image-size", str(size),
               "--batch-size", str(batch), "--epochs", "2" if p.device == "cuda" else "1", "--max-steps-per-epoch", str(steps), "--sync-bn",
               "--optimizer", "sgd", "--lr", "1e-3", "--workers", str(min(4, os.cpu_count() or 1) if world > 1 else 0),
               "--eval-every", "0", "--save-every", "0", "--no-progress", "--device", p.device, "--output", str(out)]
    try:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"exit {done.returncode}: {tail[-1] if tail else 'no output'}")
        with open(out / "log.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        row = rows[-1]
        table.add("DDP + SyncBatchNorm", setting, f"{float(row['images_per_s']):.1f} img/s over {world} "
                  f"process(es), loss {float(row['loss']):.3f}, whole run {elapsed:.0f} s")
    except Exception as exc:  # noqa: BLE001
        table.add("DDP + SyncBatchNorm", setting, one_line(exc), False)


def check_detect(table: Table, p: Profile, device: torch.device) -> None:
    from retinaface import Detector, create_model

    torch.manual_seed(0)
    model = create_model("mobilenet0.25").eval()
    detector = Detector(model, device=device)
    rng = np.random.default_rng(0)
    for width, height, batch, count in p.detect:
        setting = f"mobilenet0.25, {width}x{height}, batch {batch}, untrained weights"
        try:
            images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
            detector.detect_batch(images[:batch], batch_size=batch)  # warm-up
            sync(device)
            start = time.perf_counter()
            out = detector.detect_batch(images, batch_size=batch)
            sync(device)
            fps = count / (time.perf_counter() - start)
            if len(out) != count or any(d.ndim != 2 or d.shape[1] != 15 for d in out):
                raise AssertionError("detect_batch returned the wrong shape")
            table.add("Detector FPS", setting, f"{fps:.1f} images/s")
        except Exception as exc:  # noqa: BLE001
            table.add("Detector FPS", setting, one_line(exc), False)


def check_eval(table: Table, p: Profile, device: torch.device, data: str, checkpoint: Optional[Path]) -> None:
    from retinaface import create_model, load_model
    from retinaface.evaluation.predict import evaluate_model

    root = ROOT / "data" / "synthetic" if data == "synthetic" else Path(data)
    setting = f"synthetic val split, {'2-epoch checkpoint' if checkpoint else 'untrained model'}"
    try:
        model = load_model(str(checkpoint)) if checkpoint else create_model("mobilenet0.25")
        model = model.to(device).eval()
        start = time.perf_counter()
        result = evaluate_model(model, root, workers=2 if p.device == "cuda" else 0, progress=False)
        elapsed = time.perf_counter() - start
        aps = result.as_dict()
        if not all(0.0 <= v <= 1.0 for v in aps.values()):
            raise AssertionError(f"AP out of range: {aps}")
        table.add("evaluation", setting, f"{elapsed:.1f} s, AP easy {aps['easy']:.3f} medium {aps['medium']:.3f} "
                  f"hard {aps['hard']:.3f}")
    except Exception as exc:  # noqa: BLE001
        table.add("evaluation", setting, one_line(exc), False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS), help="run these checks only")
    parser.add_argument("--data", default="synthetic", help="data root for the training checks, or 'synthetic'")
    parser.add_argument("--cpu", action="store_true", help="the reduced CPU version even if CUDA is present")
    parser.add_argument("--workers", type=int, nargs="+", help="DataLoader worker counts (default 0 4 8 16 on GPU)")
    parser.add_argument("--decode-workers", type=int, default=4,
                        help="DataLoader workers of the CPU vs GPU JPEG decoding comparison (default 4)")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failed checks")
    args = parser.parse_args(argv)

    use_cuda = torch.cuda.is_available() and not args.cpu
    p = gpu_profile() if use_cuda else cpu_profile()
    if args.workers:
        p.workers = args.workers
    device = torch.device(p.device)
    name = torch.cuda.get_device_name(device) if use_cuda else f"CPU ({os.cpu_count()} cores)"
    table = Table()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            data = make_data(p, args.data, tmp)
        except Exception as exc:  # noqa: BLE001
            table.add("data", args.data, one_line(exc), False)
            data = args.data
        checkpoint = None
        steps: Dict[str, Callable[[], object]] = {
            "amp": lambda: check_amp(table, p, device),
            "compile": lambda: check_compile(table, p, device),
            "ddp": lambda: check_ddp(table, p, data, tmp),
            "train": lambda: check_train(table, p, device, data, tmp),
            "sync": lambda: check_sync(table, p, data, tmp),
            "decode": lambda: check_decode(table, p, data, tmp, args.decode_workers),
            "uint8": lambda: check_uint8(table, p, data, tmp, args.decode_workers),
            "detect": lambda: check_detect(table, p, device),
        }
        for key in CHECKS:
            if key not in args.only:
                continue
            try:
                if key == "eval":
                    check_eval(table, p, device, data, checkpoint)
                else:
                    result = steps[key]()
                    if key == "train":
                        checkpoint = result
            except Exception as exc:  # noqa: BLE001 - a bug in a check itself is a failure too
                if args.verbose:
                    traceback.print_exc()
                table.add(key, "", one_line(exc), False)
    print(f"## GPU check: {name}, torch {torch.__version__}, {time.perf_counter() - start:.0f} s")
    for note in p.notes:
        print(f"_{note}_")
    print()
    print(table.markdown())
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
