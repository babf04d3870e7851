"""Reports over a ``fermon process`` output folder: one HTML page per session, a cohort index and
``summary.parquet``. See :func:`build_reports`."""

from __future__ import annotations

from fermon.report.build import REPORTS_DIR, SUMMARY_NAME, ReportResult, build_reports

__all__ = ["REPORTS_DIR", "SUMMARY_NAME", "ReportResult", "build_reports"]
