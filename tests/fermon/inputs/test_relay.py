"""The loopback relay that lets decord read objects from a store."""

from __future__ import annotations

import http.client
import urllib.request

import fsspec
import pytest

from fermon.inputs.relay import relayed


def test_a_store_that_fails_mid_read_gives_a_short_read_not_a_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    store = fsspec.filesystem("memory")
    store.pipe_file("/relay-test/clip.mp4", b"x" * 1000)
    source = relayed("memory://relay-test/clip.mp4", 1000)
    store.rm("/relay-test/clip.mp4")  # gone between the listing and the read, as a flaky store does
    short_read = (http.client.IncompleteRead, ConnectionError, OSError)
    with pytest.raises(short_read), urllib.request.urlopen(source.url, timeout=10) as response:
        response.read()
    assert source.error and source.error.startswith("FileNotFoundError")
    assert "Traceback" not in capfd.readouterr().err
    source.close()
