"""The Python API behind ``fermon process``: videos in, one Parquet timeline per session out.

The client finds inputs, consults the ledger, and hands one task per session to Dask workers (or runs
them in-process with ``workers=0``). A worker decodes, detects, aligns, classifies and tracks, writes
its timeline atomically and returns a small result; only the client writes the ledger.
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fermon import __version__
from fermon.detect import DEFAULT_MIN_FACE
from fermon.errors import FermonError, ModelError, UsageError
from fermon.ledger import FolderLock, Ledger, file_fingerprint, json_fingerprint
from fermon.timeline import (
    BBOX_COLUMNS,
    TIMELINES_DIR,
    build_table,
    remove_stale_temporaries,
    timeline_path,
    write_atomic,
)
from fermon.track import TARGET_MODES, choose_targets, link_tracks
from fermon.video import (
    SEGMENT_SAMPLES,
    DecodeGap,
    Session,
    VideoFile,
    find_inputs,
    iter_batches,
    probe,
    read_ahead,
    sample_indices,
)

EX_OK = 0
EX_DATAERR = 65

Event = dict[str, Any]
EventSink = Callable[[Event], None]


@dataclass(frozen=True)
class ProcessOptions:
    """Everything that configures a run. ``relevant()`` is the part that shapes a timeline."""

    fps: float = 5.0
    target: str = "largest"
    checkpoint: str = "default"
    detector: str = "auto"
    model_dir: str | None = None
    threshold: float = 0.5
    min_face: float = DEFAULT_MIN_FACE  # video pixels; sets the detector's input scale
    whole_frames: bool = False  # search every sample whole, not only around the faces of the one before
    device: str = "auto"
    batch_size: int = 64
    session_by: str = "file"
    segment_samples: int = SEGMENT_SAMPLES
    threads: int | None = None  # detection threads per worker; None: the cores available

    def validate(self) -> None:
        if self.fps < 0:
            raise UsageError("--fps must be 0 (every frame) or positive")
        if self.target not in TARGET_MODES:
            raise UsageError(f"--target must be one of {', '.join(TARGET_MODES)}")
        if self.session_by not in ("file", "folder"):
            raise UsageError("--session-by must be 'file' or 'folder'")
        if self.batch_size < 1 or self.segment_samples < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.min_face <= 0:
            raise UsageError("--min-face must be positive (pixels)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError("--device must be auto, cpu or cuda")

    def relevant(self) -> dict[str, Any]:
        """Options that change the rows written (device, batch size and workers do not)."""
        return {
            "fps": float(self.fps),
            "target": self.target,
            "threshold": float(self.threshold),
            "min_face": float(self.min_face),  # 64 and 64.0 are one setting
            "whole_frames": self.whole_frames,
            "session_by": self.session_by,
        }

    def public(self) -> dict[str, Any]:
        """The configuration as written to outputs: no absolute paths."""
        config = asdict(self)
        config["checkpoint"] = "default" if self.checkpoint == "default" else Path(self.checkpoint).name
        config["model_dir"] = Path(self.model_dir).name if self.model_dir else None
        return config


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights a run uses, resolved once in the client and checked again in each worker."""

    model_name: str
    checkpoint_path: str
    checkpoint_sha256: str
    class_names: tuple[str, ...]
    detector_name: str
    detector_path: str
    detector_sha256: str

    def fingerprint(self) -> dict[str, Any]:
        return {
            "checkpoint_sha256": self.checkpoint_sha256,
            "class_names": list(self.class_names),
            "detector": self.detector_name,
            "detector_sha256": self.detector_sha256,
        }


@dataclass
class SessionResult:
    session_id: str
    status: str  # done or failed
    error: str | None = None
    output: str | None = None  # relative to the output folder
    rows: int = 0
    samples: int = 0
    faces: int = 0
    seconds: float = 0.0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    videos: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunSummary:
    done: list[SessionResult] = field(default_factory=list)
    failed: list[SessionResult] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    not_videos: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EX_DATAERR if self.failed else EX_OK


# --------------------------------------------------------------------------- models


def resolve_models(options: ProcessOptions) -> ModelIdentity:
    """Load the checkpoint's metadata and hash the detector file, without building the detector."""
    from fermon.checkpoint import load_checkpoint
    from fermon.detect import file_sha256, resolve_detector

    checkpoint = load_checkpoint(options.checkpoint)
    name, detector_path = resolve_detector(options.detector, options.model_dir)
    metadata = checkpoint.metadata
    return ModelIdentity(
        model_name=str(metadata.get("name") or checkpoint.path.stem),
        checkpoint_path=str(checkpoint.path.resolve()),
        checkpoint_sha256=str(metadata["content_sha256"]),
        class_names=tuple(checkpoint.class_names),
        detector_name=name,
        detector_path=str(detector_path),
        detector_sha256=file_sha256(detector_path),
    )


# Loaded once per worker process, keyed by weights and the options that change how they run.
_MODEL_CACHE: dict[tuple, tuple[Any, Any]] = {}


def cached_models(identity: ModelIdentity, options: ProcessOptions) -> tuple[Any, Any]:
    from fermon.checkpoint import load_checkpoint
    from fermon.classify import ExpressionClassifier, resolve_device
    from fermon.detect import create_detector

    key = (identity, options.threshold, options.min_face, options.device, options.batch_size, options.threads)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()  # one model set per worker: a new configuration replaces the old
        import torch

        # Classification runs on one thread beside the detection threads (detect_in_parallel), which
        # take the worker's cores; more torch threads would only wait on them.
        torch.set_num_threads(1)
        device = resolve_device(options.device).type
        detector = create_detector(
            identity.detector_name,
            identity.detector_path,
            threshold=options.threshold,
            min_face=options.min_face,
            threads=1,  # parallel over batches instead: see detect.detect_in_parallel
            device=device,
        )
        checkpoint = load_checkpoint(identity.checkpoint_path)
        if checkpoint.metadata["content_sha256"] != identity.checkpoint_sha256:
            raise ModelError(f"{Path(identity.checkpoint_path).name}: changed on disk during the run")
        classifier = ExpressionClassifier(checkpoint, device=options.device, batch_size=options.batch_size)
        _MODEL_CACHE[key] = (detector, classifier)
    return _MODEL_CACHE[key]


# --------------------------------------------------------------------------- one session (worker side)


class _FaceRows:
    """Per-sample detections and (batched) classification, accumulated over a whole session."""

    def __init__(self, classifier: Any, spec: Any) -> None:
        self.classifier = classifier
        self.spec = spec
        self.sample_video: list[int] = []
        self.sample_frame: list[np.ndarray] = []
        self.sample_time: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []  # per sample (N,4)
        self.scores: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []  # per classified chunk
        self._pending: list[np.ndarray] = []
        self._pending_count = 0

    def add(self, video_number: int, frame_index: int, timestamp: float, frame: np.ndarray, detections: Any) -> None:
        from fermon.align import crop_faces

        self.sample_video.append(video_number)
        self.sample_frame.append(frame_index)
        self.sample_time.append(timestamp)
        self.boxes.append(detections.boxes.astype(np.float32))
        self.scores.append(detections.scores.astype(np.float32))
        if len(detections):
            crops = crop_faces(frame, detections.landmarks, self.spec)
            self._pending.append(crops)
            self._pending_count += len(crops)
            if self._pending_count >= self.classifier.batch_size:
                self.flush(whole_batches_only=True)

    def flush(self, whole_batches_only: bool = False) -> None:
        """Classify what is pending; with ``whole_batches_only``, only full batches, keeping the rest.

        Full batches give the classifier one input shape all session long, so its kernels are
        planned once and its memory stays flat."""
        if not self._pending:
            return
        crops = np.concatenate(self._pending)
        cut = len(crops) - len(crops) % self.classifier.batch_size if whole_batches_only else len(crops)
        if cut:
            self.probs.append(self.classifier.predict(crops[:cut]))
        self._pending = [crops[cut:]] if cut < len(crops) else []
        self._pending_count = len(crops) - cut


def _detect_session(
    session: Session, detector: Any, rows: _FaceRows, options: ProcessOptions, on_frames: Callable[[int], None]
):
    from fermon.detect import available_cores, detect_in_parallel, detect_tracked, detect_whole

    infos, gaps = [], []
    offset = 0.0
    for number, video in enumerate(session.videos):
        info, starts = probe(video)
        video_gaps: list[DecodeGap] = []
        # Decoding runs one thread ahead; detection runs on the remaining cores, in input order.
        batches = read_ahead(
            iter_batches(video, sample_indices(starts, options.fps), starts, video_gaps, options.segment_samples)
        )
        detect = partial(detect_whole if options.whole_frames else detect_tracked, detector)
        for batch, found in detect_in_parallel(detect, batches, options.threads or available_cores()):
            for index, stamp, frame, detections in zip(
                batch.frame_indices, batch.timestamps_s, batch.frames, found, strict=True
            ):
                rows.add(number, int(index), offset + float(stamp), frame, detections)
            on_frames(len(batch.frame_indices))
        infos.append({"video": video.relative, "offset_s": offset, **info.to_dict()})
        gaps += [{"video": video.relative, **asdict(gap)} for gap in video_gaps]
        offset += info.duration_s
    rows.flush()
    return infos, gaps


def _columns(
    session: Session, rows: _FaceRows, class_names: list[str], target: str, frame_size: tuple[int, int]
) -> dict:
    track_ids = link_tracks(rows.boxes)
    all_tracks = np.concatenate(track_ids) if track_ids else np.zeros(0, np.int32)
    all_boxes = np.concatenate(rows.boxes) if rows.boxes else np.zeros((0, 4), np.float32)
    targets = choose_targets(all_tracks, all_boxes, target, frame_size)
    probs = np.concatenate(rows.probs) if rows.probs else np.zeros((0, len(class_names)), np.float32)
    # One row per face, or one empty row for a sample without faces.
    per_sample = np.array([max(1, len(b)) for b in rows.boxes], np.int64)
    total = int(per_sample.sum())
    face = np.zeros(total, bool)
    face_rows = np.concatenate(
        [np.arange(len(b)) + start for b, start in zip(rows.boxes, np.cumsum(per_sample) - per_sample, strict=True)]
    )
    face_rows = face_rows.astype(np.int64)
    face[face_rows] = True
    nan = np.full(total, np.nan, np.float32)
    columns: dict[str, Any] = {
        "session_id": [session.session_id] * total,
        "video": np.repeat([session.videos[v].relative for v in rows.sample_video], per_sample).tolist(),
        "frame_index": np.repeat(np.asarray(rows.sample_frame, np.int64), per_sample),
        "timestamp_s": np.repeat(np.asarray(rows.sample_time, np.float64), per_sample),
        "face_detected": face,
        "track_id": np.zeros(total, np.int32),
        "is_target": np.zeros(total, bool),
        "det_score": nan.copy(),
        "label_index": np.full(total, -1, np.int32),
        "confidence": nan.copy(),
    }
    for name in (*BBOX_COLUMNS, *(f"prob_{c}" for c in class_names)):
        columns[name] = nan.copy()
    columns["track_id"][face_rows] = all_tracks
    columns["is_target"][face_rows] = np.isin(all_tracks, list(targets))
    columns["det_score"][face_rows] = np.concatenate(rows.scores) if rows.scores else []
    for k, name in enumerate(BBOX_COLUMNS):
        columns[name][face_rows] = all_boxes[:, k]
    if len(probs):
        columns["label_index"][face_rows] = probs.argmax(axis=1)
        columns["confidence"][face_rows] = probs.max(axis=1)
        for k, name in enumerate(class_names):
            columns[f"prob_{name}"][face_rows] = probs[:, k]
    return columns


def process_session(
    session: Session,
    options: ProcessOptions,
    identity: ModelIdentity,
    out_dir: str,
    on_frames: Callable[[int], None] | None = None,
) -> SessionResult:
    """Run one session end to end and write its timeline. Never raises for a bad video: the result
    says ``failed`` with a one-line reason naming the file."""
    from fermon.align import CropSpec

    started = time.perf_counter()
    try:
        detector, classifier = cached_models(identity, options)
        rows = _FaceRows(classifier, CropSpec.from_metadata(classifier.checkpoint.metadata["crop"]))
        infos, gaps = _detect_session(session, detector, rows, options, on_frames or (lambda n: None))
        class_names = list(identity.class_names)
        frame_size = (int(infos[0]["height"]), int(infos[0]["width"]))
        columns = _columns(session, rows, class_names, options.target, frame_size)
        metadata = footer_metadata(session, identity, options, infos, gaps)
        table = build_table(columns, class_names, metadata)
        path = timeline_path(Path(out_dir), session.session_id)
        write_atomic(table, path)
    except FermonError as error:
        return SessionResult(session.session_id, "failed", str(error), seconds=time.perf_counter() - started)
    except Exception as error:  # a bug or a library failure: fail this session, keep the run going
        where = traceback.extract_tb(error.__traceback__)[-1]
        place = f"{Path(where.filename).name}:{where.lineno}"
        reason = f"{session.videos[0].relative}: {type(error).__name__}: {error} ({place})"
        return SessionResult(
            session.session_id, "failed", reason.splitlines()[0], seconds=time.perf_counter() - started
        )
    return SessionResult(
        session.session_id,
        "done",
        output=f"{TIMELINES_DIR}/{path.name}",
        rows=table.num_rows,
        samples=len(rows.sample_frame),
        faces=int(np.asarray(columns["face_detected"]).sum()),
        seconds=time.perf_counter() - started,
        gaps=gaps,
        videos=infos,
    )


def footer_metadata(
    session: Session, identity: ModelIdentity, options: ProcessOptions, infos: list[dict], gaps: list[dict]
) -> dict[str, Any]:
    return {
        "fermon_version": __version__,
        "session_id": session.session_id,
        "model": {"name": identity.model_name, "checkpoint_sha256": identity.checkpoint_sha256},
        "detector": {"name": identity.detector_name, "weights_sha256": identity.detector_sha256},
        "class_names": list(identity.class_names),
        "sampling_fps": options.fps,
        "videos": infos,
        "decode_gaps": gaps,
        "config": options.public(),
    }


# --------------------------------------------------------------------------- the run (client side)


def _plan(sessions: list[Session], ledger: Ledger, out_dir: Path, config_fp: str, force: bool, emit: EventSink):
    """Split sessions into (to do, with fingerprints) and up to date."""
    todo: list[tuple[Session, str]] = []
    up_to_date: list[str] = []
    unreadable: list[SessionResult] = []
    for session in sessions:
        try:
            input_fp = json_fingerprint([[v.relative, file_fingerprint(v.path)] for v in session.videos])
        except OSError as error:
            unreadable.append(
                SessionResult(
                    session.session_id, "failed", f"{session.videos[0].relative}: unreadable ({error.strerror})"
                )
            )
            continue
        if not force and ledger.is_done(session.session_id, input_fp, config_fp, out_dir):
            up_to_date.append(session.session_id)
            emit({"event": "session_up_to_date", "session_id": session.session_id})
        else:
            todo.append((session, input_fp))
    return todo, up_to_date, unreadable


def _record(result: SessionResult, ledger: Ledger, summary: RunSummary, emit: EventSink) -> None:
    details = {"gaps": result.gaps, "videos": result.videos, "samples": result.samples, "faces": result.faces}
    ledger.finish(result.session_id, result.status, result.error, result.output, result.rows, result.seconds, details)
    (summary.done if result.status == "done" else summary.failed).append(result)
    event = {"event": f"session_{result.status}", **asdict(result)}
    emit(event)


def _default_workers(sessions: int) -> int:
    return max(1, min(sessions, os.cpu_count() or 1))


def gpu_resources(device: str, local_cluster: bool, cuda_available: bool) -> dict[str, float] | None:
    """The Dask resources a session task asks for: one GPU when it classifies on one.

    A LocalCluster that fermon starts on a CUDA machine gives each worker ``GPU=1``, so ``auto``
    asks for it there. On an existing cluster only an explicit ``--device cuda`` asks, and its GPU
    workers must be started with ``--resources GPU=1``: a task that asks for a resource no worker
    has would wait forever.
    """
    if device == "cuda" or (device == "auto" and local_cluster and cuda_available):
        return {"GPU": 1}
    return None


def _dask_client(workers: int | None, count: int, scheduler: str | None, scheduler_file: str | None, gpu: bool = False):
    """A client for an existing cluster (address, scheduler file, DASK_SCHEDULER_ADDRESS) or a new
    LocalCluster on loopback without a dashboard. Returns (client, cluster-or-None)."""
    from distributed import Client, LocalCluster

    if scheduler_file:
        return Client(scheduler_file=scheduler_file), None
    address = scheduler or (os.environ.get("DASK_SCHEDULER_ADDRESS") if workers is None else None)
    if address:
        return Client(address), None
    cluster = LocalCluster(
        n_workers=count,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
        resources={"GPU": 1} if gpu else None,
    )
    return Client(cluster), cluster


def _run_dask(todo, options, identity, out_dir, workers, scheduler, scheduler_file, on_result):
    import torch
    from distributed import as_completed

    count = workers or _default_workers(len(todo))
    cuda = torch.cuda.is_available()
    client, cluster = _dask_client(workers, count, scheduler, scheduler_file, gpu=cuda and options.device != "cpu")
    resources = gpu_resources(options.device, cluster is not None, cuda)
    if cluster is not None and not options.threads:
        # Split the cores between local workers; a remote cluster's workers decide for themselves.
        from fermon.detect import available_cores

        options = replace(options, threads=max(1, available_cores() // count))
    try:
        futures = {}
        for session, _ in todo:
            # Opaque keys: task names must not carry file names to a dashboard or logs.
            key = f"fermon-session-{uuid.uuid4().hex}"
            future = client.submit(
                process_session, session, options, identity, str(out_dir), key=key, pure=False, resources=resources
            )
            futures[future] = session
        for future in as_completed(futures):
            session = futures[future]
            try:
                result = future.result()
            except Exception as error:  # KilledWorker, lost scheduler: this session fails, the rest go on
                message = (str(error).splitlines() or [""])[0][:160]
                reason = f"{session.videos[0].relative}: worker failed ({type(error).__name__}: {message})"
                result = SessionResult(session.session_id, "failed", reason)
            on_result(result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_process(
    inputs: list[Path],
    out_dir: Path,
    options: ProcessOptions | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    force: bool = False,
    on_event: EventSink | None = None,
) -> RunSummary:
    """Process every video session under ``inputs`` into ``out_dir/timelines/<session_id>.parquet``.

    ``workers=0`` runs in this process without Dask; ``None`` sizes a LocalCluster to the machine
    (or uses ``DASK_SCHEDULER_ADDRESS``). Raises FermonError for usage, input, model and output
    problems that stop the whole run; failed videos are in the summary instead.
    """
    options = options or ProcessOptions()
    options.validate()
    emit = on_event or (lambda event: None)
    if workers is not None and workers < 0:
        raise UsageError("--workers must be 0 (no Dask) or more")
    if (scheduler or scheduler_file) and workers:
        raise UsageError("--workers cannot be combined with --scheduler or --scheduler-file")
    found = find_inputs(inputs, options.session_by)
    summary = RunSummary(not_videos=found.skipped)
    for name in found.skipped:
        emit({"event": "file_skipped", "file": name, "reason": "not a video"})
    identity = resolve_models(options)
    config_fp = json_fingerprint({"model": identity.fingerprint(), "options": options.relevant()})
    out_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(out_dir):
        remove_stale_temporaries(out_dir)
        ledger = Ledger(out_dir)
        try:
            todo, summary.up_to_date, unreadable = _plan(found.sessions, ledger, out_dir, config_fp, force, emit)
            emit(
                {
                    "event": "run_start",
                    "sessions": len(found.sessions),
                    "todo": len(todo),
                    "up_to_date": len(summary.up_to_date),
                }
            )
            for session, input_fp in todo:
                ledger.start(session.session_id, [v.relative for v in session.videos], input_fp, config_fp)
            for result in unreadable:
                ledger.start(result.session_id, [], "", config_fp)
                _record(result, ledger, summary, emit)

            def on_result(result: SessionResult) -> None:
                _record(result, ledger, summary, emit)

            if not todo:
                pass
            elif workers == 0 and not (scheduler or scheduler_file):
                _run_local(todo, options, identity, out_dir, emit, on_result)
            else:
                _run_dask(todo, options, identity, out_dir, workers, scheduler, scheduler_file, on_result)
        finally:
            ledger.close()
    emit(
        {
            "event": "run_end",
            "done": len(summary.done),
            "failed": len(summary.failed),
            "up_to_date": len(summary.up_to_date),
        }
    )
    return summary


def _run_local(todo, options, identity, out_dir, emit, on_result) -> None:
    for session, _ in todo:
        emit({"event": "session_start", "session_id": session.session_id})

        def frames(count: int, sid: str = session.session_id) -> None:
            emit({"event": "frames", "session_id": sid, "count": count})

        on_result(process_session(session, options, identity, str(out_dir), frames))


__all__ = ["ProcessOptions", "RunSummary", "SessionResult", "VideoFile", "process_session", "run_process"]
