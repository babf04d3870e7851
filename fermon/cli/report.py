"""``fermon report``: HTML pages, a cohort index and summary.parquet from a processed folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from fermon.cli._common import exit_on_error
from fermon.errors import UsageError
from fermon.storage import join, location_of

if TYPE_CHECKING:
    from fermon.report import ReportResult


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
        run_reports(
            location_of(out),
            force=force,
            workers=workers,
            quiet=quiet,
            thumbnails_from=videos if include_thumbnails else None,
        )


def run_reports(
    out: Path | str,
    *,
    force: bool = False,
    workers: int | None = None,
    quiet: bool = False,
    thumbnails_from: list[Path] | None = None,
) -> None:
    """Build the reports (one process per CPU by default) and say what was done; also used by
    ``fermon process`` after its run. Raises FermonError."""
    from fermon.report import build_reports

    count = (os.cpu_count() or 1) if workers is None else workers
    result = build_reports(out, force=force, workers=count, thumbnails_from=thumbnails_from)
    if not quiet:
        echo_result(out, result)


def echo_result(out: Path | str, result: ReportResult) -> None:
    """One line on stderr: what was built, and where (relative to the folder as given)."""
    typer.echo(
        f"reports: {len(result.built)} page(s) built, {len(result.unchanged)} unchanged, "
        f"{result.failed_inputs} failed input(s) listed; open {join(out, result.index)}",
        err=True,
    )
