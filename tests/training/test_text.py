"""Text encoders: the offline MiniLM default, and open_clip with weights from a local file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fermon.errors import ModelError
from fermon.vocab import canonical_classes
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
