"""Training face-embedding networks with margin losses: :class:`RecognitionConfig` and
:class:`RecognitionTrainer` (behind ``retinaface train-recognition``).

The loop mirrors the detection trainer's machinery (it reuses :mod:`retinaface.engine.optim` and
:mod:`retinaface.engine.distributed`): the six optimizers and SAM around any of them, step / cosine
schedules with warm-up, AMP (bf16 on CPU, fp16 with a loss scaler on CUDA), torchrun DDP, atomic
checkpoints with every RNG state, exact resume, tqdm progress, optional TensorBoard, hooks. What
differs is the data (aligned crops with identity labels), the objective (ArcFace / CosFace /
softmax + center loss, whose class weights are trained with the network and saved in the
checkpoint's ``head``) and the evaluation (verification accuracy on held-out pairs every K epochs).

Reproducibility: the epoch's sample order is a function of (seed, epoch) and every sample's
augmentation of (seed, epoch, index), independent of the worker count, so a run resumed from an
epoch checkpoint repeats the uninterrupted run's losses.

Checkpoints (``last.pth``, ``best.pth``, ``epoch_NNN.pth``) hold only tensors and plain values:
``{"format": "retinaface-embedder", "config": embedder config dict, "model": state dict, ...}``;
:func:`load_embedder` rebuilds the network with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..checkpoint import CheckpointError, read_checkpoint, unwrap_model
from ..engine.config import check_field, default_workers, flag_name, option
from ..engine.distributed import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed, resolve_device
from ..engine.optim import OPTIMIZERS, SAM, SCHEDULES, build_optimizer, build_scheduler, sam_step
from ..engine.state import rng_state, set_rng_state
from ..fileio import atomic_torch_save, atomic_write
from .adaptive_embedder import build_adaptive_embedder
from .data import FaceFolderDataset, RecognitionDataError, RecordIODataset, VerificationPairs
from .losses import build_recognition_loss
from .models import create_embedder, embedder_from_config
from .synthetic import generate_synthetic_identities
from .transforms import FaceTrainTransform, preprocess
from .verification import verify

logger = logging.getLogger(__name__)

EMBEDDER_FORMAT = "retinaface-embedder"
EMBEDDER_FORMAT_VERSION = 1
SYNTHETIC_DATA = "synthetic"
SYNTHETIC_ROOT = Path("data/synthetic_identities")
DEFAULT_OUTPUT = "runs/recognition"
LOSSES = ("arcface", "cosface", "softmax-center")
RUN_FILES = ("last.pth", "log.csv")  # a folder holding either holds a run


# Defaults of the fields left None. The synthetic identities (2,000 crops of 100 people) train in
# about 10 minutes on 2 CPU cores: MobiFace at half width with the pooled head (~60 M multiply-adds
# instead of 225 M; ~16 s an epoch on a quiet 2-core machine), 20 epochs, verification every 5, and
# for ArcFace a softer scale and margin (s=32, m=0.3): with the standard s=64, m=0.5 the loss
# first rises and 12 epochs reached only 0.63 verification accuracy.
DEFAULT_RECIPE: Dict[str, Any] = dict(network_width=1.0, epochs=20, eval_every=1)
SYNTHETIC_RECIPE: Dict[str, Any] = dict(network_width=0.5, head="pool", epochs=20, eval_every=5)
SYNTHETIC_ARCFACE: Dict[str, Any] = dict(scale=32.0, margin=0.3)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without writing a checkpoint."""


@dataclasses.dataclass
class RecognitionConfig:
    """Everything a recognition training run needs. The ``retinaface train-recognition`` flags are
    generated from these fields (help, ranges and choices in their metadata)."""

    data: str = option(SYNTHETIC_DATA, "training data: a folder with one sub-folder of aligned crops per "
                       "identity, an insightface .rec file, or 'synthetic' (built-in identities)", kind=str)
    val: Optional[str] = option(None, "verification pairs: a pairs.txt (LFW format), an insightface .bin, a "
                                "folder holding pairs.txt, or 'none' (default: the synthetic set's held-out "
                                "pairs for synthetic data, else none)", kind=str, resumable=True)
    val_root: Optional[str] = option(None, "image folder the --val pairs.txt names refer to (default: its "
                                     "folder)", kind=str, resumable=True)
    network: str = option("mobiface", "embedding network (mobiface, mobilefacenet, timm:<name>)", kind=str)
    embedding_size: int = option(512, "embedding dimension", kind=int, low=2)
    network_width: Optional[float] = option(None, "channel multiplier of the network (default 1.0; 0.5 for the "
                                            "synthetic data)", kind=float, low=0, low_open=True)
    head: Optional[str] = option(None, "mobiface embedding head: 'flatten' (the paper's FC over the 7x7 map) or "
                                 "'pool' (global average pooling first, 12.6M fewer parameters; default: the "
                                 "network's own, 'pool' for the synthetic data)", kind=str, choices=("flatten", "pool"))
    loss: str = option("arcface", "training objective", kind=str, choices=LOSSES)
    margin: Optional[float] = option(None, "loss margin (default: the loss's own: ArcFace 0.5, CosFace 0.35; "
                                     "ArcFace on the synthetic data 0.3)",
                                     kind=float, low=0)
    scale: Optional[float] = option(None, "logit scale s (default: the loss's own, 64; ArcFace on the synthetic "
                                    "data 32)", kind=float, low=0,
                                    low_open=True)
    optimizer: str = option("sgd", "optimizer", kind=str, choices=OPTIMIZERS)
    lr: float = option(0.1, "learning rate", kind=float, low=0, low_open=True)
    momentum: float = option(0.9, "SGD / SGDP momentum", kind=float, low=0, high=1, high_open=True)
    weight_decay: float = option(5e-4, "weight decay", kind=float, low=0)
    epochs: Optional[int] = option(None, "epochs (default 20)", kind=int, low=1,
                                   resumable=True)
    batch_size: int = option(64, "global batch size, split over processes", kind=int, low=1)
    schedule: str = option("cosine", "learning-rate schedule", kind=str, choices=SCHEDULES)
    decay_epochs: Tuple[int, ...] = option((10, 15), "step schedule: epochs where lr is multiplied by --gamma",
                                           kind=int, low=1, nargs="+")
    gamma: float = option(0.1, "step schedule: lr factor at each decay epoch", kind=float, low=0, high=1,
                          low_open=True)
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs, may be fractional", kind=float, low=0)
    min_lr: float = option(0.0, "floor of the schedule", kind=float, low=0)
    sam: bool = option(False, "wrap the optimizer in Sharpness-Aware Minimization")
    sam_rho: float = option(0.05, "SAM neighbourhood radius", kind=float, low=0, low_open=True)
    sam_adaptive: bool = option(False, "adaptive SAM (ASAM)")
    grad_clip: Optional[float] = option(5.0, "clip the gradient norm to this (margin losses start with large "
                                        "gradients)", kind=float, low=0, low_open=True)
    rotation: float = option(45.0, "augmentation: random rotation up to +- this many degrees", kind=float,
                             low=0, high=180)
    aug_scale: float = option(0.15, "augmentation: random scale up to +- this fraction", kind=float, low=0,
                              high=0.9)
    shift: float = option(0.15, "augmentation: random shift up to +- this fraction of the size", kind=float,
                          low=0, high=0.9)
    flip: float = option(0.5, "augmentation: horizontal flip probability", kind=float, low=0, high=1)
    workers: Optional[int] = option(None, "DataLoader workers per process (default: this process's share of "
                                    "the CPUs)", kind=int, low=0, resumable=True)
    output: Optional[str] = option(None, "run folder; one that holds a run is refused without --resume or "
                                   f"--overwrite (default {DEFAULT_OUTPUT}, or runs/recognition2, 3, ... when "
                                   "that holds a run)", kind=str, resumable=True)
    overwrite: bool = option(False, "replace the run in --output", resumable=True)
    resume: Optional[str] = option(None, "a last.pth / epoch_NNN.pth to continue from; flags not given take "
                                   "its run's settings", kind=str, resumable=True)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...", kind=str, resumable=True)
    amp: bool = option(False, "mixed precision (bf16 on CPU, fp16 with a loss scaler on CUDA)")
    seed: int = option(0, "random seed of sampling, augmentation and initialisation", kind=int)
    eval_every: Optional[int] = option(None, "verification every K epochs (and after the last), 0 never "
                                       "(default 1; 5 for the synthetic data)", kind=int, low=0, resumable=True)
    eval_flip: bool = option(False, "verification with flip-feature fusion", resumable=True)
    save_every: int = option(0, "also keep epoch_NNN.pth every N epochs; 0 none", kind=int, low=0,
                             resumable=True)
    max_steps_per_epoch: Optional[int] = option(None, "cut epochs short (smoke tests)", kind=int, low=1)
    progress: bool = option(True, "progress bars", flag="--no-progress", resumable=True)
    tensorboard: bool = option(True, "TensorBoard logs in the run folder when tensorboard is installed",
                               flag="--no-tensorboard", resumable=True)
    synthetic_identities: int = option(100, "synthetic data: training identities", kind=int, low=2)
    synthetic_test_identities: int = option(40, "synthetic data: held-out identities for verification",
                                            kind=int, low=2)
    synthetic_images: int = option(20, "synthetic data: images per identity", kind=int, low=2)
    synthetic_root: Optional[str] = option(None, "synthetic data: where it is generated, once (default "
                                           f"{SYNTHETIC_ROOT}/<identities>-<held-out>-<images>)", kind=str)

    def resolved(self) -> "RecognitionConfig":
        """A validated copy with the ``None`` defaults filled in: :data:`SYNTHETIC_RECIPE` for the
        synthetic identities (sized to train in about 10 minutes on 2 CPU cores), else
        :data:`DEFAULT_RECIPE`."""
        self.validate()
        recipe = dict(DEFAULT_RECIPE)
        if self.data == SYNTHETIC_DATA:
            recipe.update(SYNTHETIC_RECIPE)
            if self.loss == "arcface":
                recipe.update(SYNTHETIC_ARCFACE)
        values = dataclasses.asdict(self)
        for key, value in recipe.items():
            if values[key] is None:
                values[key] = value
        if values["network"] != "mobiface":
            values["head"] = self.head
        out = RecognitionConfig(**values)
        out.validate()
        return out

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag and its allowed range for any impossible value."""
        for field in dataclasses.fields(self):
            check_field(field, getattr(self, field.name))
        if self.loss == "softmax-center" and (self.margin is not None or self.scale is not None):
            raise ValueError("--margin / --scale: the softmax-center loss has neither (ArcFace and CosFace do)")
        if self.head is not None and self.network != "mobiface":
            raise ValueError(f"--head: only the mobiface network has a choice of head, not {self.network}")
        if self.min_lr >= self.lr and self.min_lr > 0:
            raise ValueError(f"--min-lr: {self.min_lr:g} must be below --lr ({self.lr:g})")

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["decay_epochs"] = list(out["decay_epochs"])
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RecognitionConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in names}
        if kept.get("decay_epochs") is not None:
            kept["decay_epochs"] = tuple(kept["decay_epochs"])
        return cls(**kept)


FIELDS = {f.name: f for f in dataclasses.fields(RecognitionConfig)}
RESUMABLE = tuple(n for n, f in FIELDS.items() if f.metadata.get("resumable"))


def merge_resume(given: Mapping[str, Any], saved: Mapping[str, Any]) -> Dict[str, Any]:
    """Keyword arguments for a resumed run: the resumed run's ``saved`` settings with the ``given``
    ones over them. A given option that may not change on resume and differs is a ``ValueError``."""
    for key, value in given.items():
        if key in RESUMABLE or key not in saved or value is None:
            continue
        old = saved[key]
        same = list(value) == list(old) if isinstance(value, (list, tuple)) else value == old
        if not same:
            raise ValueError(f"{flag_name(FIELDS[key])} {value} contradicts the resumed run (trained with "
                             f"{old}); leave it out to continue that run, or start a new run")
    merged = {k: v for k, v in saved.items() if k in FIELDS and k not in ("resume", "overwrite")}
    merged.update(given)
    return merged


# ---------------------------------------------------------------------------------------------
# Checkpoints of embedding networks


def build_embedder_from_config(config: Mapping[str, Any]) -> nn.Module:
    """The embedding network an embedder ``config`` dict (``model.config.to_dict()``) describes."""
    return embedder_from_config(config)


def embedder_config_dict(model: nn.Module) -> Dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no .config: not an embedder of this toolkit")
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def save_embedder(model: nn.Module, path: Union[str, Path], **extra: Any) -> None:
    """Write ``model`` (config + weights) and ``extra`` plain entries atomically to ``path``."""
    model = unwrap_model(model)
    payload = {"format": EMBEDDER_FORMAT, "format_version": EMBEDDER_FORMAT_VERSION,
               "config": embedder_config_dict(model), "model": model.state_dict()}
    if getattr(model, "adaptive_spec", None):
        payload["adaptive"] = model.adaptive_spec  # plain data: pruned shapes and width slicing
    payload.update(extra)
    atomic_torch_save(payload, path)


def load_embedder(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                  width: Optional[float] = None) -> nn.Module:
    """An embedding network from a checkpoint of :func:`save_embedder` (or a trainer's
    ``last.pth`` / ``best.pth``), in eval mode. ``width`` runs a channel-prioritised checkpoint at
    that level. Errors (:class:`retinaface.checkpoint.CheckpointError`) name the file."""
    data = read_checkpoint(path)
    if data.get("format") != EMBEDDER_FORMAT:
        hint = " (a detector checkpoint: use it as --detector)" if data.get("format") == "retinaface" else ""
        raise CheckpointError(f"{path}: not a face-embedding checkpoint{hint}")
    if int(data.get("format_version", 0)) > EMBEDDER_FORMAT_VERSION:
        raise CheckpointError(f"{path}: embedder format version {data['format_version']} is newer than this "
                              f"toolkit understands")
    if not isinstance(data.get("config"), dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path}: embedder checkpoint without its config or model entry")
    try:
        if data.get("adaptive"):
            model = build_adaptive_embedder(data["config"], data["adaptive"])
        else:
            model = build_embedder_from_config(data["config"])
        missing, unexpected = model.load_state_dict(data["model"], strict=False)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the network its config describes: "
                              f"{str(exc).splitlines()[0]}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: {len(missing)} missing / {len(unexpected)} unexpected weights "
                              f"(e.g. {(missing + unexpected)[:3]})")
    if width is not None:
        if hasattr(model, "set_width"):
            model.set_width(width)
        elif float(width) != 1.0:
            raise CheckpointError(f"{path}: width {width} needs a channel-prioritised embedder; this one "
                                  f"runs at width 1.0 only")
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# Data: deterministic order and augmentation


class EpochSampler(Sampler):
    """Indices of one epoch: a permutation drawn from (seed, epoch), this rank's share of it, cut to
    whole batches (every rank gets the same number of steps)."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return (self.size // self.world_size) // self.batch_size * self.batch_size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.size, generator=g)[self.rank::self.world_size].tolist()
        return iter(order[:len(self)])


class AugmentedFaces(Dataset):
    """``(crop uint8 (H, W, 3) BGR, label)`` with the augmentation of sample ``i`` in epoch ``e``
    drawn from ``np.random.default_rng([seed, e, i])``; ``epoch`` is set before each epoch (the
    workers are started afresh per epoch and copy it)."""

    def __init__(self, base: Dataset, transform: Any, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        image = np.asarray(image)
        if self.transform is not None:
            rng = np.random.default_rng([abs(self.seed), self.epoch, int(index)])
            image = self.transform(image, rng)
        return np.ascontiguousarray(image), int(label)


def collate_crops(batch):
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels


def synthetic_root(config: RecognitionConfig) -> Path:
    """Where the synthetic identities of ``config``'s size live (one folder per size, so another
    size never collides with a set already generated)."""
    if config.synthetic_root:
        return Path(config.synthetic_root)
    return SYNTHETIC_ROOT / f"{config.synthetic_identities}-{config.synthetic_test_identities}-{config.synthetic_images}"


def synthetic_paths(config: RecognitionConfig):
    """Generate (once) the built-in synthetic identities; returns the generator's paths object."""
    return generate_synthetic_identities(
        synthetic_root(config), num_train_identities=config.synthetic_identities,
        num_test_identities=config.synthetic_test_identities, images_per_identity=config.synthetic_images,
        seed=0)


def training_dataset(config: RecognitionConfig) -> Dataset:
    """The identity-labelled crop data set ``config.data`` names (no augmentation)."""
    if config.data == SYNTHETIC_DATA:
        paths = synthetic_paths(config)
        return FaceFolderDataset(paths.train)
    path = Path(config.data)
    if path.suffix == ".rec":
        if not path.is_file():
            raise FileNotFoundError(f"--data: {path} does not exist")
        return RecordIODataset(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--data: {path} is neither 'synthetic', a folder of identity folders nor a .rec file")
    return FaceFolderDataset(path)


def load_pairs(spec: Union[str, Path], image_root: Optional[Union[str, Path]] = None):
    """:class:`~retinaface.recognition.data.VerificationPairs` from an insightface ``.bin``, an LFW
    ``pairs.txt`` (images under ``image_root``; default its folder, or ``test/`` beside it as the
    synthetic set lays them out) or a synthetic-set folder. Missing files and malformed lines raise
    :class:`~retinaface.recognition.data.RecognitionDataError` naming the file and line."""
    path = Path(spec)
    if not path.exists():
        raise RecognitionDataError(f"{path}: verification pairs file not found")
    if image_root is not None and path.is_file() and path.suffix != ".bin":
        return VerificationPairs.from_lfw(path, image_root)
    if path.is_file() and path.suffix == ".txt" and (path.parent / "test").is_dir():
        return VerificationPairs.from_lfw(path, path.parent / "test")
    return VerificationPairs.load(path)


# ---------------------------------------------------------------------------------------------
# The trainer


class RecognitionHook:
    """Callbacks into the recognition loop; override what you need (``trainer`` exposes
    ``raw_model``, ``criterion``, ``optimizer``, ``epoch``, ``step``, ...)."""

    def on_train_start(self, trainer: "RecognitionTrainer") -> None:
        """After model, loss, optimizer and data are built (and a resume is loaded)."""

    def compute_loss(self, trainer: "RecognitionTrainer", images: torch.Tensor,
                     labels: torch.Tensor) -> Optional[torch.Tensor]:
        """Return a scalar loss to replace the default one (e.g. summed over widths), or None."""
        return None

    def extra_loss(self, trainer: "RecognitionTrainer") -> Optional[torch.Tensor]:
        """A scalar added to every step's loss (a regulariser), or None."""
        return None

    def after_step(self, trainer: "RecognitionTrainer") -> None:
        """After each optimizer step."""

    def after_epoch(self, trainer: "RecognitionTrainer", epoch: int) -> None:
        """After each epoch's checkpoint is written."""


class _TrainModule(nn.Module):
    """Network and loss head as one module, so DDP all-reduces the class weights too."""

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = self.model(images)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self.criterion(embeddings.float(), labels)


@dataclasses.dataclass
class RecognitionSummary:
    epochs_run: int
    history: List[Dict[str, float]]
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    metrics: Dict[str, float]
    output: Path


def _holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def choose_output(config: RecognitionConfig) -> Path:
    """The run folder: ``--output`` unless it holds a run; the default name then moves on to
    ``runs/recognition2``, ``3``, ...; any other name is refused (never overwrite a run)."""
    if config.output is None:
        if not _holds_run(Path(DEFAULT_OUTPUT)):
            return Path(DEFAULT_OUTPUT)
        n = 2
        while _holds_run(Path(f"{DEFAULT_OUTPUT}{n}")):
            n += 1
        return Path(f"{DEFAULT_OUTPUT}{n}")
    folder = Path(config.output)
    if config.resume or config.overwrite or not _holds_run(folder):
        return folder
    raise FileExistsError(f"--output: {folder} already holds a run; pass --resume {folder / 'last.pth'} to "
                          f"continue it, --overwrite to replace it, or another --output")


class RecognitionTrainer:
    """Trains an embedding network; see the module docstring. ``model`` replaces the one the config
    names (e.g. an adaptive embedder); ``hooks`` change the loss or observe the loop."""

    def __init__(self, config: RecognitionConfig, model: Optional[nn.Module] = None,
                 hooks: Sequence[RecognitionHook] = (), train_set: Optional[Dataset] = None,
                 val_pairs: Optional[Any] = None) -> None:
        self.config = config = config.resolved()
        self.hooks = list(hooks)
        self._given_model = model
        self._given_train_set = train_set
        self._given_val = val_pairs
        self.epoch = 0
        self.step = 0
        self.history: List[Dict[str, float]] = []
        self.best_metric = -math.inf
        self.output = Path(config.output or DEFAULT_OUTPUT)
        self._tb = None
        self._ready = False

    # -- set-up -----------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.config
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(cfg.device, local_rank)
        self.dist: DistInfo = init_distributed(self.device)
        # every rank must agree on the folder: rank 0 decides, the others only read checkpoints it writes
        self.output = choose_output(cfg)
        # the resolved folder goes into the checkpoints, so a resume continues in it
        self.config = cfg = dataclasses.replace(cfg, output=str(self.output))
        resume_state = None
        if cfg.resume:
            resume_state = read_checkpoint(cfg.resume)
            if resume_state.get("format") != EMBEDDER_FORMAT or "optimizer" not in resume_state:
                raise ValueError(f"--resume: {cfg.resume} is not a recognition training checkpoint")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        self._build_data()
        self._build_model(resume_state)
        self._build_optimization()
        if resume_state is not None:
            self._load_training_state(resume_state)
        if self.dist.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            if cfg.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.output / "tensorboard"))
                except ImportError:
                    logger.info("tensorboard is not installed: no TensorBoard logs (log.csv has the figures)")
        for hook in self.hooks:
            hook.on_train_start(self)
        self._ready = True

    def _build_data(self) -> None:
        cfg = self.config
        base = self._given_train_set if self._given_train_set is not None else training_dataset(cfg)
        self.classes = list(getattr(base, "classes", []) or [])
        labels = getattr(base, "labels", None)
        if self.classes:
            self.num_classes = len(self.classes)
        elif labels is not None:
            self.num_classes = int(max(labels)) + 1
        else:
            self.num_classes = int(getattr(base, "num_classes"))
        if self.num_classes < 2:
            raise ValueError(f"--data: {cfg.data} has {self.num_classes} identity; training needs at least 2")
        transform = FaceTrainTransform(rotation=cfg.rotation, scale=cfg.aug_scale, shift=cfg.shift,
                                       flip=cfg.flip)
        self.train_set = AugmentedFaces(base, transform, cfg.seed)
        per_rank = cfg.batch_size // self.dist.world_size
        if per_rank < 1:
            raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the {self.dist.world_size} processes")
        if len(base) // self.dist.world_size < per_rank:
            raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(base)} crops)")
        self.sampler = EpochSampler(len(base), per_rank, cfg.seed, self.dist.rank, self.dist.world_size)
        workers = cfg.workers if cfg.workers is not None else min(4, default_workers())
        self.loader = DataLoader(self.train_set, batch_size=per_rank, sampler=self.sampler, num_workers=workers,
                                 collate_fn=collate_crops, drop_last=True,
                                 pin_memory=self.device.type == "cuda")
        self.val_pairs = self._given_val
        if self.val_pairs is None and cfg.eval_every:
            spec = cfg.val
            if spec is None and cfg.data == SYNTHETIC_DATA:
                spec = str(synthetic_root(cfg))
            if spec and spec != "none":
                self.val_pairs = load_pairs(spec, cfg.val_root)

    def _build_model(self, resume_state: Optional[Dict[str, Any]]) -> None:
        cfg = self.config
        if self._given_model is not None:
            model = self._given_model
        elif resume_state is not None and resume_state.get("adaptive"):
            model = build_adaptive_embedder(resume_state["config"], resume_state["adaptive"])
        else:
            kw: Dict[str, Any] = {"width": cfg.network_width}
            if cfg.head is not None:
                kw["head"] = cfg.head
            model = create_embedder(cfg.network, embedding_size=cfg.embedding_size, **kw)
        loss_kw: Dict[str, Any] = {}
        if cfg.margin is not None:
            loss_kw["margin"] = cfg.margin
        if cfg.scale is not None:
            loss_kw["scale"] = cfg.scale
        criterion = build_recognition_loss(cfg.loss, num_classes=self.num_classes,
                                           embedding_size=cfg.embedding_size, **loss_kw)
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
            criterion.load_state_dict(resume_state["head"])
        self.raw_model = model.to(self.device)
        self.criterion = criterion.to(self.device)
        self.train_module = _TrainModule(self.raw_model, self.criterion)
        self.module = self.train_module
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.module = DistributedDataParallel(
                self.train_module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _build_optimization(self) -> None:
        cfg = self.config
        params = [p for p in self.train_module.parameters()]
        base = build_optimizer(cfg.optimizer, params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
        self.optimizer = SAM(base, rho=cfg.sam_rho, adaptive=cfg.sam_adaptive) if cfg.sam else base
        steps = len(self.loader) if cfg.max_steps_per_epoch is None else min(len(self.loader),
                                                                              cfg.max_steps_per_epoch)
        self.steps_per_epoch = max(1, steps)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.epochs, self.steps_per_epoch,
                                         cfg.decay_epochs, cfg.gamma, cfg.warmup_epochs, cfg.min_lr)
        self.amp_dtype = None
        if cfg.amp:
            self.amp_dtype = torch.float16 if self.device.type == "cuda" and not torch.cuda.is_bf16_supported() \
                else torch.bfloat16
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler) if use_scaler else None

    def training_state(self) -> Dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "epoch": self.epoch, "step": self.step, "rng": rng_state(),
                 "train_config": self.config.to_dict(), "history": self.history,
                 "best_metric": self.best_metric if math.isfinite(self.best_metric) else None,
                 "head": self.criterion.state_dict(), "classes": self.classes,
                 "num_classes": self.num_classes}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        adaptive = getattr(self.raw_model, "adaptive_spec", None)
        if adaptive:
            state["adaptive"] = adaptive
        return state

    def _load_training_state(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state.get("history") or [])
        best = state.get("best_metric")
        self.best_metric = -math.inf if best is None else float(best)
        set_rng_state(state["rng"])

    def save_checkpoint(self, path: Path) -> None:
        save_embedder(self.raw_model, path, **self.training_state())

    # -- the loop -----------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            loss = None
            for hook in self.hooks:
                loss = hook.compute_loss(self, images, labels)
                if loss is not None:
                    break
            if loss is None:
                loss = self.module(images, labels)
            for hook in self.hooks:
                extra = hook.extra_loss(self)
                if extra is not None:
                    loss = loss + extra
        return loss

    def _clip(self) -> None:
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.train_module.parameters(), self.config.grad_clip)

    def _optimizer_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(self.optimizer, SAM):
            return sam_step(self.module, self.optimizer, lambda: self._loss(images, labels), self.scaler,
                            clip_grad_norm=self.config.grad_clip)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(images, labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self._clip()
            self.optimizer.step()
        return loss

    def train_epoch(self) -> Dict[str, float]:
        cfg = self.config
        self.train_module.train()
        self.sampler.set_epoch(self.epoch)
        self.train_set.epoch = self.epoch
        total, count, started = 0.0, 0, time.perf_counter()
        bar = None
        if cfg.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                       dynamic_ncols=True)
        try:
            for i, (crops, labels) in enumerate(self.loader):
                if i >= self.steps_per_epoch:
                    break
                images = preprocess(crops.numpy()).to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                loss = self._optimizer_step(images, labels)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise NonFiniteLossError(f"the loss became {value} at step {self.step + 1} (epoch "
                                             f"{self.epoch + 1}); lower --lr or use --grad-clip. No checkpoint "
                                             f"was written for this epoch")
                self.scheduler.step()
                self.step += 1
                total += value
                count += 1
                for hook in self.hooks:
                    hook.after_step(self)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.3f}")
                if self._tb is not None:
                    self._tb.add_scalar("train/loss", value, self.step)
        finally:
            if bar is not None:
                bar.close()
        mean = float(all_reduce_mean(torch.tensor(total / max(count, 1), device=self.device), self.dist))
        return {"loss": mean, "lr": float(self.optimizer.param_groups[0]["lr"]),
                "seconds": time.perf_counter() - started, "steps": count}

    def evaluate(self) -> Dict[str, float]:
        """Verification on the configured pairs (rank 0); empty when there are none."""
        if self.val_pairs is None:
            return {}
        result = verify(self.raw_model, self.val_pairs, flip=self.config.eval_flip, name=self.val_pairs.name)
        self.last_verification = result
        out = {"val_accuracy": result.accuracy, "val_accuracy_std": result.accuracy_std, "val_auc": result.auc}
        for t in result.tar_at_far:
            out[f"val_tar@far={t.far_target:g}"] = t.tar
        return out

    def _log(self, row: Dict[str, float]) -> None:
        path = self.output / "log.csv"
        keys: List[str] = []
        for r in self.history:
            keys += [k for k in r if k not in keys]
        with atomic_write(path, newline="") as handle:  # rewritten whole: columns may grow
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        if self._tb is not None:
            for key, value in row.items():
                if key != "epoch":
                    self._tb.add_scalar(f"epoch/{key}", value, int(row["epoch"]))

    def fit(self) -> RecognitionSummary:
        if not self._ready:
            self.setup()
        cfg = self.config
        best_path = None
        try:
            while self.epoch < cfg.epochs:
                row: Dict[str, float] = {"epoch": self.epoch + 1}
                row.update(self.train_epoch())
                self.epoch += 1
                due = cfg.eval_every and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs)
                if due and self.dist.is_main:
                    row.update(self.evaluate())
                self.history.append(row)
                if self.dist.is_main:
                    improved = "val_accuracy" in row and row["val_accuracy"] > self.best_metric
                    if improved:
                        self.best_metric = row["val_accuracy"]
                    self.save_checkpoint(self.output / "last.pth")
                    if improved:
                        self.save_checkpoint(self.output / "best.pth")
                    if cfg.save_every and self.epoch % cfg.save_every == 0:
                        self.save_checkpoint(self.output / f"epoch_{self.epoch:03d}.pth")
                    self._log(row)
                    text = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "steps"))
                    logger.info("epoch %d/%d: %s", self.epoch, cfg.epochs, text)
                barrier(self.dist)
                for hook in self.hooks:
                    hook.after_epoch(self, self.epoch)
        finally:
            if self._tb is not None:
                self._tb.close()
            cleanup(self.dist)
        if (self.output / "best.pth").exists():
            best_path = self.output / "best.pth"
        metrics = {k: v for k, v in (self.history[-1] if self.history else {}).items() if k.startswith("val_")}
        return RecognitionSummary(len(self.history), self.history, self.output / "last.pth", best_path, metrics,
                                  self.output)


def train_recognition(config: RecognitionConfig, **kw: Any) -> RecognitionSummary:
    """``RecognitionTrainer(config, **kw).fit()``."""
    return RecognitionTrainer(config, **kw).fit()
