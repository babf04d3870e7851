"""fermon: facial-expression timelines from long clinical videos."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# The analyst API, imported on first use so that ``import fermon`` stays cheap (no pandas).
_LAZY = {
    "read_timelines": "fermon.analysis",
    "summarize": "fermon.analysis",
    "read_episodes": "fermon.analysis",
    "read_patient_days": "fermon.analysis",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fermon' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
