"""Calibration on data the temperature never saw: fit it on one half of validation, measure ECE on the other.

The shipped temperature is fitted on the whole validation split, so ECE measured there flatters it;
two-fold cross-fitting is the honest estimate available without the held-out test split.

    python reports/accuracy/crossfit_ece.py FERPLUS_ROOT [CHECKPOINT] > reports/accuracy/NAME-crossfit-ece.json
"""

from __future__ import annotations

import json
import sys

import numpy as np

from fermon.expression.classify import ExpressionClassifier, softmax
from training.datasets import read_dataset
from training.export import fit_temperature
from training.metrics import expected_calibration_error, negative_log_likelihood


def main(root: str, checkpoint: str = "default") -> None:
    classifier = ExpressionClassifier.load(checkpoint, device="cpu")
    arch = classifier.architecture
    data = read_dataset("ferplus", root, "valid", arch.input_size, arch.colour)
    logits = classifier.logits(data.images)
    order = np.random.default_rng(0).permutation(len(data))
    halves = np.array_split(order, 2)
    folds = []
    for fit, held in (halves, halves[::-1]):
        temperature = fit_temperature(logits[fit], data.labels[fit])
        probabilities = softmax(logits[held], temperature)
        folds.append(
            {
                "temperature": temperature,
                "ece_held_out": expected_calibration_error(probabilities, data.labels[held]),
                "nll_held_out": negative_log_likelihood(probabilities, data.labels[held]),
                "ece_uncalibrated": expected_calibration_error(softmax(logits[held]), data.labels[held]),
            }
        )
    print(
        json.dumps(
            {
                "checkpoint": checkpoint,
                "folds": folds,
                "mean_ece_held_out": float(np.mean([f["ece_held_out"] for f in folds])),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
