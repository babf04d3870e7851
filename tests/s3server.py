"""An S3-compatible server on loopback for tests (moto's), and the environment a client needs for it.

Credentials reach s3fs the usual way, through boto's environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``), never through fermon. They are distinctive, so a
test can look for them in every output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ACCESS_KEY = "AKIAFERMONTESTKEY042"
SECRET_KEY = "fermon-test-secret-that-must-never-be-written"


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """Start moto's server on 127.0.0.1 (a free port); yields the environment that points boto at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    _forget_clients()
    try:
        yield {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        server.stop()
        _forget_clients()


def _forget_clients() -> None:
    """fsspec keeps one S3FileSystem per set of arguments: drop those that point at another server."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def fresh_s3():
    """An s3fs filesystem that reads the environment now (fsspec caches instances otherwise)."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


@contextmanager
def s3_bucket(bucket: str, cache_dir: Path) -> Iterator[tuple[object, dict[str, str]]]:
    """The server, boto's environment pointing at it (set for the duration), an empty bucket, and a
    client-local cache folder (where the ledgers of output URLs live). Yields (filesystem, environment)."""
    import pytest

    with s3_server() as environment, pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        patch.setenv("XDG_CACHE_HOME", str(cache_dir))
        fs = fresh_s3()
        fs.mkdir(bucket, exist_ok=True)
        yield fs, environment
