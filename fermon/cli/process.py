"""``fermon process``: expression timelines from videos, one Parquet file per session."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Annotated, Any, Optional

import typer

from fermon.cli._common import exit_on_error
from fermon.detect import DEFAULT_MIN_FACE


class _Reporter:
    """Turns run events into a rich progress display (on a terminal) and JSON lines (--log-json)."""

    def __init__(self, quiet: bool, log: IO[str] | None) -> None:
        self.log = log
        self.progress = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.progress.start()
            self.videos = self.progress.add_task("sessions", total=None)
            self.frames = self.progress.add_task("frames", total=None)
        self.quiet = quiet

    def __call__(self, event: dict[str, Any]) -> None:
        if self.log is not None and event["event"] != "frames":
            self.log.write(json.dumps(event, default=str) + "\n")
            self.log.flush()
        if self.progress is not None:
            self._advance(event)
        elif not self.quiet and event["event"] == "session_failed":
            typer.echo(f"fermon: failed: {event['error']}", err=True)

    def _advance(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "run_start":
            self.progress.update(self.videos, total=event["todo"])
        elif kind == "frames":
            self.progress.advance(self.frames, event["count"])
        elif kind in ("session_done", "session_failed"):
            self.progress.advance(self.videos)
            if kind == "session_failed":
                self.progress.console.print(f"failed: {event['error']}", markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def process(
    inputs: Annotated[list[Path], typer.Argument(help="Video files and folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: timelines/, ledger, lock.")],
    fps: Annotated[float, typer.Option(help="Samples per second; 0 = every frame.")] = 5.0,
    target: Annotated[str, typer.Option(help="Patient's track: largest, center or all.")] = "largest",
    checkpoint: Annotated[str, typer.Option(help="A checkpoint path, or 'default' (the embedded model).")] = "default",
    detector: Annotated[str, typer.Option(help="auto, centerface or scrfd.")] = "auto",
    model_dir: Annotated[Optional[Path], typer.Option(help="insightface model pack for SCRFD.")] = None,
    threshold: Annotated[float, typer.Option(help="Face detection score threshold.")] = 0.5,
    min_face: Annotated[
        float,
        typer.Option(
            help="Width in video pixels of the smallest face to find. Frames are shrunk for the detector as far as "
            "this allows: larger is faster (reports/performance.md)."
        ),
    ] = DEFAULT_MIN_FACE,
    whole_frames: Annotated[
        bool,
        typer.Option(
            "--whole-frames",
            help="Search every sampled frame whole. By default a frame after one with faces is searched only "
            "around them (a new face is found within 8 samples); this finds it at once, at about half the speed.",
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Face crops per classifier batch.")] = 64,
    threads: Annotated[
        Optional[int],
        typer.Option(help="Detection threads per worker (default: its cores); classification takes one more."),
    ] = None,
    session_by: Annotated[str, typer.Option(help="file, or folder (its videos are one session).")] = "file",
    workers: Annotated[
        Optional[int], typer.Option(help="Local Dask workers (default: sized to the machine); 0 = no Dask.")
    ] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Address of an existing Dask scheduler.")] = None,
    scheduler_file: Annotated[Optional[Path], typer.Option(help="Scheduler file of an existing Dask cluster.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Reprocess even up-to-date sessions.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or messages.")] = False,
    log_json: Annotated[Optional[Path], typer.Option(help="Write one JSON object per event to this file.")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip DIR/reports/ and DIR/summary.parquet.")] = False,
    include_thumbnails: Annotated[
        bool,
        typer.Option(
            "--include-thumbnails", help="Session pages show each expression's most confident face (identifiable)."
        ),
    ] = False,
) -> None:
    """Detect, track and classify faces in videos into DIR/timelines/<session>.parquet.

    Reruns skip sessions whose videos, model and options are unchanged (the ledger in DIR).
    Then writes DIR/reports/ and DIR/summary.parquet (as 'fermon report DIR' does) unless --no-report.
    Exit status: 0 all sessions succeeded; 65 one or more videos failed (each named with a reason);
    64 bad usage; 66 missing input; 75 another run holds DIR; 78 model problem.
    """
    from fermon.process import ProcessOptions, run_process

    log = None
    reporter = None
    with exit_on_error():
        options = ProcessOptions(
            fps=fps,
            target=target,
            checkpoint=checkpoint,
            detector=detector,
            model_dir=str(model_dir) if model_dir else None,
            threshold=threshold,
            min_face=min_face,
            whole_frames=whole_frames,
            device=device,
            threads=threads,
            batch_size=batch_size,
            session_by=session_by,
        )
        try:
            log = open(log_json, "a", encoding="utf-8") if log_json else None  # noqa: SIM115
            reporter = _Reporter(quiet, log)
            summary = run_process(
                inputs,
                out,
                options,
                workers=workers,
                scheduler=scheduler,
                scheduler_file=str(scheduler_file) if scheduler_file else None,
                force=force,
                on_event=reporter,
            )
        finally:
            if reporter is not None:
                reporter.close()
            if log is not None:
                log.close()
    if not quiet:
        typer.echo(
            f"{len(summary.done)} done, {len(summary.up_to_date)} up to date, {len(summary.failed)} failed, "
            f"{len(summary.not_videos)} other file(s) skipped",
            err=True,
        )
    if not no_report:
        from fermon.cli.report import run_reports

        with exit_on_error():
            run_reports(out, quiet=quiet, thumbnails_from=inputs if include_thumbnails else None)
    raise typer.Exit(summary.exit_code)
