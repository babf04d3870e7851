"""``fermon report``: HTML pages, a cohort index and summary.parquet from a processed folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from fermon.cli._common import exit_on_error
from fermon.errors import UsageError
from fermon.inputs.storage import join, location_of

if TYPE_CHECKING:
    from fermon.report import ReportResult
    from fermon.report.clinical import ClinicalOptions

# The clinical options of both 'fermon process' and 'fermon report'; each is kept in DIR/clinical.json.
EventsOption = Annotated[
    Optional[Path],
    typer.Option(help="Clinical events CSV (patient_id or session_id, time, event, end): drawn on session pages, "
                 "peri-event figures in DIR/events.parquet."),
]  # fmt: skip
EventWindowOption = Annotated[
    Optional[float], typer.Option(help="Minutes before and after each event to compare (default 10).")
]
NightOption = Annotated[
    Optional[str], typer.Option(help="Night hours for DIR/patients.parquet, local time (default 22:00-06:00).")
]
TimezoneOption = Annotated[
    Optional[str],
    typer.Option(
        help="IANA zone for wall-clock times and day/night, e.g. Europe/Berlin (default: the zone kept in "
        "DIR/clinical.json, else this machine's, else the manifest's UTC offsets)."
    ),
]
EpisodeMinOption = Annotated[
    Optional[float],
    typer.Option(help="Shortest expression episode kept, in seconds (default 20): DIR/episodes.parquet."),
]
EpisodeGapOption = Annotated[
    Optional[float],
    typer.Option(help="Longest stretch without the patient's face that an episode bridges, in seconds (default 5)."),
]

BaselineDaysOption = Annotated[
    Optional[int],
    typer.Option(help="Earlier days of the same period each day and night is compared with in "
                 "DIR/patient_days.parquet (default 7; at least 3 of them needed)."),
]  # fmt: skip
MinCoverageOption = Annotated[
    Optional[float],
    typer.Option(help="Share of a day's or night's hours with the patient's face seen, below which it is "
                 "neither flagged nor part of a baseline (default 0.3)."),
]  # fmt: skip


def clinical_options(
    events: Path | None,
    event_window: float | None,
    night: str | None,
    timezone: str | None,
    baseline_days: int | None = None,
    min_coverage: float | None = None,
    episode_min: float | None = None,
    episode_gap: float | None = None,
) -> ClinicalOptions:
    """The clinical options as given, checked now (before hours of processing). Raises FermonError."""
    from fermon.report.clinical import ClinicalOptions, check_baseline
    from fermon.report.episodes import DEFAULT_GAP_S, DEFAULT_MIN_S, check_settings
    from fermon.report.events import parse_night, read_events, resolve_zone, window_minutes_to_seconds

    if event_window is not None:
        window_minutes_to_seconds(event_window)
    if night is not None:
        parse_night(night)
    resolve_zone(timezone)
    check_baseline(baseline_days, min_coverage)
    check_settings(
        DEFAULT_MIN_S if episode_min is None else episode_min, DEFAULT_GAP_S if episode_gap is None else episode_gap
    )
    parsed = tuple(read_events(events)) if events is not None else None
    return ClinicalOptions(
        parsed,
        events.name if events else None,
        event_window,
        night,
        timezone,
        baseline_days=baseline_days,
        min_coverage=min_coverage,
        episode_min_s=episode_min,
        episode_gap_s=episode_gap,
    )


def report(
    out: Annotated[str, typer.Argument(help="The output folder or URL of 'fermon process'.")],
    force: Annotated[bool, typer.Option("--force", help="Rebuild every session page.")] = False,
    include_thumbnails: Annotated[
        bool,
        typer.Option(
            "--include-thumbnails",
            help="Show each session's most confident face per expression, decoded from the videos under --videos. "
            "Pages then identify patients.",
        ),
    ] = False,
    videos: Annotated[
        Optional[list[Path]],
        typer.Option(help="The inputs given to 'fermon process' (where the timelines' videos are), for thumbnails."),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(help="Processes for building many pages (default: one per CPU); 0 = none.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No messages.")] = False,
    events: EventsOption = None,
    event_window: EventWindowOption = None,
    night: NightOption = None,
    timezone: TimezoneOption = None,
    baseline_days: BaselineDaysOption = None,
    min_coverage: MinCoverageOption = None,
    episode_min: EpisodeMinOption = None,
    episode_gap: EpisodeGapOption = None,
) -> None:
    """Write DIR/reports/ (a page per session and index.html) and DIR/summary.parquet.

    Pages are self-contained, printable and show no faces. Unchanged sessions keep their pages.
    Exit status: 0 done; 64 bad usage; 66 no timelines in DIR; 73 cannot write; 75 a run holds DIR.
    """
    with exit_on_error():
        if include_thumbnails and not videos:
            raise UsageError("--include-thumbnails needs --videos: the files or folders given to 'fermon process'")
        if videos and not include_thumbnails:
            raise UsageError("--videos is only used with --include-thumbnails")
        if workers is not None and workers < 0:
            raise UsageError("--workers must be 0 (in-process) or more")
        clinical = clinical_options(
            events, event_window, night, timezone, baseline_days, min_coverage, episode_min, episode_gap
        )
        run_reports(
            location_of(out),
            force=force,
            workers=workers,
            quiet=quiet,
            thumbnails_from=videos if include_thumbnails else None,
            clinical=clinical,
        )


def run_reports(
    out: Path | str,
    *,
    force: bool = False,
    workers: int | None = None,
    quiet: bool = False,
    thumbnails_from: list[Path] | None = None,
    clinical: ClinicalOptions | None = None,
) -> None:
    """Build the reports (one process per CPU by default) and say what was done; also used by
    ``fermon process`` after its run. Raises FermonError."""
    from fermon.report import build_reports

    count = (os.cpu_count() or 1) if workers is None else workers
    result = build_reports(out, force=force, workers=count, thumbnails_from=thumbnails_from, clinical=clinical)
    if not quiet:
        echo_result(out, result)


def echo_result(out: Path | str, result: ReportResult) -> None:
    """One line on stderr: what was built, and where (relative to the folder as given)."""
    typer.echo(
        f"reports: {len(result.built)} page(s) built, {len(result.unchanged)} unchanged, "
        f"{result.failed_inputs} failed input(s) listed; open {join(out, result.index)}",
        err=True,
    )
    if result.unmatched_events:
        typer.echo(
            f"fermon: warning: {result.unmatched_events} event row(s) near no recording of their session or "
            "patient: listed in events.parquet (in_recording false)",
            err=True,
        )
