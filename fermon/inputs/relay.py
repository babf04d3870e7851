"""A loopback relay so that decord can decode a video that lives in an object store.

decord 0.6 reads a Python file object whole into memory, and its FFmpeg has no TLS (no https), so
neither a file object nor a signed URL streams a video from an object store. Its FFmpeg does speak
plain HTTP with Range requests: a relay on 127.0.0.1 serves each requested range from the store, in
RELAY_PIECE pieces, so decoding fetches what it reads and no more. Each source has an unguessable
token and is removed when its reader is gone; the relay listens on loopback only.
"""

from __future__ import annotations

import re
import socket
import threading
import uuid
import weakref
from typing import Any

from fermon.inputs.storage import Location, filesystem

RELAY_PIECE = 256 << 10  # bytes per ranged GET the relay makes
RELAY_URL = re.compile(r"http://127\.0\.0\.1:\d+/[0-9a-f]{32}")


class RelayedSource:
    """A source registered with the relay: ``url`` for decord, ``fetched`` bytes read from the store.
    Unregistered when closed or garbage-collected (with the reader that holds it)."""

    def __init__(self, relay: _Relay, token: str, url: str) -> None:
        self.url, self.token, self.fetched = url, token, 0
        self.error: str | None = None  # the store's last failure while serving, if any
        self._finalizer = weakref.finalize(self, relay.release, token)

    def close(self) -> None:
        self._finalizer()


class _Relay:
    def __init__(self) -> None:
        from http.server import ThreadingHTTPServer

        self.sources: dict[str, tuple[Location, int, Any]] = {}  # token -> (location, size, RelayedSource ref)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _relay_handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="fermon-relay", daemon=True).start()

    def register(self, location: Location, size: int) -> RelayedSource:
        token = uuid.uuid4().hex
        source = RelayedSource(self, token, f"http://127.0.0.1:{self.server.server_address[1]}/{token}")
        with self.lock:
            self.sources[token] = (location, size, weakref.ref(source))
        return source

    def release(self, token: str) -> None:
        with self.lock:
            self.sources.pop(token, None)

    def lookup(self, token: str) -> tuple[Location, int, Any] | None:
        with self.lock:
            return self.sources.get(token)


def _relay_handler(relay: _Relay) -> type:
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, which FFmpeg uses between seeks

        def setup(self) -> None:
            # A small send buffer: what FFmpeg has not read yet is not fetched far ahead either, so a
            # seek (FFmpeg drops the connection) wastes at most a piece and this buffer.
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RELAY_PIECE)
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no request log: it would name the tokens

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            found = relay.lookup(self.path.strip("/"))
            if found is None:
                self.send_error(404)
                return
            location, size, source = found
            start, end = _byte_range(self.headers.get("Range"), size)
            self.send_response(206 if self.headers.get("Range") else 200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if body:
                self._copy(location, start, end, source)

        def _copy(self, location: Location, start: int, end: int, source: Any) -> None:
            fs, path = filesystem(str(location))
            for offset in range(start, end, RELAY_PIECE):
                try:
                    data = fs.cat_file(path, start=offset, end=min(offset + RELAY_PIECE, end))
                except Exception as error:  # the store failed (a timeout, a 5xx, the object gone)
                    if (alive := source()) is not None:
                        alive.error = f"{type(error).__name__}: {error}".splitlines()[0][:200]
                    self.close_connection = True  # the decoder sees a short read; no traceback here
                    return
                if (alive := source()) is not None:
                    alive.fetched += len(data)
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return  # FFmpeg seeks by dropping the connection: stop fetching

    return Handler


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, end) of an HTTP ``Range: bytes=a-b`` header (the whole object without one)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not match or not (match.group(1) or match.group(2)):
        return 0, size
    if not match.group(1):  # the last N bytes
        return max(0, size - int(match.group(2))), size
    start = min(int(match.group(1)), size)
    end = min(int(match.group(2)) + 1, size) if match.group(2) else size
    return start, max(start, end)


_RELAY: _Relay | None = None
_RELAY_LOCK = threading.Lock()


def relayed(location: Location, size: int) -> RelayedSource:
    """A loopback HTTP URL that serves ``location`` by ranges (see above), started on first use."""
    global _RELAY
    with _RELAY_LOCK:
        if _RELAY is None:
            _RELAY = _Relay()
    return _RELAY.register(location, size)
