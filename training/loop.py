"""The training loop: SGD with warm-up and cosine decay, mixed precision, EMA, resumable per epoch.

State lives in ``state_dir`` (default ``~/.cache/fermon/runs/<run name>``), outside the repository:
``state.safetensors`` after every epoch, ``best.safetensors`` (the weights of the best validation
epoch), ``metrics.jsonl`` (one line per epoch). Rerunning the same command resumes from the last
finished epoch. Models are selected on the validation split only (``training/selection.py``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn

from fermon.errors import UsageError
from fermon.expression.classify import normalise_batch, resolve_device
from fermon.expression.model import KE2NT, Architecture, load_architecture
from fermon.faces.runtime import cpu_bfloat16_is_fast
from training.augment import Augmentation
from training.build import backbone_lr_groups, build_training_model, class_embeddings_for
from training.config import TrainConfig, TrainResult
from training.datasets import LabelledFaces, read_dataset
from training.distil import mix_targets, teacher_probabilities
from training.losses import KE2NTLoss
from training.methods import get_method
from training.pmfer import forward_with_feature_map
from training.selection import Validation, best_score, select_on_validation
from training.state import load_state, save_state, save_weights

log = logging.getLogger("training")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def use_bf16(amp: str, device: torch.device) -> bool:
    """bf16 autocast: on CUDA where supported, and on CPUs where fermon's one precision rule finds it
    clearly faster than float32 (AMX and AVX512-BF16 alike; not where it is only emulated)."""
    if amp == "off":
        return False
    if amp == "on":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_bfloat16_is_fast()


def label_prior(data: LabelledFaces) -> np.ndarray:
    """Majority-label frequencies with one added to each class (no class has probability zero)."""
    counts = np.bincount(data.labels, minlength=len(data.class_names)).astype(np.float64) + 1.0
    return counts / counts.sum()


def _load_data(config: TrainConfig, architecture: Architecture) -> tuple[LabelledFaces, LabelledFaces]:
    train = read_dataset(
        config.dataset, config.root, "train", architecture.input_size, architecture.colour, config.limit
    )
    val = read_dataset(config.dataset, config.root, config.val_split, architecture.input_size, architecture.colour)
    if len(train) == 0:
        raise UsageError(f"{config.root}: no training images for dataset '{config.dataset}'")
    if config.label_mode == "majority":
        train.targets = np.eye(len(train.class_names), dtype=np.float32)[train.labels]
    if config.teachers:
        taught = np.mean(
            [teacher_probabilities(t, config.dataset, Path(config.root), config.limit, train) for t in config.teachers],
            axis=0,
        )
        train.targets = mix_targets(train.targets, taught, config.teacher_weight)
    return train, val


def _calibration_images(
    config: TrainConfig, train_data: LabelledFaces, architecture: Architecture, count: int = 512
) -> torch.Tensor | None:
    """A seeded sample of normalised training images for batch-norm statistics, where they are needed."""
    if config.backbone_norm != "batch":
        return None
    chosen = np.random.default_rng(config.seed).permutation(len(train_data))[:count]
    return normalise_batch(train_data.images[np.sort(chosen)], architecture, torch.device("cpu"))


def _optimizer(config: TrainConfig, trainable: nn.Module, model: KE2NT) -> torch.optim.SGD:
    # One group unless the backbone's rate is split off (a group without lr_scale runs at 1).
    groups = (
        trainable.parameters()
        if config.backbone_lr_scale == 1.0
        else backbone_lr_groups(trainable, model.backbone, config.backbone_lr_scale)
    )
    return torch.optim.SGD(
        groups,
        lr=config.learning_rate(),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps its resumable state, its best weights and its per-epoch metrics."""

    state: Path
    best: Path
    metrics: Path

    @classmethod
    def for_config(cls, config: TrainConfig) -> RunFiles:
        folder = Path(
            config.state_dir or Path.home() / ".cache" / "fermon" / "runs" / f"{config.method}-{config.fingerprint()}"
        )
        return cls(folder / "state.safetensors", folder / "best.safetensors", folder / "metrics.jsonl")


@dataclass
class Run:
    """What the epochs share: the model, what trains with it, and how."""

    config: TrainConfig
    model: KE2NT
    embeddings: torch.Tensor  # the class embeddings the model started from
    trainable: nn.Module
    extra: nn.Module | None
    method_name: str
    criterion: KE2NTLoss
    optimizer: torch.optim.SGD
    ema: ModelEmaV3 | None
    augment: Augmentation
    device: torch.device
    bf16: bool

    def train_epoch(self, data: LabelledFaces, epoch: int) -> dict[str, float]:
        """One pass over ``data`` in a seeded order; the mean of each loss part."""
        config, model = self.config, self.model
        model.train()
        order = np.random.default_rng(config.seed * 1000 + epoch).permutation(len(data))
        steps = max(1, len(data) // config.batch_size)
        total_steps, warmup_steps = steps * config.epochs, max(1, int(config.warmup_epochs * steps))
        targets_all, labels_all = torch.from_numpy(data.targets), torch.from_numpy(data.labels)
        mask_rng = np.random.default_rng([config.seed, epoch])  # PMFER's phrase masking, reproducible on resume
        sums: dict[str, float] = {}
        for step in range(steps):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            factor = lr_factor(epoch * steps + step, total_steps, warmup_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = config.learning_rate() * factor * group.get("lr_scale", 1.0)
            images = self.augment(normalise_batch(data.images[index], model.architecture, self.device))
            targets, labels = targets_all[index].to(self.device), labels_all[index].to(self.device)
            parts = self._losses(images, targets, labels, mask_rng)
            self.optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(model)
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        return {name: total / steps for name, total in sums.items()}

    def _losses(
        self, images: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, mask_rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        model, extra = self.model, self.extra
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if extra is not None and extra.needs_feature_map:
                emotional, feature_map = forward_with_feature_map(model, images)
            else:
                emotional, feature_map = model.encode_image(images), None
            neutral = model.neutral_transform(emotional) if model.neutral_transform is not None else None
        logits = model.logits_from_features(emotional)
        parts = self.criterion(logits, targets, labels, emotional, neutral, model.class_embeddings)
        if extra is not None:
            parts.update(extra.losses(feature_map, emotional, labels, model.class_embeddings, mask_rng))
            parts["total"] = parts["total"] + parts[self.method_name]
        return parts


def _build_run(config: TrainConfig, train_data: LabelledFaces, architecture: Architecture) -> Run:
    device = resolve_device(config.device)
    embeddings = class_embeddings_for(config, train_data.class_names)
    calibration = _calibration_images(config, train_data, architecture)
    model = build_training_model(config, architecture, embeddings, calibration)
    model = model.to(device).to(memory_format=torch.channels_last)
    method = get_method(config.method)
    extra = method.extra(config, model, train_data.class_names).to(device) if method.extra else None
    # What the optimiser updates and the state holds: the model alone, or the model and the method's
    # training-only module under the method's name.
    trainable: nn.Module = model if extra is None else nn.ModuleDict({"model": model, method.name: extra})
    criterion = KE2NTLoss(
        neutral_index=train_data.class_names.index("neutral"),
        transform_weight=config.transform_weight,
        contrast_weight=config.contrast_weight,
        pairing=config.pairing,
    )
    return Run(
        config=config,
        model=model,
        embeddings=embeddings,
        trainable=trainable,
        extra=extra,
        method_name=method.name,
        criterion=criterion,
        optimizer=_optimizer(config, trainable, model),
        ema=ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay > 0 else None,
        augment=Augmentation.for_architecture(architecture, region_occlusion=config.region_occlusion),
        device=device,
        bf16=use_bf16(config.amp, device),
    )


def train(config: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train (or resume) one run; return where its best validation weights are."""
    torch.manual_seed(config.seed)
    architecture = load_architecture(config.architecture)
    train_data, val_data = _load_data(config, architecture)
    validation = Validation.for_score(config.select_on, val_data, architecture)
    run = _build_run(config, train_data, architecture)
    files = RunFiles.for_config(config)
    history: list[dict[str, Any]] = []
    start_epoch, best = 0, {"epoch": -1, "accuracy": -1.0}
    if files.state.is_file():
        info = load_state(files.state, run.trainable, run.optimizer, run.ema)
        if info.get("fingerprint") != config.fingerprint():
            raise UsageError(f"{files.state.parent}: holds a different run; pass another --state-dir or delete it")
        start_epoch, best, history = info["epoch"] + 1, info["best"], info["history"]
        log.info("resuming %s at epoch %d", files.state.parent, start_epoch + 1)

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        losses = run.train_epoch(train_data, epoch)
        evaluated, source, metrics = select_on_validation(run.model, run.ema, validation, run.device)
        record = {
            "epoch": epoch + 1,
            "seconds": round(time.perf_counter() - started, 1),
            "lr": run.optimizer.param_groups[0]["lr"],
            **{f"train_{k}": round(v, 4) for k, v in losses.items()},
            **{f"val_{k}": v for k, v in metrics.items() if k != "per_class_recall"},
            "val_weights": source,
        }
        history.append(record)
        if metrics["score"] > best_score(best):
            best = {"epoch": epoch + 1, "weights": source, **metrics}
            saved = {"epoch": epoch + 1, "weights": source, "fingerprint": config.fingerprint()}
            save_weights(files.best, evaluated, saved)
        state_info = {"epoch": epoch, "best": best, "history": history, "fingerprint": config.fingerprint()}
        save_state(files.state, run.trainable, run.optimizer, state_info, run.ema)
        with files.metrics.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if on_epoch:
            on_epoch(record)
    method = get_method(config.method)
    return TrainResult(
        best_weights=files.best,
        best_epoch=int(best["epoch"]),
        best_metrics=best,
        history=history,
        train_images=len(train_data),
        architecture=architecture,
        class_names=train_data.class_names,
        class_embeddings=run.embeddings,
        config=config,
        prompts=method.prompts(train_data.class_names, config) if method.uses_text else None,
        class_prior=label_prior(train_data),
        state_path=files.state,
    )
