"""The patients over days, as a report build writes them: ``patient_days.parquet``, the flags kept
between builds (``flags.json`` beside ``clinical.json``), one page per patient, and the cohort page's
morning view (who was flagged since the previous build, then everyone else).

Patient pages are rebuilt only for patients whose days, events or flags changed since their page was
built (``reports/patients/pages.json``), so a new night redraws only its own patient's page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone, tzinfo
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow.parquet as pq

from fermon import __version__
from fermon.inputs.storage import atomic_path
from fermon.report.days import PATIENT_DAYS_NAME, BaselineRule, patient_days, patient_days_table
from fermon.report.patient_page import flag_key, flag_lines, patient_page
from fermon.run.ledger import json_fingerprint

FLAGS_NAME = "flags.json"
EPISODES_NAME = "episodes.parquet"  # written earlier in the same build by the episodes step, when there is one
PATIENTS_DIR = "patients"
PAGES_NAME = "pages.json"
PAGE_FORMAT = 1


def page_name(patient: str) -> str:
    """A file name for the patient's page: the id where it is safe, else made safe plus a short hash."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", patient)
    return safe if safe == patient else f"{safe}-{json_fingerprint(patient)[:8]}"


def patient_href(patient: str) -> str:
    return f"{PATIENTS_DIR}/{quote(page_name(patient))}.html"


def read_episodes(out_dir: Path) -> pd.DataFrame | None:
    path = out_dir / EPISODES_NAME
    return pd.read_parquet(path) if path.is_file() else None


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def update_flags(out_dir: Path, days: pd.DataFrame, now: str) -> tuple[dict[str, str], set[str], str | None]:
    """The flags of this build with when each was first seen (kept from ``flags.json``, also under
    --force), the keys new since the previous build, and when that build was."""
    path = out_dir / FLAGS_NAME
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    before: dict[str, str] = dict(stored.get("flags") or {})
    current = {}
    for row in days[days["flagged"]].itertuples(index=False):
        for name in str(row.flag_classes).split(";"):
            key = flag_key(row.patient_id, row.date, row.period, name)
            current[key] = before.get(key, now)
    new = set(current) - set(before)
    _write_text(path, json.dumps({"built": now, "previous_build": stored.get("built"), "flags": current}, indent=1))
    return current, new, stored.get("built")


def write_patient_outputs(
    out_dir: Path,
    reports: Path,
    entries: Mapping[str, Any],
    class_names: Sequence[str],
    settings: Any,  # fermon.report.clinical.ClinicalSettings
    force: bool = False,
) -> str:
    """Write ``patient_days.parquet`` (removed when no session has a patient), ``flags.json`` and the
    patient pages; return the cohort page's morning view (HTML, empty without patients)."""
    rule = BaselineRule(settings.baseline_days, settings.min_coverage)
    episodes = read_episodes(out_dir)
    parts = [p for entry in entries.values() for p in entry.get("days", [])]
    days = patient_days(parts, episodes, class_names, rule)
    path = out_dir / PATIENT_DAYS_NAME
    if days.empty:
        path.unlink(missing_ok=True)
    else:
        table = patient_days_table(days, class_names)
        source = EPISODES_NAME if episodes is not None else "none: episode columns are 0"
        footer = {"fermon_version": __version__, "class_names": list(class_names), "baseline": rule.__dict__}
        footer["episodes"] = source
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"fermon": json.dumps(footer)})
        with atomic_path(path) as temporary:
            pq.write_table(table, temporary, compression="zstd")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    first_seen, new, previous = update_flags(out_dir, days, now)
    events = [r for entry in entries.values() for r in entry.get("events", [])]
    zone = settings.zone or timezone.utc
    _patient_pages(reports, days, episodes, events, class_names, zone, rule, first_seen, force)
    return morning_view(days, first_seen, new, previous, zone)


def _patient_pages(
    reports: Path,
    days: pd.DataFrame,
    episodes: pd.DataFrame | None,
    events: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    zone: tzinfo,
    rule: BaselineRule,
    first_seen: Mapping[str, str],
    force: bool,
) -> list[str]:
    """Write the pages of patients whose inputs changed; remove those of patients gone. Returns the
    patients whose page was built."""
    folder = reports / PATIENTS_DIR
    try:
        stamps = {} if force else json.loads((folder / PAGES_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamps = {}
    kept, built = {}, []
    for patient, rows in days.groupby("patient_id", sort=True):
        patient = str(patient)
        own_events = [e for e in events if e.get("patient_id") == patient]
        own_episodes = episodes[episodes["patient_id"] == patient] if episodes is not None else None
        flags = {k: v for k, v in first_seen.items() if k.startswith(f"{patient}|")}
        stamp = json_fingerprint([__version__, PAGE_FORMAT, str(zone), rule.__dict__, flags, own_events,
                                  rows.astype(str).to_dict("records"), _episode_records(own_episodes)])  # fmt: skip
        page_path = folder / f"{page_name(patient)}.html"
        kept[page_name(patient)] = stamp
        if stamps.get(page_name(patient)) == stamp and page_path.is_file():
            continue
        html = patient_page(patient, rows, own_episodes, own_events, class_names, zone, rule, flags)
        _write_text(page_path, html)
        built.append(patient)
    for stale in folder.glob("*.html") if folder.is_dir() else []:
        if stale.stem not in kept:
            stale.unlink(missing_ok=True)
    if kept or folder.is_dir():
        _write_text(folder / PAGES_NAME, json.dumps(kept, sort_keys=True))
    return built


def _episode_records(episodes: pd.DataFrame | None) -> list:
    return [] if episodes is None else episodes.astype(str).to_dict("records")


def morning_view(
    days: pd.DataFrame, first_seen: Mapping[str, str], new: set[str], previous: str | None, zone: tzinfo
) -> str:
    """The cohort page's opening: patients with flags new since the previous report build (with the
    reasons), then everyone else, each linking to their page."""
    if days.empty:
        return ""
    since = f"the previous report build ({previous[:16].replace('T', ' ')} UTC)" if previous else "no earlier build"
    fresh, others = [], []
    for patient, rows in days.groupby("patient_id", sort=True):
        patient = str(patient)
        link = f'<a href="{escape(patient_href(patient))}">Patient {escape(patient)}</a>'
        latest = rows.sort_values(["date", "period"]).iloc[-1]
        if any(k.startswith(f"{patient}|") for k in new):
            new_rows = rows[[_has_new(r, new) for r in rows.itertuples(index=False)]]
            items = "".join(f"<li>{escape(line)}</li>" for line in flag_lines(new_rows, first_seen, str(zone)))
            fresh.append(f'<li class="warning">{link}<ul>{items}</ul></li>')
            continue
        flagged = int(rows["flagged"].sum())
        note = f"{flagged} flagged day(s) or night(s), none new" if flagged else "no flags"
        others.append(
            f"<li>{link}: {note}; latest {escape(str(latest['period']))} of {latest['date']}: "
            f"{escape(str(latest['flag_reason']))}</li>"
        )
    top = f"<ul>{''.join(fresh)}</ul>" if fresh else "<p>No patient newly flagged.</p>"
    rest = f"<ul>{''.join(others)}</ul>" if others else "<p>Every patient is listed above.</p>"
    return f"""
<h2>Flagged since {escape(since)}</h2>
<p class="muted">A day or night whose share of an expression other than neutral rose well above the same
patient's usual (see <code>patient_days.parquet</code>): a prompt to look, not a diagnosis.</p>
{top}
<h2>Everyone else</h2>
{rest}
"""


def _has_new(row: Any, new: set[str]) -> bool:
    return any(flag_key(row.patient_id, row.date, row.period, c) in new for c in str(row.flag_classes).split(";"))
