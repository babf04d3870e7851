"""The canonical expression vocabulary, dataset label mappings and class prompts, read from data files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from fermon.errors import ModelError


@cache
def load_data_file(name: str) -> dict[str, Any]:
    """Read one JSON file from ``fermon/data``."""
    text = resources.files("fermon").joinpath("data", name).read_text(encoding="utf-8")
    return json.loads(text)


def canonical_classes() -> list[str]:
    """The canonical expression names, in fermon's order (FERPlus's vote-column order)."""
    return list(load_data_file("vocabulary.json")["canonical"])


def dataset_labels(dataset: str) -> list[str]:
    """The dataset's label codes mapped to canonical names: element ``i`` is code ``code_base + i``."""
    datasets = load_data_file("vocabulary.json")["datasets"]
    if dataset not in datasets:
        raise ModelError(f"unknown dataset vocabulary '{dataset}'; known: {', '.join(sorted(datasets))}")
    return list(datasets[dataset]["labels"])


def dataset_code_base(dataset: str) -> int:
    return int(load_data_file("vocabulary.json")["datasets"][dataset]["code_base"])


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
    prompts = load_data_file("prompts.json")
    text = prompts["templates"].get(template, template)
    return [text.format(word=prompts["words"][name]) for name in class_names]


def action_unit_phrases(class_name: str) -> list[str]:
    """The prototype facial action units of one expression, one phrase each (for PMFER prompts)."""
    return list(load_data_file("prompts.json")["action_units"][class_name])


def crop_template(name: str) -> dict[str, Any]:
    """A named face-crop template: output size and five landmark positions in that output."""
    templates = load_data_file("crops.json")["templates"]
    if name not in templates:
        raise ModelError(f"unknown crop template '{name}'; known: {', '.join(sorted(templates))}")
    return dict(templates[name])
