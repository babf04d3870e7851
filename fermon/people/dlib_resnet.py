"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, CC0) as a torch module.

The network is the one in dlib's ``examples/dnn_face_recognition_ex.cpp``: a 7x7 stride-2 stem,
3x3 max pooling, 14 residual blocks in five stages (32, 64, 128, 256, 256 channels), global average
pooling and a 256 -> 128 linear layer whose output is dlib's face descriptor. Its batch norms were
frozen into per-channel affine layers before release.

The weights are read from dlib's own serialisation (``dlib/serialize.h``, ``dlib/dnn/core.h``,
``dlib/dnn/layers.h``, ``dlib/dnn/input.h``, ``dlib/cuda/tensor.h``) by ``fermon.people.dlib_format``, so
dlib itself is needed only to check the result (``benchmarks/dlib_parity.py`` and the tests).
Conventions copied from dlib, not torch: a convolution or pooling with stride 1 pads by half its
size and one with a larger stride does not pad at all; a residual sum of two tensors of different
shapes is taken over the larger shape with the smaller one zero-padded at the end of each axis
(channels, rows, columns). Input is ``(pixel - channel mean) / 256``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fermon.errors import ModelError
from fermon.people.dlib_format import (
    CON_FIELDS,
    POOL_FIELDS,
    WRAPPER,
    DlibLayer,
    DlibNetwork,
    dlib_weights_path,
    read_dlib_network,
)

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

CHIP_SIZE = 150
# input_rgb_image's defaults; the file stores them too, and loading checks they agree.
DLIB_MEANS = (122.782, 117.001, 104.298)
DLIB_INPUT_SCALE = 256.0
# For grayscale input the first convolution's weights are summed over RGB and this one mean is
# subtracted; the bias absorbs the difference from the three channel means (exact, as the stem
# convolution does not pad). fermon/data/architectures/dlib112.json uses the same value.
DLIB_GRAY_MEAN = sum(DLIB_MEANS) / 3

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
    """dlib's face-recognition ResNet, with timm's conventions (as :class:`fermon.expression.backbones.VggFace`).

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
            return dict(zip(POOL_FIELDS, (size, size, stride, stride, pad, pad)))

        plan: list[tuple[str, Any]] = [
            ("con", self.stem_conv),
            ("affine", self.stem_affine),
            ("relu", None),
            ("max_pool", pool(3, 2)),
        ]
        for block in self.blocks:
            plan += [(WRAPPER, None), ("con", block.conv1), ("affine", block.affine1), ("relu", None)]
            plan += [("con", block.conv2), ("affine", block.affine2)]
            if block.downsample:  # tag2, skip1 back to the block's input, then the shortcut's pooling
                plan += [(WRAPPER, None), (WRAPPER, None), ("avg_pool", pool(2, 2))]
            plan += [("add_prev", None), ("relu", None)]
        return [*plan, ("avg_pool", pool(0, 1)), ("fc", self.embedding)]


# ----------------------------------------------------------------------------------------------
# Loading


def _conv_tensors(layer: DlibLayer, conv: nn.Conv2d, means: Sequence[float]) -> dict[str, torch.Tensor]:
    stored = tuple(layer.geometry[name] for name in CON_FIELDS)
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


def dlib_resnet(pretrained: bool = False, **kwargs: Any) -> DlibResNet:
    """dlib's face-recognition ResNet; ``pretrained=True`` loads the installed package's weights."""
    for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(timm_only, None)
    model = DlibResNet(**kwargs)
    if pretrained:
        load_dlib_weights(model, read_dlib_network(dlib_weights_path()))
    return model
