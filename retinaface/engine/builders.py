"""What a training run is built from, each a function of the config: the detection data
(:func:`build_data`) and network (:func:`prepare_model`: channels-last, SyncBatchNorm), and for any
task the optimization (:func:`build_optimization`: optimizer, SAM, schedule; :func:`amp_dtype`).

:class:`~retinaface.engine.detection_task.DetectionTask` and the
:class:`~retinaface.engine.trainer.Trainer` call them; they hold no loop state.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..deploy.batch_norm import batch_norms_all_convertible, convert_channels_last_batch_norm
from ..build import create_model
from ..checkpoint import split_checkpoint
from ..config import ModelConfig
from ..data import MeanSubtractingLoader, TrainTransform, WiderFaceTrainDataset, detection_collate, worker_init_fn
from ..data.labels import load_training_annotations
from ..data.synthetic import generate_synthetic_widerface
from .config import SYNTHETIC_DATA, BaseTrainConfig, TrainConfig
from .distributed import DistInfo, barrier
from .optim import SAM, build_optimizer, build_scheduler
from .task import TrainData, steps_per_epoch  # noqa: F401 (TrainData re-exported: benchmarks build it)

logger = logging.getLogger(__name__)

SYNTHETIC_ROOT = Path("data/synthetic")


# --------------------------------------------------------------------------- data
def data_root(cfg: TrainConfig, dist: DistInfo) -> Path:
    """``cfg.data``, or the built-in synthetic set (generated once, by the main process)."""
    if cfg.data != SYNTHETIC_DATA:
        return Path(cfg.data)

    if dist.is_main:
        generate_synthetic_widerface(SYNTHETIC_ROOT, num_train=cfg.synthetic_train, num_val=cfg.synthetic_val,
                                     seed=0)
    barrier(dist)
    return SYNTHETIC_ROOT


def loader_options(cfg: TrainConfig, device: torch.device) -> Dict[str, Any]:
    """DataLoader keyword arguments for ``device``: pinned host memory on CUDA (so the trainer's
    ``non_blocking`` copies overlap the step), persistent workers and the prefetch factor when
    there are workers. On a CPU the batches are used where they are: nothing is pinned."""
    options: Dict[str, Any] = dict(num_workers=cfg.workers, pin_memory=device.type == "cuda")
    if cfg.workers > 0:
        options["persistent_workers"] = True
        if cfg.prefetch_factor is not None:
            options["prefetch_factor"] = cfg.prefetch_factor
    return options


def uses_device_normalization(cfg: TrainConfig, device: torch.device) -> bool:
    """uint8 batches from the workers, the mean subtracted on ``device``: as asked, else on CUDA
    (the host's cores feed the GPUs and the bytes cross PCIe; on a GPU the subtraction is
    negligible). On CPU training the workers run beside the step, so they keep the subtraction."""
    if cfg.normalize_on_device is not None:
        return cfg.normalize_on_device
    return device.type == "cuda"


def build_data(cfg: TrainConfig, dist: DistInfo, device: torch.device) -> TrainData:
    """Labels read and every image checked up front (size, decodability, boxes inside), then the
    data set, its distributed sampler and the loader of this process."""
    root = data_root(cfg, dist)
    annotations, stats = load_training_annotations(root, check=True, skip_bad=cfg.skip_bad)
    if not annotations:
        raise ValueError(f"{root}: no training images")
    uint8_batches = uses_device_normalization(cfg, device)
    dataset = WiderFaceTrainDataset(annotations, TrainTransform(cfg.image_size, normalize=not uint8_batches),
                                    seed=cfg.seed)
    # one sampler for 1..N processes: its permutation depends only on (seed, epoch)
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                 seed=cfg.seed)
    per_rank = max(1, cfg.batch_size // dist.world_size)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler,
                        collate_fn=detection_collate,
                        worker_init_fn=worker_init_fn, drop_last=False, **loader_options(cfg, device))
    if uint8_batches:
        loader = MeanSubtractingLoader(loader, dataset.transform.rgb_mean, device)
    return TrainData(root, dataset, sampler, loader, steps_per_epoch(loader, cfg.max_steps_per_epoch),
                     getattr(stats, "num_skipped_bad", 0))


# --------------------------------------------------------------------------- model
def initial_model(cfg: TrainConfig, resume_state: Optional[Dict[str, Any]]) -> nn.Module:
    """A fresh model from the config, or the resumed run's architecture with its weights."""
    if resume_state is not None:
        config, _ = split_checkpoint(resume_state)
        model = create_model(config)
        model.load_state_dict(resume_state["model"])
        return model
    overrides = {} if cfg.fpn_width is None else {"fpn_width": cfg.fpn_width}
    return create_model(ModelConfig(backbone=cfg.backbone, **overrides), pretrained=cfg.pretrained,
                        backbone_weights=cfg.backbone_weights)


def uses_channels_last(cfg: TrainConfig, device: torch.device, model: nn.Module) -> bool:
    """NHWC batches: as asked, else on CPU for models whose batch norms are all plain BatchNorm2d
    (those become :class:`~retinaface.deploy.batch_norm.ChannelsLastBatchNorm2d`). There NHWC
    steps are 1.5x faster at batch 32, 640 px, and trained to the same AP as NCHW over 8 seeds
    (benchmarks/bench_channels_last.py); on CUDA it is unmeasured, so opt-in."""
    if cfg.channels_last is not None:
        return cfg.channels_last
    return device.type == "cpu" and batch_norms_all_convertible(model)


def to_channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` (in place) as NHWC training runs it: channels-last weights (no layout change per
    conv) and, on CPU, :class:`~retinaface.deploy.batch_norm.ChannelsLastBatchNorm2d` for every plain
    batch norm: PyTorch's CPU kernel sums NHWC statistics carelessly (at batch 32, 640 px running
    statistics end 0.1 off float64), this one as exactly as NCHW."""
    model.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        convert_channels_last_batch_norm(model)
    return model


def prepare_model(cfg: TrainConfig, dist: DistInfo, device: torch.device, model: Optional[nn.Module] = None,
                  resume_state: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The network on ``device`` as it trains (``model`` if given, e.g. an adaptive one; resumed
    weights loaded into it): channels-last when :func:`uses_channels_last`, SyncBatchNorm when
    asked for on CUDA under torchrun. The trainer wraps it in DistributedDataParallel."""
    if model is None:
        model = initial_model(cfg, resume_state)
    elif resume_state is not None:
        model.load_state_dict(resume_state["model"])
    model.to(device)
    if uses_channels_last(cfg, device, model):
        to_channels_last(model, device)  # the detection task restores plain BatchNorm2d when the run ends
        if device.type == "cpu" and not batch_norms_all_convertible(model) and dist.is_main:
            logger.warning("--channels-last: this model's fused or width-switchable batch norms keep "
                           "PyTorch's CPU NHWC kernel, whose statistics are less exact than in NCHW")
    if dist.enabled and cfg.sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif dist.is_main:
            # torch's SyncBatchNorm runs on CUDA only; gloo runs keep per-process statistics
            logger.warning("--sync-bn ignored: SyncBatchNorm needs CUDA devices (running on %s)", device.type)
    return model


# --------------------------------------------------------------------------- optimization
def amp_dtype(cfg: BaseTrainConfig, device: torch.device) -> Optional[torch.dtype]:
    """The autocast type: None without ``--amp``; bf16 on CPU (what CPU autocast supports) and
    on GPUs that have it, unless fp16 is asked for (``--amp-dtype``, where a task has that option)."""
    if not cfg.amp:
        return None
    if device.type != "cuda":
        return torch.bfloat16
    wanted = getattr(cfg, "amp_dtype", "auto")
    if wanted == "auto":
        wanted = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return torch.bfloat16 if wanted == "bf16" else torch.float16


def build_optimization(cfg: BaseTrainConfig, trainable: nn.Module, steps: int) -> Tuple[Any, Any]:
    """``(optimizer, scheduler)``: the optimizer over ``trainable``'s parameters, SAM-wrapped with
    ``--sam``, and its per-step schedule (warm-up, step or cosine decay) over ``steps`` steps an epoch."""
    base = build_optimizer(cfg.optimizer, trainable, cfg.lr, cfg.momentum, cfg.weight_decay)
    optimizer = SAM(base, rho=cfg.sam_rho, adaptive=cfg.sam_adaptive) if cfg.sam else base
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.epochs, steps, cfg.decay_epochs,
                                cfg.gamma, cfg.warmup_epochs, cfg.min_lr)
    return optimizer, scheduler
