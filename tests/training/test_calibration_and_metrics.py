"""Temperature fitting and the metrics evaluate reports, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from fermon.classify import softmax
from training.export import fit_temperature
from training.metrics import classification_report, expected_calibration_error, negative_log_likelihood


def test_temperature_fit_lowers_nll_of_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    # Right 70% of the time, but with logits that claim near certainty.
    predicted = np.where(rng.random(2000) < 0.7, labels, rng.integers(0, 4, 2000))
    logits = np.eye(4)[predicted] * 12.0 + rng.normal(0, 0.5, (2000, 4))
    temperature = fit_temperature(logits, labels)
    assert temperature > 2.0
    before = negative_log_likelihood(softmax(logits), labels)
    after = negative_log_likelihood(softmax(logits, temperature), labels)
    assert after < before - 0.5
    assert expected_calibration_error(softmax(logits, temperature), labels) < expected_calibration_error(
        softmax(logits), labels
    )


def test_ece_by_hand() -> None:
    # Two samples at confidence 0.9 (one right, one wrong) and two at 0.6 (both right).
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected)


def test_report_counts_recall_and_confusion() -> None:
    probabilities = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [0.2, 0.3, 0.5]])
    labels = np.array([0, 1, 1, 2])
    report = classification_report(probabilities, labels, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["per_class_recall"] == {"a": 1.0, "b": 0.5, "c": 1.0}
    assert report["confusion_matrix"]["counts"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert report["n"] == 4
