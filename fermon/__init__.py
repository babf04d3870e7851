"""fermon: facial-expression timelines from long clinical videos."""

from __future__ import annotations

__version__ = "0.1.0"
