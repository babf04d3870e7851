"""What training reads beside the images: each dataset's label mapping and the class prompts.

``training/data/datasets.json`` maps every dataset's own label codes to fermon's canonical
expression names (``fermon.expression.vocab.canonical_classes``); ``training/data/prompts.json`` holds the
prompt templates, class words and action-unit phrases. The runtime package never reads these: a
checkpoint carries its class names, and its class embeddings are already computed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fermon.errors import ModelError
from fermon.expression.vocab import canonical_classes

DATA_DIR = Path(__file__).parent / "data"


@cache
def load_training_data(name: str) -> dict[str, Any]:
    """Read one JSON file from ``training/data``."""
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


def dataset_labels(dataset: str) -> list[str]:
    """The dataset's label codes mapped to canonical names: element ``i`` is code ``code_base + i``."""
    datasets = load_training_data("datasets.json")["datasets"]
    if dataset not in datasets:
        raise ModelError(f"unknown dataset vocabulary '{dataset}'; known: {', '.join(sorted(datasets))}")
    return list(datasets[dataset]["labels"])


def dataset_code_base(dataset: str) -> int:
    return int(load_training_data("datasets.json")["datasets"][dataset]["code_base"])


def dataset_classes(dataset: str) -> list[str]:
    """The dataset's classes in canonical order: the class order of models trained on it."""
    present = set(dataset_labels(dataset))
    return [name for name in canonical_classes() if name in present]


def code_to_class_index(dataset: str) -> dict[int, int]:
    """Map each of the dataset's own label codes to an index into :func:`dataset_classes`."""
    order = dataset_classes(dataset)
    base = dataset_code_base(dataset)
    return {base + i: order.index(name) for i, name in enumerate(dataset_labels(dataset))}


def class_prompts(class_names: Sequence[str], template: str = "ke2nt") -> list[str]:
    """One prompt per class, KE2NT style: the template filled with each class's word."""
    prompts = load_training_data("prompts.json")
    text = prompts["templates"].get(template, template)
    return [text.format(word=prompts["words"][name]) for name in class_names]


def class_words() -> dict[str, str]:
    """The word for each class (and its synonyms in folder names)."""
    return dict(load_training_data("prompts.json")["words"])


def prompt_templates() -> dict[str, str]:
    return dict(load_training_data("prompts.json")["templates"])


def action_unit_phrases(class_name: str) -> list[str]:
    """The prototype facial action units of one expression, one phrase each (for PMFER prompts)."""
    return list(load_training_data("prompts.json")["action_units"][class_name])
