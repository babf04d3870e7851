"""PMFER (training/pmfer.py): prompt masking, cross-attention, gradient reversal, the adversarial loss, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from fermon.expression.checkpoint import load_checkpoint
from tests.fixtures import write_ferplus_splits
from training.__main__ import app
from training.pmfer import (
    CrossAttentionPredictor,
    MaskedPrompts,
    ModalityDiscriminator,
    au_prompt,
    class_au_prompts,
    grad_reverse,
    modal_adversarial_loss,
    phrase_logits,
    spatial_tokens,
)
from training.vocabulary import action_unit_phrases, dataset_classes

CLASSES = dataset_classes("ferplus")


def test_class_prompts_are_built_from_action_units() -> None:
    assert class_au_prompts(["happiness", "neutral"]) == [
        "a photo of a face with cheeks raised and lip corners pulled up.",
        "a photo of a face with no facial action.",
    ]
    assert au_prompt(["a", "b", "c"]) == "a photo of a face with a, b and c."
    assert au_prompt([]) == "a photo of a face."


def test_masking_drops_one_phrase_and_targets_exactly_that_phrase() -> None:
    masked = MaskedPrompts.build(CLASSES)
    labels = np.array([CLASSES.index(name) for name in ["fear", "fear", "happiness", "neutral", "sadness"]] * 4)
    rows = masked.sample(labels, np.random.default_rng(0))
    assert (masked.owner[rows] == labels).all()
    for row, label in zip(rows, labels):
        phrases = action_unit_phrases(CLASSES[label])
        dropped = masked.vocabulary[masked.target[row]]
        assert dropped in phrases
        remaining = [p for p in phrases if p != dropped]
        assert masked.prompts[row] == au_prompt(remaining)
        assert dropped not in masked.prompts[row]
        assert all(p in masked.prompts[row] for p in remaining)
    # Over many draws every phrase of a class gets dropped: the choice is random, not fixed.
    fear = masked.sample(np.full(200, CLASSES.index("fear")), np.random.default_rng(1))
    assert {masked.vocabulary[t] for t in masked.target[fear]} == set(action_unit_phrases("fear"))


def test_spatial_tokens_from_channels_first_and_channels_last_maps() -> None:
    cnn = torch.randn(2, 16, 3, 4)
    swin = cnn.permute(0, 2, 3, 1)
    assert spatial_tokens(cnn, 16).shape == (2, 12, 16)
    assert torch.equal(spatial_tokens(cnn, 16), spatial_tokens(swin, 16))


def test_cross_attention_predicts_the_dropped_phrase_better_after_a_few_steps() -> None:
    torch.manual_seed(0)
    batch, tokens, channels, text_dim, vocabulary = 6, 9, 16, 8, 5
    predictor = CrossAttentionPredictor(text_dim, channels, hidden=32, heads=4)
    masked_text = torch.randn(batch, text_dim)
    image_tokens = torch.randn(batch, tokens, channels)
    phrases = F.normalize(torch.randn(vocabulary, text_dim), dim=-1)
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    assert predictor(masked_text, image_tokens).shape == (batch, text_dim)
    assert phrase_logits(predictor(masked_text, image_tokens), phrases).shape == (batch, vocabulary)

    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(phrase_logits(predictor(masked_text, image_tokens), phrases), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_gradient_reversal_is_identity_forward_and_flips_the_gradient() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    weights = torch.tensor([0.5, 2.0, -1.0])
    y = grad_reverse(x, 0.7)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    assert torch.allclose(x.grad, -0.7 * weights)


def test_discriminator_loss_covers_both_modalities_and_reverses_only_the_image_side() -> None:
    torch.manual_seed(0)
    discriminator = ModalityDiscriminator(8, hidden=16)
    image = torch.randn(4, 8, requires_grad=True)
    text = F.normalize(torch.randn(4, 8), dim=-1)
    parts = modal_adversarial_loss(discriminator, image, text)

    image_logits = discriminator(F.normalize(image, dim=-1))
    text_logits = discriminator(text)
    expected_image = F.binary_cross_entropy_with_logits(image_logits, torch.ones(4))
    expected_text = F.binary_cross_entropy_with_logits(text_logits, torch.zeros(4))
    assert torch.allclose(parts["image"], expected_image)
    assert torch.allclose(parts["text"], expected_text)
    assert torch.allclose(parts["total"], 0.5 * (expected_image + expected_text))

    # The encoder side gets the reversed gradient of the discriminator's own image loss.
    (reversed_grad,) = torch.autograd.grad(parts["total"], image, retain_graph=True)
    (plain_grad,) = torch.autograd.grad(0.5 * (expected_image + expected_text), image)
    assert torch.allclose(reversed_grad, -plain_grad, atol=1e-6)
    # The discriminator itself learns from both modalities (its gradient is not reversed).
    text_only = torch.autograd.grad(parts["text"], list(discriminator.parameters()))
    assert any(float(g.abs().sum()) > 0 for g in text_only)


@pytest.fixture(scope="module")
def ferplus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ferplus_splits(tmp_path_factory.mktemp("ferplus"), repeat=4)


def test_train_pmfer_one_epoch_gives_an_ordinary_checkpoint(ferplus_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "pmfer.safetensors"
    args = ["train", "--root", str(ferplus_root), "--method", "pmfer", "--epochs", "1", "--batch-size", "8"]
    args += ["--limit", "16", "--state-dir", str(tmp_path / "state"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint.metadata["method"] == "pmfer"
    assert not any(name.startswith(("pmfer", "model.")) for name in checkpoint.tensors)
    assert checkpoint.build_model().num_classes == 8
    record = (tmp_path / "state" / "metrics.jsonl").read_text()
    assert '"train_mask"' in record and '"train_adversarial"' in record

    result = CliRunner().invoke(
        app, ["evaluate", "--root", str(ferplus_root), "--split", "test", "--checkpoint", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output
