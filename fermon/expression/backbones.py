"""Backbones of fermon's own, built without timm and registered in timm's model registry on demand.

The model builder makes fermon's own backbones (``fermon_vgg``, and ``dlib_resnet`` from
:mod:`fermon.people.dlib_resnet`) directly: importing timm imports torchvision and torch._dynamo,
three seconds of every run's start-up for a model that needs none of them. :func:`register_with_timm`
registers them, so that ``timm.create_model("fermon_vgg", ...)`` works like any timm name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from fermon.people.dlib_resnet import dlib_resnet

# name -> constructor, with timm's signature: (pretrained=False, num_classes=..., in_chans=..., **kwargs)
OWN_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_with_timm() -> None:
    """Register fermon's own backbones in timm's registry (once; importing timm is the cost)."""
    from timm.models import is_model, register_model

    for name, constructor in OWN_BACKBONES.items():
        if not is_model(name):
            register_model(constructor)


def _conv_bn_relu(in_chans: int, out_chans: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


class VggFace(nn.Module):
    """A VGG-style CNN for small face crops: stages of two 3x3 convolutions, each halving the size.

    Follows timm's conventions: ``num_features``, ``forward_features``, ``forward_head`` and a
    classifier that is the identity when ``num_classes=0`` (so ``forward`` returns pooled features).
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128, 256),
        in_chans: int = 1,
        num_classes: int = 0,
        drop_rate: float = 0.0,
        convs_per_stage: int = 2,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        previous = in_chans
        for width in widths:
            layers = [_conv_bn_relu(previous if i == 0 else width, width) for i in range(convs_per_stage)]
            stages.append(nn.Sequential(*layers, nn.MaxPool2d(2)))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.num_features = previous
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(previous, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.drop(x.mean(dim=(2, 3)))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def fermon_vgg(pretrained: bool = False, **kwargs: Any) -> VggFace:
    """fermon's small face CNN; there are no pretrained weights for it outside fermon's checkpoints."""
    for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(timm_only, None)
    if pretrained:
        raise ValueError("fermon_vgg has no pretrained weights; load a fermon checkpoint instead")
    return VggFace(**kwargs)


OWN_BACKBONES.update(fermon_vgg=fermon_vgg, dlib_resnet=dlib_resnet)
