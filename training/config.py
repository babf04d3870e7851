"""A training run's configuration and result.

``TrainConfig`` is everything a run depends on; its fingerprint names the run's state directory and
guards a resume against a changed command. ``TrainResult`` is what a finished run hands to export.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fermon.expression.model import CLIP_LOGIT_SCALE, Architecture
from training.text import DEFAULT_TEXT_ENCODER

REFERENCE_LR = 0.002  # KE2NT's reference: fine-tuning a face-recognition backbone
SCRATCH_LR = 0.1  # from random weights a small CNN needs a far larger step


# The configuration fields of the first release; see TrainConfig.fingerprint.
FINGERPRINT_FIELDS_V1 = frozenset(
    [
        "root",
        "dataset",
        "method",
        "architecture",
        "batch_size",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "warmup_epochs",
        "amp",
        "ema_decay",
        "label_mode",
        "limit",
        "seed",
        "text_encoder",
        "prompt_template",
        "center_text",
        "logit_scale",
        "transform_weight",
        "contrast_weight",
        "pairing",
        "init",
        "val_split",
        "extra",
    ]
)


@dataclass
class TrainConfig:
    root: Path
    dataset: str = "ferplus"
    method: str = "ke2nt"
    architecture: str = "cnn48"
    epochs: int = 50
    batch_size: int = 64
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    amp: str = "auto"
    ema_decay: float = 0.0
    label_mode: str = "soft"
    limit: int | None = None
    seed: int = 0
    text_encoder: str = DEFAULT_TEXT_ENCODER
    prompt_template: str = "ke2nt"
    center_text: bool = True
    logit_scale: float = CLIP_LOGIT_SCALE
    transform_weight: float = 1.0
    contrast_weight: float = 1.0
    pairing: str = "own"
    # PMFER's loss weights (training/pmfer.py); added after the first release, so never in FINGERPRINT_FIELDS_V1.
    mask_weight: float = 1.0
    adversarial_weight: float = 0.1
    # The backbone's learning rate as a fraction of the head's; added after the first release.
    backbone_lr_scale: float = 1.0
    # dlib's backbone: its frozen affines as released, or batch norms put back (training/dlib_init.py).
    backbone_norm: str = "affine"
    # Fraction of images with the template's eye or mouth region hidden (training/augment.py).
    region_occlusion: float = 0.0
    # Distillation (training/distil.py): teacher checkpoints whose mean probabilities join the targets.
    teachers: tuple[str, ...] = ()
    teacher_weight: float = 0.5
    # What picks the best epoch (training/selection.py): clean validation accuracy, or "robust".
    select_on: str = "accuracy"
    # A safetensors file, or DLIB_INIT for dlib's own weights.
    init: Path | None = None
    state_dir: Path | None = None
    device: str = "auto"
    val_split: str = "valid"
    # Free-form notes recorded with the run and in its checkpoint's training metadata.
    extra: dict[str, Any] = field(default_factory=dict)

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return REFERENCE_LR if self.init else SCRATCH_LR

    def fingerprint(self) -> str:
        """What must match for a resume: everything but where state lives, the device and the length.

        Fields added after the first release count only when set away from their default, so runs
        begun before a new option existed still resume.
        """
        relevant = {}
        for spec in fields(self):
            if spec.name in ("state_dir", "device", "epochs"):
                continue
            value = getattr(self, spec.name)
            if spec.name in FINGERPRINT_FIELDS_V1 or value != _default_of(spec):
                relevant[spec.name] = str(value)
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _default_of(spec: Field) -> Any:
    if spec.default is not MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not MISSING else MISSING


@dataclass
class TrainResult:
    best_weights: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    train_images: int
    architecture: Architecture
    class_names: list[str]
    class_embeddings: torch.Tensor
    config: TrainConfig
    prompts: list[str] | None = None  # the class prompts behind class_embeddings (None for ce)
    class_prior: np.ndarray | None = None  # training-label frequencies (smoothed), for the prior adjustment
    state_path: Path | None = None  # the run's resumable state (its last epoch's weights and EMA)
    selected: str = "best"  # which weights best_weights holds: the best validation epoch, or the final EMA
