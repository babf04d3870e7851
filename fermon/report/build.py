"""Building the reports, incrementally.

``DIR/reports/manifest.json`` records, per session, the size and mtime of the timeline its page was
built from and that session's summary row. A session page is rebuilt only when its timeline changed
(or the page is missing, or fermon or the thresholds changed); the index and ``summary.parquet`` are
rewritten every time from the recorded rows, which is cheap.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fermon import __version__
from fermon.analysis import (
    EPISODES_NAME,
    QualityThresholds,
    read_timeline,
    summarize_session,
    summary_frame,
    target_samples,
    thresholds_dict,
    timeline_files,
)
from fermon.errors import InputError, UsageError
from fermon.inputs import storage
from fermon.inputs.storage import atomic_path
from fermon.report.clinical import (
    EVENTS_NAME,
    PATIENTS_NAME,
    SETTINGS_NAME,
    ClinicalOptions,
    ClinicalSettings,
    load_settings,
    patients_section,
    settle_zone,
)
from fermon.report.patients import FLAGS_NAME, write_patient_outputs
from fermon.report.sources import file_stamp, load_manifest, read_failures, session_gaps
from fermon.report.zones import machine_zone
from fermon.run.ledger import LEDGER_NAME, FolderLock, json_fingerprint
from fermon.run.timeline import METADATA_KEY, TIMELINES_DIR

REPORTS_DIR = "reports"
SESSIONS_DIR = "sessions"
SUMMARY_NAME = "summary.parquet"
MANIFEST_NAME = "manifest.json"
# Bump when pages change, so that every page is rebuilt once (2: clinical time, 3: episodes and patient days).
REPORT_FORMAT = 3
# Written by one build and read by the next: for an output URL, fetched before and published after.
KEPT_BETWEEN_BUILDS = (SETTINGS_NAME, FLAGS_NAME)
PAGES_PER_WORKER = 8  # below this many pages per process, starting processes costs more than it saves


@dataclass
class ReportResult:
    """What a build did. Paths are relative to the output folder."""

    built: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed_inputs: int = 0
    unmatched_events: int = 0  # events in no recording's span (or of no session): in events.parquet only
    episodes: int = 0  # rows of episodes.parquet
    episodes_seconds: float = 0.0  # assembling and writing episodes.parquet from the stored rows
    seconds: float = 0.0
    index: str = f"{REPORTS_DIR}/index.html"
    summary: str = SUMMARY_NAME


# --------------------------------------------------------------------------- atomic writes


def _replace_atomic(path: Path, write: Any) -> None:
    """Write through ``write(temporary)`` then rename, so readers never see a partial file."""
    with atomic_path(path) as temporary:
        write(temporary)


def write_text_atomic(path: Path, text: str) -> None:
    _replace_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_summary(path: Path, rows: list[dict[str, Any]], class_names: list[str], thresholds: dict) -> None:
    """``summary.parquet``: one row per session, with how it was made in the footer."""
    table = pa.Table.from_pandas(summary_frame(rows, class_names), preserve_index=False)
    footer = {"fermon_version": __version__, "class_names": class_names, "thresholds": thresholds}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(footer)})
    _replace_atomic(path, lambda temporary: pq.write_table(table, temporary, compression="zstd"))


# --------------------------------------------------------------------------- one session


def build_session_page(
    path: Path,
    page_path: Path,
    thresholds: QualityThresholds,
    video_roots: tuple[Path, ...] | None = None,
    clinical: ClinicalSettings | None = None,
) -> tuple[dict[str, Any], list[str], dict[str, list]]:
    """Read one timeline, write its page; return its summary row, class names and clinical facts
    (event rows and day/night sums). With ``video_roots`` (--include-thumbnails) the page also shows
    faces decoded again from the recordings there."""
    from fermon.report import pages, plots
    from fermon.report.episodes import session_episodes

    clinical = clinical or ClinicalSettings()
    frame, metadata = read_timeline(path)
    class_names = list(metadata["class_names"])
    samples = target_samples(frame)
    row = summarize_session(samples, class_names, metadata, thresholds)
    gaps = session_gaps(metadata)
    fps = float(metadata.get("sampling_fps") or 0.0)
    episodes = session_episodes(frame, metadata, clinical.episode_min_s, clinical.episode_gap_s)
    figures = plots.session_figures(samples, row, class_names, fps, gaps, episodes)  # one per plots.SESSION_FIGURES
    thumbnails, missing = None, []
    if video_roots is not None:
        from fermon.report.thumbnails import session_thumbnails

        thumbnails, missing = session_thumbnails(samples, class_names, video_roots)
    section, facts = _clinical_facts(samples, row, metadata, clinical)
    section += _episodes_html(episodes, metadata, clinical, bool(row["covered_frames"]))
    facts["episodes"] = episodes
    html = pages.session_page(
        row, metadata, figures, gaps, thresholds_dict(thresholds), thumbnails, missing, clinical_html=section
    )
    write_text_atomic(page_path, html)
    return row, class_names, facts


def _clinical_facts(
    samples: Any, row: dict[str, Any], metadata: dict[str, Any], settings: ClinicalSettings
) -> tuple[str, dict[str, list]]:
    """The page's clinical section, and what the cohort files need: event rows and day/night sums."""
    from fermon.report.clinical import clinical_section, session_events, stored_event_rows
    from fermon.report.days import session_days
    from fermon.report.events import parse_night, session_event_rows, session_periods

    class_names = list(metadata["class_names"])
    events = session_events(metadata, settings)
    event_rows = session_event_rows(samples, metadata, row["duration_s"], events, settings.window_s, class_names)
    night = parse_night(settings.night)
    periods = session_periods(samples, metadata, night, settings.zone, class_names)
    days = session_days(samples, metadata, night, settings.zone, class_names, row["duration_s"])
    section = clinical_section(samples, row, metadata, event_rows, settings)
    return section, {"events": stored_event_rows(event_rows), "periods": periods, "days": days}


def _episodes_html(episodes: list[dict[str, Any]], metadata: Any, settings: ClinicalSettings, face: bool) -> str:
    from fermon.report.episode_view import episodes_section
    from fermon.report.events import display_zone

    zone = display_zone(metadata, settings.zone)
    return episodes_section(episodes, zone, settings.episode_min_s, settings.episode_gap_s, face)


# --------------------------------------------------------------------------- the build


def _build_pages(
    jobs: list[tuple[str, Path, Path]],
    thresholds: QualityThresholds,
    workers: int,
    roots: tuple[Path, ...] | None,
    clinical: ClinicalSettings | None = None,
) -> list:
    """(row, class names, clinical facts) per job, in order; in worker processes when there are many pages."""
    count = min(workers, len(jobs) // PAGES_PER_WORKER)
    if count < 2:
        return [build_session_page(path, page_path, thresholds, roots, clinical) for _, path, page_path in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may hold torch/OpenMP or Dask threads that a fork would copy mid-state.
    # (spawn re-imports the caller's __main__, which must be guarded: hence no workers by default.)
    with ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(build_session_page, path, page, thresholds, roots, clinical) for _, path, page in jobs]
        return [future.result() for future in futures]


def build_reports(
    out_dir: str | Path,
    *,
    force: bool = False,
    thresholds: QualityThresholds | None = None,
    workers: int = 0,
    thumbnails_from: list[Path] | None = None,
    clinical: ClinicalOptions | None = None,
) -> ReportResult:
    """Write ``reports/sessions/<id>.html``, ``reports/index.html`` and ``summary.parquet`` in ``out_dir``.

    Session pages whose timeline is unchanged since they were built are kept unless ``force``.
    With ``workers`` > 1, many changed pages are built in that many processes (the caller's ``__main__``
    must then be guarded by ``if __name__ == "__main__"``); by default all are built in this process.
    ``thumbnails_from`` (the inputs given to ``fermon process``) adds each session's most confident
    face per expression to its page, decoded from the recordings; pages show no faces without it.
    ``clinical`` (events, their window, night hours, time zone) replaces what ``DIR/clinical.json``
    holds, which is kept for the next build; with events, ``events.parquet`` is written, and with
    patients (a study manifest), ``patients.parquet``.
    Holds the output folder's lock, so it never runs beside ``fermon process`` on the same folder
    (raises :class:`fermon.errors.BusyError` then). Raises InputError without ``timelines/``.
    """
    from fermon.report import pages

    if storage.is_url(out_dir):
        return _build_at_url(
            str(out_dir),
            force=force,
            thresholds=thresholds,
            workers=workers,
            thumbnails=thumbnails_from,
            clinical=clinical,
        )
    started = time.perf_counter()
    out_dir = Path(out_dir)
    thresholds = thresholds or QualityThresholds()
    # A run where every input failed leaves a ledger and no timelines: the index still lists why.
    has_ledger = (out_dir / LEDGER_NAME).is_file() and not (out_dir / TIMELINES_DIR).is_dir()
    files = {} if has_ledger else timeline_files(out_dir)
    reports = out_dir / REPORTS_DIR
    roots = tuple(Path(p).resolve() for p in thumbnails_from) if thumbnails_from is not None else None
    # Faces on or off changes every page, so it is part of what the pages were built with.
    builder = {
        "fermon_version": __version__,
        "format": REPORT_FORMAT,
        "thresholds": thresholds_dict(thresholds),
        "thumbnails": roots is not None,
    }
    result = ReportResult()
    with FolderLock(out_dir):
        settings = settle_zone((clinical or ClinicalOptions()).apply(load_settings(out_dir)), machine_zone())
        builder["clinical"] = json_fingerprint(settings.page_json)  # new events or zone: new pages
        recorded = {} if force else load_manifest(reports / MANIFEST_NAME, builder)
        entries: dict[str, Any] = {}
        jobs, stamps = [], {}
        for session_id, path in files.items():
            stamps[session_id] = file_stamp(path)
            page_path = reports / SESSIONS_DIR / f"{session_id}.html"
            old = recorded.get(session_id)
            if old and old["timeline"] == stamps[session_id] and page_path.is_file():
                entries[session_id] = old
                result.unchanged.append(session_id)
            else:
                jobs.append((session_id, path, page_path))
        for (session_id, _, _), (row, class_names, facts) in zip(
            jobs, _build_pages(jobs, thresholds, workers, roots, settings)
        ):
            entries[session_id] = {"timeline": stamps[session_id], "row": row, "class_names": class_names, **facts}
            result.built.append(session_id)
        result.removed = _remove_stale_pages(reports / SESSIONS_DIR, set(files))
        rows = [entries[s]["row"] for s in sorted(entries)]
        class_names = _class_union(entries.values())
        failures = read_failures(out_dir)
        write_summary(out_dir / SUMMARY_NAME, rows, class_names, thresholds_dict(thresholds))
        write_episodes(out_dir, entries, result)  # before anything that reads the episodes
        patients = _write_clinical(out_dir, entries, class_names, settings, result)
        patients_html = patients_section(rows, patients, settings)
        morning = write_patient_outputs(out_dir, reports, entries, class_names, settings, force)
        zone = settings.zone or timezone.utc
        index = pages.index_page(rows, class_names, failures, patients_html, zone, top_html=morning)
        write_text_atomic(reports / "index.html", index)
        manifest = {"builder": builder, "sessions": entries}
        write_text_atomic(reports / MANIFEST_NAME, json.dumps(manifest, sort_keys=True))
    result.failed_inputs = len(failures)
    result.seconds = time.perf_counter() - started
    return result


def write_episodes(out_dir: Path, entries: dict[str, Any], result: ReportResult | None = None) -> Any:
    """``episodes.parquet`` from every session's stored episode rows (those of unchanged sessions are
    reused, not recomputed); returns the typed frame (fermon.analysis.episode_types)."""
    from fermon.report.episodes import episodes_frame, episodes_table

    started = time.perf_counter()
    frame = episodes_frame([e for session_id in sorted(entries) for e in entries[session_id].get("episodes", [])])
    table = episodes_table(frame)
    _replace_atomic(out_dir / EPISODES_NAME, lambda temporary: pq.write_table(table, temporary, compression="zstd"))
    if result is not None:
        result.episodes, result.episodes_seconds = len(frame), time.perf_counter() - started
    return frame


def _write_parquet(path: Path, frame: Any) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    _replace_atomic(path, lambda temporary: pq.write_table(table, temporary, compression="zstd"))


def _write_clinical(
    out_dir: Path, entries: dict[str, Any], class_names: list[str], settings: ClinicalSettings, result: ReportResult
) -> Any:
    """``clinical.json`` (for the next build), ``events.parquet`` when there are events and
    ``patients.parquet`` when there are patients; a file with nothing to say is removed, not left stale."""
    from fermon.report.events import events_frame, patients_frame, unmatched_event_rows

    write_text_atomic(out_dir / SETTINGS_NAME, json.dumps(settings.to_json(), indent=1, sort_keys=True))
    rows = [r for entry in entries.values() for r in entry.get("events", [])]
    rows += unmatched_event_rows(settings.events, {r["event_line"] for r in rows})
    result.unmatched_events = sum(1 for r in rows if r.get("session_id") is None or not r.get("in_recording"))
    if settings.events:
        _write_parquet(out_dir / EVENTS_NAME, events_frame(rows, class_names))
    else:
        (out_dir / EVENTS_NAME).unlink(missing_ok=True)
    patients = patients_frame([p for entry in entries.values() for p in entry.get("periods", [])], class_names)
    if len(patients):
        _write_parquet(out_dir / PATIENTS_NAME, patients)
    else:
        (out_dir / PATIENTS_NAME).unlink(missing_ok=True)
    return patients


def _class_union(entries: Any) -> list[str]:
    """Class names over all sessions, in first-seen model order (sessions may mix models)."""
    names: dict[str, None] = {}
    for entry in entries:
        names.update(dict.fromkeys(entry["class_names"]))
    return list(names)


def _remove_stale_pages(folder: Path, sessions: set[str]) -> list[str]:
    """Pages of sessions whose timeline is gone."""
    removed = []
    for page_path in sorted(folder.glob("*.html")) if folder.is_dir() else []:
        if page_path.stem not in sessions:
            page_path.unlink(missing_ok=True)
            removed.append(page_path.stem)
    return removed


# --------------------------------------------------------------------------- an output URL


def _build_at_url(
    url: str,
    *,
    force: bool,
    thresholds: QualityThresholds | None,
    workers: int,
    thumbnails: list[Path] | None,
    clinical: ClinicalOptions | None,
) -> ReportResult:
    """Reports for an output URL (fermon.inputs.storage): the timelines are fetched into a local temporary
    folder beside the client-local ledger, the pages are built there, and each file is published in
    one PUT. Every page is rebuilt (fetched copies carry no stamps to compare); pages of sessions
    whose timeline is gone are deleted. Holds the URL's lock, as a run on it does."""
    if thumbnails is not None:
        raise UsageError("--include-thumbnails needs the videos on this machine, not an output URL")
    state = storage.state_dir(url)
    timelines = storage.join(url, TIMELINES_DIR)
    with FolderLock(state), tempfile.TemporaryDirectory(prefix="fermon-report-") as staging:
        local = Path(staging)
        names = storage.list_names(timelines, ".parquet")
        if not names and not (state / LEDGER_NAME).is_file():
            raise InputError(f"{storage.shown(url)}: no {TIMELINES_DIR}/ (run 'fermon process' first)")
        for name in names:
            storage_file = storage.join(timelines, name)
            (local / TIMELINES_DIR).mkdir(exist_ok=True)
            (local / TIMELINES_DIR / name).write_bytes(storage.read_bytes(storage_file))
        if (state / LEDGER_NAME).is_file():
            (local / LEDGER_NAME).symlink_to(state / LEDGER_NAME)  # read-only, for the failures listed
        for name in KEPT_BETWEEN_BUILDS:  # the settings and the flags' first sightings carry over
            if storage.is_file(storage.join(url, name)):
                (local / name).write_bytes(storage.read_bytes(storage.join(url, name)))
        result = build_reports(local, force=True, thresholds=thresholds, workers=workers, clinical=clinical)
        _publish(local, url)
    sessions = storage.join(url, REPORTS_DIR, SESSIONS_DIR)
    kept = {f"{session_id}.html" for session_id in result.built}
    for name in storage.list_names(sessions, ".html"):
        if name not in kept:
            storage.remove(storage.join(sessions, name))
            result.removed.append(name[: -len(".html")])
    return result


def _publish(local: Path, url: str) -> None:
    """Upload what a build wrote: reports/ (pages, index, manifest), the tables beside it
    (summary, episodes, events, patients, patient days) and the state the next build reads back."""
    for relative, _ in storage.files_under(local / REPORTS_DIR):
        data = (local / REPORTS_DIR / relative).read_bytes()
        storage.write_bytes_atomic(storage.join(url, REPORTS_DIR, *relative.split("/")), data)
    for path in sorted(local.iterdir()):
        if path.is_file() and not path.is_symlink() and (path.suffix == ".parquet" or path.name in KEPT_BETWEEN_BUILDS):
            storage.write_bytes_atomic(storage.join(url, path.name), path.read_bytes())
