"""The data files the runtime reads from ``fermon/data``: the canonical expression vocabulary, the
face-crop templates and the architecture configurations. (Dataset label mappings and prompts are
training's: ``training/vocabulary.py``.)"""

from __future__ import annotations

import json
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


def crop_template(name: str) -> dict[str, Any]:
    """A named face-crop template: output size and five landmark positions in that output."""
    templates = load_data_file("crops.json")["templates"]
    if name not in templates:
        raise ModelError(f"unknown crop template '{name}'; known: {', '.join(sorted(templates))}")
    return dict(templates[name])


def template_points(name: str, size: int | None = None) -> list[list[float]]:
    """The template's five landmark positions scaled to a ``size`` px crop (its own size by default)."""
    template = crop_template(name)
    scale = (size or template["size"]) / float(template["size"])
    return [[x * scale, y * scale] for x, y in template["points"]]
