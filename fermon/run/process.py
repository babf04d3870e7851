"""The Python API behind ``fermon process``: the plan of a run.

The client finds the inputs, asks the ledger what is done, unchanged or known to be bad, hands the
rest to a runner (``fermon.run.runners``: in-process, a local cluster, an existing cluster) and records
each result in the ledger as it arrives. The work on a session is in ``fermon.run.session``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fermon.errors import InputError, OutputError, RunInterruptedError, UsageError
from fermon.faces.runtime import resolve_device
from fermon.inputs import storage
from fermon.inputs.archives import SCRATCH_DIR, remove_scratch
from fermon.inputs.discover import find_inputs
from fermon.inputs.manifest import inputs_from_manifest
from fermon.inputs.sessions import VideoFile
from fermon.run.ledger import FolderLock, Ledger, json_fingerprint
from fermon.run.options import ModelIdentity, ProcessOptions, resolve_models
from fermon.run.plan import Planned, plan, plan_refusals
from fermon.run.retire import retire_stale_sessions
from fermon.run.runners import ClusterChoice, DaskRun, gpu_resources, run_in_process
from fermon.run.session import STOP, SessionResult, process_session
from fermon.run.timeline import remove_stale_temporaries
from fermon.video import quick_duration

Event = dict[str, Any]
EventSink = Callable[[Event], None]


@dataclass
class RunSummary:
    """What a run did. ``failed`` and ``failed_videos`` are this run's new failures; ``known_bad`` are
    inputs that failed before because of the file itself and have not changed, so were not retried."""

    done: list[SessionResult] = field(default_factory=list)
    failed: list[SessionResult] = field(default_factory=list)
    known_bad: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    not_videos: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # archive members not read, one-line reasons
    retired: list[str] = field(default_factory=list)  # sessions whose videos now belong to others

    @property
    def failed_videos(self) -> list[dict[str, str]]:
        """Bad files inside sessions that were still done (a folder session's corrupt chunk)."""
        return [video for result in self.done for video in result.failed_videos]


class _Recorder:
    """Writes each result to the ledger and the summary, and says so as an event (client side only)."""

    def __init__(self, ledger: Ledger, summary: RunSummary, emit: EventSink) -> None:
        self.ledger, self.summary, self.emit = ledger, summary, emit
        self.started: set[str] = set()

    def __call__(self, result: SessionResult) -> None:
        details = {
            "gaps": result.gaps,
            "videos": result.videos,
            "samples": result.samples,
            "faces": result.faces,
            "failed_videos": result.failed_videos,
        }
        if result.error_detail:
            details["error_detail"] = result.error_detail
        self.ledger.finish(
            result.session_id,
            result.status,
            result.error,
            result.output,
            result.rows,
            result.seconds,
            details,
            failure_kind=result.failure_kind,
        )
        (self.summary.done if result.status == "done" else self.summary.failed).append(result)
        self.emit({"event": f"session_{result.status}", **asdict(result)})

    def progress(self, session_id: str, processed_s: float, duration_s: float) -> None:
        if session_id not in self.started:
            self.started.add(session_id)
            self.emit({"event": "session_start", "session_id": session_id, "duration_s": duration_s})
        self.emit({"event": "progress", "session_id": session_id, "processed_s": processed_s, "duration_s": duration_s})


def _output_state(out: Path | str) -> Path:
    """Check that the output can be written; the local folder for its ledger and lock (the output
    folder itself, or for a URL a client-local folder keyed by it: see fermon.inputs.storage.state_dir)."""
    if not storage.is_url(out):
        _check_output_folder(Path(out))
        return Path(out)
    if storage.is_file(out):
        raise OutputError(f"{storage.shown(out)}: exists and is not a folder")
    probe = storage.join(out, f".fermon-probe-{os.getpid()}.tmp")
    try:
        storage.write_bytes_atomic(probe, b"fermon")
        storage.remove(probe)
    except (OutputError, OSError) as error:
        reason = str(error.__cause__ or error).splitlines()[0]
        raise OutputError(f"{storage.shown(out)}: cannot write ({reason})") from error
    return storage.state_dir(str(out))


def _check_output_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{out_dir}: cannot create the output folder ({error.strerror})") from error


def run_process(
    inputs: list[Path | str],
    out_dir: Path | str,
    options: ProcessOptions | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    force: bool = False,
    retry_failed: bool = False,
    on_event: EventSink | None = None,
) -> RunSummary:
    """Process every video session under ``inputs`` into ``out_dir/timelines/<session_id>.parquet``.

    Inputs and ``out_dir`` may be fsspec URLs (``s3://bucket/prefix``: see fermon.inputs.storage); the
    ledger and the lock of an output URL are kept on this machine (``storage.state_dir``).

    Sessions run in this process: one at a time on every core (``workers`` None, 0 or 1), or
    ``workers`` at once on threads. ``scheduler``, ``scheduler_file`` or ``DASK_SCHEDULER_ADDRESS``
    (when ``workers`` is None) run them on an existing Dask cluster instead.
    Raises FermonError for usage, input, model and output problems that stop the whole run, and
    RunInterruptedError when ``fermon.run.loop.STOP`` is set or Ctrl-C arrives (what finished is recorded);
    failed videos are in the summary instead.
    """
    options = options or ProcessOptions()
    options.validate()
    emit = on_event or (lambda event: None)
    if workers is not None and workers < 0:
        raise UsageError("--workers must be 0 (no Dask) or more")
    if (scheduler or scheduler_file) and workers:
        raise UsageError("--workers cannot be combined with --scheduler or --scheduler-file")
    on_a_cluster = bool(scheduler or scheduler_file or (workers is None and os.environ.get("DASK_SCHEDULER_ADDRESS")))
    if not on_a_cluster:
        resolve_device(options.device)  # --device cuda without a GPU here: a usage error before any session
    out = out_dir if storage.is_url(out_dir) else Path(out_dir)
    state = _output_state(out)
    found = find_inputs(inputs, options.session_by)
    if options.manifest:
        if options.session_by != "file":
            emit(
                {
                    "event": "warning",
                    "message": "--session-by is not used with --manifest: the manifest sets the sessions",
                }
            )
        found, warnings = inputs_from_manifest(found, Path(options.manifest))
        for message in warnings:
            emit({"event": "warning", "message": message})
        if not found.sessions:  # a study whose manifest names none of the videos: nothing would be done
            raise InputError(f"{Path(options.manifest).name}: no row matches a video under the inputs")
    scratch = str(state.resolve() / SCRATCH_DIR)  # on the client's disk, also for an output URL
    found.sessions = [replace(s, scratch=scratch) if any(v.member for v in s.videos) else s for s in found.sessions]
    summary = RunSummary(not_videos=found.skipped, refused=found.refused)
    for name in found.skipped:
        emit({"event": "file_skipped", "file": name, "reason": "not a video"})
    identity = resolve_models(options)
    _check_reference_photo(options, identity)
    config_fp = json_fingerprint({"model": identity.fingerprint(), "options": options.relevant()})
    STOP.clear()
    with FolderLock(state):
        if not storage.is_url(out):
            remove_stale_temporaries(out)
        remove_scratch(state)  # archive members a killed run had extracted
        ledger = Ledger(state)
        try:
            summary.retired = retire_stale_sessions(found.sessions, ledger, out)
            for session_id in summary.retired:
                emit({"event": "session_retired", "session_id": session_id})
            planned = plan(found.sessions, ledger, out, config_fp, force, retry_failed)
            refused = plan_refusals(found.refused, ledger, config_fp, force, retry_failed)
            planned.known_bad += refused.known_bad
            planned.unreadable += refused.unreadable
            choice = ClusterChoice(workers, scheduler, scheduler_file)
            run = _Run(out, config_fp, options, identity, choice)
            _run_planned(planned, len(found.sessions), ledger, run, summary, emit)
        finally:
            ledger.close()
    emit(
        {
            "event": "run_end",
            "done": len(summary.done),
            "failed": len(summary.failed),
            "failed_videos": len(summary.failed_videos),
            "known_bad": len(summary.known_bad),
            "up_to_date": len(summary.up_to_date),
            "retired": len(summary.retired),
        }
    )
    return summary


def _check_reference_photo(options: ProcessOptions, identity: ModelIdentity) -> None:
    """A reference photo without a face fails the run once, here, before any session (DataError, 65),
    rather than every session, each recorded as a bad input. The descriptor stays cached in this
    process, so sessions run here reuse it."""
    if options.target_reference is None:
        return
    from fermon.run.models import cached_embedder, cached_models, cached_reference

    detector, _ = cached_models(identity, options)
    cached_reference(options, detector, cached_embedder(options))


@dataclass(frozen=True)
class _Run:
    out: Path | str
    config_fp: str
    options: ProcessOptions
    identity: ModelIdentity
    choice: ClusterChoice


def _run_planned(
    planned: Planned, sessions: int, ledger: Ledger, run: _Run, summary: RunSummary, emit: EventSink
) -> None:
    todo = [session for session, _ in planned.todo]
    # On a cluster, every worker is checked before anything is recorded or started.
    cluster = DaskRun(run.choice, run.options, run.identity, str(run.out)) if run.choice.existing and todo else None
    with cluster or nullcontext():
        if cluster is not None:
            cluster.start(todo)
        _record_and_run(planned, sessions, ledger, run, summary, emit, cluster)


def _record_and_run(
    planned: Planned,
    sessions: int,
    ledger: Ledger,
    run: _Run,
    summary: RunSummary,
    emit: EventSink,
    cluster: DaskRun | None,
) -> None:
    config_fp, options, identity, out_dir = run.config_fp, run.options, run.identity, run.out
    summary.up_to_date, summary.known_bad = planned.up_to_date, planned.known_bad
    for session_id in planned.up_to_date:
        emit({"event": "session_up_to_date", "session_id": session_id})
    for session_id in planned.known_bad:
        emit({"event": "session_known_bad", "session_id": session_id, "error": ledger.get(session_id).error})
    todo = [session for session, _ in planned.todo]
    emit(
        {
            "event": "run_start",
            "sessions": sessions,
            "todo": len(todo) + len(planned.unreadable),
            "up_to_date": len(planned.up_to_date),
            "known_bad": len(planned.known_bad),
            "video_s": sum(
                quick_duration(video) or 0.0 for session in todo for video in session.videos if video.member is None
            ),  # archive members are not extracted to be measured: progress learns their length later
        }
    )
    record = _Recorder(ledger, summary, emit)
    for session, input_fp in planned.todo:
        ledger.start(session.session_id, [v.relative for v in session.videos], input_fp, config_fp)
    for result, input_fp in planned.unreadable:
        ledger.start(result.session_id, [], input_fp, config_fp)
        record(result)
    try:
        if not todo:
            pass
        elif cluster is not None:
            cluster.run(todo, record, record.progress)
        else:
            run_in_process(todo, options, identity, str(out_dir), record, record.progress, run.choice.workers or 1)
    except KeyboardInterrupt:
        STOP.set()  # a Ctrl-C without fermon's own signal handler (the Python API): the same stop
    if STOP.is_set():
        finished = len(summary.done) + len(summary.failed)
        raise RunInterruptedError(finished, len(todo) + len(planned.unreadable) - finished)


__all__ = [
    "ProcessOptions",
    "RunSummary",
    "SessionResult",
    "VideoFile",
    "gpu_resources",
    "process_session",
    "run_process",
]
