"""KE2NT's losses on cases small enough to compute by hand."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import KE2NTLoss, self_contrast_loss, soft_cross_entropy, transformation_loss


def test_transformation_loss_is_zero_when_shift_matches_text_direction() -> None:
    f_e = torch.tensor([[2.0, 1.0]])
    f_n = torch.tensor([[1.0, 1.0]])  # shift (1, 0)
    t_y, t_0 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])  # direction (1, 0)
    assert transformation_loss(f_e, f_n, t_y, t_0).item() == pytest.approx(0.0, abs=1e-6)


def test_transformation_loss_is_one_for_orthogonal_and_two_for_opposite() -> None:
    f_e, f_n = torch.tensor([[0.0, 1.0], [-1.0, 0.0]]), torch.zeros(2, 2)
    t_y, t_0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.zeros(2, 2)
    # Orthogonal gives 1, opposite gives 2: mean 1.5.
    assert transformation_loss(f_e, f_n, t_y, t_0).item() == pytest.approx(1.5, abs=1e-6)


def test_self_contrast_own_pairs_by_hand() -> None:
    t_y = torch.tensor([[1.0, 0.0]])
    f_e = torch.tensor([[1.0, 0.0]])  # t.f_e = 1
    f_n = torch.tensor([[0.0, 3.0]])  # t.f_n = 0 after normalising
    assert self_contrast_loss(f_e, f_n, t_y, "own").item() == pytest.approx(0 - 1 + 2)


def test_self_contrast_batch_form_averages_every_pair() -> None:
    t_y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f_e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f_n = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # own: each sample 0 - 1 + 2 = 1. batch: t.f_n and t.f_e matrices both average 0.5, so 2.
    assert self_contrast_loss(f_e, f_n, t_y, "own").item() == pytest.approx(1.0)
    assert self_contrast_loss(f_e, f_n, t_y, "batch").item() == pytest.approx(2.0)
    with pytest.raises(ValueError):
        self_contrast_loss(f_e, f_n, t_y, "both")


def test_soft_cross_entropy_matches_hand_value_and_hard_labels() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # probabilities 1/4, 3/4
    assert soft_cross_entropy(logits, torch.tensor([[0.5, 0.5]])).item() == pytest.approx(
        -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    )
    hard = torch.nn.functional.cross_entropy(logits, torch.tensor([1]))
    assert soft_cross_entropy(logits, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(hard.item())


def test_ke2nt_loss_skips_neutral_samples_for_the_extra_terms() -> None:
    loss = KE2NTLoss(neutral_index=0)
    embeddings = torch.eye(3)
    logits = torch.zeros(2, 3)
    targets = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    only_neutral = loss(logits, targets, torch.tensor([0, 0]), torch.randn(2, 3), torch.randn(2, 3), embeddings)
    assert set(only_neutral) == {"ce", "total"}
    mixed = loss(logits, targets, torch.tensor([0, 2]), torch.randn(2, 3), torch.randn(2, 3), embeddings)
    assert {"transform", "contrast"} <= set(mixed)
    assert mixed["total"].item() == pytest.approx((mixed["ce"] + mixed["transform"] + mixed["contrast"]).item())
