"""Where sessions run: in this process (one at a time, or several on threads), or on an existing
Dask cluster.

Every runner takes the sessions to do and two callbacks: ``on_result`` (a finished session, called
in the client's main thread, where the ledger is written) and ``on_progress`` (seconds of video
processed). Dask workers send progress to the client through Dask's event topics: nothing is
written to disk. ``fermon.run.loop.STOP`` stops a run: sessions in this process stop at their next batch, and
work on a remote cluster is cancelled.

An output URL (fermon.inputs.storage) is written through a worker-local staging folder: the session writes
its timeline there as it does into a local folder, and the runner publishes it in one PUT, so no
reader of the store sees part of it.
"""

from __future__ import annotations

import os
import queue
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fermon.errors import OutputError
from fermon.inputs import storage
from fermon.inputs.sessions import Session
from fermon.run.options import ModelIdentity, ProcessOptions
from fermon.run.session import FAILED_RUN, STOP, SessionResult, SessionStoppedError, process_session

ResultSink = Callable[[SessionResult], None]
ProgressEvent = Callable[[str, float, float], None]  # session id, seconds processed, session duration
POLL_SECONDS = 0.25  # how often the client looks for progress and for a stop request


@dataclass(frozen=True)
class ClusterChoice:
    """Where to run: an existing Dask cluster (address, scheduler file) or this process."""

    workers: int | None = None  # local: sessions at once (threads); None or 1: one at a time on every core
    scheduler: str | None = None
    scheduler_file: str | None = None

    @property
    def existing(self) -> bool:
        """Whether an existing Dask cluster is named (DASK_SCHEDULER_ADDRESS counts unless --workers is)."""
        from_environment = self.workers is None and bool(os.environ.get("DASK_SCHEDULER_ADDRESS"))
        return bool(self.scheduler or self.scheduler_file or from_environment)


def run_session(
    session: Session,
    options: ProcessOptions,
    identity: ModelIdentity,
    out_dir: str,
    on_progress: Callable[[float, float], None] | None = None,
) -> SessionResult:
    """``process_session``, also for an output URL: the timeline is staged in a local temporary
    folder and published in one piece; the staged copy is removed either way."""
    if not storage.is_url(out_dir):
        return process_session(session, options, identity, out_dir, on_progress)
    with tempfile.TemporaryDirectory(prefix="fermon-session-") as staging:
        result = process_session(session, options, identity, staging, on_progress)
        if result.status == "done" and result.output:
            try:
                data = (Path(staging) / result.output).read_bytes()
                storage.write_bytes_atomic(storage.join(out_dir, result.output), data)
            except (OSError, OutputError) as error:
                reason = f"{result.output}: cannot publish the timeline ({error})"
                return SessionResult(session.session_id, "failed", reason, FAILED_RUN, seconds=result.seconds)
        return result


def run_in_process(
    todo: Sequence[Session],
    options: ProcessOptions,
    identity: ModelIdentity,
    out_dir: str,
    on_result: ResultSink,
    on_progress: ProgressEvent,
    concurrency: int = 1,
) -> None:
    """Sessions in this process: one after another on every core, or ``concurrency`` at once on
    threads that share the cores and one loaded model set. No Dask, no port, no start-up cost."""
    if concurrency > 1 and len(todo) > 1:
        _run_on_threads(todo, options, identity, out_dir, on_result, on_progress, min(concurrency, len(todo)))
        return
    for session in todo:
        if STOP.is_set():
            return

        def report(done: float, total: float, session_id: str = session.session_id) -> None:
            on_progress(session_id, done, total)

        try:
            result = run_session(session, options, identity, out_dir, report)
        except SessionStoppedError:
            return
        on_result(result)


def _run_on_threads(
    todo: Sequence[Session],
    options: ProcessOptions,
    identity: ModelIdentity,
    out_dir: str,
    on_result: ResultSink,
    on_progress: ProgressEvent,
    concurrency: int,
) -> None:
    """Several sessions at once; results and progress reach the caller in this (the main) thread."""
    from concurrent.futures import ThreadPoolExecutor

    from fermon.faces.detector import available_cores

    if not options.threads:
        options = replace(options, threads=max(1, available_cores() // concurrency))
    progress: queue.Queue = queue.Queue()

    def task(session: Session) -> SessionResult:
        def report(done: float, total: float) -> None:
            progress.put({"session_id": session.session_id, "processed_s": done, "duration_s": total})

        return run_session(session, options, identity, out_dir, report)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="fermon-session") as pool:
        futures = {pool.submit(task, session): session for session in todo}
        # On a stop, sessions not started are cancelled and running ones stop at their next batch;
        # the ones that finish while they wind down are still recorded.
        _collect(futures, progress, on_result, on_progress, _wait_threads, finish_on_stop=True)


def _wait_threads(pending: set) -> tuple[set, set]:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
    return set(done), set(pending)


def _wait_dask(pending: set) -> tuple[set, set]:
    from distributed import wait

    try:
        done, pending = wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
    except TimeoutError:  # nothing finished within the poll: look at progress and stop requests
        return set(), pending
    return set(done), set(pending)


def gpu_resources(device: str) -> dict[str, float] | None:
    """The Dask resources a session task asks for on an existing cluster: one GPU with ``--device
    cuda``. Its GPU workers must be started with ``--resources GPU=1``: a task that asks for a
    resource no worker has would wait forever, so ``auto`` asks for nothing."""
    return {"GPU": 1} if device == "cuda" else None


def _dask_client(choice: ClusterChoice) -> Any:
    """A client for an existing cluster: a scheduler address, a scheduler file, or
    DASK_SCHEDULER_ADDRESS. fermon starts no cluster of its own: Dask's scheduler and workers
    serve HTTP on ports of their own, which a default run must not open."""
    from distributed import Client

    if choice.scheduler_file:
        return Client(scheduler_file=choice.scheduler_file)
    return Client(choice.scheduler or os.environ["DASK_SCHEDULER_ADDRESS"])


def _session_task(
    session: Session,
    options: ProcessOptions,
    identity: ModelIdentity,
    out_dir: str,
    topic: str,
    option_files: dict[str, str] | None = None,
) -> SessionResult:
    """A session on a Dask worker, its progress sent to the client as events on ``topic``; the
    options' files (``option_files``: field -> sha256) are read from the copies shipped here."""
    from distributed import get_worker

    from fermon.run.cluster import with_local_files

    worker = get_worker()

    def report(done: float, total: float) -> None:
        worker.log_event(topic, {"session_id": session.session_id, "processed_s": done, "duration_s": total})

    if option_files:
        options = with_local_files(options, option_files)
    return run_session(session, options, identity, out_dir, report)


class DaskRun:
    """A run on an existing Dask cluster. Entering connects; ``start`` checks the cluster contract on
    every worker (``fermon.run.cluster.check_workers``: raises before any work starts) and ships the
    model files; leaving removes them from the workers and closes the client."""

    def __init__(self, choice: ClusterChoice, options: ProcessOptions, identity: ModelIdentity, out_dir: str) -> None:
        self.choice, self.options, self.identity, self.out_dir = choice, options, identity, out_dir
        self.client: Any = None
        self.plugin: str | None = None
        self.option_files: dict[str, str] = {}

    def __enter__(self) -> DaskRun:
        self.client = _dask_client(self.choice)
        return self

    def start(self, todo: Sequence[Session]) -> list[str]:
        """Check the contract on every worker connected now, then ship the model files (to those
        and to any that joins later). Returns the checked workers' addresses."""
        from fermon.run import cluster

        workers = cluster.check_workers(self.client, todo, self.out_dir)
        self.plugin, self.option_files = cluster.ship_models(self.client, self.identity, self.options)
        return workers

    def __exit__(self, *exc: object) -> None:
        from fermon.run import cluster

        try:
            if self.plugin is not None:
                cluster.unship(self.client, self.plugin)
        finally:
            self.plugin = None
            self.client.close()

    def run(self, todo: Sequence[Session], on_result: ResultSink, on_progress: ProgressEvent) -> None:
        """Sessions as tasks; a session whose worker dies fails alone and the rest go on. On a stop
        request the tasks not yet finished are cancelled."""
        client = self.client
        progress: queue.Queue = queue.Queue()
        topic = f"fermon-progress-{uuid.uuid4().hex}"
        client.subscribe_topic(topic, lambda event: progress.put(event[1]))
        try:
            futures = {
                # Opaque keys: task names must not carry file names to a dashboard or logs.
                client.submit(
                    _session_task,
                    session,
                    self.options,
                    self.identity,
                    self.out_dir,
                    topic,
                    self.option_files,
                    key=f"fermon-session-{uuid.uuid4().hex}",
                    pure=False,
                    resources=gpu_resources(self.options.device),
                ): session
                for session in todo
            }
            _collect(futures, progress, on_result, on_progress, _wait_dask, finish_on_stop=False)
        finally:
            client.unsubscribe_topic(topic)


def run_on_dask(
    todo: Sequence[Session],
    options: ProcessOptions,
    identity: ModelIdentity,
    out_dir: str,
    choice: ClusterChoice,
    on_result: ResultSink,
    on_progress: ProgressEvent,
) -> None:
    """Sessions as tasks on an existing Dask cluster, after checking its contract (``DaskRun``)."""
    with DaskRun(choice, options, identity, out_dir) as run:
        run.start(todo)
        run.run(todo, on_result, on_progress)


def _collect(
    futures: dict,
    progress: queue.Queue,
    on_result: ResultSink,
    on_progress: ProgressEvent,
    wait_some: Callable[[set], tuple[set, set]],
    finish_on_stop: bool,
) -> None:
    """Hand on results and progress as they come, until all are in or a stop is requested; then
    cancel what has not started and, with ``finish_on_stop``, wait for the rest and record it."""
    pending = set(futures)
    while pending:
        done, pending = wait_some(pending)
        _drain(progress, on_progress)
        _hand_on(done, futures, on_result)
        if STOP.is_set():
            for future in pending:
                future.cancel()
            if finish_on_stop:
                _hand_on(_wait_all(pending), futures, on_result)
            return
    _drain(progress, on_progress)


def _wait_all(futures: set) -> set:
    from concurrent.futures import wait

    done, _ = wait(futures)
    return {future for future in done if not future.cancelled()}


def _hand_on(done: set, futures: dict, on_result: ResultSink) -> None:
    for future in done:
        result = _result_of(future, futures[future])
        if result is not None:
            on_result(result)


def _drain(progress: queue.Queue, on_progress: ProgressEvent) -> None:
    while True:
        try:
            message = progress.get_nowait()
        except queue.Empty:
            return
        on_progress(message["session_id"], float(message["processed_s"]), float(message["duration_s"]))


def _result_of(future: Any, session: Session) -> SessionResult | None:
    """A finished task's result; a worker failure as a failed session; None if it was stopped."""
    try:
        return future.result()
    except SessionStoppedError:
        return None
    except Exception as error:  # KilledWorker, lost scheduler: this session fails, the rest go on
        if STOP.is_set():
            return None
        message = (str(error).splitlines() or [""])[0][:160]
        reason = f"{session.videos[0].relative}: worker failed ({type(error).__name__}: {message})"
        return SessionResult(session.session_id, "failed", reason, FAILED_RUN)
