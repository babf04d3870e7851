"""The worker's side of a run: one session from frames to a written timeline.

A worker keeps its models loaded between sessions (``cached_models``, ``cached_embedder``), runs a
session's loop (decode, detect, crop, classify, track, and keep a few chips per live track), joins
tracks into persons, writes the timeline atomically, and returns a small :class:`SessionResult`.
It reports progress through a callback and never touches the ledger. Face descriptors stay in
the worker's memory: nothing it returns or writes holds one.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fermon import __version__
from fermon.clock import SessionClock, footer_clock, known_starts, place_chunks
from fermon.config import ModelIdentity, ProcessOptions
from fermon.errors import FermonError, InputError, ModelError
from fermon.identity import TrackIdentities
from fermon.inputs import Session, VideoFile
from fermon.timeline import SampledFaces, build_table, face_columns, timeline_path, write_atomic
from fermon.track import Tracker, choose_targets
from fermon.video import DecodeGap, VideoInfo, iter_batches, probe, read_ahead, sample_indices

# How a session failed: because of its files (unreadable, empty, corrupt: not retried until they
# change) or because of the machine or the run (a worker died, out of memory, a bug: retried).
FAILED_INPUT = "input"
FAILED_RUN = "run"

ProgressSink = Callable[[float, float], None]  # (seconds of video processed, session duration in seconds)

# Set by the runner on Ctrl-C or SIGTERM; a session in this process stops at its next batch.
STOP = threading.Event()


class SessionStoppedError(Exception):
    """The run was interrupted while this session was being processed; nothing was written."""


@dataclass
class SessionResult:
    """What a worker returns for one session: small, picklable, nothing identifying."""

    session_id: str
    status: str  # done or failed
    error: str | None = None
    failure_kind: str | None = None  # FAILED_INPUT or FAILED_RUN when failed
    output: str | None = None  # relative to the output folder
    rows: int = 0
    samples: int = 0
    faces: int = 0
    seconds: float = 0.0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    videos: list[dict[str, Any]] = field(default_factory=list)
    failed_videos: list[dict[str, str]] = field(default_factory=list)  # a folder session's bad files


# --------------------------------------------------------------------------- models, once per worker

_MODEL_CACHE: dict[tuple, tuple[Any, Any]] = {}
_MODEL_LOCK = threading.Lock()  # worker threads of one process share the cache
# sha256 -> local copies of the client's model files, written here by fermon.cluster's worker plugin
# (a stack per hash: two runs on one cluster may ship the same file).
SHIPPED_FILES: dict[str, list[str]] = {}


def shipped_copy(sha256: str) -> str | None:
    """This process's local copy of a file the client shipped by content, or None."""
    copies = SHIPPED_FILES.get(sha256) if sha256 else None
    return copies[-1] if copies else None


def _with_local_copies(identity: ModelIdentity) -> ModelIdentity:
    """The identity with its files replaced by the copies shipped to this worker, where there are any:
    the client's paths may not exist here."""
    checkpoint = shipped_copy(identity.checkpoint_file_sha256)
    detector = shipped_copy(identity.detector_sha256)
    return replace(
        identity,
        checkpoint_path=checkpoint or identity.checkpoint_path,
        detector_path=detector or identity.detector_path,
    )


def cached_models(identity: ModelIdentity, options: ProcessOptions) -> tuple[Any, Any]:
    """The detector and classifier for this run, built once per process and configuration; on a
    cluster worker, from the copies the client shipped (``SHIPPED_FILES``)."""
    identity = _with_local_copies(identity)
    key = (identity, options.threshold, options.min_face, options.device, options.batch_size, options.threads)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE.clear()  # one model set per worker: a new configuration replaces the old
            _MODEL_CACHE[key] = _load_models(identity, options)
        return _MODEL_CACHE[key]


def _load_models(identity: ModelIdentity, options: ProcessOptions) -> tuple[Any, Any]:
    import torch

    from fermon.checkpoint import load_checkpoint
    from fermon.classify import ExpressionClassifier, resolve_device
    from fermon.detect import create_detector

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
    return detector, classifier


_EMBEDDER_CACHE: dict[str, Any] = {}
_REFERENCE_CACHE: dict[tuple[str, str], np.ndarray] = {}  # (path, content hash) -> descriptor, in memory


def cached_embedder(options: ProcessOptions) -> Any:
    """dlib's face-recognition ResNet for this process, or None when identity is off."""
    if not options.identity:
        return None
    from fermon.classify import resolve_device
    from fermon.identity import FaceEmbedder

    device = resolve_device(options.device).type
    with _MODEL_LOCK:
        if device not in _EMBEDDER_CACHE:
            _EMBEDDER_CACHE[device] = FaceEmbedder(device=device)
        return _EMBEDDER_CACHE[device]


def _reference(options: ProcessOptions, detector: Any, embedder: Any) -> np.ndarray | None:
    """The patient photo's descriptor (--target-reference), computed once per process and photo."""
    if options.target_reference is None:
        return None
    from fermon.config import reference_sha256
    from fermon.identity import reference_descriptor

    key = (options.target_reference, reference_sha256(options.target_reference))
    with _MODEL_LOCK:
        if key not in _REFERENCE_CACHE:
            _REFERENCE_CACHE[key] = reference_descriptor(options.target_reference, detector, embedder)
        return _REFERENCE_CACHE[key]


# --------------------------------------------------------------------------- a session's loop


class _FaceRows:
    """Per-sample detections, track ids and (batched) classification, accumulated over a whole session,
    and each live track's few best chips for identity (no per-sample chips)."""

    def __init__(self, classifier: Any, spec: Any, embedder: Any = None) -> None:
        self.classifier = classifier
        self.spec = spec
        self.sample_video: list[int] = []
        self.sample_frame: list[int] = []
        self.sample_time: list[float] = []
        self.boxes: list[np.ndarray] = []  # per sample (N,4)
        self.scores: list[np.ndarray] = []
        self.track_ids: list[np.ndarray] = []  # per sample (N,)
        self.probs: list[np.ndarray] = []  # per classified chunk
        self.tracker = Tracker()
        self.identities = TrackIdentities(embedder)
        self._pending: list[np.ndarray] = []
        self._pending_count = 0

    def add(self, video_number: int, frame_index: int, timestamp: float, frame: np.ndarray, detections: Any) -> None:
        from fermon.align import crop_faces

        sample = len(self.sample_frame)
        self.sample_video.append(video_number)
        self.sample_frame.append(frame_index)
        self.sample_time.append(timestamp)
        boxes = detections.boxes.astype(np.float32)
        self.boxes.append(boxes)
        self.scores.append(detections.scores.astype(np.float32))
        ids = self.tracker.update(boxes, timestamp)
        self.track_ids.append(ids)
        self.identities.end(self.tracker.ended, self.tracker.stats)
        self.identities.observe(sample, frame, ids, boxes, detections.landmarks)
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

    def descriptors(self) -> dict[int, np.ndarray]:
        """Each embedded track's descriptor, once the session's samples are all in (in memory only)."""
        self.identities.end(self.tracker.live(), self.tracker.stats)
        return self.identities.finish()

    def sampled(self, classes: int) -> SampledFaces:
        probs = np.concatenate(self.probs) if self.probs else np.zeros((0, classes), np.float32)
        return SampledFaces(self.sample_video, self.sample_frame, self.sample_time, self.boxes, self.scores, probs)


class _Throttle:
    """Passes progress on at every 5% of a session and at least every 2 s, so that a scheduler's log
    gets events through a long session without one per batch."""

    def __init__(self, sink: ProgressSink, duration_s: float) -> None:
        self.sink, self.duration = sink, duration_s
        self.last_value, self.last_time = -1.0, 0.0

    def __call__(self, processed_s: float, final: bool = False) -> None:
        now = time.monotonic()
        step = 0.05 * self.duration
        if final or processed_s - self.last_value >= step or now - self.last_time >= 2.0:
            self.sink(min(processed_s, self.duration), self.duration)
            self.last_value, self.last_time = processed_s, now


def _probe_all(session: Session) -> tuple[list[tuple[int, VideoFile, VideoInfo, np.ndarray]], list[dict[str, str]]]:
    """Probe every video of a session; a file that cannot be read is set aside with its reason, so one
    bad chunk does not cost a folder session its good ones. Raises the first reason if none is good."""
    good, bad = [], []
    first_error: InputError | None = None
    for number, video in enumerate(session.videos):
        try:
            info, starts = probe(video)
        except InputError as error:  # DataError included: empty, corrupt, no frames, missing
            bad.append({"video": video.relative, "reason": str(error)})
            first_error = first_error or error
            continue
        good.append((number, video, info, starts))
    if not good and first_error is not None:
        raise first_error
    return good, bad


def _detect_session(
    session: Session, detector: Any, rows: _FaceRows, options: ProcessOptions, on_progress: ProgressSink
) -> tuple[list[dict], list[dict], list[dict[str, str]]]:
    """Detect over the session's videos; archive members are extracted for just this long."""
    from fermon.archives import extracted

    with extracted(session) as local:
        return _detect_videos(local, detector, rows, options, on_progress)


def _detect_videos(
    session: Session, detector: Any, rows: _FaceRows, options: ProcessOptions, on_progress: ProgressSink
) -> tuple[list[dict], list[dict], list[dict[str, str]]]:
    from fermon.detect import available_cores, detect_in_parallel, detect_tracked, detect_whole

    good, failed_videos = _probe_all(session)
    clock = _session_clock(session, good)
    progress = _Throttle(on_progress, sum(info.duration_s for _, _, info, _ in good))
    progress(0.0, final=True)
    infos, gaps = [], []
    done_s = 0.0  # seconds of video processed: progress, not the time axis (chunks may have gaps)
    for place, (number, video, info, starts) in enumerate(good):
        offset = clock.offsets_s[place]
        video_gaps: list[DecodeGap] = []
        # Decoding runs one thread ahead; detection runs on the remaining cores, in input order.
        batches = read_ahead(
            iter_batches(video, sample_indices(starts, options.fps), starts, video_gaps, options.segment_samples)
        )
        detect = partial(detect_whole if options.whole_frames else detect_tracked, detector)
        for batch, found in detect_in_parallel(detect, batches, options.threads or available_cores()):
            if STOP.is_set():
                raise SessionStoppedError(session.session_id)
            for index, stamp, frame, detections in zip(
                batch.frame_indices, batch.timestamps_s, batch.frames, found, strict=True
            ):
                rows.add(number, int(index), offset + float(stamp), frame, detections)
                progress(done_s + float(stamp))
        infos.append({"video": video.relative, "offset_s": offset, **info.to_dict(), **clock.video_facts(place)})
        gaps += [{"video": video.relative, **asdict(gap)} for gap in video_gaps]
        done_s += info.duration_s
    rows.flush()
    progress(done_s, final=True)
    return infos, gaps, failed_videos


def _session_clock(session: Session, good: list[tuple[int, VideoFile, VideoInfo, np.ndarray]]) -> SessionClock:
    """Where each good chunk sits on the session's axis, by the recordings' own starts when known."""
    videos = [video for _, video, _, _ in good]
    starts, source = known_starts(session, videos)
    return place_chunks(starts, [info.duration_s for _, _, info, _ in good], source)


@dataclass
class _Persons:
    track_ids: np.ndarray  # one per face, in the order of the session's faces
    person_ids: np.ndarray
    is_target: np.ndarray
    footer: dict[str, Any]


def _persons(rows: _FaceRows, options: ProcessOptions, frame_size: tuple[int, int], reference: Any) -> _Persons:
    """Tracks joined into persons, and the target flag, for every face of the session."""
    from fermon.identity import identity_footer, link_persons, nearest_person

    descriptors = rows.descriptors()
    links = link_persons(rows.tracker.stats, descriptors)
    track_ids = np.concatenate(rows.track_ids) if rows.track_ids else np.zeros(0, np.int32)
    person_ids = np.array([links.person_of_track[int(t)] for t in track_ids], np.int32)
    footer = identity_footer(
        links, len(rows.tracker.stats), len(descriptors), rows.identities.chips_embedded, options.identity
    )
    if reference is not None:
        person, distance = nearest_person(reference, links)
        targets = set() if person is None else {person}
        rounded = None if distance is None else round(distance, 3)
        footer["reference"] = {"matched": person is not None, "distance": rounded}
    else:
        all_boxes = np.concatenate(rows.boxes) if rows.boxes else np.zeros((0, 4), np.float32)
        targets = choose_targets(person_ids, all_boxes, options.target, frame_size)
    return _Persons(track_ids, person_ids, np.isin(person_ids, list(targets)), footer)


def _sample_facts(rows: _FaceRows) -> dict[str, int]:
    """Per-session counts that summaries need whatever rows an analyst keeps (see fermon.analysis)."""
    faces = np.array([len(b) for b in rows.boxes], np.int64)
    return {"count": len(faces), "with_face": int((faces > 0).sum()), "with_several_faces": int((faces > 1).sum())}


def process_session(
    session: Session,
    options: ProcessOptions,
    identity: ModelIdentity,
    out_dir: str,
    on_progress: ProgressSink | None = None,
) -> SessionResult:
    """Run one session end to end and write its timeline. Never raises for a bad video: the result
    says ``failed`` with a one-line reason naming the file. Raises SessionStoppedError when the run is
    interrupted (see ``STOP``)."""
    from fermon.align import CropSpec

    started = time.perf_counter()

    def failed(reason: str, kind: str) -> SessionResult:
        return SessionResult(session.session_id, "failed", reason, kind, seconds=time.perf_counter() - started)

    try:
        detector, classifier = cached_models(identity, options)
        embedder = cached_embedder(options)
        reference = _reference(options, detector, embedder)
        rows = _FaceRows(classifier, CropSpec.from_metadata(classifier.checkpoint.metadata["crop"]), embedder)
        infos, gaps, failed_videos = _detect_session(
            session, detector, rows, options, on_progress or (lambda done, total: None)
        )
        class_names = list(identity.class_names)
        faces = rows.sampled(len(class_names))
        frame_size = (int(infos[0]["height"]), int(infos[0]["width"]))
        persons = _persons(rows, options, frame_size, reference)
        names = [video.relative for video in session.videos]
        columns = face_columns(
            session.session_id, names, faces, persons.track_ids, persons.is_target, class_names, persons.person_ids
        )
        metadata = footer_metadata(session, identity, options, infos, gaps, failed_videos)
        metadata["samples"] = _sample_facts(rows)
        metadata["identity"] = persons.footer
        table = build_table(columns, class_names, metadata)
        path = timeline_path(Path(out_dir), session.session_id)
        write_atomic(table, path)
    except SessionStoppedError:
        raise
    except InputError as error:  # the file itself: unreadable, empty, corrupt
        return failed(str(error), FAILED_INPUT)
    except FermonError as error:
        return failed(str(error), FAILED_RUN)
    except Exception as error:  # a bug or a library failure: fail this session, keep the run going
        where = traceback.extract_tb(error.__traceback__)[-1]
        place = f"{Path(where.filename).name}:{where.lineno}"
        reason = f"{session.videos[0].relative}: {type(error).__name__}: {error} ({place})"
        return failed(reason.splitlines()[0], FAILED_RUN)
    return SessionResult(
        session.session_id,
        "done",
        output=f"{path.parent.name}/{path.name}",
        rows=table.num_rows,
        samples=len(rows.sample_frame),
        faces=int(np.asarray(columns["face_detected"]).sum()),
        seconds=time.perf_counter() - started,
        gaps=gaps,
        videos=infos,
        failed_videos=failed_videos,
    )


def footer_metadata(
    session: Session,
    identity: ModelIdentity,
    options: ProcessOptions,
    infos: list[dict],
    gaps: list[dict],
    failed_videos: list[dict[str, str]],
) -> dict[str, Any]:
    metadata = {
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
    if failed_videos:  # only where a folder session lost a chunk: other footers stay as they were
        metadata["failed_videos"] = failed_videos
    metadata |= clinical_metadata(session, infos)
    return metadata


def clinical_metadata(session: Session, infos: list[dict]) -> dict[str, Any]:
    """The footer's clinical facts: the patient (from a study manifest) and the wall clock."""
    return {"patient_id": session.patient_id, "clock": footer_clock(session, infos)}
