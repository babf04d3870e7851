"""``fermon process``: expression timelines from videos, one Parquet file per session."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Optional

import typer

from fermon.cli._common import exit_on_error
from fermon.cli.report import (
    BaselineDaysOption,
    EpisodeGapOption,
    EpisodeMinOption,
    EventsOption,
    EventWindowOption,
    MinCoverageOption,
    NightOption,
    TimezoneOption,
    clinical_options,
)
from fermon.faces.detector import DEFAULT_MIN_FACE
from fermon.run.options import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from fermon.run.process import RunSummary

EX_OK = 0
EX_DATAERR = 65  # sysexits: some input's data was bad


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _Reporter:
    """Turns run events into a progress display (on a terminal) and JSON lines (--log-json).

    The display shows sessions done of those to do and hours of video processed of their total,
    with the time left; it writes to its own copy of the terminal's stderr, so that fermon's
    silencing of C++ libraries' output (see fermon.video.native_stderr_silenced) never hides it.
    """

    def __init__(self, quiet: bool, log: IO[str] | None) -> None:
        self.log = log
        self.quiet = quiet
        self.progress = None
        self.processed: dict[str, float] = {}  # seconds of video processed, per session
        if not quiet and sys.stderr.isatty():
            self._start_display()

    def _start_display(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        terminal = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[shown]}"),
            TimeRemainingColumn(),
            console=Console(file=terminal),
        )
        self.progress.start()
        self.sessions = self.progress.add_task("sessions", total=None, shown="")
        self.video = self.progress.add_task("video   ", total=None, shown="")

    def __call__(self, event: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(json.dumps(event, default=str) + "\n")
            self.log.flush()
        if self.progress is not None:
            self._advance(event)
        else:  # failures are named in every mode, --quiet and cron's (no terminal) included
            for reason in _failure_reasons(event):
                typer.echo(f"fermon: failed: {reason}", err=True)
        if not self.quiet and event["event"] == "warning":
            self._warn(event["message"])

    def _warn(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"warning: {message}", markup=False)
        else:
            typer.echo(f"fermon: warning: {message}", err=True)

    def _advance(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "run_start":
            self.progress.update(self.sessions, total=event["todo"], shown=f"0/{event['todo']}")
            self._show_video(0.0, event["video_s"])
        elif kind == "progress":
            self.processed[event["session_id"]] = event["processed_s"]
            done = sum(self.processed.values())
            # A client that could not read a video's length learns it from the worker.
            self._show_video(done, max(self.progress.tasks[self.video].total or 0.0, done))
        elif kind in ("session_done", "session_failed"):
            self.progress.advance(self.sessions)
            task = self.progress.tasks[self.sessions]
            self.progress.update(self.sessions, shown=f"{int(task.completed)}/{int(task.total or 0)}")
            for reason in _failure_reasons(event):
                self.progress.console.print(f"failed: {reason}", markup=False)

    def _show_video(self, done: float, total: float) -> None:
        shown = f"{_clock(done)}/{_clock(total)}"
        self.progress.update(self.video, completed=done, total=max(total, 1e-9), shown=shown)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress.console.file.close()
            self.progress = None


def _failure_reasons(event: dict[str, Any]) -> list[str]:
    """One line per failed input of a session event: the whole session's, or each bad chunk's. Each
    reason names its file."""
    if event["event"] == "session_failed":
        return [event["error"]]
    if event["event"] == "session_done":
        return [video["reason"] for video in event.get("failed_videos") or []]
    return []


def last_line(summary: RunSummary) -> str:
    """The run's closing line: what was done, and every failure counted, chunks of done sessions too."""
    from fermon.run.session import FAILED_RUN

    known = f", {len(summary.known_bad)} known bad (not retried)" if summary.known_bad else ""
    if summary.retired:
        known += f", {len(summary.retired)} retired (their videos are in other sessions now)"
    chunks = len(summary.failed_videos)
    within = f" (and {chunks} failed video(s) in done sessions)" if chunks else ""
    machine = sum(result.failure_kind == FAILED_RUN for result in summary.failed)
    within += f", {machine} to retry (the machine's or the store's failure)" if machine else ""
    return (
        f"{len(summary.done)} done, {len(summary.up_to_date)} up to date, {len(summary.failed)} failed{within}"
        f"{known}, {len(summary.not_videos)} other file(s) skipped"
    )


class _StopOnSignal:
    """SIGINT and SIGTERM ask the run to stop: sessions stop at their next batch, what finished is
    recorded, and the run ends with one line. A second signal stops at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        for number in (signal.SIGINT, signal.SIGTERM):
            self.previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: Any) -> None:
        from fermon.run.loop import STOP

        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number
        STOP.set()

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)


def _open_log(path: Path | None) -> IO[str] | None:
    from fermon.errors import OutputError

    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"{path}: cannot write the event log ({error.strerror})") from error


def process(
    inputs: Annotated[
        list[str], typer.Argument(help="Video files and folders (searched recursively), or URLs (s3://bucket/prefix).")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (timelines/, ledger, lock) or URL.")],
    fps: Annotated[float, typer.Option(help="Samples per second; 0 = every frame.")] = 5.0,
    target: Annotated[
        str, typer.Option(help="The patient: largest (most size times time in view), center or all persons.")
    ] = "largest",
    target_reference: Annotated[
        Optional[Path],
        typer.Option(help="A photo of the patient: the person nearest it is the target (none if nobody is near)."),
    ] = None,
    checkpoint: Annotated[
        str,
        typer.Option(
            help="A checkpoint path, or default (= fast), fast, accurate; auto: accurate on a GPU, else fast."
        ),
    ] = "auto",
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
    precision: Annotated[
        str,
        typer.Option(
            help="The networks' number format: auto (float16 on CUDA; on a CPU bfloat16 where it runs clearly "
            "faster, else float32), float32, bfloat16, or float16 (CUDA only)."
        ),
    ] = "auto",
    batch_size: Annotated[int, typer.Option(help="Face crops per classifier batch.")] = DEFAULT_BATCH_SIZE,
    threads: Annotated[
        Optional[int],
        typer.Option(help="Detection threads per worker (default: its cores); classification takes one more."),
    ] = None,
    session_by: Annotated[str, typer.Option(help="file, or folder (its videos are one session).")] = "file",
    workers: Annotated[
        Optional[int],
        typer.Option(
            help="Sessions at once, on threads of this process that share its cores and models (default: one "
            "at a time on every core; 0 is the same)."
        ),
    ] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Address of an existing Dask scheduler.")] = None,
    scheduler_file: Annotated[Optional[Path], typer.Option(help="Scheduler file of an existing Dask cluster.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Reprocess even up-to-date sessions.")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Retry inputs that failed because of the file itself (unreadable, empty, corrupt) although "
            "unchanged; by default they are listed and not retried until they change.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or messages.")] = False,
    log_json: Annotated[Optional[Path], typer.Option(help="Write one JSON object per event to this file.")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip DIR/reports/ and DIR/summary.parquet.")] = False,
    include_thumbnails: Annotated[
        bool,
        typer.Option(
            "--include-thumbnails", help="Session pages show each expression's most confident face (identifiable)."
        ),
    ] = False,
    manifest: Annotated[
        Optional[Path],
        typer.Option(
            help="Study manifest CSV (video, patient_id, session_id, start): sets sessions, patients and "
            "recording starts; videos it does not name are skipped."
        ),
    ] = None,
    events: EventsOption = None,
    event_window: EventWindowOption = None,
    night: NightOption = None,
    timezone: TimezoneOption = None,
    baseline_days: BaselineDaysOption = None,
    min_coverage: MinCoverageOption = None,
    episode_min: EpisodeMinOption = None,
    episode_gap: EpisodeGapOption = None,
) -> None:
    """Detect, track and classify faces in videos into DIR/timelines/<session>.parquet.

    Reruns skip sessions whose videos, model and options are unchanged (the ledger in DIR), and
    inputs that failed because of the file itself and have not changed (--retry-failed retries them).
    Then writes DIR/reports/ and DIR/summary.parquet (as 'fermon report DIR' does) unless --no-report.
    Exit status: 0 nothing new failed; 65 one or more videos failed (each named with a reason);
    64 bad usage; 66 missing input; 73 cannot write DIR; 75 another run holds DIR; 78 model problem;
    130 interrupted (143 on SIGTERM).
    """
    from fermon.errors import RunInterruptedError
    from fermon.expression.checkpoint import checkpoint_for_device
    from fermon.inputs.storage import location_of
    from fermon.run.process import ProcessOptions, run_process

    # Strings, not Paths, on the command line: Path("s3://b/k") would lose a slash.
    inputs, out = [location_of(given) for given in inputs], location_of(out)

    with exit_on_error():
        options = ProcessOptions(
            fps=fps,
            target=target,
            target_reference=str(target_reference.resolve()) if target_reference else None,
            checkpoint=checkpoint_for_device(checkpoint, device),
            detector=detector,
            model_dir=str(model_dir) if model_dir else None,
            threshold=threshold,
            min_face=min_face,
            whole_frames=whole_frames,
            device=device,
            precision=precision,
            threads=threads,
            batch_size=batch_size,
            session_by=session_by,
            manifest=str(manifest) if manifest else None,
        )
        options.validate()
        clinical = clinical_options(
            events, event_window, night, timezone, baseline_days, min_coverage, episode_min, episode_gap
        )
        log = _open_log(log_json)
        reporter = _Reporter(quiet, log)
        stop = _StopOnSignal()
        try:
            with stop:
                summary = run_process(
                    inputs,
                    out,
                    options,
                    workers=workers,
                    scheduler=scheduler,
                    scheduler_file=str(scheduler_file) if scheduler_file else None,
                    force=force,
                    retry_failed=retry_failed,
                    on_event=reporter,
                )
        except RunInterruptedError as error:
            reporter.close()  # before the message, so the display does not draw over it
            typer.echo(f"fermon: {error}", err=True)
            raise typer.Exit(stop.exit_code()) from None
        finally:
            reporter.close()
            if log is not None:
                log.close()
    if not quiet or summary.failed or summary.failed_videos:  # --quiet still counts what failed
        typer.echo(last_line(summary), err=True)
    if not no_report:
        from fermon.cli.report import run_reports

        with exit_on_error():
            run_reports(out, quiet=quiet, thumbnails_from=inputs if include_thumbnails else None, clinical=clinical)
    raise typer.Exit(EX_DATAERR if summary.failed or summary.failed_videos else EX_OK)
