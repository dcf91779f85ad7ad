"""Fetching WIDER FACE into the layout ``retinaface train/eval --data`` reads.

The archives are downloaded with the zoo's verified download (:func:`retinaface.zoo.download_verified`:
temporary file, checksum, rename) into ``ROOT/downloads/``, extracted with torchvision's
``extract_archive`` through a temporary folder, and laid out as

```
ROOT/WIDER_train/images/...   ROOT/WIDER_val/images/...   ROOT/wider_face_split/*.txt, *.mat
ROOT/train/images -> ../WIDER_train/images   ROOT/train/label.txt   (retinaface_gt_v1.1, landmarks)
ROOT/val/images -> ../WIDER_val/images       ROOT/val/wider_val.txt  ROOT/val/label.txt
ROOT/val/ground_truth/wider_{face,easy,medium,hard}_val.mat        (eval_tools)
```

The official layout (``WIDER_*`` + ``wider_face_split``) is read by the training reader as it is;
the Pytorch_Retinaface layout (``train/``, ``val/``) is built beside it when the landmark labels and
the evaluation ground truth are fetched too. The image archives and ``wider_face_split.zip`` are
checked against the MD5 sums torchvision pins (the only published ones); ``eval_tools.zip`` and
``retinaface_gt_v1.1.zip`` have no published checksum, so they are fetched only with
``allow_unverified=True`` and their SHA-256 is printed. A file already downloaded and whole is not
downloaded again, an archive already extracted (its marker file records the archive's hash) is not
extracted again; an interrupted download restarts that file.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

from ..conventions import GT_MAIN_MAT, GT_SETTING_MATS, OFFICIAL_IMAGES, OFFICIAL_SPLIT_DIR, TRAIN_IMAGES, \
    TRAIN_LABELS, VAL_GROUND_TRUTH, VAL_IMAGES, VAL_LABELS, VAL_LIST
from ..fileio import atomic_write
from ..formats.wider_bbx import read_bbx_blocks
from ..zoo import ZooError, download_verified, file_digest, google_drive_url, mirror_sources, offline
from .labels import detect_label_format

PathLike = Union[str, "os.PathLike[str]"]

WIDER_TERMS = (
    "WIDER FACE terms of use (http://shuoyang1213.me/WIDERFACE/): the data set is for non-commercial "
    "research and educational purposes only; its images come from the publicly available WIDER data set "
    "and remain the property of their owners. Cite Yang, Luo, Loy, Tang: WIDER FACE: A Face Detection "
    "Benchmark, CVPR 2016. The retinaface_gt_v1.1 landmark labels come from the RetinaFace release "
    "(insightface / Pytorch_Retinaface)."
)
DOWNLOADS = "downloads"


@dataclass(frozen=True)
class DataFile:
    """One archive of the data set: where to get it, its checksum, and what extracting it makes."""

    file_name: str
    urls: Tuple[str, ...]
    md5: Optional[str]  # the published checksum (torchvision's table); None: not known
    produces: str  # a path under the root that exists once the archive is extracted
    what: str
    extract_to: str = "."  # folder under the root the archive's contents go to
    needs_flag: bool = False  # no published checksum: allow_unverified=True fetches it

    @property
    def verified(self) -> bool:
        return self.md5 is not None


WIDERFACE_FILES: Tuple[DataFile, ...] = (
    DataFile("WIDER_train.zip", (google_drive_url("15hGDLhsx8bLgLcIRD5DhYt5iBxnjNF1M"),),
             "3fedf70df600953d25982bcd13d91ba2", "WIDER_train/images", "training images (1.4 GB)"),
    DataFile("WIDER_val.zip", (google_drive_url("1GUCogbp16PMGa39thoMMeWxp7Rp5oM8Q"),),
             "dfa7d7e790efa35df3788964cf0bbaea", "WIDER_val/images", "validation images (0.35 GB)"),
    DataFile("wider_face_split.zip", ("http://shuoyang1213.me/WIDERFACE/support/bbx_annotation/wider_face_split.zip",),
             "0e3767bcf0e326556d407bf5bff5d27c", "wider_face_split/wider_face_train_bbx_gt.txt",
             "official box lists (wider_face_split)"),
    DataFile("eval_tools.zip", ("http://shuoyang1213.me/WIDERFACE/support/eval_script/eval_tools.zip",),
             None, "eval_tools/ground_truth/wider_hard_val.mat",
             "evaluation ground truth (.mat, easy / medium / hard)", needs_flag=True),
    DataFile("retinaface_gt_v1.1.zip", ("https://www.dropbox.com/s/7j70r3eeepe4r2g/retinaface_gt_v1.1.zip?dl=1",),
             None, "retinaface_gt_v1.1/train/label.txt", "five-landmark labels (retinaface_gt_v1.1)",
             extract_to="retinaface_gt_v1.1", needs_flag=True),
)


class DataDownloadError(RuntimeError):
    """The data set could not be fetched or laid out; one line naming the file and the reason."""


def _marker(root: Path, item: DataFile) -> Path:
    return root / f".{item.file_name}.extracted"


def _archive_ok(path: Path, item: DataFile) -> bool:
    if not path.is_file():
        return False
    if item.md5 is not None:
        return file_digest(path, "md5") == item.md5
    recorded = path.with_name(path.name + ".sha256")
    return recorded.is_file() and recorded.read_text().split()[:1] == [file_digest(path)]


def _fetch_archive(root: Path, item: DataFile, allow_unverified: bool, progress: bool,
                   say: Callable[[str], None]) -> Path:
    archive = root / DOWNLOADS / item.file_name
    if _archive_ok(archive, item):
        say(f"{item.file_name}: already downloaded and verified")
        return archive
    if not item.verified and not allow_unverified:
        raise DataDownloadError(f"{item.file_name} ({item.what}) has no published checksum; pass "
                                f"--allow-unverified to fetch it (its sha256 is printed), or --skip it")
    sources = mirror_sources(item.file_name)
    if offline():
        sources = [s for s in sources if "://" not in s or s.startswith("file:")]
        if not sources:
            raise DataDownloadError(f"RETINAFACE_OFFLINE is set and {archive} is missing: copy {item.file_name} "
                                    f"there, or point RETINAFACE_MIRROR at a folder holding it")
    else:
        sources += list(item.urls)
    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        source, sha = download_verified(sources, archive, md5=item.md5, progress=progress)
    except ZooError as exc:
        raise DataDownloadError(str(exc)) from None
    if not item.verified:
        with atomic_write(archive.with_name(archive.name + ".sha256")) as handle:
            handle.write(f"{sha}  {item.file_name}  (from {source}, no published checksum)\n")
        say(f"{item.file_name}: sha256 {sha} (from {source}; no published checksum to check it against)")
    return archive


def _extract(root: Path, item: DataFile, archive: Path, say: Callable[[str], None]) -> None:
    marker = _marker(root, item)
    digest = file_digest(archive)
    if marker.is_file() and marker.read_text().strip() == digest and (root / item.produces).exists():
        say(f"{item.file_name}: already extracted")
        return
    from torchvision.datasets.utils import extract_archive

    target = root / item.extract_to
    staging = root / f".extracting-{item.file_name}"
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
    say(f"{item.file_name}: extracting")
    try:
        extract_archive(str(archive), str(staging))
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataDownloadError(f"{archive}: cannot be extracted ({type(exc).__name__}: {exc})") from None
    target.mkdir(parents=True, exist_ok=True)
    for entry in staging.iterdir():  # whole top-level folders are renamed in, replacing older copies
        destination = target / entry.name
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        elif destination.exists() or destination.is_symlink():
            destination.unlink()
        os.replace(entry, destination)
    staging.rmdir()
    if not (root / item.produces).exists():
        raise DataDownloadError(f"{archive}: extracted, but {item.produces} is not in it (another archive?)")
    with atomic_write(marker) as handle:
        handle.write(digest + "\n")


def _link(link: Path, target: Path) -> None:
    """``link`` -> ``target`` (relative symbolic link; a copy where links are not allowed)."""
    if link.is_symlink() or link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())
    except OSError:
        (shutil.copytree if target.is_dir() else shutil.copy2)(target, link)


def _layout(root: Path, say: Callable[[str], None]) -> List[str]:
    """The Pytorch_Retinaface layout beside the official one, from what is there; returns what it made."""
    made: List[str] = []
    val_gt_txt = root / OFFICIAL_SPLIT_DIR / "wider_face_val_bbx_gt.txt"
    if (root / OFFICIAL_IMAGES["val"]).is_dir() and val_gt_txt.is_file():
        _link(root / VAL_IMAGES, root / OFFICIAL_IMAGES["val"])
        if not (root / VAL_LIST).is_file():
            names = [f"/{block.path.lstrip('/')}" for block in read_bbx_blocks(val_gt_txt)]
            with atomic_write(root / VAL_LIST) as handle:
                handle.write("\n".join(names) + "\n")
        made.append(str(VAL_LIST))
    eval_gt = root / "eval_tools" / "ground_truth"
    if eval_gt.is_dir():
        for name in (GT_MAIN_MAT, *GT_SETTING_MATS.values()):
            if (eval_gt / name).is_file():
                _link(root / VAL_GROUND_TRUTH / name, eval_gt / name)
        made.append(str(VAL_GROUND_TRUTH))
    landmarks = root / "retinaface_gt_v1.1"
    if (landmarks / "train" / "label.txt").is_file() and (root / OFFICIAL_IMAGES["train"]).is_dir():
        _link(root / TRAIN_IMAGES, root / OFFICIAL_IMAGES["train"])
        _link(root / TRAIN_LABELS, landmarks / "train" / "label.txt")
        made.append(str(TRAIN_LABELS))
    if (landmarks / "val" / "label.txt").is_file() and (root / VAL_IMAGES).exists():
        _link(root / VAL_LABELS, landmarks / "val" / "label.txt")
        made.append(str(VAL_LABELS))
    return made


def download_widerface(root: PathLike, allow_unverified: bool = False, skip: Sequence[str] = (),
                       files: Sequence[DataFile] = WIDERFACE_FILES, progress: bool = True,
                       say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> List[str]:
    """Fetch, verify, extract and lay out WIDER FACE under ``root``; returns the layout paths made.

    ``skip`` names archives to leave out (``"eval_tools.zip"``...); the archives without a
    published checksum are skipped with a line unless ``allow_unverified``. Raises
    :class:`DataDownloadError` (one line) on the first file that cannot be had.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for item in files:
        if item.file_name in skip:
            continue
        if item.needs_flag and not allow_unverified:
            say(f"{item.file_name} ({item.what}): skipped, no published checksum (--allow-unverified fetches it)")
            continue
        archive = _fetch_archive(root, item, allow_unverified, progress, say)
        _extract(root, item, archive, say)
    return _layout(root, say)


def verify_widerface(root: PathLike, files: Sequence[DataFile] = WIDERFACE_FILES) -> List[Tuple[str, bool, str]]:
    """Check an existing tree without downloading: per archive ``(file name, ok, what was found)``
    (the archive's checksum, its extraction), then whether ``--data ROOT`` finds a training split."""
    root = Path(root)
    report: List[Tuple[str, bool, str]] = []
    for item in files:
        archive = root / DOWNLOADS / item.file_name
        extracted = (root / item.produces).exists()
        if archive.is_file():
            ok = _archive_ok(archive, item)
            kind = "md5" if item.md5 else "recorded sha256"
            state = f"{kind} {'matches' if ok else 'DOES NOT MATCH'}"
        elif not extracted and item.needs_flag:  # optional: fetched only with allow_unverified
            report.append((item.file_name, True, "not fetched (optional; --allow-unverified fetches it)"))
            continue
        else:
            ok, state = extracted, ("archive not kept" if extracted else "not downloaded")
        marker = _marker(root, item)
        if extracted and not marker.is_file():
            ok, state = False, state + f"; {item.produces} exists but its extraction did not finish"
        state += f"; {item.produces} {'present' if extracted else 'missing'}"
        report.append((item.file_name, ok and extracted, state))

    try:
        label_format, labels, _ = detect_label_format(root, "train")
        report.append(("--data", True, f"training labels found: {labels} ({label_format})"))
    except (FileNotFoundError, ValueError) as exc:
        report.append(("--data", False, str(exc).splitlines()[0]))
    return report


__all__ = ["DataDownloadError", "DataFile", "WIDERFACE_FILES", "WIDER_TERMS", "download_widerface",
           "verify_widerface"]
