"""Text encoders: the offline MiniLM default, open_clip with weights from a local file, and the
class embeddings a checkpoint stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fermon.errors import ModelError
from fermon.expression.vocab import canonical_classes
from training.text import create_text_encoder
from training.vocabulary import class_prompts

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_minilm_embeds_prompts_offline_as_unit_vectors() -> None:
    encoder = create_text_encoder("minilm")
    prompts = class_prompts(canonical_classes())
    embeddings = encoder.encode(prompts)
    assert embeddings.shape == (8, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    smiling = encoder.encode(["a photo of a smiling, cheerful person."])[0]
    # Meaning, not just shape: a smile is nearer the happy prompt than the sad or angry one.
    happy, sad, angry = (embeddings[canonical_classes().index(c)] @ smiling for c in ("happiness", "sadness", "anger"))
    assert happy > sad and happy > angry


def test_open_clip_loads_weights_from_a_local_file(tmp_path: Path) -> None:
    import open_clip

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "fermon-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "configs")
    torch.manual_seed(0)
    reference = open_clip.create_model("fermon-tiny-clip")
    weights = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))

    encoder = create_text_encoder(f"open_clip:fermon-tiny-clip@{weights}")
    prompts = class_prompts(["neutral", "happiness"])
    embeddings = encoder.encode(prompts)
    with torch.no_grad():
        expected = reference.encode_text(open_clip.get_tokenizer("fermon-tiny-clip")(prompts)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)


def test_missing_open_clip_weights_and_unknown_specs_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="open_clip"):
        create_text_encoder(f"open_clip:ViT-B-16@{tmp_path / 'missing.bin'}").encode(["x"])
    with pytest.raises(ModelError, match="unknown text encoder"):
        create_text_encoder("word2vec")


def test_checkpoint_embeddings_reproduce_the_targets_the_default_was_trained_towards() -> None:
    from training.build import class_embeddings_for
    from training.config import TrainConfig

    classes = canonical_classes()
    from_text = class_embeddings_for(TrainConfig(root=Path("."), text_encoder="minilm"), classes)
    stored = class_embeddings_for(TrainConfig(root=Path("."), text_encoder="checkpoint:default"), classes)
    # The same centred MiniLM vectors, up to the checkpoint's fp16 storage; not re-centred.
    np.testing.assert_allclose(stored.numpy(), from_text.numpy(), atol=2e-3)
    assert (stored @ from_text.T).argmax(dim=1).tolist() == list(range(len(classes)))


def test_checkpoint_embeddings_refuse_prompts_the_checkpoint_never_saw(tmp_path: Path) -> None:
    encoder = create_text_encoder("checkpoint:default")
    assert encoder.centred
    with pytest.raises(ModelError, match=r"ke2nt_cnn48_ferplus\.safetensors: holds no embedding for the prompt"):
        encoder.encode(["a photo of a person with the inner brows raised."])
    with pytest.raises(ModelError, match=r"missing\.safetensors: checkpoint not found"):
        create_text_encoder(f"checkpoint:{tmp_path / 'missing.safetensors'}")


def test_training_from_checkpoint_embeddings_ships_those_embeddings(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fermon.expression.checkpoint import load_checkpoint
    from tests.fixtures import write_ferplus_splits
    from training.__main__ import app

    root = write_ferplus_splits(tmp_path / "ferplus", repeat=4)
    out = tmp_path / "trained.safetensors"
    args = ["train", "--root", str(root), "--epochs", "1", "--batch-size", "8", "--limit", "16"]
    args += ["--text-encoder", "checkpoint:default", "--state-dir", str(tmp_path / "s"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    trained, default = load_checkpoint(out), load_checkpoint("default")
    torch.testing.assert_close(trained.tensors["class_embeddings"], default.tensors["class_embeddings"])
    assert trained.metadata["prompts"] == default.metadata["prompts"]
    assert trained.metadata["text_encoder"] == "checkpoint:default"
