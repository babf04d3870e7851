"""Temperature fitting and the metrics evaluate reports, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from fermon.expression.classify import softmax
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


def _prior_biased_logits(rng: np.random.Generator, n: int = 6000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three classes, the last rare; logits carry the true class's evidence plus a pull to the common ones."""
    prior = np.array([0.6, 0.35, 0.05])
    labels = rng.choice(3, size=n, p=prior)
    evidence = np.eye(3)[labels] * 2.0 + rng.normal(0, 1.0, (n, 3))
    return evidence + 1.5 * np.log(prior), labels, prior


def test_prior_adjustment_raises_rare_class_recall_within_the_accuracy_budget() -> None:
    from training.export import ADJUSTMENT_ACCURACY_COST, fit_prior_adjustment

    logits, labels, prior = _prior_biased_logits(np.random.default_rng(0))
    tau, temperature, grid = fit_prior_adjustment(logits, labels, prior, ["a", "b", "c"])
    plain, chosen = grid[0], next(row for row in grid if row["tau"] == tau)
    assert tau > 0
    assert chosen["mean_class_recall"] > plain["mean_class_recall"] + 0.02
    assert chosen["accuracy"] >= plain["accuracy"] - ADJUSTMENT_ACCURACY_COST
    assert chosen["temperature"] == temperature and temperature > 0


def test_prior_adjustment_keeps_an_unbiased_model_as_it_is() -> None:
    from training.export import fit_prior_adjustment

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 3000)  # balanced classes: a prior adjustment has nothing to correct
    logits = np.eye(3)[labels] * 2.0 + rng.normal(0, 1.0, (3000, 3))
    prior = np.bincount(labels, minlength=3) / len(labels)
    tau, _, grid = fit_prior_adjustment(logits, labels, prior, ["a", "b", "c"])
    assert abs(grid[[row["tau"] for row in grid].index(tau)]["mean_class_recall"] - grid[0]["mean_class_recall"]) < 0.01


def test_fit_temperature_with_a_bias() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 2000)
    logits = np.eye(2)[labels] * 3.0 + rng.normal(0, 1.0, (2000, 2))
    bias = np.array([0.0, 0.7])
    temperature = fit_temperature(logits, labels, bias=bias)
    nll = negative_log_likelihood(softmax(logits / temperature + bias), labels)
    for other in (temperature * 0.8, temperature * 1.25):
        assert nll <= negative_log_likelihood(softmax(logits / other + bias), labels) + 1e-9
