"""The model zoo: named weights, fetched on first use, verified by SHA-256 and cached.

Each :class:`ZooEntry` names one file (``retinaface_mnet025`` is Pytorch_Retinaface's
``mobilenet0.25_Final.pth``), where copies of it are published (mirrors, tried in order), its
SHA-256, licence, citation and what it is (architecture, training data, published AP and the
protocol behind it). :func:`fetch` returns the cached file, downloading it first when needed:

- the cache is ``$RETINAFACE_HOME`` or else ``torch.hub.get_dir()/checkpoints``;
- a download goes to a temporary file beside its target, is hashed while it streams, and is
  renamed into the cache only when the hash matches; a mismatch deletes the temporary file, caches
  nothing and the error says which URL gave which hash;
- processes fetching one file at once take a lock (``fcntl``; elsewhere the rename alone keeps
  the cached file whole) and the later ones find the file the first one verified;
- ``RETINAFACE_MIRROR=<base URL or folder>`` is tried first, as ``<base>/<file name>``;
  ``RETINAFACE_OFFLINE=1`` never opens a network connection (a folder mirror still counts) and
  names the file it needs and where to put it;
- an entry whose checksum is not known downloads only with ``allow_unverified=True``, prints the
  hash it got and records it beside the file, so later uses check the file against that hash.

Everything that takes a checkpoint path takes a zoo name too (:func:`resolve_weights`): a file
of that name, when one exists, wins. This module depends on :mod:`retinaface.fileio` only (plus
urllib, tqdm, and torch for its hub folder), so every layer may use it.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import os
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .fileio import atomic_write
from .version import __version__

PathLike = Union[str, "os.PathLike[str]"]

ENV_HOME = "RETINAFACE_HOME"
ENV_OFFLINE = "RETINAFACE_OFFLINE"
ENV_MIRROR = "RETINAFACE_MIRROR"
ENV_TIMEOUT = "RETINAFACE_TIMEOUT"
# seconds a connection may stay silent (connect, or between two reads) before the mirror is given up
DEFAULT_TIMEOUT = 30.0
_BLOCK = 1 << 16
# recorded beside a file fetched without a published checksum: the hash it had when it came
UNVERIFIED_HASH_SUFFIX = ".sha256"

DEFAULT_DETECTOR = "retinaface_mnet025"


class ZooError(RuntimeError):
    """A zoo file could not be had: unknown name, every mirror failed, offline, unverifiable."""


def google_drive_url(file_id: str) -> str:
    """Google Drive's plain download address of a shared file; ``confirm=t`` skips the page Drive
    shows instead of files it has not scanned for viruses."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


def github_file_url(repo: str, commit: str, path: str) -> str:
    """A file of GitHub repository ``owner/name`` at a pinned commit (``/raw/`` follows Git LFS too)."""
    return f"https://github.com/{repo}/raw/{commit}/{path}"


@dataclass(frozen=True)
class ZooEntry:
    """One named file of the zoo and what is known about it."""

    name: str
    file_name: str
    sha256: Optional[str]  # None: not known yet (fetching needs allow_unverified=True)
    urls: Tuple[str, ...]  # mirrors, tried in order after $RETINAFACE_MIRROR
    kind: str  # "detector" (a RetinaFace checkpoint) or "backbone" (ImageNet weights)
    architecture: str
    training_data: str
    licence: str
    source: str
    citation: str
    size_bytes: Optional[int] = None
    # published WIDER FACE val AP (easy, medium, hard) and the protocol it was measured under
    ap: Optional[Tuple[float, float, float]] = None
    ap_protocol: str = ""
    notes: str = ""
    backbone: str = field(default="")

    @property
    def verified(self) -> bool:
        """Whether the entry has a published checksum to verify its file against."""
        return self.sha256 is not None


_ZOO: Dict[str, ZooEntry] = {}


def register_weights(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo; a name is registered once."""
    if entry.name in _ZOO:
        raise ValueError(f"zoo entry {entry.name!r} is already registered")
    if entry.sha256 is not None and (len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256)):
        raise ValueError(f"zoo entry {entry.name!r}: sha256 must be 64 lower-case hex digits")
    _ZOO[entry.name] = entry
    return entry


def list_weights(kind: Optional[str] = None) -> List[str]:
    """Zoo names in registration order, optionally only those of ``kind``."""
    return [name for name, entry in _ZOO.items() if kind is None or entry.kind == kind]


def get_weights(name: str) -> ZooEntry:
    """The entry called ``name``; an unknown name raises :class:`ZooError` naming close ones."""
    entry = _ZOO.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(_ZOO), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ZooError(f"{name!r} is not a zoo name{hint}; the zoo has {', '.join(_ZOO)}")
    return entry


def is_zoo_name(value: object) -> bool:
    """Whether ``value`` is the name of a zoo entry."""
    return isinstance(value, str) and value in _ZOO


_PYTORCH_RETINAFACE = "biubug6/Pytorch_Retinaface (https://github.com/biubug6/Pytorch_Retinaface)"
_RETINAFACE_CITATION = ("Deng, Guo, Ververas, Kotsia, Zafeiriou: RetinaFace: Single-shot Multi-level Face "
                        "Localisation in the Wild, CVPR 2020 (arXiv:1905.00641)")
_AP_PROTOCOL = ("WIDER FACE val, single scale at original size, as published in the Pytorch_Retinaface "
                "README (its Python evaluation port)")

register_weights(ZooEntry(
    name="retinaface_mnet025",
    file_name="mobilenet0.25_Final.pth",
    sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
    urls=(github_file_url("foamliu/InsightFace-v2", "e07b738adecb69b81ac9b8750db964cee673e175",
                          "retinaface/weights/mobilenet0.25_Final.pth"),
          google_drive_url("15zP8BP-5IvWXWZoYTNdvUJUiBqZ1hxu1")),
    kind="detector", backbone="mobilenet0.25",
    architecture="RetinaFace, MobileNetV1 x0.25 backbone, FPN 64, SSH, 2 anchors per location (0.4 M parameters)",
    training_data="WIDER FACE train with the retinaface_gt_v1.1 five-landmark labels",
    licence="MIT (Pytorch_Retinaface)", source=_PYTORCH_RETINAFACE, citation=_RETINAFACE_CITATION,
    size_bytes=1789735, ap=(90.70, 88.16, 73.82), ap_protocol=_AP_PROTOCOL,
    notes="the default detector of `retinaface detect` and `Detector()`",
))
register_weights(ZooEntry(
    name="retinaface_r50",
    file_name="Resnet50_Final.pth",
    sha256=None,  # not obtained yet: fetch with allow_unverified=True, then pin the hash it prints
    urls=(google_drive_url("14KX6VqF69MdSPk3Tr9PlDYbq7ArpdNUW"),),
    kind="detector", backbone="resnet50",
    architecture="RetinaFace, ResNet-50 backbone, FPN 256, SSH, 2 anchors per location (27 M parameters)",
    training_data="WIDER FACE train with the retinaface_gt_v1.1 five-landmark labels",
    licence="MIT (Pytorch_Retinaface)", source=_PYTORCH_RETINAFACE, citation=_RETINAFACE_CITATION,
    ap=(95.48, 94.04, 84.43), ap_protocol=_AP_PROTOCOL,
    notes="checksum not known: `retinaface download retinaface_r50 --allow-unverified`",
))
register_weights(ZooEntry(
    name="mobilenet0.25-imagenet",
    file_name="mobilenetV1X0.25_pretrain.tar",
    sha256="75c37f8d438b7c6aed2e6b310fd0540c40dabf0dd820770bd7082668dfd7c1c1",
    urls=(google_drive_url("1q36RaTZnpHVl4vRuNypoEMVWiiwCqhuD"),),
    kind="backbone", backbone="mobilenet0.25",
    architecture="MobileNetV1 x0.25 classifier (ImageNet top-1 46.58 per its file); the backbone "
                 "`--pretrained` starts mobilenet0.25 from",
    training_data="ImageNet-1k",
    licence="MIT (Pytorch_Retinaface)", source=_PYTORCH_RETINAFACE,
    citation="Howard et al.: MobileNets: Efficient Convolutional Neural Networks for Mobile Vision "
             "Applications, 2017 (arXiv:1704.04861)",
    size_bytes=3827150,
))


# ---------------------------------------------------------------------------------------------
# The cache


def cache_dir() -> Path:
    """Where zoo files are kept: ``$RETINAFACE_HOME``, else ``torch.hub.get_dir()/checkpoints``."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    """Whether ``RETINAFACE_OFFLINE`` forbids the network (any value but empty, 0, false, no)."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def _timeout() -> float:
    text = os.environ.get(ENV_TIMEOUT)
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise ZooError(f"{ENV_TIMEOUT}={text!r}: expected a number of seconds") from None
    if not value > 0:
        raise ZooError(f"{ENV_TIMEOUT}={text!r}: must be more than 0 seconds")
    return value


def file_digest(path: PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded_hash(target: Path) -> Optional[str]:
    side = target.with_name(target.name + UNVERIFIED_HASH_SUFFIX)
    try:
        return side.read_text().split()[0]
    except (OSError, IndexError):
        return None


def cached_file(name: str) -> Optional[Path]:
    """The cached file of zoo entry ``name`` when it is there and its hash is right, else None.

    An entry without a published checksum counts as cached when its file still has the hash
    recorded when it was fetched with ``allow_unverified=True``."""
    entry = get_weights(name)
    target = cache_dir() / entry.file_name
    if not target.is_file():
        return None
    expected = entry.sha256 or _recorded_hash(target)
    if expected is None or file_digest(target) != expected:
        return None
    return target


# ---------------------------------------------------------------------------------------------
# Downloading


class _Failure(Exception):
    """One source did not give the file; the message says how (for the error listing all)."""


def _is_remote(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https", "ftp")


def mirror_sources(file_name: str, include_env: bool = True) -> List[str]:
    """``$RETINAFACE_MIRROR/<file_name>`` (a URL or a local path), or nothing when it is unset."""
    base = os.environ.get(ENV_MIRROR, "").strip() if include_env else ""
    if not base:
        return []
    if _is_remote(base) or base.startswith("file:"):
        return [base.rstrip("/") + "/" + urllib.parse.quote(file_name)]
    return [str(Path(base).expanduser() / file_name)]


def _stream(source: str, handle, digests: Sequence["hashlib._Hash"], timeout: float, progress: bool,
            label: str, head: bytearray) -> int:
    """Copy ``source`` (URL or local path) into ``handle``, updating ``digests`` and keeping the
    first bytes in ``head``; returns the byte count. Raises :class:`_Failure` for anything that
    stops the copy."""
    from tqdm import tqdm

    def copy(reader, total: Optional[int]) -> int:
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
                  disable=None if progress else True, leave=False) as bar:  # None: off when not a terminal
            while True:
                block = reader.read(_BLOCK)
                if not block:
                    break
                handle.write(block)
                if len(head) < 256:
                    head.extend(block[:256 - len(head)])
                for digest in digests:
                    digest.update(block)
                received += len(block)
                bar.update(len(block))
        return received

    if not _is_remote(source):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path)) \
            if source.startswith("file:") else Path(source)
        if not path.is_file():
            raise _Failure("no such file")
        with open(path, "rb") as reader:
            return copy(reader, path.stat().st_size)
    request = urllib.request.Request(source, headers={"User-Agent": f"retinaface-toolkit/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = copy(response, total)
    except urllib.error.HTTPError as exc:
        raise _Failure(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Failure(f"no answer within {timeout:g} s") from None
        raise _Failure(f"cannot connect ({reason})") from None
    except (socket.timeout, TimeoutError):
        raise _Failure(f"stalled: no data for {timeout:g} s") from None
    except (http.client.HTTPException, OSError) as exc:
        raise _Failure(f"transfer broke off ({type(exc).__name__}: {exc})") from None
    if total is not None and received != total:
        raise _Failure(f"truncated transfer: {received} of {total} bytes")
    return received


def download_verified(sources: Sequence[str], target: PathLike, sha256: Optional[str] = None,
                      md5: Optional[str] = None, progress: bool = True,
                      timeout: Optional[float] = None) -> Tuple[str, str]:
    """Fetch ``target`` from the first of ``sources`` (URLs or local paths) that gives the right bytes.

    Each try streams into a temporary file beside ``target`` and hashes it on the way; the file is
    renamed onto ``target`` only when ``sha256`` (and ``md5``, for files whose publisher gives only
    that) match, else the temporary file is deleted and the next source is tried. Returns
    ``(source used, sha256 of the file)``. Raises :class:`ZooError` listing every source and what
    it gave when none did.
    """
    target = Path(target)
    timeout = _timeout() if timeout is None else float(timeout)
    failures: List[str] = []
    for source in sources:
        sha = hashlib.sha256()
        digests = [sha] + ([hashlib.md5()] if md5 else [])
        head = bytearray()
        if progress:
            print(f"fetching {target.name} from {source}", file=sys.stderr)
        try:
            with atomic_write(target, "wb") as handle:
                size = _stream(source, handle, digests, timeout, progress, target.name, head)
                got = sha.hexdigest()
                if sha256 is not None and got != sha256:
                    raise _Failure(f"gave sha256 {got} ({size} bytes{_looks_like_page(bytes(head))}), "
                                   f"expected {sha256}")
                if md5 is not None and digests[1].hexdigest() != md5:
                    raise _Failure(f"gave md5 {digests[1].hexdigest()} ({size} bytes), expected {md5}")
        except _Failure as exc:
            failures.append(f"{source}: {exc}")
            continue
        except OSError as exc:  # the cache itself cannot be written: no other source will help
            raise ZooError(f"cannot write {target} ({exc.strerror or exc}); set {ENV_HOME} to a writable "
                           f"folder") from None
        return source, got
    raise ZooError(f"could not fetch {target.name}: " + "; ".join(failures) +
                   " (nothing was cached)")


def _looks_like_page(head: bytes) -> str:
    # Google Drive answers a quota or sign-in page with status 200: say so rather than only "wrong hash"
    head = head.lstrip().lower()
    return ", an HTML page, not the file" if head.startswith((b"<!doctype html", b"<html")) else ""


@contextlib.contextmanager
def _download_lock(folder: Path, file_name: str) -> Iterator[None]:
    """One process at a time fetches ``file_name`` into ``folder``. Where ``fcntl`` is missing
    (Windows) concurrent fetches each write their own temporary file and the atomic rename still
    leaves one whole, verified file."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / f".{file_name}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fetch(name: str, allow_unverified: bool = False, progress: bool = True) -> Path:
    """The cached file of zoo entry ``name``, downloaded and verified first when needed.

    ``allow_unverified`` permits an entry without a published checksum; its hash is printed and
    recorded beside the file. Raises :class:`ZooError` (one line) when the file cannot be had.
    """
    entry = get_weights(name)
    found = cached_file(name)
    if found is not None:
        return found
    folder = cache_dir()
    target = folder / entry.file_name
    if not entry.verified and not allow_unverified:
        raise ZooError(f"{name}: no published checksum for {entry.file_name}, so it is not fetched by "
                       f"default; run `retinaface download {name} --allow-unverified` (it prints the hash "
                       f"it got) or pass the file's path instead of the name")
    sources = mirror_sources(entry.file_name)
    if offline():
        sources = [s for s in sources if not _is_remote(s)]
        if not sources:
            state = "in the cache but damaged (wrong hash)" if target.exists() else "not in the cache"
            raise ZooError(f"{name}: {ENV_OFFLINE} is set and {entry.file_name} is {state}: copy it "
                           f"to {target}" + (f" (sha256 {entry.sha256})" if entry.sha256 else "") +
                           f", or point {ENV_MIRROR} at a folder holding it")
    else:
        sources += list(entry.urls)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"cannot create the zoo cache {folder} ({exc.strerror or exc}); set {ENV_HOME} "
                       f"to a writable folder") from None
    with _download_lock(folder, entry.file_name):
        found = cached_file(name)  # another process may have fetched it while this one waited
        if found is not None:
            return found
        source, got = download_verified(sources, target, sha256=entry.sha256, progress=progress)
    if not entry.verified:
        with atomic_write(target.with_name(target.name + UNVERIFIED_HASH_SUFFIX)) as side:
            side.write(f"{got}  {entry.file_name}  (from {source}, not checked against a published hash)\n")
        print(f"{name}: {entry.file_name} has sha256 {got} (from {source}); the zoo has no published "
              f"checksum to check it against: pin it in retinaface/zoo.py once confirmed", file=sys.stderr)
    return target


def resolve_weights(value: PathLike, allow_unverified: bool = False) -> Path:
    """``value`` as a file path: an existing file as it is, a zoo name fetched (see :func:`fetch`),
    anything else unchanged (so the caller's "file not found" names it)."""
    path = Path(value)
    if path.exists() or not is_zoo_name(str(value)):
        return path
    return fetch(str(value), allow_unverified=allow_unverified)


_announced: List[str] = []


def announce_default_detector(say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> str:
    """The default detector's zoo name; the first call in a process says which model it is."""
    if not _announced:
        entry = get_weights(DEFAULT_DETECTOR)
        say(f"no weights given: using the zoo's default detector {entry.name} ({entry.file_name}, "
            f"Pytorch_Retinaface mobilenet0.25 trained on WIDER FACE; `retinaface models` lists others)")
        _announced.append(DEFAULT_DETECTOR)
    return DEFAULT_DETECTOR


__all__ = ["DEFAULT_DETECTOR", "ENV_HOME", "ENV_MIRROR", "ENV_OFFLINE", "ENV_TIMEOUT", "ZooEntry", "ZooError",
           "announce_default_detector", "cache_dir", "cached_file", "download_verified", "fetch", "file_digest",
           "get_weights", "github_file_url", "google_drive_url", "is_zoo_name", "list_weights", "mirror_sources",
           "offline", "register_weights", "resolve_weights"]
