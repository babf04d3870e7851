"""The data files the runtime reads from ``fermon/data``: the canonical expression vocabulary and the
architecture configurations. The face-crop templates are :mod:`fermon.faces.align`'s; dataset label
mappings and prompts are training's (``training/vocabulary.py``)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def load_data_file(name: str) -> dict[str, Any]:
    """Read one JSON file from ``fermon/data``."""
    text = resources.files("fermon").joinpath("data", name).read_text(encoding="utf-8")
    return json.loads(text)


def canonical_classes() -> list[str]:
    """The canonical expression names, in fermon's order (FERPlus's vote-column order)."""
    return list(load_data_file("vocabulary.json")["canonical"])
