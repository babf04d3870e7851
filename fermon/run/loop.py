"""A session's loop: decode, detect, crop, classify, track, and keep a few chips per live track.

Decoding runs one thread ahead, detection on the worker's cores in input order, classification in whole
batches; progress goes to a callback, throttled. :data:`STOP` interrupts the loop at its next batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np

from fermon.errors import InputError
from fermon.faces.track import Tracker
from fermon.inputs.clock import SessionClock, known_starts, place_chunks
from fermon.inputs.sessions import Session, VideoFile
from fermon.people.appearance import TrackAppearance, TrackLook
from fermon.run.options import ProcessOptions
from fermon.run.stages import stage, timed, timed_items
from fermon.run.timeline import SampledFaces
from fermon.video import DecodeGap, VideoInfo, iter_batches, probe, read_ahead, sample_indices

ProgressSink = Callable[[float, float], None]  # (seconds of video processed, session duration in seconds)

# Set by the runner on Ctrl-C or SIGTERM; a session in this process stops at its next batch.
STOP = threading.Event()


class SessionStoppedError(Exception):
    """The run was interrupted while this session was being processed; nothing was written."""


class FaceRows:
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
        self.appearance = TrackAppearance(embedder)
        self.ends = {"video": 0, "decode_gap": 0}  # tracks ended by a boundary rather than a gap
        self._pending: list[np.ndarray] = []
        self._pending_count = 0

    def add(self, video_number: int, frame_index: int, timestamp: float, frame: np.ndarray, detections: Any) -> None:
        from fermon.faces.align import crop_faces

        self.sample_video.append(video_number)
        self.sample_frame.append(frame_index)
        self.sample_time.append(timestamp)
        boxes = detections.boxes.astype(np.float32)
        self.boxes.append(boxes)
        self.scores.append(detections.scores.astype(np.float32))
        with stage("crops"):
            crops = crop_faces(frame, detections.landmarks, self.spec) if len(detections) else np.zeros((0,))
        # Geometry proposes, appearance may veto: a track never carries on into someone else.
        with stage("tracking"):
            proposal = self.tracker.propose(boxes, timestamp)
        with stage("identity"):
            self.appearance.end(self.tracker.ended)
            look = self.appearance.look(proposal, frame, detections.landmarks, crops)
        with stage("tracking"):
            ids = self.tracker.commit(proposal, look.veto)
        with stage("identity"):
            self.appearance.record(proposal, look, ids)
        self.track_ids.append(ids)
        if len(detections):
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
            with stage("classifier"):
                self.probs.append(self.classifier.predict(crops[:cut]))
        self._pending = [crops[cut:]] if cut < len(crops) else []
        self._pending_count = len(crops) - cut

    def end_tracks(self, reason: str) -> None:
        """End every live track: the video ended, or decoding skipped part of it (``reason``)."""
        ended = self.tracker.end_all()
        with stage("identity"):
            self.appearance.end(ended)
        self.ends[reason] += len(ended)

    def looks(self) -> dict[int, TrackLook]:
        """Each embedded track's look, once the session's samples are all in (in memory only)."""
        with stage("identity"):
            self.appearance.end(self.tracker.end_all())
            return self.appearance.finish()

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
            bad.append(
                {"video": video.relative, "reason": str(error), **({"detail": error.detail} if error.detail else {})}
            )
            first_error = first_error or error
            continue
        good.append((number, video, info, starts))
    if not good and first_error is not None:
        raise first_error
    return good, bad


def detect_session(
    session: Session, detector: Any, rows: FaceRows, options: ProcessOptions, on_progress: ProgressSink
) -> tuple[list[dict], list[dict], list[dict[str, str]]]:
    """Detect over the session's videos; archive members are extracted for just this long."""
    from fermon.inputs.archives import extracted

    with extracted(session) as local:
        return _detect_videos(local, detector, rows, options, on_progress)


def _detect_videos(
    session: Session, detector: Any, rows: FaceRows, options: ProcessOptions, on_progress: ProgressSink
) -> tuple[list[dict], list[dict], list[dict[str, str]]]:
    from fermon.faces.detector import available_cores, detect_in_parallel, detect_tracked, detect_whole

    with stage("decode"):
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
            timed_items(
                "decode",
                iter_batches(video, sample_indices(starts, options.fps), starts, video_gaps),
            )
        )
        detect = timed("detection", partial(detect_whole if options.whole_frames else detect_tracked, detector))
        gaps_seen = 0
        for batch, found in detect_in_parallel(detect, batches, options.threads or available_cores()):
            if STOP.is_set():
                raise SessionStoppedError(session.session_id)
            for index, stamp, frame, detections in zip(
                batch.frame_indices, batch.timestamps_s, batch.frames, found, strict=True
            ):
                while gaps_seen < len(video_gaps) and video_gaps[gaps_seen].start_s <= float(stamp):
                    rows.end_tracks("decode_gap")  # a face before a hole in the video is not vouched for after it
                    gaps_seen += 1
                rows.add(number, int(index), offset + float(stamp), frame, detections)
                progress(done_s + float(stamp))
        rows.end_tracks("video")  # the next chunk may start hours later, on someone else
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
