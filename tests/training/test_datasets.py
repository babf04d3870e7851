"""Dataset readers on tiny fixtures in each layout, and the label mappings behind them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fermon.errors import InputError, UsageError
from fermon.expression.vocab import canonical_classes
from tests.fixtures import write_affectnet, write_ferplus, write_folder, write_rafdb
from training.datasets import read_dataset
from training.vocabulary import code_to_class_index, dataset_classes

CANONICAL = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def test_canonical_order_is_ferplus_column_order() -> None:
    assert canonical_classes() == CANONICAL
    assert dataset_classes("ferplus") == CANONICAL


@pytest.mark.parametrize(
    ("dataset", "code", "expected"),
    [
        ("rafdb", 1, "surprise"),
        ("rafdb", 4, "happiness"),
        ("rafdb", 7, "neutral"),
        ("affectnet7", 0, "neutral"),
        ("affectnet7", 2, "sadness"),
        ("affectnet7", 6, "anger"),
        ("affectnet8", 7, "contempt"),
        ("ferplus", 3, "sadness"),
    ],
)
def test_label_codes_map_to_the_right_canonical_class(dataset: str, code: int, expected: str) -> None:
    assert dataset_classes(dataset)[code_to_class_index(dataset)[code]] == expected


def test_seven_class_datasets_have_no_contempt() -> None:
    for dataset in ("rafdb", "affectnet7"):
        assert dataset_classes(dataset) == [c for c in CANONICAL if c != "contempt"]


def test_ferplus_majority_protocol_drops_unknown_and_breaks_ties_by_column(tmp_path: Path) -> None:
    data = read_dataset("ferplus", write_ferplus(tmp_path), "test", 48, "gray")
    assert data.names == ["fer0000000.png", "fer0000001.png", "fer0000004.png", "fer0000005.png"]
    assert [data.class_names[i] for i in data.labels] == ["neutral", "happiness", "surprise", "contempt"]
    assert data.images.shape == (4, 48, 48, 1) and data.images.dtype == np.uint8
    # Vote shares over the 8 emotions: 6/10 neutral, 1/10 sadness, 3/10 anger.
    np.testing.assert_allclose(data.targets[0], [0.6, 0, 0, 0.1, 0.3, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(data.targets.sum(axis=1), 1.0, atol=1e-6)


def test_ferplus_reader_resizes_and_converts_colour(tmp_path: Path) -> None:
    data = read_dataset("ferplus", write_ferplus(tmp_path), "test", 112, "rgb", limit=2)
    assert data.images.shape == (2, 112, 112, 3)
    assert np.array_equal(data.images[..., 0], data.images[..., 2])


def test_rafdb_reader_splits_by_prefix(tmp_path: Path) -> None:
    root = write_rafdb(tmp_path)
    train = read_dataset("rafdb", root, "train", 48, "gray")
    test = read_dataset("rafdb", root, "test", 48, "gray")
    assert [train.class_names[i] for i in train.labels] == ["happiness", "neutral"]
    assert [test.class_names[i] for i in test.labels] == ["surprise", "anger"]


@pytest.mark.parametrize(
    ("vocabulary", "expected"), [("affectnet8", ["neutral", "contempt", "anger"]), ("affectnet7", ["neutral", "anger"])]
)
def test_affectnet_reader_drops_codes_outside_its_vocabulary(
    tmp_path: Path, vocabulary: str, expected: list[str]
) -> None:
    data = read_dataset(vocabulary, write_affectnet(tmp_path), "valid", 48, "gray")
    assert [data.class_names[i] for i in data.labels] == expected


def test_folder_reader_accepts_prompt_words_as_folder_names(tmp_path: Path) -> None:
    data = read_dataset("folder", write_folder(tmp_path), "valid", 48, "gray")
    assert data.class_names == ["neutral", "happiness", "fear"]
    assert sorted(data.class_names[i] for i in data.labels) == ["fear", "happiness", "neutral"]


def test_missing_dataset_and_unknown_layout_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"label\.csv"):
        read_dataset("ferplus", tmp_path, "test", 48, "gray")
    with pytest.raises(UsageError, match="unknown dataset"):
        read_dataset("imagenet", tmp_path, "test", 48, "gray")
