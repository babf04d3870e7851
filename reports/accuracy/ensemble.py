"""Validation figures of checkpoints alone, with flip averaging, and as an ensemble (mean of their
calibrated probabilities): what decides which teacher the distilled default learns from.

    python reports/accuracy/ensemble.py FERPLUS_ROOT CHECKPOINT [CHECKPOINT ...] > reports/accuracy/ensemble.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fermon.expression.checkpoint import load_checkpoint
from fermon.expression.classify import ExpressionClassifier
from training.datasets import read_dataset
from training.metrics import classification_report


def _summary(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, float]:
    report = classification_report(probabilities, labels, class_names)
    return {k: round(float(report[k]), 4) for k in ("accuracy", "mean_class_recall", "ece", "nll")}


def main(root: Path, specs: list[str]) -> dict:
    results, plain_all, flipped_all, labels, names = {}, [], [], None, None
    for spec in specs:
        checkpoint = load_checkpoint(spec)
        classifier = ExpressionClassifier(checkpoint, device="cpu", batch_size=256)
        architecture = classifier.architecture
        val = read_dataset("ferplus", root, "valid", architecture.input_size, architecture.colour)
        labels, names = val.labels, val.class_names
        plain = classifier.predict(val.images)
        mirrored = classifier.predict(np.ascontiguousarray(val.images[:, :, ::-1]))
        flipped = (plain + mirrored) / 2
        plain_all.append(plain)
        flipped_all.append(flipped)
        # An embedded name (default) says which model only with its hash: the name moves between releases.
        results[f"{Path(spec).name} ({checkpoint.short_hash})"] = {
            "alone": _summary(plain, labels, names),
            "flip_averaged": _summary(flipped, labels, names),
        }
    results["ensemble"] = {
        "alone": _summary(np.mean(plain_all, axis=0), labels, names),
        "flip_averaged": _summary(np.mean(flipped_all, axis=0), labels, names),
    }
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2:]), indent=1))
