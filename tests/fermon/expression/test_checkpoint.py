"""The checkpoint format: safetensors plus JSON metadata, verified on load, never unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fermon.errors import ModelError
from fermon.expression.checkpoint import load_checkpoint, save_checkpoint
from fermon.expression.model import KE2NT, load_architecture


def _model(architecture: str = "cnn48") -> KE2NT:
    torch.manual_seed(0)
    model = KE2NT(load_architecture(architecture), torch.randn(8, 24), logit_scale=30.0, with_neutral_transform=True)
    # Give BatchNorm non-trivial statistics, as a trained model has.
    model.train()
    channels = model.architecture.in_chans
    size = model.architecture.input_size
    with torch.no_grad():
        model(torch.randn(4, channels, size, size))
    return model.eval()


@pytest.mark.parametrize("half", [False, True])
def test_round_trip_gives_identical_outputs(tmp_path: Path, half: bool) -> None:
    model = _model()
    if half:  # what is saved in fp16 must load back to exactly the fp16-rounded model
        model.load_state_dict(
            {
                k: v.half().float() if v.is_floating_point() and "running_" not in k and k != "logit_scale" else v
                for k, v in model.inference_state_dict().items()
            },
            strict=False,
        )
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, {"name": "t", "class_names": list("abcdefgh"), "temperature": 1.5}, half=half)
    loaded = load_checkpoint(path)
    images = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(images), model(images))
    assert loaded.temperature == 1.5 and loaded.class_names == list("abcdefgh")
    assert loaded.architecture == model.architecture


def test_metadata_lives_in_the_safetensors_header_without_training_parts(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, _model(), {"name": "t", "class_names": list("abcdefgh")})
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["fermon"])
        names = list(handle.keys())
        assert handle.get_tensor("backbone.stages.0.0.0.weight").dtype == torch.float16
    assert metadata["architecture"]["backbone"] == "fermon_vgg"
    assert len(metadata["content_sha256"]) == 64
    assert "class_embeddings" in names and not any(n.startswith("neutral_transform") for n in names)


def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, _model(), {"name": "t", "class_names": list("abcdefgh")})
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="content hash"):
        load_checkpoint(path)


def test_a_pickle_file_is_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ModelError, match="not a safetensors checkpoint"):
        load_checkpoint(path)
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_embedded_names_resolve_inside_the_package() -> None:
    from fermon.expression.checkpoint import EMBEDDED_CHECKPOINTS, default_checkpoint_path, resolve_checkpoint

    assert resolve_checkpoint("fast") == resolve_checkpoint("default") == default_checkpoint_path()
    assert resolve_checkpoint(None) == default_checkpoint_path()
    assert resolve_checkpoint("accurate").name == EMBEDDED_CHECKPOINTS["accurate"]
    assert resolve_checkpoint("accurate").parent == default_checkpoint_path().parent
    assert resolve_checkpoint("my.safetensors") == Path("my.safetensors")


def test_a_gpu_run_uses_accurate_unless_a_checkpoint_is_named() -> None:
    from fermon.expression.checkpoint import checkpoint_for_device, embedded_checkpoint_path

    gpu_model = "accurate" if embedded_checkpoint_path("accurate").is_file() else "default"
    assert checkpoint_for_device("auto", "cuda") == gpu_model
    assert checkpoint_for_device(None, "cuda") == gpu_model
    assert checkpoint_for_device("auto", "cpu") == "default"
    assert checkpoint_for_device("fast", "cuda") == "fast"
    assert checkpoint_for_device("mine.safetensors", "cuda") == "mine.safetensors"
    assert checkpoint_for_device("auto", "auto") == (gpu_model if torch.cuda.is_available() else "default")


def test_an_embedded_model_this_version_lacks_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from fermon.expression import checkpoint

    monkeypatch.setitem(checkpoint.EMBEDDED_CHECKPOINTS, "accurate", "not-shipped.safetensors")
    with pytest.raises(ModelError, match="embedded model 'accurate' is not in this version") as caught:
        load_checkpoint("accurate")
    assert "\n" not in str(caught.value) and "/" not in str(caught.value).split(":")[0]


def test_class_bias_moves_probabilities_as_metadata_says(tmp_path: Path) -> None:
    import numpy as np

    from fermon.expression.classify import ExpressionClassifier, softmax

    model = _model()
    bias = [0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 1.0, 2.0]
    metadata = {"name": "m", "class_names": [f"c{i}" for i in range(8)], "temperature": 0.7}
    save_checkpoint(tmp_path / "plain.safetensors", model, metadata)
    save_checkpoint(tmp_path / "biased.safetensors", model, {**metadata, "class_bias": bias})
    crops = np.random.default_rng(0).integers(0, 255, (5, 48, 48, 1), dtype=np.uint8)
    plain = ExpressionClassifier.load(tmp_path / "plain.safetensors", device="cpu")
    biased = ExpressionClassifier.load(tmp_path / "biased.safetensors", device="cpu")
    assert np.array_equal(plain.checkpoint.class_bias, np.zeros(8))
    logits = plain.logits(crops)
    np.testing.assert_allclose(plain.predict(crops), softmax(logits, 0.7), atol=1e-5)
    np.testing.assert_allclose(biased.predict(crops), softmax(logits / 0.7 + np.array(bias)), atol=1e-5)


def test_flip_average_reads_each_crop_and_its_mirror(tmp_path: Path) -> None:
    import numpy as np

    from fermon.expression.classify import ExpressionClassifier, softmax

    model = _model()
    metadata = {"name": "m", "class_names": [f"c{i}" for i in range(8)], "temperature": 0.9}
    save_checkpoint(tmp_path / "plain.safetensors", model, metadata)
    save_checkpoint(tmp_path / "flip.safetensors", model, {**metadata, "flip_average": True})
    crops = np.random.default_rng(1).integers(0, 255, (4, 48, 48, 1), dtype=np.uint8)
    plain = ExpressionClassifier.load(tmp_path / "plain.safetensors", device="cpu")
    flipped = ExpressionClassifier.load(tmp_path / "flip.safetensors", device="cpu")
    averaged = (plain.logits(crops) + plain.logits(np.ascontiguousarray(crops[:, :, ::-1]))) / 2
    assert not np.allclose(averaged, plain.logits(crops), atol=1e-4)
    np.testing.assert_allclose(flipped.logits(crops), averaged, atol=1e-5)
    np.testing.assert_allclose(flipped.predict(crops), softmax(averaged, 0.9), atol=1e-5)
