"""Dense-landmark training as a task of the one :class:`~retinaface.engine.trainer.Trainer`: face
crops (:mod:`.crop`'s policy) with their points in, a regression loss on normalised crop
coordinates, NME / FR@0.1 / AUC@0.1 on a held-out split, and checkpoints that rebuild the network
(:func:`load_landmark_model`).

Data: a WFLW list, a folder of 300W ``.pts`` files, or the built-in synthetic faces
(:mod:`.synthetic`, generated once under ``data/synthetic_landmarks/<train>-<val>/``: a train split
of seed 0 and a val split of seed 1, written in the WFLW layout).

Reproducibility: the epoch's sample order is a function of (seed, epoch)
(:class:`~retinaface.engine.task.EpochSampler`) and every sample's augmentation of
(seed, epoch, index) (:class:`LandmarkCrops`), independent of the worker count, so a run resumed
from an epoch checkpoint repeats the uninterrupted run's losses.

The loss follows the network's kind (``model.kind``, :mod:`.models`). A regressor's
(:func:`landmark_loss`), per coordinate, averaged over the marked points:

* ``wing`` (Feng et al., "Wing Loss for Robust Facial Landmark Localisation with Convolutional
  Neural Networks", CVPR 2018, eq. 5): ``w ln(1 + |x| / eps)`` for ``|x| < w``, else ``|x| - C``
  with ``C = w - w ln(1 + w / eps)``; ``w = 10``, ``eps = 2`` as the paper, whose errors are in
  pixels, so ``x`` here is the error in pixels of the network's input crop;
* ``l1`` / ``mse``: the error in normalised crop coordinates (0 to 1 across the crop).

A heatmap model's (:func:`heatmap_loss`, PIPNet's, :mod:`.heatmap` for the encoding):
``10 x score + offsets + neighbours`` (the paper's weights: score 10, offsets 1), where ``score`` is
the mean squared error (or the binary cross-entropy on logits) of each marked point's score map
against 1 at its cell and 0 elsewhere, averaged over the map's cells and the points; ``offsets`` the
L1 (or squared) error of the x and y offsets predicted at the point's own cell, summed over x and y
and averaged over the points; ``neighbours`` the same for the neighbour offsets, averaged over the
(point, neighbour) pairs whose both points are marked. The neighbours are each point's nearest
points on the training set's mean face (:func:`mean_shape`), set when the task builds the network
and saved in its checkpoints.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import read_checkpoint
from ..engine.task import RunningTrainer, Task, TaskModel, TrainData, epoch_loader
from ..fileio import atomic_torch_save
from .adaptive import AdaptiveLandmarkRegressor, build_landmark_network
from .config import DEFAULT_OUTPUT, DEFAULT_SCHEME, SYNTHETIC_DATA, LandmarkConfig, synthetic_root
from .crop import AugmentConfig, CropTransform, augment_face, crop_transform
from .evaluate import LandmarkEvaluation, evaluate_landmarks
from .formats import LandmarkSample, read_aflw2000_mat, read_landmarks, read_pts, read_wflw_list
from .metrics import points_box
from .heatmap import HeatmapOutput, cell_targets, decode_points, gather_cells, score_targets
# normalise_crops and predict_crops live beside the networks (LandmarkNetwork.landmarks_in_boxes runs
# them); imported here for the task and under their old names
from .models import LandmarkNetwork, create_landmark_model, normalise_crops, predict_crops
from .runtime import LandmarkOnnxModel, is_onnx_file, load_landmark_onnx
from .schemes import LandmarkScheme, get_scheme
from .synthetic import write_synthetic_landmarks

PathLike = Union[str, "os.PathLike[str]"]

LANDMARK_FORMAT = "retinaface-landmarks"
WING_WIDTH = 10.0
WING_EPSILON = 2.0
FAILURE_THRESHOLD = 0.1
# PIPNet's loss weights (its cls_loss_weight and reg_loss_weight)
SCORE_WEIGHT = 10.0
OFFSET_WEIGHT = 1.0


# ---------------------------------------------------------------------------------------------
# Losses


def wing_loss(error: torch.Tensor, width: float = WING_WIDTH, epsilon: float = WING_EPSILON) -> torch.Tensor:
    """Elementwise wing loss of ``error`` (Feng et al. 2018, eq. 5; see the module docstring)."""
    magnitude = error.abs()
    offset = width - width * math.log(1.0 + width / epsilon)  # C: joins the two pieces at |x| = w
    return torch.where(magnitude < width, width * torch.log1p(magnitude / epsilon), magnitude - offset)


class LandmarkLoss(NamedTuple):
    """A step's loss: ``total`` (backpropagated) and ``pixel_error``, the mean point error in pixels
    of the input crop (logged only)."""

    total: torch.Tensor
    pixel_error: torch.Tensor


def landmark_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  input_size: int) -> LandmarkLoss:
    """The ``kind`` loss (``wing``, ``l1``, ``mse``) of normalised predictions ``(B, K, 2)`` against
    normalised targets, over the points ``mask`` ``(B, K)`` marks. No host read."""
    pred = pred.float()
    weights = mask.to(pred.dtype)
    count = weights.sum().clamp_min(1.0)
    error = pred - target
    if kind == "wing":
        per_coordinate = wing_loss(error * input_size)
    elif kind == "l1":
        per_coordinate = error.abs()
    elif kind == "mse":
        per_coordinate = error.square()
    else:
        raise ValueError(f"unknown landmark loss {kind!r}; choose wing, l1 or mse")
    total = (per_coordinate.sum(dim=-1) * weights).sum() / (2.0 * count)
    return LandmarkLoss(total, pixel_error(pred, target, weights, input_size))


def pixel_error(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, input_size: int) -> torch.Tensor:
    """The mean distance in input pixels between normalised ``pred`` and ``target`` ``(B, K, 2)``
    over the points ``weights`` ``(B, K)`` marks (no gradient)."""
    return (((pred.detach() - target).norm(dim=-1) * input_size * weights).sum() / weights.sum().clamp_min(1.0))


class HeatmapLoss(NamedTuple):
    """A heatmap model's step loss: ``total`` (backpropagated), its unweighted ``score``, ``offset``
    and ``neighbour`` terms and the decoded points' ``pixel_error`` (logged only)."""

    total: torch.Tensor
    score: torch.Tensor
    offset: torch.Tensor
    neighbour: torch.Tensor
    pixel_error: torch.Tensor


def heatmap_loss(outputs: HeatmapOutput, target: torch.Tensor, mask: torch.Tensor, neighbour_index: torch.Tensor,
                 score_loss: str = "mse", offset_loss: str = "l1", input_size: int = 256) -> HeatmapLoss:
    """PIPNet's loss (the module docstring) of a heatmap model's training ``outputs`` for normalised
    ``target`` points ``(B, K, 2)``, over the points ``mask`` ``(B, K)`` marks; ``neighbour_index``
    ``(K, N)`` is the model's. No host read."""
    outputs = HeatmapOutput(*(t.float() for t in outputs))
    _, _, height, width = outputs.scores.shape
    weights = mask.to(outputs.scores.dtype)
    count = weights.sum().clamp_min(1.0)
    ideal = cell_targets(target, neighbour_index, height, width)
    expected = score_targets(ideal.cell, height, width, outputs.scores.dtype)
    if score_loss == "mse":
        per_cell = (outputs.scores - expected).square()
    elif score_loss == "bce":
        per_cell = F.binary_cross_entropy_with_logits(outputs.scores, expected, reduction="none")
    else:
        raise ValueError(f"unknown score map loss {score_loss!r}; choose mse or bce")
    score = (per_cell.mean(dim=(2, 3)) * weights).sum() / count
    if offset_loss == "l1":
        distance = torch.abs
    elif offset_loss == "mse":
        distance = torch.square
    else:
        raise ValueError(f"unknown offset loss {offset_loss!r}; choose l1 or mse")
    # the offsets predicted at each point's own cell (PIPNet trains no other cell's)
    own = torch.stack([gather_cells(outputs.offset_x, ideal.cell), gather_cells(outputs.offset_y, ideal.cell)], -1)
    offset = (distance(own - ideal.offset).sum(dim=-1) * weights).sum() / count
    votes = torch.stack([gather_cells(outputs.neighbour_x, ideal.cell),
                         gather_cells(outputs.neighbour_y, ideal.cell)], -1)          # (B, K, N, 2)
    pair_weights = weights[:, :, None] * weights[:, neighbour_index]                  # both points marked
    neighbour = ((distance(votes - ideal.neighbour).sum(dim=-1) * pair_weights).sum()
                 / pair_weights.sum().clamp_min(1.0))
    total = SCORE_WEIGHT * score + OFFSET_WEIGHT * (offset + neighbour)
    decoded = decode_points(HeatmapOutput(*(t.detach() for t in outputs)), neighbour_index)
    return HeatmapLoss(total, score, offset, neighbour, pixel_error(decoded, target, weights, input_size))


# ---------------------------------------------------------------------------------------------
# Data


def default_image_root(list_path: Path) -> Path:
    """Where a WFLW list's image paths start: ``images/`` beside it when present, else its folder."""
    beside = list_path.parent / "images"
    return beside if beside.is_dir() else list_path.parent


def load_samples(spec: PathLike, image_root: Optional[PathLike] = None, aflw_points: str = "pt2d"
                 ) -> List[LandmarkSample]:
    """The faces of a WFLW list, a folder of 300W ``.pts`` files or of AFLW2000-3D ``.mat`` files
    (searched recursively, sorted; ``aflw_points``: ``pt2d`` or ``pt3d_68``), or any file
    :func:`~retinaface.landmarks.formats.read_landmarks` reads (a COFW ``.mat``). Malformed files
    raise :class:`~retinaface.landmarks.formats.LandmarkFormatError` naming ``file:line``."""
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such landmark file or folder")
    if path.is_dir():
        files = sorted(path.rglob("*.pts"))
        if files:
            return [read_pts(f, num_points=None) for f in files]
        mats = sorted(path.rglob("*.mat"))
        if not mats:
            raise FileNotFoundError(f"{path}: a folder without .pts or AFLW2000-3D .mat files")
        return [read_aflw2000_mat(f, points=aflw_points) for f in mats]
    if path.suffix.lower() == ".txt":
        return read_wflw_list(path, image_root=image_root if image_root is not None else default_image_root(path))
    return read_landmarks(path, image_root=image_root, aflw_points=aflw_points)


def synthetic_lists(config: LandmarkConfig, scheme: LandmarkScheme) -> Tuple[Path, Path]:
    """``(train list, val list)`` of the built-in synthetic faces for ``scheme`` (68 or 98 points),
    generated once: written into a temporary folder and renamed, so an interrupted generation is
    never taken for a finished one."""
    if scheme.num_points not in (68, 98):
        raise ValueError(f"--scheme: the synthetic faces have 68 (ibug68) or 98 (wflw98) points, not "
                         f"{scheme.name}")
    root = synthetic_root(config)
    if not (root / "val" / "list_98pt_rect_attr_val.txt").is_file():
        partial = root.with_name(root.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        write_synthetic_landmarks(partial / "train", config.synthetic_train, seed=0, split="train")
        write_synthetic_landmarks(partial / "val", config.synthetic_val, seed=1, split="val")
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(partial, root)
        except OSError:  # another run generated it meanwhile (the same faces: a function of the seeds)
            shutil.rmtree(partial, ignore_errors=True)
    return (root / "train" / f"list_{scheme.num_points}pt_rect_attr_train.txt",
            root / "val" / f"list_{scheme.num_points}pt_rect_attr_val.txt")


def read_image(sample: LandmarkSample) -> np.ndarray:
    """A sample's image as BGR uint8 (an embedded grey or RGB image, as COFW's, converted)."""
    if sample.image is not None:
        image = np.asarray(sample.image)
        if image.ndim == 2:
            return cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(image[..., ::-1]).astype(np.uint8)  # COFW stores RGB
    if sample.image_path is None:
        raise FileNotFoundError(f"{sample.source}: no image beside the annotation")
    image = cv2.imread(sample.image_path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{sample.source}: cannot read image {sample.image_path}")
    return image


def sample_box(sample: LandmarkSample) -> np.ndarray:
    """The face box to crop by: the annotation's, else the marked points' bounding box."""
    return sample.box if sample.box is not None else points_box(sample.points, sample.valid_mask())


class LandmarkCrops(Dataset):
    """``(crop uint8 (S, S, 3) BGR, points float32 (K, 2) normalised, mask bool (K,))`` per face:
    with ``augment`` the crop of sample ``i`` in epoch ``e`` is :func:`~retinaface.landmarks.crop.augment_face`
    under ``np.random.default_rng([seed, e, i])``; without, the plain crop of the policy."""

    def __init__(self, samples: Sequence[LandmarkSample], scheme: LandmarkScheme, size: int, margin: float,
                 augment: Optional[AugmentConfig], seed: int) -> None:
        self.samples, self.scheme, self.size, self.margin = list(samples), scheme, int(size), float(margin)
        self.augment, self.seed = augment, int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        sample = self.samples[index]
        image = read_image(sample)
        mask = sample.valid_mask().copy()
        points = np.where(mask[:, None], sample.points, 0.0)
        box = sample_box(sample)
        if self.augment is not None:
            rng = np.random.default_rng([abs(self.seed), self.epoch, int(index)])
            face = augment_face(image, points, box, self.size, self.scheme, rng, self.augment, self.margin)
            crop, moved, transform = face.crop, face.points, face.transform
            if face.flipped:
                mask = mask[list(self.scheme.mirror)]
        else:
            transform = crop_transform(box, self.size, self.margin)
            crop, moved = transform.warp(image), transform.to_crop(points)
        normalised = transform.normalise(moved)
        return np.ascontiguousarray(crop), normalised.astype(np.float32), mask


def collate_landmarks(batch):
    crops = torch.from_numpy(np.stack([b[0] for b in batch]))
    points = torch.from_numpy(np.stack([b[1] for b in batch]))
    masks = torch.from_numpy(np.stack([b[2] for b in batch]))
    return crops, points, masks


# ---------------------------------------------------------------------------------------------
# Prediction and checkpoints


def face_crops(samples: Sequence[LandmarkSample], size: int, margin: float
               ) -> Tuple[torch.Tensor, List[CropTransform]]:
    """The policy's crops of ``samples`` (uint8 ``(N, S, S, 3)``) and their maps."""
    crops, transforms = [], []
    for sample in samples:
        transform = crop_transform(sample_box(sample), size, margin)
        crops.append(transform.warp(read_image(sample)))
        transforms.append(transform)
    array = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return torch.from_numpy(array), transforms


def mean_shape(samples: Sequence[LandmarkSample], margin: float) -> np.ndarray:
    """``(K, 2)``: the mean of the samples' marked points in normalised crop coordinates of the
    crop policy (no augmentation); reads no image."""
    total, count = 0.0, 0
    for sample in samples:
        mask = sample.valid_mask()
        transform = crop_transform(sample_box(sample), 1, margin)
        points = transform.normalise(transform.to_crop(np.where(mask[:, None], sample.points, 0.0)))
        total = total + np.where(mask[:, None], points, 0.0)
        count = count + mask[:, None].astype(np.int64)
    if np.any(count == 0):
        raise ValueError("--data: a point is marked on none of the training faces; its mean position is unknown")
    return total / count


def predict_landmarks(model: LandmarkNetwork, samples: Sequence[LandmarkSample], margin: float = 0.1,
                      batch_size: int = 64) -> np.ndarray:
    """``(N, K, 2)`` predicted points of ``samples`` in their images' pixel coordinates: each face
    cropped by its box (the crop policy), predicted, mapped back with the crop's exact inverse."""
    crops, transforms = face_crops(samples, int(model.config.input_size), margin)
    normalised = predict_crops(model, crops, batch_size)
    return np.stack([t.normalised_to_image(p) for t, p in zip(transforms, normalised)])


def save_landmark_checkpoint(network: LandmarkNetwork, path: PathLike, scheme: str, crop_margin: float,
                             **state: Any) -> None:
    """``{"format": "retinaface-landmarks", "config": model config, "model": state dict, "scheme",
    "crop_margin", **state}`` written atomically (tensors and plain values only). A
    channel-prioritised network adds ``"adaptive"`` (its slicing description), a pruned plain one
    (a materialised width) ``"channels"`` (its shapes)."""
    payload = {"format": LANDMARK_FORMAT, "config": network.config.to_dict(), "model": network.state_dict(),
               "scheme": scheme, "crop_margin": float(crop_margin)}
    if getattr(network, "adaptive_spec", None):
        payload["adaptive"] = network.adaptive_spec
    elif getattr(network, "pruned_channels", None):
        payload["channels"] = network.pruned_channels
    atomic_torch_save({**payload, **state}, path)


def read_landmark_checkpoint(path: PathLike) -> Dict[str, Any]:
    """A landmark checkpoint (``torch.load(weights_only=True)``), checked to be one."""
    state = read_checkpoint(path)
    if state.get("format") != LANDMARK_FORMAT or "config" not in state or "model" not in state:
        raise ValueError(f"{path}: not a landmark checkpoint (format {state.get('format')!r}, expected "
                         f"{LANDMARK_FORMAT!r})")
    return state


def is_landmark_checkpoint(path: PathLike) -> bool:
    """Whether ``path`` is a file holding a landmark checkpoint (rather than a detector's)."""
    if not Path(path).is_file() or is_onnx_file(path):
        return False
    return read_checkpoint(path).get("format") == LANDMARK_FORMAT


def load_landmark_model(path: PathLike, device: Union[str, torch.device] = "cpu",
                        width: Optional[float] = None) -> Union[LandmarkNetwork, LandmarkOnnxModel]:
    """The network of a landmark checkpoint, in eval mode on ``device``; ``model.scheme`` and
    ``model.crop_margin`` say how it was trained (the crop policy to predict with). ``width`` runs a
    channel-prioritised checkpoint (``retinaface prioritize --task landmarks``) at that level in
    (0, 1]; a plain one runs at 1.0 only. An ``.onnx`` file exported from one
    (:mod:`~retinaface.landmarks.export`, float or INT8) loads as a
    :class:`~retinaface.landmarks.runtime.LandmarkOnnxModel` with the same members (at its one width)."""
    if is_onnx_file(path):
        if width is not None and float(width) != 1.0:
            raise ValueError(f"{path}: an exported landmark file runs at the width it was exported at; "
                             f"export that width instead of passing width {width:g}")
        return load_landmark_onnx(path, device)
    state = read_landmark_checkpoint(path)
    model = build_landmark_network(state["config"], state.get("adaptive"), state.get("channels"))
    model.load_state_dict(state["model"])
    if width is not None:
        if isinstance(model, AdaptiveLandmarkRegressor):
            model.set_width(width)
        elif float(width) != 1.0:
            raise ValueError(f"{path}: width {width:g} needs a channel-prioritised landmark checkpoint "
                             f"(retinaface prioritize --task landmarks); this one runs at width 1 only")
    model.scheme = str(state.get("scheme") or get_scheme(model.num_points).name)
    model.crop_margin = float(state.get("crop_margin", 0.1))
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# The task


class LandmarkTask(Task):
    """Trains a landmark network (see the module docstring). After :meth:`build_data` the task holds
    ``scheme``, ``train_set`` and ``val_samples``; after an evaluation ``last_evaluation``."""

    default_output = DEFAULT_OUTPUT
    best_metric = "nme"
    higher_is_better = False
    metric_prefix = "val_"

    def __init__(self, config: LandmarkConfig) -> None:
        super().__init__(config)
        self.config: LandmarkConfig = config
        self.scheme: Optional[LandmarkScheme] = None
        self.train_set: Optional[LandmarkCrops] = None
        self.val_samples: List[LandmarkSample] = []
        self._val_crops: Optional[Tuple[torch.Tensor, List[CropTransform]]] = None
        self.last_evaluation: Optional[LandmarkEvaluation] = None
        self.model_kind = "regression"
        self._neighbour_index: Optional[torch.Tensor] = None

    def val_spec(self) -> Optional[str]:
        """The val faces (a list or folder for :func:`load_samples`), or ``None`` for none: ``--val``,
        else the synthetic set's val split for synthetic data."""
        cfg = self.config
        spec = cfg.val
        if spec is None and cfg.data == SYNTHETIC_DATA:
            spec = str(synthetic_lists(cfg, get_scheme(cfg.scheme or DEFAULT_SCHEME))[1])
        return spec if spec and spec != "none" else None

    def _sources(self) -> Tuple[List[LandmarkSample], List[LandmarkSample]]:
        cfg = self.config
        if cfg.data == SYNTHETIC_DATA:
            train = load_samples(synthetic_lists(cfg, get_scheme(cfg.scheme or DEFAULT_SCHEME))[0])
        else:
            train = load_samples(cfg.data, cfg.image_root)
        val_spec = self.val_spec()
        val = load_samples(val_spec, cfg.image_root) if val_spec and cfg.eval_every else []
        return train, val

    def build_data(self, trainer: RunningTrainer) -> TrainData:
        cfg, dist, device = self.config, trainer.dist, trainer.device
        train, val = self._sources()
        counts = {s.num_points for s in train + val}
        if len(counts) != 1:
            raise ValueError(f"--data / --val: faces with {sorted(counts)} points; train one scheme at a time")
        num_points = counts.pop()
        self.scheme = get_scheme(cfg.scheme or num_points)
        if self.scheme.num_points != num_points:
            raise ValueError(f"--scheme {self.scheme.name} has {self.scheme.num_points} points, the data has "
                             f"{num_points}")
        augment = AugmentConfig(rotation=cfg.rotation, scale=cfg.aug_scale, shift=cfg.shift,
                                flip=cfg.flip) if cfg.augment else None
        self.train_set = LandmarkCrops(train, self.scheme, cfg.input_size, cfg.crop_margin, augment, cfg.seed)
        self.val_samples = val
        return epoch_loader(self.train_set, cfg, dist, device, collate_landmarks, "faces")

    def build_model(self, trainer: RunningTrainer, model: Optional[nn.Module],
                    resume_state: Optional[Dict[str, Any]]) -> TaskModel:
        cfg = self.config
        if model is None:
            model = create_landmark_model(cfg.model, self.scheme.num_points, cfg.input_size, **cfg.model_kwargs())
            if model.kind == "heatmap":
                model.set_neighbours(mean_shape(self.train_set.samples, cfg.crop_margin))
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
        model = model.to(trainer.device)
        self.model_kind = getattr(model, "kind", "regression")
        if self.model_kind == "heatmap":
            self._neighbour_index = model.neighbour_index
        return TaskModel(model)

    def prepare_batch(self, batch: Sequence[Any], device: torch.device) -> Tuple[torch.Tensor, ...]:
        crops, points, masks = batch
        return (normalise_crops(crops.to(device, non_blocking=True)), points.to(device, non_blocking=True),
                masks.to(device, non_blocking=True))

    def compute_loss(self, model: nn.Module, batch: Tuple[torch.Tensor, ...]) -> LandmarkLoss:
        images, points, masks = batch
        cfg = self.config
        if self.model_kind == "heatmap":
            return heatmap_loss(model(images), points, masks, self._neighbour_index, cfg.score_loss, cfg.loss,
                                cfg.input_size)
        return landmark_loss(cfg.loss, model(images), points, masks, cfg.input_size)

    def evaluate(self, trainer: RunningTrainer) -> Dict[str, float]:
        """NME (inter-ocular), FR@0.1 and AUC@0.1 on the val faces; empty when there are none."""
        if not self.val_samples:
            return {}
        if self._val_crops is None:
            self._val_crops = face_crops(self.val_samples, self.config.input_size, self.config.crop_margin)
        crops, transforms = self._val_crops
        normalised = predict_crops(trainer.raw_model, crops)
        predictions = np.stack([t.normalised_to_image(p) for t, p in zip(transforms, normalised)])
        result = evaluate_landmarks(predictions, self.val_samples, threshold=FAILURE_THRESHOLD)
        self.last_evaluation = result
        return {"nme": result.nme, f"fr@{FAILURE_THRESHOLD:g}": result.failure_rate,
                f"auc@{FAILURE_THRESHOLD:g}": result.auc}

    def save_checkpoint(self, network: nn.Module, path: Path, state: Dict[str, Any]) -> None:
        save_landmark_checkpoint(network, path, self.scheme.name, self.config.crop_margin, **state)

    def read_resume_state(self, path: str) -> Dict[str, Any]:
        state = read_checkpoint(path)
        if state.get("format") != LANDMARK_FORMAT or "optimizer" not in state:
            raise ValueError(f"--resume: {path} is not a landmark training checkpoint")
        return state
