"""Training options, each stated once: :class:`BaseTrainConfig` (what every training task shares:
optimizer, schedule, SAM, AMP, run folder, resume, ...), :class:`TrainConfig` (detection) built on it,
and the command-line flags made from them.

A task's config subclasses :class:`BaseTrainConfig`, re-declares a shared field only to change its
default or help (:func:`shared_option`; its range, kind and resume rule stay the base's) and adds
its own fields. Every option is a dataclass field whose metadata carries its help text, its allowed range or
choices and whether it may change when a run is resumed. :func:`add_config_arguments` turns the
fields into argparse flags (``retinaface train``, ``retinaface prioritize`` and the Docker entry
point all get theirs from here, so they cannot drift), and :meth:`TrainConfig.validate` applies the
same ranges to configs built in Python. Flags are added with ``default=argparse.SUPPRESS``: the
parsed namespace holds exactly the options given on the command line, which is what resuming needs
(:func:`merge_resume`).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..conventions import VAL_GROUND_TRUTH
from .optim import OPTIMIZERS, SCHEDULES, reference_recipe

SYNTHETIC_DATA = "synthetic"
DEFAULT_OUTPUT = "runs/train"
# The built-in synthetic set trains from scratch in minutes: small images, a higher learning rate
# with warm-up and a cosine decay instead of the reference's 250-epoch recipe.
SYNTHETIC_RECIPE: Dict[str, Any] = dict(lr=0.01, batch_size=16, image_size=320, epochs=12,
                                        schedule="cosine", warmup_epochs=1, decay_epochs=(8, 11))
# Recipe-dependent fields: None means "the recipe's value for this backbone / data".
RECIPE_FIELDS = ("optimizer", "lr", "epochs", "batch_size", "image_size", "schedule", "decay_epochs",
                 "warmup_epochs")
# A GPU needs several decoding cores, but past ~8 workers per process the gain is small and the
# memory (one copy of the data set object per worker) is not.
MAX_DEFAULT_WORKERS = 8


def option(default: Any = None, help: str = "", *, kind: Optional[Callable[[str], Any]] = None,
           low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False,
           high_open: bool = False, choices: Optional[Sequence[str]] = None, nargs: Optional[str] = None,
           flag: Optional[str] = None, resumable: bool = False, cli: bool = True) -> Any:
    """A dataclass field with what its command-line flag needs in ``metadata``.

    ``kind`` parses one command-line token (bool fields are switches); ``low`` / ``high`` bound the
    value (``*_open`` excludes the end); ``nargs="+"`` makes a tuple; ``flag`` overrides the flag
    name (``--no-progress`` for ``progress``); ``resumable`` fields may differ from the resumed
    run's; ``cli=False`` keeps a field out of the command line.
    """
    meta = dict(help=help, kind=kind, low=low, high=high, low_open=low_open, high_open=high_open,
                choices=tuple(choices) if choices else None, nargs=nargs, flag=flag, resumable=resumable,
                cli=cli)
    return dataclasses.field(default=default, metadata=meta)


def flag_name(field: dataclasses.Field) -> str:
    """``--batch-size`` for ``batch_size`` (or the field's ``flag`` metadata)."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def config_fields(config_class: type) -> List[dataclasses.Field]:
    """The fields of a config dataclass in the order its flags are listed: the class's
    ``FIELD_ORDER`` names first (a subclass's own fields between the shared ones, as ``--help``
    always showed them), then any other field in declaration order."""
    fields = list(dataclasses.fields(config_class))
    order = {name: i for i, name in enumerate(getattr(config_class, "FIELD_ORDER", ()))}
    return sorted(fields, key=lambda f: (0, order[f.name]) if f.name in order else (1, fields.index(f)))


def allowed_range(meta: Mapping[str, Any]) -> str:
    """``[0, 1)``-style text of a field's bounds ("" when unbounded)."""
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    return (("(" if meta.get("low_open") or low is None else "[") + ("-inf" if low is None else f"{low:g}") + ", "
            + ("inf" if high is None else f"{high:g}") + (")" if meta.get("high_open") or high is None else "]"))


def _in_range(value: float, meta: Mapping[str, Any]) -> bool:
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        return False
    if high is not None and (value > high or (meta.get("high_open") and value == high)):
        return False
    return True


def check_field(field: dataclasses.Field, value: Any) -> None:
    """Raise ``ValueError("--flag: ...")`` when ``value`` is outside the field's range or choices."""
    meta = field.metadata
    if value is None:
        return
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
        if meta.get("choices") and v not in meta["choices"]:
            raise ValueError(f"{flag_name(field)}: {v!r} is not one of {', '.join(meta['choices'])}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not _in_range(v, meta):
            raise ValueError(f"{flag_name(field)}: {v:g} is outside the allowed range {allowed_range(meta)}")


def _argparse_type(field: dataclasses.Field) -> Callable[[str], Any]:
    meta = field.metadata
    kind = meta["kind"] or str

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        try:
            check_field(field, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type,
                         exclude: Iterable[str] = (), defaults: Optional[Any] = None,
                         group_title: Optional[str] = None) -> None:
    """Add one flag per command-line field of ``config_class`` (a dataclass built with
    :func:`option`), all with ``default=argparse.SUPPRESS`` so the namespace holds only what was
    given. ``defaults`` (an instance) supplies the values shown in the help."""
    exclude = set(exclude)
    target = parser.add_argument_group(group_title) if group_title else parser
    shown = defaults if defaults is not None else config_class()
    for field in config_fields(config_class):
        meta = field.metadata
        if not meta.get("cli", False) or field.name in exclude:
            continue
        help_text = meta.get("help", "")
        default = getattr(shown, field.name)
        extra = []
        if allowed_range(meta):
            extra.append("range " + allowed_range(meta))
        if not isinstance(default, bool) and default is not None and field.name not in RECIPE_FIELDS:
            extra.append(f"default {' '.join(map(str, default)) if isinstance(default, tuple) else default}")
        if meta.get("resumable"):
            extra.append("may change on --resume")
        if extra:
            help_text = f"{help_text} ({'; '.join(extra)})" if help_text else "; ".join(extra)
        help_text = help_text.replace("%", "%%")
        if meta.get("kind") is bool:
            # on / off / unset (None: decided at run time): --channels-last, --no-channels-last
            target.add_argument(flag_name(field), dest=field.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
            continue
        if isinstance(default, bool):
            # a switch: the flag sets the opposite of the default (--sam, --no-progress)
            action = "store_false" if default else "store_true"
            target.add_argument(flag_name(field), dest=field.name, action=action, default=argparse.SUPPRESS,
                                help=help_text)
            continue
        metavar = "{" + ",".join(meta["choices"]) + "}" if meta.get("choices") else field.name.upper()
        target.add_argument(flag_name(field), dest=field.name, type=_argparse_type(field),
                            nargs=meta.get("nargs"), default=argparse.SUPPRESS, metavar=metavar, help=help_text)


def given_options(namespace: argparse.Namespace, config_class: type) -> Dict[str, Any]:
    """The fields of ``config_class`` present in ``namespace`` (i.e. given on the command line),
    with ``nargs`` lists turned into tuples."""
    names = {f.name for f in dataclasses.fields(config_class)}
    out = {}
    for key, value in vars(namespace).items():
        if key in names:
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


def default_workers(local_world_size: Optional[int] = None) -> int:
    """DataLoader workers per process: the CPUs this process may use (its affinity mask, so a
    container's or ``taskset``'s limit counts) shared among the processes of this node
    (``LOCAL_WORLD_SIZE``, set by torchrun), at most :data:`MAX_DEFAULT_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    if local_world_size is None:
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(0, min(MAX_DEFAULT_WORKERS, cpus // max(1, local_world_size)))


@dataclasses.dataclass
class BaseTrainConfig:
    """The options every training task shares: data, optimizer, schedule, SAM, AMP, workers, run
    folder, resume, evaluation and checkpoint cadence, device, progress.

    A task's config subclasses it (:class:`TrainConfig`, ``RecognitionConfig``), re-declares a
    shared field with :func:`shared_option` only to give it another default or help, adds its own
    fields, and lists in ``FIELD_ORDER`` the order of its ``--help``. :meth:`resolved` fills the
    ``None`` defaults a task decides at run time (the base's has none).
    """

    #: Flag order in ``--help`` (:func:`config_fields`); fields not named follow in declaration order.
    FIELD_ORDER: ClassVar[Tuple[str, ...]] = ()
    #: Options that describe this machine or invocation, not the run: re-derived when resuming.
    MACHINE_FIELDS: ClassVar[Tuple[str, ...]] = ("resume", "overwrite", "workers", "prefetch_factor", "progress")

    data: str = option(SYNTHETIC_DATA, "training data, or 'synthetic' (a built-in generated set)", kind=str)
    optimizer: Optional[str] = option("sgd", "optimizer", kind=str, choices=OPTIMIZERS)
    lr: Optional[float] = option(0.01, "learning rate", kind=float, low=0, low_open=True)
    momentum: float = option(0.9, "SGD / SGDP momentum", kind=float, low=0, high=1, high_open=True)
    weight_decay: float = option(5e-4, "weight decay", kind=float, low=0)
    epochs: Optional[int] = option(10, "epochs", kind=int, low=1, resumable=True)
    batch_size: Optional[int] = option(32, "global batch size, split over processes", kind=int, low=1)
    schedule: Optional[str] = option("cosine", "learning-rate schedule", kind=str, choices=SCHEDULES)
    decay_epochs: Optional[Tuple[int, ...]] = option((), "step schedule: epochs where lr is multiplied by --gamma",
                                                     kind=int, low=1, nargs="+")
    gamma: float = option(0.1, "step schedule: lr factor at each decay epoch", kind=float, low=0, high=1,
                          low_open=True)
    warmup_epochs: Optional[float] = option(0.0, "linear warm-up length in epochs, may be fractional", kind=float,
                                            low=0)
    min_lr: float = option(0.0, "floor of the schedule, below --lr", kind=float, low=0)
    sam: bool = option(False, "wrap the optimizer in Sharpness-Aware Minimization")
    sam_rho: float = option(0.05, "SAM neighbourhood radius", kind=float, low=0, low_open=True)
    sam_adaptive: bool = option(False, "adaptive SAM (ASAM)")
    grad_clip: Optional[float] = option(None, "clip the gradient norm to this", kind=float, low=0, low_open=True)
    workers: Optional[int] = option(None, "DataLoader workers per process (default: this process's share of the "
                                    "CPUs)", kind=int, low=0, resumable=True)
    output: Optional[str] = option(None, "run folder; one that holds a run is refused without --resume or "
                                   "--overwrite", kind=str, resumable=True)
    overwrite: bool = option(False, "replace the run in --output", resumable=True)
    resume: Optional[str] = option(None, "a last.pth / epoch_NNN.pth to continue from; flags not given take "
                                   "its run's settings", kind=str, resumable=True)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...", kind=str, resumable=True)
    amp: bool = option(False, "mixed precision (bf16, or fp16 with a loss scaler)")
    seed: int = option(0, "random seed of sampling, augmentation and initialisation", kind=int)
    eval_every: Optional[int] = option(1, "evaluation every K epochs (and after the last), 0 never", kind=int,
                                       low=0, resumable=True)
    save_every: int = option(0, "epoch_NNN.pth every N epochs, every N//2 after the first step decay; 0 none",
                             kind=int, low=0, resumable=True)
    max_steps_per_epoch: Optional[int] = option(None, "cut epochs short (smoke tests)", kind=int, low=1)
    progress: bool = option(True, "progress bars", flag="--no-progress", resumable=True)

    def resolved(self) -> "BaseTrainConfig":
        """A validated copy with the defaults decided at run time filled in (none here)."""
        self.validate()
        return dataclasses.replace(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag and its allowed range for any impossible value."""
        for field in config_fields(type(self)):
            check_field(field, getattr(self, field.name))
        if self.lr is not None and self.min_lr > 0 and self.min_lr >= self.lr:
            raise ValueError(f"--min-lr: {self.min_lr:g} must be below --lr ({self.lr:g})")

    def to_dict(self) -> Dict[str, Any]:
        """Plain values (tuples as lists), as checkpoints save them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "BaseTrainConfig":
        """The config of saved or given ``values``; keys that are not fields (an option a later
        version dropped) are ignored, lists become the tuples of ``nargs`` fields."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in fields}
        for key, value in kept.items():
            if fields[key].metadata.get("nargs") and value is not None:
                kept[key] = tuple(value)
        return cls(**kept)


_SHARED_FIELDS: Dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(BaseTrainConfig)}


def shared_option(name: str, default: Any = dataclasses.MISSING, help: Optional[str] = None) -> Any:
    """The :class:`BaseTrainConfig` field ``name`` re-declared in a subclass with another
    ``default`` and / or ``help``; its kind, range, choices and resume rule stay the base's."""
    base = _SHARED_FIELDS[name]
    meta = dict(base.metadata)
    if help is not None:
        meta["help"] = help
    return dataclasses.field(default=base.default if default is dataclasses.MISSING else default, metadata=meta)


@dataclasses.dataclass
class TrainConfig(BaseTrainConfig):
    """Everything a detection training run needs; ``None`` means "the recipe's default for this
    backbone".

    Each field's metadata holds its help text, its range and whether a resumed run may change it;
    the ``retinaface train`` flags are generated from them (:func:`add_config_arguments`).
    """

    FIELD_ORDER: ClassVar[Tuple[str, ...]] = (
        "data", "backbone", "pretrained", "backbone_weights", "fpn_width", "optimizer", "lr", "momentum",
        "weight_decay", "epochs", "batch_size", "image_size", "schedule", "decay_epochs", "gamma", "warmup_epochs",
        "min_lr", "sam", "sam_rho", "sam_adaptive", "neg_pos_ratio", "grad_clip", "workers", "prefetch_factor",
        "output", "overwrite", "resume", "device", "normalize_on_device", "amp", "amp_dtype", "sync_bn",
        "channels_last", "seed", "skip_bad", "eval_every", "gt", "save_every", "max_steps_per_epoch", "progress",
        "synthetic_train", "synthetic_val")

    data: str = shared_option("data", help="data root (either WIDER layout) or 'synthetic'")
    optimizer: Optional[str] = shared_option("optimizer", None, "optimizer (default: the recipe's)")
    lr: Optional[float] = shared_option("lr", None, "learning rate (default: the recipe's)")
    epochs: Optional[int] = shared_option("epochs", None, "epochs (default: the recipe's)")
    batch_size: Optional[int] = shared_option("batch_size", None, "global batch size, split over processes "
                                              "(default: the recipe's)")
    schedule: Optional[str] = shared_option("schedule", None, "learning-rate schedule (default: the recipe's)")
    decay_epochs: Optional[Tuple[int, ...]] = shared_option("decay_epochs", None, "step schedule: epochs where lr "
                                                            "is multiplied by --gamma (default: the recipe's)")
    warmup_epochs: Optional[float] = shared_option("warmup_epochs", None, "linear warm-up length in epochs, may be "
                                                   "fractional (default: the recipe's)")
    workers: Optional[int] = shared_option("workers", help="DataLoader workers per process (default: this "
                                           f"process's share of the CPUs, at most {MAX_DEFAULT_WORKERS})")
    output: Optional[str] = shared_option("output", help=f"run folder (default {DEFAULT_OUTPUT}, or "
                                          f"{DEFAULT_OUTPUT}2, {DEFAULT_OUTPUT}3, ... when that holds a run); a "
                                          "folder that holds a run is refused without --resume or --overwrite")
    eval_every: Optional[int] = shared_option(
        "eval_every", None, "WIDER AP on the val split every K epochs, 0 never (default: at the end for synthetic "
        "data; 5 times a run when DATA has val/ground_truth; else never); the best epoch's PR curves go to "
        "pr_best.png")
    save_every: int = shared_option("save_every", 10)

    backbone: str = option("mobilenet0.25", "backbone name (retinaface.list_backbones())", kind=str)
    pretrained: bool = option(False, "start from ImageNet weights (timm's; mobilenet0.25: the zoo's "
                                     "mobilenet0.25-imagenet, SHA-256 checked)")
    backbone_weights: Optional[str] = option(None, "ImageNet weights for the backbone: a local file or a zoo name",
                                             kind=str)
    fpn_width: Optional[int] = option(None, "FPN / SSH channels (default: the backbone's)", kind=int, low=1)
    image_size: Optional[int] = option(None, "square training crop size in pixels (default: the recipe's)",
                                       kind=int, low=32)
    neg_pos_ratio: int = option(7, "hard negatives kept per positive prior", kind=int, low=1)
    prefetch_factor: Optional[int] = option(None, "batches each worker loads ahead (default: torch's, 2)",
                                            kind=int, low=1, resumable=True)
    normalize_on_device: Optional[bool] = option(
        None, "workers hand over uint8 images and the mean is subtracted on the training device (a quarter "
        "of the bytes through shared memory and the host-to-device copy, less work per worker, the same "
        "float32 batches); default: on for CUDA, off for CPU training (there the workers run beside the "
        "step)", kind=bool, resumable=True)
    amp_dtype: str = option("auto", "mixed-precision type", kind=str, choices=("auto", "bf16", "fp16"))
    sync_bn: bool = option(False, "SyncBatchNorm across processes (CUDA)")
    channels_last: Optional[bool] = option(
        None, "NHWC (channels-last) weights and batches; default: on for CPU training when every batch norm "
        "is a plain BatchNorm2d (then trained with exact statistics; 1.5x faster steps at batch 32, 640 px, "
        "the same AP over 8 seeds: benchmarks/bench_channels_last.py), else off", kind=bool)
    skip_bad: bool = option(False, "skip missing / undecodable images instead of stopping", resumable=True)
    gt: Optional[str] = option(None, "val ground-truth .mat folder (default DATA/val/ground_truth)", kind=str,
                               resumable=True)
    synthetic_train: int = option(400, "synthetic data: training images", kind=int, low=1)
    synthetic_val: int = option(100, "synthetic data: val images", kind=int, low=1)

    def resolved(self) -> "TrainConfig":
        """A validated copy with every ``None`` default filled from the recipe (synthetic data has
        its own) and ``workers`` from the CPUs of this process."""
        self.validate()
        recipe = reference_recipe(self.backbone)
        if self.data == SYNTHETIC_DATA:
            recipe.update(SYNTHETIC_RECIPE)
        values = dataclasses.asdict(self)
        for key in RECIPE_FIELDS:
            if values[key] is None:
                values[key] = recipe[key]
        values["decay_epochs"] = tuple(int(e) for e in values["decay_epochs"])
        if values["eval_every"] is None:
            # the synthetic set exists to show the whole loop: its AP is printed at the end
            # real data with ground truth: AP during the run (the best checkpoint is chosen by it)
            has_gt = self.data != SYNTHETIC_DATA and (Path(self.gt) if self.gt else
                                                     Path(self.data) / VAL_GROUND_TRUTH).is_dir()
            values["eval_every"] = (values["epochs"] if self.data == SYNTHETIC_DATA else
                                    max(1, values["epochs"] // 5) if has_gt else 0)
        if values["workers"] is None:
            values["workers"] = default_workers()
        out = TrainConfig(**values)
        out.validate()
        return out

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag and its allowed range for any impossible value."""
        super().validate()
        if self.prefetch_factor is not None and self.workers == 0:
            raise ValueError("--prefetch-factor: needs --workers of at least 1 (data is loaded in the "
                             "main process with --workers 0)")


def config_field_table(config_class: type) -> Dict[str, dataclasses.Field]:
    """``{name: field}`` of a config class, in flag order."""
    return {f.name: f for f in config_fields(config_class)}


def changeable_on_resume(config_class: type) -> Tuple[str, ...]:
    """What ``--help`` lists as "may change on resume" (``--resume`` / ``--overwrite`` are not settings)."""
    return tuple(name for name, f in config_field_table(config_class).items()
                 if f.metadata.get("resumable") and name not in ("resume", "overwrite"))


TRAIN_FIELDS: Dict[str, dataclasses.Field] = config_field_table(TrainConfig)
RESUMABLE_FIELDS: Tuple[str, ...] = tuple(name for name, f in TRAIN_FIELDS.items() if f.metadata["resumable"])
CHANGEABLE_ON_RESUME: Tuple[str, ...] = changeable_on_resume(TrainConfig)
MACHINE_FIELDS: Tuple[str, ...] = BaseTrainConfig.MACHINE_FIELDS


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def resume_conflicts(options: Mapping[str, Any], saved: Mapping[str, Any],
                     config_class: type = TrainConfig) -> list:
    """``(field, given, saved)`` for every non-resumable option in ``options`` that differs from
    the resumed run's saved settings (``None`` in ``options`` stands for "the recipe's", which
    the saved, resolved value already is)."""
    fields = config_field_table(config_class)
    out = []
    for key, value in options.items():
        field = fields.get(key)
        if (field is not None and field.metadata.get("resumable")) or key not in saved or value is None:
            continue
        if not _same(value, saved[key]):
            out.append((key, value, saved[key]))
    return out


def describe_conflict(key: str, given: Any, saved: Any, resume: str, config_class: type = TrainConfig) -> str:
    fields = config_field_table(config_class)

    def show(v: Any) -> str:
        return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    return (f"{flag_name(fields[key])} {show(given)} contradicts the resumed run ({resume} was trained "
            f"with {show(saved)}); leave it out to continue that run, or start a new run. Options that may "
            f"change on resume: {', '.join(flag_name(fields[k]) for k in changeable_on_resume(config_class))}")


def merge_resume(given: Mapping[str, Any], saved: Mapping[str, Any],
                 config_class: type = TrainConfig) -> Dict[str, Any]:
    """``config_class`` keyword arguments for resuming: the ``given`` options (from the command
    line) over the resumed run's ``saved`` settings, except those that describe the machine rather
    than the run (``MACHINE_FIELDS``: workers, progress, ...), which take this invocation's. Raises
    ``ValueError`` for a given option that contradicts the saved run and may not change on resume."""
    conflicts = resume_conflicts(given, saved, config_class)
    if conflicts:
        raise ValueError(describe_conflict(*conflicts[0], given.get("resume", ""), config_class=config_class))
    fields = config_field_table(config_class)
    machine = getattr(config_class, "MACHINE_FIELDS", MACHINE_FIELDS)
    merged = {k: v for k, v in saved.items() if k in fields and k not in machine}
    for key, value in merged.items():
        if fields[key].metadata.get("nargs") and value is not None:
            merged[key] = tuple(value)
    merged.update(given)
    return merged
