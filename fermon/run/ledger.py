"""The run ledger (SQLite in the output folder) and the folder lock.

The ledger records, per session, the fingerprints of its videos and of the model and options that
shape its timeline, so that a rerun skips what is done and unchanged. Only the client process writes
it; workers return results.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fermon.errors import BusyError, OutputError
from fermon.inputs import storage

LEDGER_NAME = "fermon-ledger.sqlite"
LOCK_NAME = ".fermon.lock"
_MIB = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    videos TEXT NOT NULL,            -- JSON list of relative paths
    input_fingerprint TEXT NOT NULL,
    config_fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,            -- running, done, failed
    error TEXT,
    output TEXT,                     -- relative to the output folder
    rows INTEGER,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    details TEXT,                    -- JSON: decode gaps, per-video facts, a folder session's bad files
    failure_kind TEXT                -- input (the file itself: not retried while unchanged) or run
)
"""
# Columns added after the first release, added to older ledgers when they are opened.
_ADDED_COLUMNS = {"failure_kind": "TEXT"}


def file_fingerprint(path: Path | str) -> str:
    """sha256 of the size and the first and last MiB: cheap on long videos, and independent of mtime
    so that copying a folder does not force a rerun. A URL (fermon.inputs.storage) is read in two ranges, and
    fingerprints as its local copy would."""
    digest = hashlib.sha256()
    size = storage.size_of(path)
    digest.update(str(size).encode())
    with storage.open_binary(path) as handle:
        digest.update(handle.read(_MIB))
        if size > _MIB:
            handle.seek(max(_MIB, size - _MIB))
            digest.update(handle.read(_MIB))
    return digest.hexdigest()


def json_fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass
class LedgerEntry:
    session_id: str
    input_fingerprint: str
    config_fingerprint: str
    status: str
    error: str | None
    output: str | None
    failure_kind: str | None = None


class Ledger:
    """SQLite ledger; one connection, used from the client process only."""

    def __init__(self, out_dir: Path, read_only: bool = False) -> None:
        """Open (and create, or bring up to date) the ledger of ``out_dir``. ``read_only`` opens an
        existing ledger for reading alone, as reports do: no schema, no journal change, no write."""
        self.path = out_dir / LEDGER_NAME
        try:
            if read_only:
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
                return
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(_SCHEMA)
            self._add_missing_columns()
            self.db.commit()
        except sqlite3.Error as error:
            raise OutputError(f"{LEDGER_NAME}: cannot open the run ledger ({error})") from error

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_missing_columns(self) -> None:
        present = {row[1] for row in self.db.execute("PRAGMA table_info(sessions)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in present:
                self.db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")

    def get(self, session_id: str) -> LedgerEntry | None:
        row = self.db.execute(
            "SELECT session_id, input_fingerprint, config_fingerprint, status, error, output, failure_kind"
            " FROM sessions WHERE session_id=?",
            (session_id,),
        ).fetchone()
        return LedgerEntry(*row) if row else None

    def is_done(self, session_id: str, input_fp: str, config_fp: str, out_dir: Path | str) -> bool:
        entry = self.get(session_id)
        return (
            entry is not None
            and entry.status == "done"
            and entry.input_fingerprint == input_fp
            and entry.config_fingerprint == config_fp
            and entry.output is not None
            and storage.is_file(storage.join(out_dir, entry.output))
        )

    def has_failed_chunks(self, session_id: str) -> bool:
        """Whether a session was done without some of its videos (a folder session's bad chunks)."""
        row = self.db.execute("SELECT details FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        return bool(row and row[0] and json.loads(row[0]).get("failed_videos"))

    def start(self, session_id: str, videos: list[str], input_fp: str, config_fp: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO sessions (session_id, videos, input_fingerprint, config_fingerprint, status,"
            " started_at) VALUES (?, ?, ?, ?, 'running', ?)",
            (session_id, json.dumps(videos), input_fp, config_fp, time.time()),
        )
        self.db.commit()

    def finish(
        self,
        session_id: str,
        status: str,
        error: str | None = None,
        output: str | None = None,
        rows: int | None = None,
        seconds: float | None = None,
        details: dict[str, Any] | None = None,
        failure_kind: str | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE sessions SET status=?, error=?, output=?, rows=?, finished_at=?, seconds=?, details=?,"
            " failure_kind=? WHERE session_id=?",
            (status, error, output, rows, time.time(), seconds, json.dumps(details or {}), failure_kind, session_id),
        )
        self.db.commit()

    def retire(self, session_id: str, output: str | None, mapped_to: list[str]) -> None:
        """A session no input maps to any more: kept, with where its timeline went and why."""
        details = {"retired_at": time.time(), "videos_now_in": mapped_to}
        self.db.execute(
            "UPDATE sessions SET status='retired', output=?, details=? WHERE session_id=?",
            (output, json.dumps(details), session_id),
        )
        self.db.commit()

    def all(self) -> list[dict[str, Any]]:
        """Every session's row as a dict, by session id. Raises OutputError when the file cannot be read."""
        try:
            cursor = self.db.execute("SELECT * FROM sessions ORDER BY session_id")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except sqlite3.Error as error:
            raise OutputError(f"{LEDGER_NAME}: cannot read the run ledger ({error})") from error

    def close(self) -> None:
        self.db.close()


class FolderLock:
    """An exclusive, non-blocking fcntl lock on a file in the output folder. The kernel releases it
    when the process dies, so a killed run never leaves the folder locked."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self.handle: int | None = None

    def __enter__(self) -> FolderLock:
        try:
            self.handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputError(f"{self.path.parent}: cannot create the lock file ({error})") from error
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.handle)
            self.handle = None
            raise BusyError(
                f"{self.path.parent}: another fermon run is using this output folder; try again when it ends"
            ) from None
        os.ftruncate(self.handle, 0)
        os.write(self.handle, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            os.close(self.handle)
            self.handle = None
