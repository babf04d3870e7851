"""Classification metrics from probabilities: accuracy, per-class recall, confusion, ECE, NLL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over the top-class confidence with equal-width bins (Guo et al. 2017)."""
    if len(labels) == 0:
        return float("nan")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0 goes to bin 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean()) if len(labels) else float("nan")


def classification_report(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Everything ``evaluate`` writes: accuracy, n, per-class recall, confusion matrix, ECE, NLL.

    ``labels`` index into ``class_names``, the same order as the columns of ``probabilities``.
    """
    predictions = probabilities.argmax(axis=1)
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    support = confusion.sum(axis=1)
    recall = {name: float(confusion[i, i] / support[i]) if support[i] else None for i, name in enumerate(class_names)}
    present = [r for r in recall.values() if r is not None]
    return {
        "accuracy": float((predictions == labels).mean()) if len(labels) else float("nan"),
        "n": len(labels),
        "per_class_recall": recall,
        "mean_class_recall": float(np.mean(present)) if present else float("nan"),
        "support": {name: int(s) for name, s in zip(class_names, support)},
        "confusion_matrix": {"rows_true_columns_predicted": list(class_names), "counts": confusion.tolist()},
        "ece": expected_calibration_error(probabilities, labels),
        "nll": negative_log_likelihood(probabilities, labels),
    }
