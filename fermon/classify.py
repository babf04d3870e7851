"""The classifier's old address, kept working: it lives in :mod:`fermon.expression.classify`."""

from fermon.expression.classify import (
    ExpressionClassifier,
    batched_logits,
    inference_dtype,
    normalise_batch,
    resolve_device,
    softmax,
)

__all__ = ["ExpressionClassifier", "batched_logits", "inference_dtype", "normalise_batch", "resolve_device", "softmax"]
