"""benchmarks/gpu_decode.py, run on the CPU (the code is device-generic): the same draws and
targets as the CPU pipeline, pixels within rounding of it, the same colour statistics, the files it
hands back to the CPU pipeline, one-line errors, and its Trainer (what benchmarks/gpu_check.py
measures on a GPU) wired to the CPU. ``retinaface train`` no longer offers it."""
from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from retinaface.data import TrainTransform, WiderFaceTrainDataset
from retinaface.data.augment import INTERPOLATIONS, apply_distortion, draw_distortion
from retinaface.data.labels import ImageAnnotation, load_training_annotations

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_decode as G  # noqa: E402

SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny tensors: one thread (two on a busy 2-core machine are many times slower)."""


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from retinaface.data.synthetic import generate_synthetic_widerface

    root = tmp_path_factory.mktemp("gpu_decode_synthetic")
    generate_synthetic_widerface(root, num_train=40, num_val=2, image_size=(96, 128), seed=0)
    annotations, _ = load_training_annotations(root, check=True)
    return annotations


def both(annotations, seed=3):
    return (WiderFaceTrainDataset(annotations, TrainTransform(SIZE), seed=seed),
            G.EncodedTrainDataset(annotations, TrainTransform(SIZE), seed=seed))


def device_batch(dataset, indices):
    """The main-process result for ``indices`` (device "cpu")."""
    return G.DeviceBatchDecoder(dataset, "cpu")(*G.encoded_collate([dataset[i] for i in indices]))


@pytest.fixture(scope="module")
def paired(synthetic):
    """320 samples (40 images x 8 epochs) through both pipelines: (cpu images, cpu targets,
    device images, device targets, how many went through the device path)."""
    cpu, enc = both(synthetic)
    cpu_images, cpu_targets, device_images, device_targets = [], [], [], []
    on_device = 0
    for epoch in range(8):
        cpu.set_epoch(epoch)
        enc.set_epoch(epoch)
        for start in range(0, len(synthetic), 8):
            indices = list(range(start, start + 8))
            on_device += sum(enc[i].data is not None for i in indices)
            images, targets = device_batch(enc, indices)
            device_images.append(images)
            device_targets += targets
            for i in indices:
                x, t = cpu[i]
                cpu_images.append(x)
                cpu_targets.append(t)
    return torch.stack(cpu_images), cpu_targets, torch.cat(device_images), device_targets, on_device


def test_targets_are_the_cpu_pipelines_exactly(paired):
    """(a) the workers draw the plan from the header's size with the sample's own generator."""
    _, cpu_targets, _, device_targets, on_device = paired
    assert on_device == len(cpu_targets)   # every synthetic JPEG took the device path
    assert any(len(t) for t in cpu_targets)
    for a, b in zip(cpu_targets, device_targets):
        assert torch.equal(a, b)


def test_images_are_the_cpu_pipelines_up_to_rounding(paired):
    """(b) same crop, distortion, mirror and interpolation: torchvision's CPU decoder gives cv2's
    pixels, so what is left is rounding: float32 against OpenCV's fixed-point resize, and OpenCV's
    own rounding of its HSV round trip (which changes between OpenCV releases and between its
    vectorised and scalar columns). Each of those steps moves a pixel by at most one grey level
    (a contrast of up to 1.5 after it, by at most 2), so the limits are set by that bound, not by
    today's figures: no pixel more than 4 levels off, no sample more than 1.5 levels off on
    average, the whole set under half a level. A wrong crop, flip or distortion is tens of levels."""
    cpu_images, _, device_images, _, _ = paired
    assert device_images.shape == cpu_images.shape and device_images.dtype == torch.float32
    diff = (device_images - cpu_images).abs()
    per_sample = diff.mean(dim=(1, 2, 3))
    assert per_sample.max() < 1.5, per_sample.max()
    assert per_sample.mean() < 0.5, per_sample.mean()
    assert diff.max() <= 4


def test_colour_statistics_agree(paired):
    """(c) per-channel mean and standard deviation over the 320 samples (~1.3 M pixels a channel).
    The samples are paired (same draws), so the statistics can differ only through the per-pixel
    rounding of the test above (at most a level or two a pixel, a fraction of a level on average):
    the means within half a grey level and the stds (~65 levels) within 0.5 %, while a missed
    distortion step moves the std by several levels."""
    cpu_images, _, device_images, _, _ = paired
    a = cpu_images.transpose(0, 1).reshape(3, -1).double()
    b = device_images.transpose(0, 1).reshape(3, -1).double()
    assert (a.mean(1) - b.mean(1)).abs().max() < 0.5
    assert ((a.std(1) - b.std(1)).abs() / a.std(1)).max() < 5e-3


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_resize_taps_reproduce_cv2_resize(interpolation):
    rng = np.random.default_rng(interpolation)
    for src, dst in ((100, 64), (128, 64), (37, 64), (300, 64), (64, 64), (288, 640), (144, 640), (1000, 640)):
        image = cv2.GaussianBlur(rng.integers(0, 256, (src, src, 3), dtype=np.uint8), (0, 0), 1.0)
        taps = tuple(torch.from_numpy(a.copy()) for a in G.resize_taps(src, dst, interpolation))
        flipped = (src - 1 - taps[0], taps[1])
        chw = torch.from_numpy(image).permute(2, 0, 1)
        for cols, reference in ((taps, image), (flipped, cv2.flip(image, 1))):
            want = cv2.resize(reference, (dst, dst), interpolation=interpolation).astype(np.int64)
            got = G.resample(chw, taps, cols).permute(1, 2, 0).numpy().astype(np.int64)
            diff = np.abs(got - want)
            assert diff.max() <= 1, (src, dst)
            assert diff.mean() < 0.26, (src, dst, diff.mean())
            if interpolation == cv2.INTER_NEAREST or src == dst:
                assert diff.max() == 0


def test_distortion_tables_are_apply_distortion():
    """The lookup tables against OpenCV's apply_distortion: the HSV round trip may round each pixel
    one grey level differently (OpenCV's rounding differs between its releases and between its
    vectorised and scalar columns), two when a contrast of up to 1.5 follows; so at most 2 levels
    anywhere and under half a level on average per image, where a wrong table is tens of levels."""
    rng = np.random.default_rng(0)
    for width in (64, 50):
        for k in range(60):
            image = rng.integers(0, 256, (24, width, 3), dtype=np.uint8)
            d = draw_distortion(np.random.default_rng([7, k]))
            tables, used = G.distortion_tables(d)
            got = G.apply_distortion_tables(torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                                            torch.from_numpy(tables), used).permute(1, 2, 0).numpy()
            want = apply_distortion(image, d)
            diff = np.abs(got.astype(np.int64) - want)
            assert diff.max() <= 2, (width, d)
            assert diff.mean() < 0.5, (width, d)
    assert G.distortion_tables(None)[1] == (False, False, False, False)


def test_bgr_hsv_conversions_are_opencvs():
    """OpenCV's conversions up to its rounding (one level; hue is circular over 0..179): how
    OpenCV rounds changes between its releases, a wrong formula is off by tens of levels."""
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    got = G.bgr_to_hsv(torch.from_numpy(bgr).permute(2, 0, 1)).permute(1, 2, 0).numpy().astype(np.int64)
    want = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.int64)
    hue = np.abs(got[..., 0] - want[..., 0])
    assert np.minimum(hue, 180 - hue).max() <= 1 and np.abs(got[..., 1:] - want[..., 1:]).max() <= 1
    assert (got != want).mean() < 0.05
    hsv = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    hsv[..., 0] %= 180
    got = G.hsv_to_bgr(torch.from_numpy(hsv).permute(2, 0, 1)).permute(1, 2, 0).numpy().astype(np.int64)
    want = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.int64)
    assert np.abs(got - want).max() <= 1 and (got != want).mean() < 0.05


# --------------------------------------------------------------------------- files the device path refuses
def with_exif_orientation(data: bytes, orientation: int) -> bytes:
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0))
    app1 = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def textured(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2.0)


def test_jpeg_info_reads_what_the_worker_needs():
    image = textured(48, 70)
    base = cv2.imencode(".jpg", image)[1].tobytes()
    info = G.jpeg_info(base)
    assert (info.height, info.width, info.marker, info.precision, info.components) == (48, 70, 0xC0, 8, 3)
    assert info.orientation is None and G.device_decodable(info)
    progressive = G.jpeg_info(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    assert progressive.marker == 0xC2 and G.device_decodable(progressive)
    assert G.device_decodable(G.jpeg_info(with_exif_orientation(base, 1)))
    rotated = G.jpeg_info(with_exif_orientation(base, 6))
    assert rotated.orientation == 6 and not G.device_decodable(rotated)
    assert not G.device_decodable(G.jpeg_info(cv2.imencode(".jpg", image[:, :, 0])[1].tobytes()))
    for other in (cv2.imencode(".png", image)[1].tobytes(), b"not an image", b"\xff\xd8\xff\xe0\x00", b""):
        assert G.jpeg_info(other) is None


def test_grey_cmyk_png_and_rotated_files_go_through_the_cpu_pipeline(tmp_path):
    """(d) decode_jpeg takes neither PNG nor (on the GPU) grey / CMYK JPEGs, nor applies EXIF
    orientation there: those samples are the CPU pipeline's, bit for bit, in a batch with a
    device-decoded one."""
    from PIL import Image

    image = textured(60, 80)
    (tmp_path / "colour.jpg").write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
    (tmp_path / "grey.jpg").write_bytes(cv2.imencode(".jpg", image[:, :, 0])[1].tobytes())
    (tmp_path / "image.png").write_bytes(cv2.imencode(".png", image)[1].tobytes())
    (tmp_path / "rotated.jpg").write_bytes(with_exif_orientation(cv2.imencode(".jpg", image)[1].tobytes(), 6))
    cmyk = io.BytesIO()
    Image.fromarray(image[:, :, ::-1]).convert("CMYK").save(cmyk, "JPEG")
    (tmp_path / "cmyk.jpg").write_bytes(cmyk.getvalue())
    names = ["colour.jpg", "grey.jpg", "cmyk.jpg", "image.png", "rotated.jpg"]
    boxes = np.array([[10, 12, 40, 44], [50, 20, 70, 45]], np.float32)
    landmarks = np.full((2, 10), -1, np.float32)
    annotations = [ImageAnnotation(str(tmp_path / n), boxes, landmarks, np.array([-1.0, -1.0]), "e", n)
                   for n in names]
    for seed in range(4):
        cpu, enc = both(annotations, seed=seed)
        assert [enc[i].data is not None for i in range(5)] == [True, False, False, False, False]
        images, targets = device_batch(enc, range(5))
        for i in range(5):
            x, t = cpu[i]
            assert torch.equal(t, targets[i])
            if i == 0:
                assert (images[i] - x).abs().mean() < 0.5
            else:
                assert torch.equal(images[i], x), names[i]


def test_an_image_without_faces_is_padded_to_a_square_of_the_mean_colour(tmp_path):
    """No face, no crop: step 3 pads the (distorted) image to a square of the mean colour."""
    (tmp_path / "wide.jpg").write_bytes(cv2.imencode(".jpg", textured(50, 90))[1].tobytes())
    (tmp_path / "tall.jpg").write_bytes(cv2.imencode(".jpg", textured(90, 50))[1].tobytes())
    none = (np.zeros((0, 4), np.float32), np.zeros((0, 10), np.float32), np.zeros(0))
    annotations = [ImageAnnotation(str(tmp_path / n), *none, "e", n) for n in ("wide.jpg", "tall.jpg")]
    for seed in range(6):
        cpu, enc = both(annotations, seed=seed)
        images, targets = device_batch(enc, [0, 1])
        for i in range(2):
            x, t = cpu[i]
            assert enc[i].crop is None and t.shape == targets[i].shape == (0, 15)
            assert (images[i] - x).abs().mean() < 0.5


def test_a_jpeg_the_device_cannot_decode_is_rendered_by_the_cpu_pipeline(tmp_path, caplog):
    """A JPEG whose header reads but whose data does not decode on the device (cv2 is more
    lenient) is rendered by the CPU pipeline in the main process, with one warning."""
    data = cv2.imencode(".jpg", textured(60, 80))[1].tobytes()
    noise = np.random.default_rng(1).integers(0, 256, len(data) // 2, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.jpg").write_bytes(data[:len(data) // 3] + noise)
    (tmp_path / "fine.jpg").write_bytes(data)
    boxes = np.array([[10, 12, 40, 44]], np.float32)
    annotations = [ImageAnnotation(str(tmp_path / n), boxes, np.full((1, 10), -1, np.float32), np.array([-1.0]),
                                   "e", n) for n in ("damaged.jpg", "fine.jpg")]
    cpu, enc = both(annotations)
    assert enc[0].data is not None   # the header is fine: the worker cannot tell
    with caplog.at_level("WARNING"):
        images, targets = device_batch(enc, [0, 1])
    x, t = cpu[0]
    assert torch.equal(images[0], x) and torch.equal(targets[0], t)
    assert (images[1] - cpu[1][0]).abs().mean() < 0.5
    assert sum("damaged.jpg" in r.getMessage() for r in caplog.records) == 1


# --------------------------------------------------------------------------- one-line errors
def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


def test_bad_input_gives_one_line_errors(tmp_path):
    """(e)"""
    boxes, lms, labels = np.zeros((0, 4), np.float32), np.zeros((0, 10), np.float32), np.zeros(0)
    missing = [ImageAnnotation(str(tmp_path / "missing.jpg"), boxes, lms, labels, "e", "missing.jpg")]
    with pytest.raises(OSError) as excinfo:
        G.EncodedTrainDataset(missing, TrainTransform(SIZE))[0]
    assert "missing.jpg" in one_line(excinfo)
    # a header and no image data: neither decoder reads it; the CPU pipeline names the file
    (tmp_path / "cut.jpg").write_bytes(cv2.imencode(".jpg", textured(40, 40))[1].tobytes()[:400])
    cut = [ImageAnnotation(str(tmp_path / "cut.jpg"), boxes, lms, labels, "e", "cut.jpg")]
    with pytest.raises(OSError) as excinfo:
        device_batch(G.EncodedTrainDataset(cut, TrainTransform(SIZE)), [0])
    assert "cut.jpg" in one_line(excinfo)
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    junk = [ImageAnnotation(str(tmp_path / "junk.jpg"), boxes, lms, labels, "e", "junk.jpg")]
    with pytest.raises(OSError) as excinfo:
        G.EncodedTrainDataset(junk, TrainTransform(SIZE))[0]
    assert "junk.jpg" in one_line(excinfo)
    from retinaface.data import ValTransform

    with pytest.raises(TypeError) as excinfo:
        G.EncodedTrainDataset(missing, ValTransform(SIZE))
    assert "TrainTransform" in one_line(excinfo)
    with pytest.raises(ValueError) as excinfo:
        G.check_decode_device("gpu", "cuda")
    assert "'gpu' is not one of cpu, cuda" in one_line(excinfo)
    G.check_decode_device("cpu", "cpu")
    with pytest.raises(ValueError) as excinfo:
        G.encoded_collate([])
    one_line(excinfo)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_decode_device_cuda_is_refused_without_cuda():
    with pytest.raises(ValueError) as excinfo:
        G.check_decode_device("cuda", "auto")
    assert "CUDA is not available" in one_line(excinfo)


def test_decode_device_cuda_needs_cuda_training(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in ("cpu", torch.device("cpu"), "mps"):
        with pytest.raises(ValueError) as excinfo:
            G.check_decode_device("cuda", device)
        assert "not a CUDA device" in one_line(excinfo)
    for device in ("auto", "cuda", "cuda:1", torch.device("cuda", 0)):
        G.check_decode_device("cuda", device)


def test_training_has_no_decode_device_and_old_runs_still_resume():
    import argparse

    from retinaface.engine.config import TrainConfig, add_config_arguments, merge_resume

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig)
    with pytest.raises(SystemExit):
        parser.parse_args(["--decode-device", "cpu"])
    assert "decode_device" not in TrainConfig.__dataclass_fields__
    # a run saved while the option existed: its setting is dropped, the others are kept
    merged = merge_resume({"resume": "old/last.pth"}, {"decode_device": "cpu", "batch_size": 8, "epochs": 3})
    assert "decode_device" not in merged and merged["batch_size"] == 8
    assert TrainConfig(**merged).batch_size == 8


# --------------------------------------------------------------------------- through the trainer
def test_device_decoding_trainer_wired_to_the_cpu(tiny_synthetic, tmp_path):
    """The benchmark's Trainer end to end, with the CUDA refusal lifted so the device path runs on
    the CPU: a worker process reads and plans, the main process decodes. Every step sees the CPU
    pipeline's targets and its images up to rounding. The epoch losses agree to a few per cent:
    hard-negative mining re-ranks near-tied priors on sub-level pixel changes (measured: the
    classification loss moved 1.7 %, the others under 0.7 %)."""
    from retinaface.engine.trainer import TrainConfig, Trainer, TrainHook

    class Batches(TrainHook):
        def __init__(self):
            self.seen = []

        def compute_loss(self, trainer, model, images, targets):
            self.seen.append((images.clone(), [t.clone() for t in targets]))
            return None

    options = dict(data=str(tiny_synthetic), backbone="mobilenet0.25", image_size=SIZE, batch_size=4,
                   max_steps_per_epoch=2, epochs=1, device="cpu", progress=False, optimizer="sgd", lr=1e-3,
                   schedule="cosine", warmup_epochs=0, save_every=0, eval_every=0)
    cpu_batches, device_batches = Batches(), Batches()
    reference = Trainer(TrainConfig(**options, workers=0, output=str(tmp_path / "cpu")), hooks=[cpu_batches]).fit()
    trainer = G.DeviceDecodingTrainer(TrainConfig(**options, workers=1, output=str(tmp_path / "dev")),
                                      hooks=[device_batches], check_device=False)
    summary = trainer.fit()
    assert isinstance(trainer.loader, G.DecodingLoader) and isinstance(trainer.dataset, G.EncodedTrainDataset)
    assert len(trainer.loader) == len(trainer.loader.loader) and trainer.loader.batch_size == 4
    assert len(cpu_batches.seen) == len(device_batches.seen) == 2
    for (xa, ta), (xb, tb) in zip(cpu_batches.seen, device_batches.seen):
        assert all(torch.equal(a, b) for a, b in zip(ta, tb))
        assert xb.shape == xa.shape and (xb - xa).abs().mean() < 0.5
    a, b = reference.history[0], summary.history[0]
    for key in ("loss", "box", "cls", "landmark"):
        assert b[key] == pytest.approx(a[key], rel=0.05), key
