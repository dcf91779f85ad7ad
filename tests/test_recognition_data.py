"""Recognition data: folder and RecordIO training sets, LFW pairs and .bin files, synthetic identities,
the input transform and the training augmentation."""
from __future__ import annotations

import os
import pickle
import struct

import cv2
import numpy as np
import pytest
import torch

from retinaface.recognition.data import (FaceFolderDataset, RecognitionDataError, RecordIODataset,
                                         VerificationPairs, load_verification_bin, read_lfw_pairs)
from retinaface.recognition.recordio import (MAGIC, RecordIOError, RecordIOReader, RecordIOWriter, pack_record, unpack_record)
from retinaface.recognition.synthetic import generate_synthetic_identities
from retinaface.recognition.transforms import FaceTrainTransform, preprocess


def tiny_image(value: int, size: int = 16) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[:, :, 0] = value
    image[: size // 2, :, 2] = 255 - value
    return image


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()  # lossless: decoded images compare exactly


# ---------------------------------------------------------------------------------------------
def test_face_folder_dataset(tmp_path):
    for name, values in (("bob", [10, 20]), ("alice", [30]), ("empty", [])):
        (tmp_path / name).mkdir()
        for i, value in enumerate(values):
            cv2.imwrite(str(tmp_path / name / f"{i}.png"), tiny_image(value))
    (tmp_path / "notes.txt").write_text("not an identity")
    dataset = FaceFolderDataset(tmp_path, transform=lambda image: image[0, 0, 0])
    assert dataset.classes == ["alice", "bob"] and dataset.num_classes == 2
    assert [label for _, label in dataset.samples] == [0, 1, 1] == dataset.targets
    assert [dataset[i] for i in range(3)] == [(30, 0), (10, 1), (20, 1)]
    (tmp_path / "bob" / "1.png").write_bytes(b"broken")
    with pytest.raises(RecognitionDataError, match=r"bob/1\.png: not a decodable image"):
        dataset[2]
    with pytest.raises(RecognitionDataError, match="no such folder"):
        FaceFolderDataset(tmp_path / "missing")
    with pytest.raises(RecognitionDataError, match="no identity folders"):
        FaceFolderDataset(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
def write_insightface_rec(tmp_path, images, labels, with_header=True):
    """An insightface-style .rec/.idx: record 0 the header (images 1..n, identities n+1..)."""
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    classes = sorted(set(labels))
    n = len(images)
    with RecordIOWriter(rec, idx) as writer:
        if with_header:
            writer.write(pack_record([n + 1, n + 1 + len(classes)], b""), key=0)
        for i, (image, label) in enumerate(zip(images, labels)):
            writer.write(pack_record(float(label), png(image), id=i), key=i + 1 if with_header else i)
        if with_header:  # identity records: the image range of each class
            for c in classes:
                keys = [i + 1 for i, l in enumerate(labels) if l == c]
                writer.write(pack_record([keys[0], keys[-1] + 1], b""), key=n + 1 + c)
    return rec, idx


def test_record_layout_and_continuation_parts(tmp_path):
    # a payload with the magic at an aligned position is split into parts and put back together
    payload = b"abcd" + struct.pack("<I", MAGIC) + b"efgh" + struct.pack("<I", MAGIC) + b"ij"
    with RecordIOWriter(tmp_path / "x.rec", tmp_path / "x.idx") as writer:
        writer.write(b"hello", key=7)
        writer.write(payload, key=9)
    raw = (tmp_path / "x.rec").read_bytes()
    magic, lrec = struct.unpack_from("<II", raw)
    assert magic == MAGIC and lrec >> 29 == 0 and lrec & ((1 << 29) - 1) == 5
    assert raw[8:16] == b"hello\0\0\0"  # padded to 4 bytes
    assert struct.unpack_from("<I", raw, 20)[0] >> 29 == 1  # second record starts with a "first part"
    for idx in (tmp_path / "x.idx", None):
        reader = RecordIOReader(tmp_path / "x.rec", idx)
        assert reader.read(reader.keys[0]) == b"hello" and reader.read(reader.keys[1]) == payload
    assert RecordIOReader(tmp_path / "x.rec").keys == [7, 9]
    header, rest = unpack_record(pack_record([1.5, 2.5, 3.5], b"img", id=4))
    assert header.flag == 3 and np.allclose(header.label, [1.5, 2.5, 3.5]) and header.id == 4 and rest == b"img"
    with pytest.raises(FileExistsError):
        RecordIOWriter(tmp_path / "x.rec")


def collate(batch):
    return batch


def test_recordio_dataset_with_workers(tmp_path):
    images = [tiny_image(v) for v in range(0, 120, 10)]
    labels = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4]
    rec, idx = write_insightface_rec(tmp_path, images, labels)
    dataset = RecordIODataset(rec, idx)
    assert len(dataset) == 12 and dataset.num_classes == 5
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate)
    seen = [item for batch in loader for item in batch]
    assert [label for _, label in seen] == labels
    assert all(np.array_equal(image, expected) for (image, _), expected in zip(seen, images))
    # without insightface's header record, every record is an image and the classes are counted
    plain = tmp_path / "plain"
    plain.mkdir()
    rec2, _ = write_insightface_rec(plain, images, labels, with_header=False)
    assert len(RecordIODataset(rec2)) == 12 and RecordIODataset(rec2).num_classes == 5


def test_malformed_recordio_names_the_file_and_offset(tmp_path):
    rec, idx = write_insightface_rec(tmp_path, [tiny_image(1), tiny_image(2)], [0, 1])
    reader = RecordIOReader(rec, idx)
    offset = reader.offsets[2]
    raw = bytearray(rec.read_bytes())
    bad = tmp_path / "bad"
    bad.mkdir()
    # bad magic
    broken = bytearray(raw)
    broken[offset:offset + 4] = b"\0\0\0\0"
    (bad / "m.rec").write_bytes(bytes(broken))
    dataset = RecordIODataset(bad / "m.rec", idx)
    with pytest.raises(RecognitionDataError, match=rf"m\.rec: offset {offset}: bad magic 0x00000000"):
        dataset[1]
    # truncated inside the last record
    (bad / "t.rec").write_bytes(bytes(raw[:offset + 12]))
    (bad / "t.idx").write_text("".join(f"{k}\t{o}\n" for k, o in reader.offsets.items() if o <= offset))
    with pytest.raises(RecognitionDataError, match=rf"t\.rec: offset {offset}: record of \d+ bytes runs past the end"):
        RecordIODataset(bad / "t.rec", bad / "t.idx")[1]
    (bad / "s.rec").write_bytes(bytes(raw[:offset + 12]))
    with pytest.raises(RecordIOError, match=rf"s\.rec: offset {offset}: record of"):
        RecordIOReader(bad / "s.rec")  # a scan without an index hits it as well
    # bad index lines and offsets
    (bad / "i.idx").write_text("0\t0\n1 x\n")
    with pytest.raises(RecognitionDataError, match=r"i\.idx:2: expected 'key<TAB>offset'"):
        RecordIODataset(rec, bad / "i.idx")
    (bad / "o.idx").write_text(f"0\t0\n1\t{len(raw) + 100}\n")
    with pytest.raises(RecognitionDataError, match=r"o\.idx:2: offset \d+ of key 1 is outside train\.rec"):
        RecordIODataset(rec, bad / "o.idx")
    # an image record whose payload is not an image
    with RecordIOWriter(bad / "n.rec", bad / "n.idx") as writer:
        writer.write(pack_record(0.0, b"not an image"), key=0)
    with pytest.raises(RecognitionDataError, match=r"n\.rec: key 0 at offset 0: not a decodable image"):
        RecordIODataset(bad / "n.rec")[0]


# ---------------------------------------------------------------------------------------------
def lfw_tree(tmp_path):
    for name, count in (("Ann_Lee", 3), ("Bo", 2)):
        (tmp_path / name).mkdir()
        for i in range(1, count + 1):
            cv2.imwrite(str(tmp_path / name / f"{name}_{i:04d}.jpg"), tiny_image(10 * i))


def test_lfw_pairs(tmp_path):
    lfw_tree(tmp_path)
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo\t2\n\nBo\t1\t2\nBo 1 Ann_Lee 3\n")
    pairs = read_lfw_pairs(tmp_path / "pairs.txt", tmp_path)
    assert [(os.path.basename(a), os.path.basename(b), s) for a, b, s in pairs] == [
        ("Ann_Lee_0001.jpg", "Ann_Lee_0002.jpg", True), ("Ann_Lee_0001.jpg", "Bo_0002.jpg", False),
        ("Bo_0001.jpg", "Bo_0002.jpg", True), ("Bo_0001.jpg", "Ann_Lee_0003.jpg", False)]
    verification = VerificationPairs.from_lfw(tmp_path / "pairs.txt", tmp_path)
    assert verification.folds.tolist() == [0, 0, 1, 1] and verification.issame.tolist() == [True, False, True, False]
    a, b = verification.pair(1)
    assert a[0, 0, 0] != b[0, 0, 0] and a.dtype == np.uint8

    def fails(text, message):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(RecognitionDataError, match=message):
            read_lfw_pairs(tmp_path / "bad.txt", tmp_path)

    fails("1\t1\nAnn_Lee\t1\nBo\t1\tAnn_Lee\t1\n", r"bad\.txt:2: expected 'name n1 n2' or 'name1 n1 name2 n2', got 2")
    fails("Ann_Lee\t1\tx\n", r"bad\.txt:1: image number 'x' is not an integer")
    fails("Ann_Lee\t1\t9\n", r"bad\.txt:1: image .*Ann_Lee_0009\.jpg does not exist")
    fails("2\t1\nAnn_Lee\t1\t2\nBo\t1\tAnn_Lee\t1\n", r"bad\.txt:1: header announces 2 fold\(s\) of 1 .* the file has 2")
    with pytest.raises(RecognitionDataError, match="no such pairs file"):
        read_lfw_pairs(tmp_path / "none.txt", tmp_path)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_verification_bin(tmp_path):
    images = [tiny_image(v) for v in (10, 20, 30, 40)]
    for protocol in (2, pickle.HIGHEST_PROTOCOL):  # protocol 2 pickles bytes through _codecs.encode
        path = tmp_path / f"p{protocol}.bin"
        path.write_bytes(pickle.dumps(([png(i) for i in images], [True, False]), protocol=protocol))
        loaded, issame = load_verification_bin(path)
        assert issame.tolist() == [True, False] and issame.dtype == bool
        assert all(np.array_equal(x, y) for x, y in zip(loaded, images))
    pairs = VerificationPairs.load(tmp_path / "p2.bin")
    assert len(pairs) == 2 and np.array_equal(pairs.pair(1)[1], images[3])


def test_verification_bin_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([Exploit(marker)], [True])))
    with pytest.raises(RecognitionDataError, match=r"evil\.bin: offset \d+: .*refuses the global (posix|nt|os)\.system"):
        load_verification_bin(path)
    assert not marker.exists()
    # a codec trick through the one admitted global is refused too
    trick = pickle.dumps(([b"x"], [True]), protocol=2).replace(b"latin1", b"rot_13")
    (tmp_path / "codec.bin").write_bytes(trick)
    with pytest.raises(RecognitionDataError, match="refuses _codecs.encode"):
        load_verification_bin(tmp_path / "codec.bin")


@pytest.mark.parametrize("content, message", [
    (b"\x80\x04garbage", r"offset \d+: not a verification \.bin"),
    (pickle.dumps([b"a", b"b", b"c"]), r"expected a pickled \(images, issame\) pair"),
    (pickle.dumps(([b"a", b"b", b"c"], [True])), r"3 images for 1 pairs"),
    (pickle.dumps(([b"a", b"b"], ["yes"])), "list of bools"),
    (pickle.dumps(([b"a", b"b"], [True])), r"image 0 \(pair 0\): not a decodable image"),
])
def test_malformed_verification_bin(tmp_path, content, message):
    (tmp_path / "v.bin").write_bytes(content)
    with pytest.raises(RecognitionDataError, match=message):
        load_verification_bin(tmp_path / "v.bin")


# ---------------------------------------------------------------------------------------------
def test_preprocess():
    crops = np.zeros((2, 4, 5, 3), np.uint8)
    crops[..., 0] = 255   # blue in BGR
    crops[1, ..., 2] = 0
    x = preprocess(crops)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x[:, 2], torch.full((2, 4, 5), (255 - 127.5) / 128))  # blue is the last RGB plane
    assert torch.allclose(x[:, 0], torch.full((2, 4, 5), -127.5 / 128))
    assert preprocess(crops[0]).shape == (1, 3, 4, 5)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(crops.astype(np.float32))


def test_face_train_transform():
    crop = (np.random.default_rng(0).integers(0, 255, (112, 112, 3))).astype(np.uint8)
    mirror = FaceTrainTransform(rotation=0, scale=0, shift=0, flip=1.0)
    assert np.array_equal(mirror(crop, np.random.default_rng(0)), crop[:, ::-1])
    identity = FaceTrainTransform(rotation=0, scale=0, shift=0, flip=0.0)
    assert np.array_equal(identity(crop, np.random.default_rng(0)), crop)
    augment = FaceTrainTransform()
    a = augment(crop, np.random.default_rng(5))
    assert np.array_equal(a, augment(crop, np.random.default_rng(5))) and not np.array_equal(a, crop)
    rng = np.random.default_rng(1)
    for _ in range(200):  # rotation within +-45 degrees, scale within 15 %
        m = augment.matrix(rng)
        scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
        assert 0.85 - 1e-9 <= scale <= 1.15 + 1e-9
        angle = np.degrees(np.arctan2(m[1, 0], m[0, 0] if np.linalg.det(m[:, :2]) > 0 else -m[0, 0]))
        assert abs(angle) <= 45 + 1e-6
    assert augment(np.zeros((50, 60, 3), np.uint8)).shape == (112, 112, 3)


# ---------------------------------------------------------------------------------------------
def pixel_features(dataset):
    feats, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        g = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (28, 28), interpolation=cv2.INTER_AREA)
        g = g.astype(np.float32).ravel()
        g -= g.mean()
        feats.append(g / (np.linalg.norm(g) + 1e-6))
        labels.append(label)
    return np.array(feats), np.array(labels)


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synid") / "set"
    return generate_synthetic_identities(root, num_train_identities=30, num_test_identities=4,
                                         images_per_identity=6, seed=3, folds=2, pairs_per_fold=4)


def test_synthetic_identities_layout_and_reuse(synthetic_set, tmp_path):
    paths = synthetic_set
    train, test = FaceFolderDataset(paths.train), FaceFolderDataset(paths.test)
    assert train.num_classes == 30 and len(train) == 180 and test.num_classes == 4
    assert not set(train.classes) & set(test.classes)  # held-out identities
    image, _ = train[0]
    assert image.shape == (112, 112, 3) and image.dtype == np.uint8
    pairs = VerificationPairs.from_synthetic(paths.root)
    assert len(pairs) == 16 and pairs.issame.sum() == 8 and pairs.folds.tolist() == [0] * 8 + [1] * 8
    same_names = {os.path.basename(os.path.dirname(a)) for (a, b), s in zip(pairs.paths, pairs.issame) if s}
    assert same_names <= set(test.classes)
    # reuse: a second call writes nothing; other parameters or a foreign folder are refused
    stamp = os.stat(paths.pairs).st_mtime_ns
    again = generate_synthetic_identities(paths.root, num_train_identities=30, num_test_identities=4,
                                          images_per_identity=6, seed=3, folds=2, pairs_per_fold=4)
    assert again == paths and os.stat(paths.pairs).st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"other parameters \(seed\)"):
        generate_synthetic_identities(paths.root, num_train_identities=30, num_test_identities=4,
                                      images_per_identity=6, seed=4, folds=2, pairs_per_fold=4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"user data")
    with pytest.raises(ValueError, match="not a synthetic identity set"):
        generate_synthetic_identities(tmp_path / "mine", 4, 2, 2, folds=1, pairs_per_fold=1)
    assert (tmp_path / "mine" / "photo.jpg").read_bytes() == b"user data"


def test_synthetic_identities_are_deterministic(synthetic_set, tmp_path):
    other = generate_synthetic_identities(tmp_path / "again", num_train_identities=30, num_test_identities=4,
                                          images_per_identity=6, seed=3, folds=2, pairs_per_fold=4)
    for relative in ("pairs.txt", "train/id00007/id00007_0003.jpg", "test/id00031/id00031_0006.jpg"):
        assert (other.root / relative).read_bytes() == (synthetic_set.root / relative).read_bytes()


def test_synthetic_identities_are_learnable_but_not_trivial(synthetic_set):
    feats, labels = pixel_features(FaceFolderDataset(synthetic_set.train))
    distances = np.sqrt(((feats[:, None] - feats[None]) ** 2).sum(-1))
    same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    different = labels[:, None] != labels[None]
    # two photos of one identity are closer than photos of two identities, on average ...
    assert distances[same].mean() < 0.95 * distances[different].mean()
    # ... yet raw pixels are far from solving it: nearest-neighbour identification stays well below 100 %
    np.fill_diagonal(distances, np.inf)
    accuracy = (labels[distances.argmin(axis=1)] == labels).mean()
    assert 3 / 30 < accuracy < 0.9
