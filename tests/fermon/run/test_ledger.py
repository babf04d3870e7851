"""The run ledger and the folder lock, on real SQLite files and real fcntl locks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fermon.errors import BusyError
from fermon.run.ledger import LEDGER_NAME, FolderLock, Ledger, file_fingerprint


def test_a_session_is_done_only_with_its_fingerprints_and_its_output(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.start("p01", ["p01.mp4"], "in-1", "cfg-1")
    assert not ledger.is_done("p01", "in-1", "cfg-1", tmp_path)  # still running
    ledger.finish("p01", "done", output="timelines/p01.parquet", rows=10, seconds=1.0)
    assert not ledger.is_done("p01", "in-1", "cfg-1", tmp_path)  # the output is missing
    (tmp_path / "timelines").mkdir()
    (tmp_path / "timelines" / "p01.parquet").write_bytes(b"x")
    assert ledger.is_done("p01", "in-1", "cfg-1", tmp_path)
    assert not ledger.is_done("p01", "in-2", "cfg-1", tmp_path)  # the video changed
    assert not ledger.is_done("p01", "in-1", "cfg-2", tmp_path)  # the model or an option changed


def test_failure_kind_is_recorded_and_reset_by_a_new_attempt(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.start("p02", ["p02.mp4"], "in", "cfg")
    ledger.finish("p02", "failed", "p02.mp4: empty file", failure_kind="input")
    assert ledger.get("p02").failure_kind == "input"
    ledger.start("p02", ["p02.mp4"], "in", "cfg")
    assert ledger.get("p02").failure_kind is None and ledger.get("p02").status == "running"


def test_a_ledger_from_before_failure_kinds_is_upgraded_in_place(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / LEDGER_NAME)
    old.execute(
        "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, videos TEXT NOT NULL, input_fingerprint TEXT NOT NULL,"
        " config_fingerprint TEXT NOT NULL, status TEXT NOT NULL, error TEXT, output TEXT, rows INTEGER,"
        " started_at REAL, finished_at REAL, seconds REAL, details TEXT)"
    )
    old.execute("INSERT INTO sessions VALUES ('p03', '[]', 'in', 'cfg', 'failed', 'bad', NULL, 0, 0, 0, 0, '{}')")
    old.commit()
    old.close()
    entry = Ledger(tmp_path).get("p03")
    assert entry is not None and entry.status == "failed" and entry.failure_kind is None


def test_the_lock_refuses_a_second_holder_and_is_free_after(tmp_path: Path) -> None:
    with FolderLock(tmp_path), pytest.raises(BusyError, match="another fermon run"):
        FolderLock(tmp_path).__enter__()
    with FolderLock(tmp_path):
        pass


def test_fingerprint_reads_content_not_mtime(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"\0" * 3_000_000)
    before = file_fingerprint(video)
    video.touch()
    assert file_fingerprint(video) == before
    video.write_bytes(b"\0" * 2_999_999 + b"\1")
    assert file_fingerprint(video) != before
