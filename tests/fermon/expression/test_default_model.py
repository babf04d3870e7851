"""The embedded default checkpoint: it loads, says what it is, and classifies real faces."""

from __future__ import annotations

import numpy as np
import pytest

from fermon.expression.checkpoint import default_checkpoint_path, load_checkpoint
from fermon.expression.classify import ExpressionClassifier
from fermon.expression.images import classify_faces
from fermon.expression.vocab import canonical_classes
from fermon.faces.align import CropSpec, crop_faces
from fermon.faces.detector import CenterFaceDetector


@pytest.fixture(scope="module")
def classifier() -> ExpressionClassifier:
    return ExpressionClassifier.load("default", device="cpu")


def test_default_checkpoint_is_small_fp16_safetensors_with_full_metadata() -> None:
    path = default_checkpoint_path()
    assert path.suffix == ".safetensors" and path.stat().st_size < 25 * 2**20
    metadata = load_checkpoint("default").metadata
    assert metadata["method"] == "ke2nt"
    assert metadata["class_names"] == canonical_classes()
    assert metadata["crop"]["template"] == "ferplus48" and metadata["crop"]["colour"] == "gray"
    assert metadata["training"]["dataset"] == "ferplus" and metadata["training"]["selected_on"] == "valid"
    assert metadata["metrics"]["split"] == "valid" and metadata["metrics"]["accuracy"] >= 0.80
    assert 0.2 < metadata["temperature"] < 5.0
    assert metadata["text_encoder"] == "minilm" and len(metadata["prompts"]) == 8


def test_default_classifies_the_faces_of_insightfaces_group_photo(
    classifier: ExpressionClassifier, group_photo: np.ndarray
) -> None:
    faces = classify_faces(group_photo, CenterFaceDetector(), classifier, "t1.jpg")
    assert len(faces) >= 5
    for face in faces:
        assert face.label in canonical_classes()
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert face.confidence == max(face.probabilities.values())


def test_default_sees_the_astronauts_smile(classifier: ExpressionClassifier, astronaut: np.ndarray) -> None:
    faces = classify_faces(astronaut, CenterFaceDetector(), classifier)
    assert len(faces) == 1
    assert faces[0].label == "happiness"
    # Hiding the mouth takes most of the evidence away: confidence in the smile must drop.
    marks = CenterFaceDetector().detect([astronaut])[0].landmarks
    spec = CropSpec.from_metadata(classifier.checkpoint.metadata["crop"])
    crop = crop_faces(astronaut, marks, spec)
    hidden = crop.copy()
    hidden[:, 30:, :] = 0
    happy = classifier.class_names.index("happiness")
    assert classifier.predict(hidden)[0, happy] < classifier.predict(crop)[0, happy]
