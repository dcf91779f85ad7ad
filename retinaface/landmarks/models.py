"""Landmark networks: a square face crop ``(B, 3, S, S)`` -> points ``(B, K, 2)`` in normalised crop
coordinates (``(u + 0.5) / S``: 0 and 1 are the crop's edges; see :mod:`~retinaface.landmarks.crop`).

One registry, like the detection backbones and the embedders: ``create_landmark_model(name,
num_points, input_size, **kw)``, ``list_landmark_models()``, ``register_landmark_model(name)``;
``timm:<model>`` wraps any timm network. Models come in two kinds (``model.kind``), both carrying
``.config``, a :class:`LandmarkModelConfig` of plain types (a checkpoint holding
``config.to_dict()`` loads with ``torch.load(weights_only=True)``; :func:`landmark_model_from_config`
rebuilds), and both giving ``(B, K, 2)`` normalised points in eval mode, so evaluation, inference
and the benchmark take either:

* ``"regression"``: a :class:`LandmarkRegressor` (a body giving ``2K`` numbers, reshaped to
  ``(K, 2)`` as ``x0 y0 x1 y1 ...``); the last linear layer's bias starts at 0.5, so an untrained
  network predicts the crop centre;
* ``"heatmap"``: a :class:`HeatmapLandmarkModel`, PIPNet's score map + offsets + neighbour offsets
  on a stride-32 feature map (:mod:`~retinaface.landmarks.heatmap`); in training mode it returns
  the raw maps (:class:`~retinaface.landmarks.heatmap.HeatmapOutput`) the task's loss needs.

Input: RGB, ImageNet mean / std (:func:`preprocess_crops` turns BGR uint8 crops into it), the
convention of torchvision's and timm's pretrained weights and of the seed report.

* ``mobilenetv3_small`` -- exactly the seed report's network: torchvision's
  ``mobilenet_v3_small(num_classes=2K)`` (its layer table: 16-channel stem, eleven bneck blocks, 576
  channels, pooled, 1024 hidden with hardswish and dropout 0.2), 224 x 224 input; with K = 21 it has
  1,560,906 parameters, the report's count.
* ``pfld`` -- the PFLD backbone (Guo et al., 2019, table 1; 112 x 112 input): 3x3 conv stride 2, a 3x3
  depthwise conv, MobileNetV2 bottlenecks (64 x 5 stride 2 expansion 2, 128 stride 2 expansion 2,
  128 x 6 expansion 4, 16 expansion 2), then its multi-scale fully connected layer: the pooled
  14 x 14 x 16 map, a 3x3 stride-2 conv to 32 (pooled) and a 7x7 valid conv to 128, concatenated
  (176) -> 2K. ``width`` scales every channel count; the auxiliary pose branch (training only) is
  not part of it.
* ``timm:<name>`` -- a timm network's pooled features -> linear -> 2K.
* ``pipnet_mobilenetv3`` / ``pipnet_resnet18`` / ``pipnet:timm:<name>`` -- the heatmap head on
  torchvision's MobileNetV3-small features (576 channels), ResNet-18's ``layer4`` (512 channels, the
  paper's backbone) or a timm network's last feature map; 256 x 256 input (8 x 8 cells), 10
  neighbours per point (the paper's), 1x1 convolutions for the ``K (3 + 2N)`` maps initialised as
  the paper's (normal, std 0.001, bias 0).

Complexity counting, and what the seed's "0.123 GFLOPS" is. The report prints
``FLOPS: 0.122993904 G, Params: 1.560906 M`` for ``mobilenetv3_small`` at 224. That figure is exactly
**twice the total of thop's** ``profile`` (pytorch-OpCounter, the version whose conv hook leaves out
the bias), i.e. thop's multiply-accumulate count doubled to "FLOPs": thop counts per leaf module

  - convolution: output elements x (input channels / groups) x kernel area (no bias): 54,896,576;
  - batch norm: 2 x input elements, doubled again when affine (4 per element): 4 x 1,412,768 = 5,651,072;
  - adaptive average pool: (kernel area + 1) x output elements: 313,600 + 2,872 = 316,472;
  - linear: input features x output elements (no bias): 632,832;
  - ReLU, hardswish, hardsigmoid, dropout, the squeeze-excitation product and the residual
    additions: nothing (ReLU is a zero-op, the others have no hook);

  total 61,496,952, and 2 x 61,496,952 = 122,993,904. :func:`thop_operations` reproduces that
  convention (without thop) and the test pins both numbers. For comparison,
  ``torch.utils.flop_counter.FlopCounterMode`` counts 111,058,816 (2 x the multiply-accumulates of
  convolutions and linear layers only, 55,529,408 MACs); the difference, 11,935,088, is thop's
  batch-norm and pooling terms doubled. Counting conv and linear biases (2,888 + 1,066) or the
  activations (ReLU 470,992, hardswish 799,136, hardsigmoid 2,296 elements) would move the total
  away from the report's number, so the report used neither.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..adaptive.slim import active_parameters, switchable_layers
from ..deploy.export.metadata import ExportedModel
from ..models.mobiface import make_divisible
from .config import DEFAULT_NEIGHBOURS, HEATMAP_TIMM_PREFIX
from .crop import DEFAULT_MARGIN, crop_transform
from .heatmap import HeatmapOutput, decode_points, nearest_neighbours, split_head
from .schemes import SCHEMES

IMAGENET_MEAN_RGB: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB: Tuple[float, float, float] = (0.229, 0.224, 0.225)

# The seed report's network: 21 points (x, y) at 224 x 224.
SEED_NUM_POINTS = 21
SEED_INPUT_SIZE = 224
SEED_PARAMETERS = 1_560_906
SEED_THOP_OPERATIONS = 61_496_952
SEED_FLOPS = 2 * SEED_THOP_OPERATIONS  # 122,993,904: the report's "0.122993904 G"


@dataclasses.dataclass
class LandmarkModelConfig:
    """What rebuilds a landmark network: registry ``name``, ``num_points``, square ``input_size`` and
    the builder's extra ``kwargs`` (plain types)."""

    name: str
    num_points: int
    input_size: int
    kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "num_points": int(self.num_points), "input_size": int(self.input_size),
                "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "LandmarkModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown landmark model config field(s) {unknown}; known: {sorted(known)}")
        missing = sorted({"name", "num_points", "input_size"} - set(data))
        if missing:
            raise ValueError(f"landmark model config lacks {missing}")
        return cls(str(data["name"]), int(data["num_points"]), int(data["input_size"]), dict(data.get("kwargs") or {}))


class LandmarkNetwork(nn.Module):
    """What every landmark network carries besides its layers: ``config``
    (:class:`LandmarkModelConfig`), how it runs on a face box, ``crop_margin`` (the crop policy's
    margin it was trained with; :func:`~retinaface.landmarks.task.load_landmark_model` sets the
    checkpoint's) and ``scheme`` (the name of its point layout: the checkpoint's, else the one of
    its point count, or ``None``), and :meth:`landmarks_in_boxes`, which runs it on a detector's
    boxes. That method lives on the network so that :class:`~retinaface.inference.detector.Detector`
    (a layer below ``landmarks``) can run any landmark model it is handed without importing this
    package. In eval mode every network maps ``(B, 3, S, S)`` to ``(B, K, 2)`` normalised crop
    coordinates."""

    kind = ""

    def __init__(self, config: LandmarkModelConfig) -> None:
        super().__init__()
        self.config = config
        self.crop_margin = DEFAULT_MARGIN
        self.scheme: Optional[str] = next((s.name for s in SCHEMES.values() if s.num_points == config.num_points),
                                          None)

    @property
    def num_points(self) -> int:
        return int(self.config.num_points)

    def landmarks_in_boxes(self, image: np.ndarray, boxes: Sequence[Sequence[float]], batch_size: int = 64
                           ) -> np.ndarray:
        """:func:`landmarks_in_boxes` of this network."""
        return landmarks_in_boxes(self, image, boxes, batch_size)


class LandmarkRegressor(LandmarkNetwork):
    """``body`` (``(B, 3, S, S)`` -> ``(B, 2K)``) with its output read as ``(B, K, 2)`` normalised
    crop coordinates."""

    kind = "regression"

    def __init__(self, body: nn.Module, config: LandmarkModelConfig) -> None:
        super().__init__(config)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if out.dim() != 2 or out.shape[1] != 2 * self.num_points:
            raise RuntimeError(f"{self.config.name} body gave {tuple(out.shape)}, expected (B, {2 * self.num_points})")
        return out.view(out.shape[0], self.num_points, 2)


def landmarks_in_boxes(model: Any, image: np.ndarray, boxes: Sequence[Sequence[float]], batch_size: int = 64
                       ) -> np.ndarray:
    """``(N, K, 2)`` points in ``image``'s pixel coordinates for the faces in ``boxes`` (``(N, >= 4)``
    rows ``x1 y1 x2 y2 ...``), ``image`` BGR uint8 ``H x W x 3`` as OpenCV reads it. Each face is
    cropped by the policy at ``model.crop_margin`` (:mod:`~retinaface.landmarks.crop`), predicted in
    batches of ``batch_size`` (eval mode; the mode is restored) and mapped back with the crop's exact
    inverse. ``model``: a :class:`LandmarkNetwork` or an exported one
    (:class:`~retinaface.landmarks.runtime.LandmarkOnnxModel`); both carry this as a method."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 BGR image, got {image.dtype} {image.shape}")
    size = int(model.config.input_size)
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, model.num_points, 2))
    transforms = [crop_transform(box[:4], size, float(model.crop_margin)) for box in boxes]
    crops = torch.from_numpy(np.stack([t.warp(image) for t in transforms]))
    normalised = predict_crops(model, crops, batch_size)
    return np.stack([t.normalised_to_image(p) for t, p in zip(transforms, normalised)])


KINDS: Tuple[str, ...] = ("regression", "heatmap")
TIMM_PREFIX = "timm:"


class HeatmapLandmarkModel(LandmarkNetwork):
    """``features`` (``(B, 3, S, S)`` -> ``(B, C, S / stride, S / stride)``, carrying
    ``out_channels`` and ``stride``) with PIPNet's head: a 1x1 convolution to ``K (3 + 2N)`` maps.
    Eval mode: ``(B, K, 2)`` normalised points (:func:`~retinaface.landmarks.heatmap.decode_points`);
    training mode: the :class:`~retinaface.landmarks.heatmap.HeatmapOutput`. ``neighbour_index``
    ``(K, N)`` (a buffer, so checkpoints hold it) starts as "each point its own neighbour" and is set
    from the training set's mean face with :meth:`set_neighbours`."""

    kind = "heatmap"

    def __init__(self, features: nn.Module, config: LandmarkModelConfig, neighbours: int) -> None:
        super().__init__(config)
        k = int(config.num_points)
        self.features = features
        self.stride = int(features.stride)
        self.num_neighbours = int(neighbours)
        self.head = nn.Conv2d(int(features.out_channels), k * (3 + 2 * self.num_neighbours), 1)
        nn.init.normal_(self.head.weight, std=0.001)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("neighbour_index", torch.arange(k).repeat_interleave(self.num_neighbours)
                             .view(k, self.num_neighbours))

    def set_neighbours(self, mean_shape: np.ndarray) -> None:
        """Each point's neighbours: its nearest points on ``mean_shape`` ``(K, 2)``."""
        index = nearest_neighbours(mean_shape, self.num_neighbours)
        self.neighbour_index.copy_(torch.from_numpy(index))

    def maps(self, x: torch.Tensor) -> HeatmapOutput:
        """The raw maps of a batch (whatever the mode)."""
        return split_head(self.head(self.features(x)), self.num_points, self.num_neighbours)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, HeatmapOutput]:
        outputs = self.maps(x)
        return outputs if self.training else decode_points(outputs, self.neighbour_index)


_Builder = Callable[..., nn.Module]
_REGISTRY: Dict[str, Tuple[_Builder, int, str, str]] = {}


def register_landmark_model(name: str, input_size: int, description: str = "", kind: str = "regression"):
    """Decorator registering a builder under ``name`` with its default square ``input_size``:
    ``kind="regression"``: ``builder(num_points, input_size, **kwargs) -> body`` (a module giving
    ``(B, 2K)``); ``kind="heatmap"``: ``builder(input_size, **kwargs) -> features`` (a module giving
    the stride-``features.stride`` map, carrying ``out_channels`` and ``stride``)."""
    if kind not in KINDS:
        raise ValueError(f"landmark model kind must be one of {KINDS}, got {kind!r}")

    def decorate(builder: _Builder) -> _Builder:
        if name in _REGISTRY or name.startswith((TIMM_PREFIX, HEATMAP_TIMM_PREFIX)):
            raise ValueError(f"landmark model {name!r} is already registered or reserved")
        _REGISTRY[name] = (builder, int(input_size), description, kind)
        return builder

    return decorate


def list_landmark_models() -> List[str]:
    """Names of the built-in landmark networks (``timm:<name>`` and ``pipnet:timm:<name>`` work as
    well)."""
    return sorted(_REGISTRY)


def landmark_model_kind(name: str) -> str:
    """``"regression"`` or ``"heatmap"``: what the network ``name`` is (see the module docstring)."""
    if name.startswith(HEATMAP_TIMM_PREFIX):
        return "heatmap"
    if name.startswith(TIMM_PREFIX):
        return "regression"
    if name not in _REGISTRY:
        raise ValueError(f"unknown landmark model {name!r}; choose one of {list_landmark_models()}, "
                         f"'{TIMM_PREFIX}<timm model name>' or '{HEATMAP_TIMM_PREFIX}<timm model name>'")
    return _REGISTRY[name][3]


def _centre_bias(linear: nn.Linear) -> None:
    # normalised coordinates: 0.5 is the crop centre, where an untrained network should point
    with torch.no_grad():
        linear.bias.fill_(0.5)


def create_landmark_model(name: str, num_points: int, input_size: Optional[int] = None,
                          **kwargs: Any) -> LandmarkNetwork:
    """The landmark network ``name`` for ``num_points`` points at ``input_size`` (default: the
    model's own: 224 for ``mobilenetv3_small`` and ``timm:*``, 112 for ``pfld``, 256 for the
    heatmap models). Heatmap models take ``neighbours`` (default 10, at most ``num_points - 1``:
    fewer points keep them all) besides their builder's arguments; their input size must be a
    multiple of the feature stride (32)."""
    if int(num_points) < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    kind = landmark_model_kind(name)
    if name.startswith(HEATMAP_TIMM_PREFIX):
        builder: _Builder = lambda **kw: TimmFeatureMap(name[len(HEATMAP_TIMM_PREFIX):], **kw)  # noqa: E731
        default_size = 256
    elif name.startswith(TIMM_PREFIX):
        builder = lambda **kw: TimmLandmarkBody(name[len(TIMM_PREFIX):], **kw)  # noqa: E731
        default_size = 224
    else:
        builder, default_size, _, _ = _REGISTRY[name]
    size = int(input_size) if input_size is not None else default_size
    config = LandmarkModelConfig(name, int(num_points), size, dict(kwargs))
    if kind == "regression":
        return LandmarkRegressor(builder(num_points=int(num_points), input_size=size, **kwargs), config)
    options = dict(kwargs)
    neighbours = int(options.pop("neighbours", DEFAULT_NEIGHBOURS))
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0, got {neighbours}")
    features = builder(input_size=size, **options)
    if size % int(features.stride):
        raise ValueError(f"{name} needs an input size that is a multiple of its stride {features.stride}, "
                         f"got {size}")
    return HeatmapLandmarkModel(features, config, min(neighbours, int(num_points) - 1))


def landmark_model_from_config(config: Union[LandmarkModelConfig, Dict[str, Any]]) -> LandmarkNetwork:
    """Rebuild a network from its :class:`LandmarkModelConfig` (or its ``to_dict()``)."""
    if isinstance(config, dict):
        config = LandmarkModelConfig.from_dict(config)
    return create_landmark_model(config.name, config.num_points, config.input_size, **config.kwargs)


# ----------------------------------------------------------------------------------- networks
@register_landmark_model("mobilenetv3_small", SEED_INPUT_SIZE,
                         "torchvision MobileNetV3-small with a 2K-way regression output (the seed report's)")
def _mobilenetv3_small(num_points: int, input_size: int, dropout: float = 0.2) -> nn.Module:
    import torchvision

    net = torchvision.models.mobilenet_v3_small(num_classes=2 * num_points, dropout=dropout)
    _centre_bias(net.classifier[-1])
    return _batch_norm_momentum(net)


def _batch_norm_momentum(net: nn.Module, momentum: float = 0.1) -> nn.Module:
    """``net`` with its batch norms' running statistics following ``momentum`` (PyTorch's default).
    torchvision's MobileNetV3 uses 0.01 (TensorFlow's 0.99 decay, for ImageNet-length runs); after
    the few hundred steps of a landmark run its statistics still lag the weights: the synthetic
    pipnet_mobilenetv3 run scored val NME 19.5 % in eval mode against 3.3 % with batch statistics."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    return net


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, padding: Optional[int] = None
                  ) -> nn.Sequential:
    pad = kernel // 2 if padding is None else padding
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expansion, 3x3 depthwise (``stride``), linear 1x1 projection, with
    a shortcut when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.shortcut = stride == 1 and cin == cout
        self.block = nn.Sequential(_conv_bn_relu(cin, hidden, 1, 1), _conv_bn_relu(hidden, hidden, 3, stride, hidden),
                                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.shortcut else out


class PFLDBody(nn.Module):
    """The PFLD backbone and multi-scale fully connected layer (module docstring)."""

    def __init__(self, num_points: int, input_size: int = 112, width: float = 1.0) -> None:
        super().__init__()
        if input_size % 16 or input_size < 32:
            raise ValueError(f"pfld needs an input size that is a multiple of 16 (>= 32), got {input_size}")
        c64, c128, c16, c32, c_last = (make_divisible(c * width) for c in (64, 128, 16, 32, 128))
        self.stem = nn.Sequential(_conv_bn_relu(3, c64, 3, 2), _conv_bn_relu(c64, c64, 3, 1, c64))
        blocks: List[nn.Module] = [InvertedResidual(c64, c64, 2, 2)]
        blocks += [InvertedResidual(c64, c64, 1, 2) for _ in range(4)]
        blocks += [InvertedResidual(c64, c128, 2, 2)]
        blocks += [InvertedResidual(c128, c128, 1, 4) for _ in range(6)]
        blocks += [InvertedResidual(c128, c16, 1, 2)]
        self.blocks = nn.Sequential(*blocks)                        # S1: input / 8, c16 channels
        self.conv7 = _conv_bn_relu(c16, c32, 3, 2)                  # S2: input / 16
        # S3: 1 x 1; no batch norm on a 1 x 1 map (a batch of one could not train it)
        self.conv8 = nn.Sequential(nn.Conv2d(c32, c_last, input_size // 16), nn.ReLU(inplace=True))
        self.fc = nn.Linear(c16 + c32 + c_last, 2 * num_points)
        _centre_bias(self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.blocks(self.stem(x))
        s2 = self.conv7(s1)
        s3 = self.conv8(s2)
        features = torch.cat([s1.mean(dim=(2, 3)), s2.mean(dim=(2, 3)), s3.flatten(1)], dim=1)
        return self.fc(features)


@register_landmark_model("pfld", 112, "PFLD backbone + multi-scale fully connected layer (width configurable)")
def _pfld(num_points: int, input_size: int, width: float = 1.0) -> nn.Module:
    return PFLDBody(num_points, input_size, width)


class TimmLandmarkBody(nn.Module):
    """A timm network's pooled features -> linear -> ``2K``; ``pretrained=True`` asks timm for
    ImageNet weights (downloads)."""

    def __init__(self, model_name: str, num_points: int, input_size: int = 224, pretrained: bool = False) -> None:
        super().__init__()
        import timm

        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r} (see timm.list_models())")
        self.features = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
        # timm's pooled output is `head_hidden_size` wide when the network keeps a head layer after
        # pooling (MobileNetV3: 1024), else `num_features`
        width = getattr(self.features, "head_hidden_size", None) or self.features.num_features
        self.fc = nn.Linear(int(width), 2 * num_points)
        _centre_bias(self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class TorchvisionFeatureMap(nn.Module):
    """A torchvision classifier's convolutional trunk (no pooling): ``out_channels`` at ``stride``."""

    def __init__(self, trunk: nn.Module, out_channels: int, stride: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.out_channels = int(out_channels)
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


@register_landmark_model("pipnet_mobilenetv3", 256, "PIPNet heatmap + offset head on torchvision "
                         "MobileNetV3-small's stride-32 features", kind="heatmap")
def _pipnet_mobilenetv3(input_size: int, pretrained: bool = False) -> nn.Module:
    import torchvision

    net = torchvision.models.mobilenet_v3_small(weights="DEFAULT" if pretrained else None)
    return TorchvisionFeatureMap(_batch_norm_momentum(net.features), net.classifier[0].in_features, 32)


@register_landmark_model("pipnet_resnet18", 256, "PIPNet heatmap + offset head on torchvision ResNet-18's "
                         "layer4 (the paper's network)", kind="heatmap")
def _pipnet_resnet18(input_size: int, pretrained: bool = False) -> nn.Module:
    import torchvision

    net = torchvision.models.resnet18(weights="DEFAULT" if pretrained else None)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return TorchvisionFeatureMap(trunk, net.fc.in_features, 32)


class TimmFeatureMap(nn.Module):
    """A timm network's last feature map (``forward_features``); ``pretrained=True`` asks timm for
    ImageNet weights (downloads)."""

    def __init__(self, model_name: str, input_size: int = 256, pretrained: bool = False) -> None:
        super().__init__()
        import timm

        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r} (see timm.list_models())")
        self.net = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
        last = self.net.feature_info[-1]
        self.out_channels = int(last["num_chs"])
        self.stride = int(last["reduction"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net.forward_features(x)
        if out.dim() != 4:
            raise RuntimeError(f"timm model gave features {tuple(out.shape)}; a heatmap head needs a (B, C, H, W) map")
        return out


# ----------------------------------------------------------------------------------- input
def preprocess_crops(crops: Union[np.ndarray, Sequence[np.ndarray]]) -> torch.Tensor:
    """Float tensor ``(N, 3, S, S)``, RGB, ImageNet mean / std, of BGR uint8 crops ``(N, S, S, 3)``
    (one ``(S, S, 3)`` crop gives ``N = 1``)."""
    array = np.asarray(crops)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 BGR images (N, H, W, 3), got {array.dtype} {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array[..., ::-1])).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1)
    return tensor.sub_(mean).div_(std).contiguous()


def normalise_crops(crops: torch.Tensor) -> torch.Tensor:
    """BGR uint8 ``(B, S, S, 3)`` on any device -> the networks' float input ``(B, 3, S, S)`` (RGB,
    ImageNet mean / std, as :func:`preprocess_crops`)."""
    x = crops.permute(0, 3, 1, 2).flip(1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN_RGB, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


@torch.no_grad()
def predict_crops(model: Any, crops: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Normalised predictions ``(N, K, 2)`` of a network on uint8 crops ``(N, S, S, 3)`` (evaluated in
    eval mode; the model's mode is restored). ``model`` is a PyTorch network or an exported one
    (:class:`~retinaface.landmarks.runtime.LandmarkOnnxModel`)."""
    # an exported file has no parameters; it says where it runs
    device = model.device if isinstance(model, ExportedModel) else next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        out = [model(normalise_crops(crops[i:i + batch_size].to(device))).float().cpu()
               for i in range(0, len(crops), batch_size)]
    finally:
        model.train(training)
    return torch.cat(out).numpy().astype(np.float64)


# ----------------------------------------------------------------------------------- complexity
def count_parameters(model: nn.Module) -> int:
    """Every parameter (trainable or not), as torchsummary's "Total params"."""
    return int(sum(p.numel() for p in model.parameters()))


def _thop_hook(module: nn.Module, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    x = inputs[0]
    if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
        kernel = int(np.prod(module.kernel_size))
        # the channels it reads: a width-switchable conv at a lower width reads fewer than it holds
        per_group = 1 if getattr(module, "depthwise", False) else x.shape[1] // module.groups
        return output.numel() * per_group * kernel
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
        return 2 * x.numel() * (2 if getattr(module, "affine", False) else 1)
    if isinstance(module, nn.LayerNorm):
        return 2 * x.numel() * (2 if module.elementwise_affine else 1)
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        kernel = float(np.prod([i / o for i, o in zip(x.shape[2:], output.shape[2:])]))
        return int((kernel + 1) * output.numel())
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return output.numel()
    if isinstance(module, nn.Linear):
        return module.in_features * output.numel()
    return 0  # ReLU, max pooling: zero-ops; hardswish, dropout, ...: no hook in thop


def thop_operations(model: nn.Module, input_size: Union[int, Tuple[int, int]], batch: int = 1) -> int:
    """The total that thop's ``profile`` reports for ``model`` on a ``(batch, 3, H, W)`` input
    (multiply-accumulates by its hooks; see the module docstring), counted without thop. Leaf
    modules only, like thop; runs one forward pass in eval mode without gradients."""
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    totals: List[int] = []
    handles = [m.register_forward_hook(lambda mod, inp, out: totals.append(_thop_hook(mod, inp, out)))
               for m in model.modules() if not list(m.children())]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(batch, 3, height, width))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return int(sum(totals))


def torch_flops(model: nn.Module, input_size: Union[int, Tuple[int, int]], batch: int = 1) -> int:
    """``torch.utils.flop_counter.FlopCounterMode``'s total (2 per multiply-accumulate of matrix
    products and convolutions, nothing else)."""
    from torch.utils.flop_counter import FlopCounterMode

    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    training = model.training
    try:
        model.eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(batch, 3, height, width))
    finally:
        model.train(training)
    return int(counter.get_total_flops())


def model_complexity(model: nn.Module, input_size: Union[int, Tuple[int, int]]) -> Dict[str, float]:
    """``params`` (count), ``thop_operations``, ``flops`` (2 x thop: the seed report's convention),
    ``torch_flops``, and ``params_millions`` / ``gflops`` for :func:`~retinaface.landmarks.metrics.ranking_score`.
    A width-switchable network counts what it uses at its current width."""
    params = active_parameters(model) if switchable_layers(model) else count_parameters(model)
    ops = thop_operations(model, input_size)
    return {"params": params, "thop_operations": ops, "flops": 2 * ops, "torch_flops": torch_flops(model, input_size),
            "params_millions": params / 1e6, "gflops": 2 * ops / 1e9}
