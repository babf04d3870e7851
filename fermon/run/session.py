"""The worker's side of a run: one session from frames to a written timeline.

A worker takes its models from :mod:`fermon.run.models` (loaded once), runs the session's loop
(:mod:`fermon.run.loop`), joins tracks into persons, writes the timeline atomically, and returns a
small :class:`SessionResult`.
It reports progress through a callback and never touches the ledger. Face descriptors stay in
the worker's memory: nothing it returns or writes holds one.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fermon import __version__
from fermon.errors import FermonError, InputError
from fermon.faces.track import choose_targets
from fermon.inputs.clock import footer_clock
from fermon.inputs.sessions import Session
from fermon.people.appearance import TrackLook
from fermon.run.loop import STOP, FaceRows, ProgressSink, SessionStoppedError, detect_session
from fermon.run.models import cached_embedder, cached_models, cached_reference
from fermon.run.options import ModelIdentity, ProcessOptions
from fermon.run.stages import stage
from fermon.run.timeline import build_table, face_columns, timeline_path, write_atomic

__all__ = ["FAILED_INPUT", "FAILED_RUN", "STOP", "SessionResult", "SessionStoppedError", "process_session"]

# How a session failed: because of its files (unreadable, empty, corrupt: not retried until they
# change) or because of the machine or the run (a worker died, out of memory, a bug: retried).
FAILED_INPUT = "input"
FAILED_RUN = "run"


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
    error_detail: str | None = None  # the raw text behind ``error`` (a decoder's), for the ledger only


@dataclass
class _Persons:
    track_ids: np.ndarray  # one per face, in the order of the session's faces
    person_ids: np.ndarray
    is_target: np.ndarray
    footer: dict[str, Any]


def _persons(rows: FaceRows, options: ProcessOptions, frame_size: tuple[int, int], reference: Any) -> _Persons:
    """Tracks joined into persons, and the target flag, for every face of the session."""
    from fermon.people.linking import identity_footer, link_persons
    from fermon.people.reference import nearest_person

    looks = rows.looks()
    descriptors = {track: look.mean for track, look in looks.items()}
    links = link_persons(rows.tracker.stats, descriptors)
    track_ids = np.concatenate(rows.track_ids) if rows.track_ids else np.zeros(0, np.int32)
    person_ids = np.array([links.person_of_track[int(t)] for t in track_ids], np.int32)
    track_ends = {"appearance": rows.appearance.splits, **rows.ends}
    by_position = int(np.isin(track_ids, list(links.tracks_by_position)).sum())
    footer = identity_footer(
        links,
        len(rows.tracker.stats),
        len(descriptors),
        rows.appearance.chips_embedded,
        options.identity,
        track_ends,
        by_position,
    )
    if reference is not None:
        person, distance = nearest_person(reference, links, person_chips(looks, links.person_of_track))
        targets = set() if person is None else {person}
        rounded = None if distance is None else round(distance, 3)
        footer["reference"] = {"matched": person is not None, "distance": rounded}
    else:
        all_boxes = np.concatenate(rows.boxes) if rows.boxes else np.zeros((0, 4), np.float32)
        targets = choose_targets(person_ids, all_boxes, options.target, frame_size)
    return _Persons(track_ids, person_ids, np.isin(person_ids, list(targets)), footer)


def person_chips(
    looks: dict[int, TrackLook], person_of_track: dict[int, int], most: int = 256
) -> dict[int, np.ndarray]:
    """Each person's individual chip descriptors (at most ``most``, spread over the session), for
    matching a reference photo against the faces themselves, not only their mean."""
    chips: dict[int, list[np.ndarray]] = {}
    for track, look in looks.items():
        chips.setdefault(person_of_track[track], []).extend(look.chips)
    return {person: np.asarray(found[:: max(1, len(found) // most)][:most]) for person, found in chips.items()}


def _sample_facts(rows: FaceRows) -> dict[str, int]:
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
    from fermon.faces.align import CropSpec

    started = time.perf_counter()

    def failed(reason: str, kind: str, detail: str | None = None) -> SessionResult:
        seconds = time.perf_counter() - started
        return SessionResult(session.session_id, "failed", reason, kind, seconds=seconds, error_detail=detail)

    try:
        detector, classifier = cached_models(identity, options)
        embedder = cached_embedder(options)
        reference = cached_reference(options, detector, embedder)
        rows = FaceRows(classifier, CropSpec.from_metadata(classifier.checkpoint.metadata["crop"]), embedder)
        infos, gaps, failed_videos = detect_session(
            session, detector, rows, options, on_progress or (lambda done, total: None)
        )
        class_names = list(identity.class_names)
        faces = rows.sampled(len(class_names))
        frame_size = (int(infos[0]["height"]), int(infos[0]["width"]))
        with stage("identity"):
            persons = _persons(rows, options, frame_size, reference)
        names = [video.relative for video in session.videos]
        columns = face_columns(
            session.session_id, names, faces, persons.track_ids, persons.is_target, class_names, persons.person_ids
        )
        metadata = footer_metadata(session, identity, options, infos, gaps, failed_videos)
        metadata["samples"] = _sample_facts(rows)
        metadata["identity"] = persons.footer
        metadata["precision"] = {"classifier": classifier.precision, "embedder": embedder and embedder.precision}
        with stage("parquet"):
            table = build_table(columns, class_names, metadata)
            path = timeline_path(Path(out_dir), session.session_id)
            write_atomic(table, path)
    except SessionStoppedError:
        raise
    except InputError as error:  # the file itself: unreadable, empty, corrupt
        return failed(str(error), FAILED_INPUT, error.detail)
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
