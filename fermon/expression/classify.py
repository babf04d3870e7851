"""Stage: face crops in, calibrated class probabilities out.

Crops are uint8 (N, H, W, C) at the checkpoint's input size and colour (see :mod:`fermon.faces.align`).
Probabilities are ``softmax(logits / temperature + class_bias)``, with the temperature (and the
optional prior adjustment ``class_bias``) fitted on validation data when the checkpoint was exported.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fermon.expression.checkpoint import Checkpoint, load_checkpoint
from fermon.expression.model import KE2NT, Architecture
from fermon.faces.runtime import network_dtype, resolve_device


def normalise_batch(images: np.ndarray, architecture: Architecture, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) to normalised float (N, C, H, W), channels-last in memory."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(architecture.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(architecture.std, device=device).view(1, -1, 1, 1)
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (a fact benchmarks report; the precision rule times instead)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast precision for inference under fermon's one rule (:func:`network_dtype`), None for
    float32. For the default model, bfloat16 moves probabilities by 0.0004 on average (FERPlus validation)."""
    dtype = network_dtype(precision, device)
    return None if dtype is torch.float32 else dtype


@torch.inference_mode()
def batched_logits(
    model: KE2NT,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Raw (uncalibrated) logits for many crops, in batches."""
    device = torch.device(device)
    weights_dtype = next(model.backbone.parameters()).dtype  # the input goes to the backbone
    out = []
    for start in range(0, len(images), batch_size):
        batch = normalise_batch(images[start : start + batch_size], model.architecture, device).to(weights_dtype)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out.append(model(batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


class ExpressionClassifier:
    """A loaded checkpoint ready to classify crops: model on its device, calibration applied."""

    def __init__(
        self, checkpoint: Checkpoint, device: str = "auto", batch_size: int = 64, precision: str = "auto"
    ) -> None:
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model = checkpoint.build_model().to(self.device).to(memory_format=torch.channels_last)
        self.autocast_dtype = inference_dtype(self.device, precision)
        self.precision = str(self.autocast_dtype or torch.float32).removeprefix("torch.")
        # Read from the metadata once, not per batch.
        self.temperature, self.class_bias = checkpoint.temperature, checkpoint.class_bias
        if self.autocast_dtype is torch.bfloat16:
            # bfloat16 weights rather than autocast: autocast re-casts the weights on every call,
            # which costs as much as the convolutions for small batches. The backbone only: the head
            # (projection, class embeddings, logit scale ~100) stays float32, where bfloat16's 8-bit
            # mantissa moved probabilities by up to 0.04 on FERPlus validation faces.
            self.model.backbone.to(torch.bfloat16)
            self.autocast_dtype = None

    @classmethod
    def load(cls, spec: str | os.PathLike[str] | None = None, **kwargs: object) -> ExpressionClassifier:
        return cls(load_checkpoint(spec), **kwargs)  # type: ignore[arg-type]

    @property
    def class_names(self) -> list[str]:
        return self.checkpoint.class_names

    @property
    def architecture(self) -> Architecture:
        return self.checkpoint.architecture

    def logits(self, crops: np.ndarray) -> np.ndarray:
        """Raw logits; for a checkpoint exported with ``flip_average`` the mean over each crop and its mirror."""
        logits = batched_logits(self.model, crops, self.device, self.batch_size, self.autocast_dtype)
        if self.checkpoint.flip_average:
            mirrored = np.ascontiguousarray(crops[:, :, ::-1])
            logits = (
                logits + batched_logits(self.model, mirrored, self.device, self.batch_size, self.autocast_dtype)
            ) / 2
        return logits

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, float32 (N, classes) in ``class_names`` order."""
        tempered = self.logits(crops) / self.temperature + self.class_bias
        return softmax(tempered).astype(np.float32)
