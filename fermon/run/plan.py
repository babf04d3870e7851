"""What a run has to do: each session's content fingerprint against the ledger (up to date, known
bad, unreadable, to do), and refused archive members as failed inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from fermon.errors import StorageError
from fermon.inputs import storage
from fermon.inputs.discover import session_id_for
from fermon.inputs.sessions import Refusal, Session
from fermon.run.ledger import Ledger, LedgerEntry, file_fingerprint, json_fingerprint
from fermon.run.session import FAILED_INPUT, FAILED_RUN, SessionResult


@dataclass
class Planned:
    todo: list[tuple[Session, str]] = field(default_factory=list)  # with their input fingerprints
    up_to_date: list[str] = field(default_factory=list)
    known_bad: list[str] = field(default_factory=list)
    unreadable: list[tuple[SessionResult, str]] = field(default_factory=list)


def input_fingerprint(session: Session) -> tuple[str, str | None]:
    """The fingerprint of a session's videos, and the reason when one cannot be read.

    An unreadable file is fingerprinted by what stat says of it, so that an unchanged one is known
    to be bad on the next night and a changed one (new permissions, new content) is retried."""
    try:
        files = [[v.relative, storage.retrying(partial(_fingerprint, v.path))] for v in session.videos]
        return json_fingerprint(files + _clinical_fingerprint(session)), None
    except StorageError:
        raise
    except OSError as error:
        try:
            stats = [[v.relative, *_size_and_mtime(v.path)] for v in session.videos]
        except OSError:
            stats = []
        reason = error.strerror or error
        return f"unreadable-{json_fingerprint(stats)}", f"{session.videos[0].relative}: unreadable ({reason})"


def _fingerprint(location: Path | str) -> str:
    """A file's fingerprint; a store's passing failure (a timeout, a 5xx) is a StorageError, to be
    retried, never a verdict on the file."""
    try:
        return file_fingerprint(location)
    except OSError as error:
        if storage.is_url(location) and storage.is_transient(error):
            raise storage.read_failure(storage.shown(str(location)), error) from error
        raise


def content_fingerprint(session: Session) -> str:
    """The fingerprint of a session's videos; one that the store could not read matches nothing."""
    try:
        return input_fingerprint(session)[0]
    except StorageError:
        return "store-unavailable"


def _clinical_fingerprint(session: Session) -> list:
    """What a manifest says of a session (patient, starts), so that changing it reprocesses the
    session; empty without a manifest, so that older ledgers' fingerprints still hold."""
    if session.patient_id is None and not session.starts:
        return []
    starts = {name: start.isoformat() for name, start in sorted(session.starts.items())}
    return [["manifest", session.patient_id, starts]]


def _size_and_mtime(path: Path | str) -> list[int]:
    if storage.is_url(path):
        return [storage.size_of(path)]
    return [path.stat().st_size, path.stat().st_mtime_ns]


def plan(
    sessions: list[Session], ledger: Ledger, out_dir: Path | str, config_fp: str, force: bool, retry: bool
) -> Planned:
    planned = Planned()
    for session in sessions:
        try:
            input_fp, unreadable = input_fingerprint(session)
        except StorageError as error:  # the machine's failure: recorded, and retried by the next run
            planned.unreadable.append((SessionResult(session.session_id, "failed", str(error), FAILED_RUN), ""))
            continue
        retry_chunks = retry and ledger.has_failed_chunks(session.session_id)  # a folder's bad chunk, retried
        if not force and not retry_chunks and ledger.is_done(session.session_id, input_fp, config_fp, out_dir):
            planned.up_to_date.append(session.session_id)
        elif not (force or retry) and _known_bad(ledger.get(session.session_id), input_fp, config_fp):
            planned.known_bad.append(session.session_id)
        elif unreadable:
            planned.unreadable.append((SessionResult(session.session_id, "failed", unreadable, FAILED_INPUT), input_fp))
        else:
            planned.todo.append((session, input_fp))
    return planned


def _known_bad(entry: LedgerEntry | None, input_fp: str, config_fp: str) -> bool:
    """Whether an input failed before because of itself, with the same content and the same options
    (a verdict under other options may not hold now)."""
    return (
        entry is not None
        and entry.status == "failed"
        and entry.failure_kind == FAILED_INPUT
        and entry.input_fingerprint == input_fp
        and entry.config_fingerprint == config_fp
    )


def plan_refusals(refusals: list[Refusal], ledger: Ledger, config_fp: str, force: bool, retry: bool) -> Planned:
    """Refused archive members as failed inputs: recorded and counted the first time, known bad while
    their archive is unchanged (its content fingerprint and the reason)."""
    planned = Planned()
    for refusal in refusals:
        session_id = session_id_for(refusal.member)
        try:
            archive = [refusal.member, file_fingerprint(refusal.archive), str(refusal)]
        except OSError:
            archive = [refusal.member, *_size_and_mtime(refusal.archive), str(refusal)]
        input_fp = json_fingerprint(archive)
        if not (force or retry) and _known_bad(ledger.get(session_id), input_fp, config_fp):
            planned.known_bad.append(session_id)
        else:
            planned.unreadable.append((SessionResult(session_id, "failed", str(refusal), FAILED_INPUT), input_fp))
    return planned
