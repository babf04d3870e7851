"""KE2NT: the expression classifier, defined once for both inference (``fermon``) and ``training``.

Li et al., "Knowledge-Enhanced Facial Expression Recognition with Emotional-to-Neutral
Transformation", IEEE TMM 2025. A visual backbone and a projection give a feature ``f_e`` in the
text-embedding space; class logits are ``logit_scale * cos(f_e, t_c)`` against fixed text
embeddings ``t_c`` of the class prompts. The emotional-to-neutral MLP (``f_e -> f_n``) exists for
training only and is never part of a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fermon.errors import ModelError
from fermon.expression.backbones import OWN_BACKBONES, register_with_timm
from fermon.expression.vocab import load_data_file

CLIP_LOGIT_SCALE = 100.0
NEUTRAL_HIDDEN = 128


@dataclass(frozen=True)
class Architecture:
    """What a model's network is and what input it takes; stored whole in every checkpoint."""

    name: str
    backbone: str
    input_size: int
    colour: str  # "gray" or "rgb"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: str  # name of the face-crop template (fermon/data/crops.json)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def in_chans(self) -> int:
        return 1 if self.colour == "gray" else 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        fields = {k: v for k, v in data.items() if not k.startswith("_")}
        fields["mean"] = tuple(fields["mean"])
        fields["std"] = tuple(fields["std"])
        return cls(**fields)


def load_architecture(name: str, input_size: int | None = None) -> Architecture:
    """A named architecture from ``fermon/data/architectures``, or any timm model name.

    A bare timm name gets the paper's defaults: 112x112 colour input on the ArcFace-aligned crop.
    """
    try:
        config = dict(load_data_file(f"architectures/{name}.json"))
    except FileNotFoundError:
        import timm

        if name not in timm.list_models():
            raise ModelError(f"unknown architecture '{name}': neither a fermon config nor a timm model") from None
        config = dict(load_data_file("architectures/resnet18_112.json"), backbone=name, backbone_kwargs={})
    config["name"] = name
    if input_size is not None:
        config["input_size"] = input_size
    return Architecture.from_dict(config)


def create_backbone(architecture: Architecture) -> tuple[nn.Module, int]:
    """The architecture's backbone without a classifier (fermon's own, or timm's), and the width of
    its pooled feature."""
    own = OWN_BACKBONES.get(architecture.backbone)
    if own is not None:  # without importing timm (see fermon.expression.backbones)
        backbone = own(pretrained=False, num_classes=0, in_chans=architecture.in_chans, **architecture.backbone_kwargs)
    else:
        import timm

        register_with_timm()
        backbone = timm.create_model(
            architecture.backbone,
            pretrained=False,
            num_classes=0,
            in_chans=architecture.in_chans,
            **architecture.backbone_kwargs,
        )
    # Models with a pre-logits layer (MobileNetV3, ...) pool to head_hidden_size, not num_features.
    return backbone, int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


class NeutralTransform(nn.Module):
    """The emotional-to-neutral MLP (d -> 128 -> d); training only."""

    def __init__(self, dim: int, hidden: int = NEUTRAL_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class KE2NT(nn.Module):
    """Backbone, projection to the text space, and a cosine classifier over class embeddings.

    ``class_embeddings`` are the prompts' text embeddings and stay fixed (a buffer). With
    ``learn_class_embeddings=True`` they become parameters: the cross-entropy baseline, which has
    the same head and the same checkpoint format but no text knowledge.
    """

    def __init__(
        self,
        architecture: Architecture,
        class_embeddings: torch.Tensor,
        logit_scale: float = CLIP_LOGIT_SCALE,
        learn_class_embeddings: bool = False,
        with_neutral_transform: bool = False,
    ) -> None:
        super().__init__()
        self.architecture = architecture
        self.backbone, width = create_backbone(architecture)
        dim = int(class_embeddings.shape[1])
        # As in KE2NT's reference code: Linear-BN-Linear-BN into the text-embedding space.
        self.projection = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.Linear(width, dim), nn.BatchNorm1d(dim)
        )
        embeddings = F.normalize(class_embeddings.float(), dim=-1)
        if learn_class_embeddings:
            self.class_embeddings = nn.Parameter(embeddings)
        else:
            self.register_buffer("class_embeddings", embeddings)
        self.register_buffer("logit_scale", torch.tensor(math.log(logit_scale)))
        self.neutral_transform = NeutralTransform(dim) if with_neutral_transform else None

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The visual feature ``f_e`` (not normalised), shape (batch, text dim)."""
        features = self.backbone(images)
        # The head runs in its own precision: a bfloat16 backbone hands float32 on (see classify.py).
        return self.projection(features.to(self.projection[0].weight.dtype))

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        image = F.normalize(features.float(), dim=-1)
        text = F.normalize(self.class_embeddings.float(), dim=-1)
        return self.logit_scale.float().exp() * image @ text.t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.encode_image(images))

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint holds: everything but the training-only parts."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("neutral_transform.")}


def create_model(
    architecture: Architecture | str,
    class_embeddings: torch.Tensor,
    **kwargs: Any,
) -> KE2NT:
    """Build a KE2NT model from an architecture (or its name) and the class embeddings."""
    if isinstance(architecture, str):
        architecture = load_architecture(architecture)
    return KE2NT(architecture, class_embeddings, **kwargs)
