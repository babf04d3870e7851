"""Where inputs and outputs live: local paths, or fsspec URLs (``s3://``, ``gs://``, ``az://``, ``memory://``).

A *location* is a :class:`~pathlib.Path` (a local file or folder: the code paths that existed before
object storage, unchanged) or a URL string. ``file://`` URLs become paths. Credentials come from each
store's own environment and configuration (boto's ``AWS_*`` variables and ``~/.aws`` for S3, and so
on): fermon never takes, stores or writes them.

Object stores publish an object on a single PUT (or on completing a multipart upload), so a reader
sees the whole object or none: :func:`write_bytes_atomic` writes the final key in one call there,
and elsewhere writes a hidden temporary key and moves it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar, Union
from urllib.parse import urlsplit

from fermon.errors import InputError, OutputError, StorageError

Location = Union[Path, str]  # a local path, or an fsspec URL
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Stores where one PUT publishes a whole object atomically (fsspec protocol names).
ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})
READ_BLOCK = 1 << 20  # bytes per ranged read when decoding from an object store
# Waits before each new try of a read that failed in the store (a timeout, a 5xx): about 20 s in
# all rides out a store's brief outage; longer ones fail the session as retryable, for the next run.
RETRY_DELAYS_S = (1.0, 4.0, 15.0)
Result = TypeVar("Result")


def is_url(location: object) -> bool:
    """Whether ``location`` is a URL string (``file://`` URLs are turned into paths by :func:`location_of`)."""
    return isinstance(location, str) and bool(_URL.match(location))


def location_of(text: str | os.PathLike[str]) -> Location:
    """A command-line value as a location: a URL stays a string (without a trailing slash), a path a Path."""
    if isinstance(text, os.PathLike):
        return Path(text)
    if text.startswith("file://"):
        return Path(urlsplit(text).path)
    if is_url(text):
        return text.rstrip("/")
    return Path(text)


def shown(location: Location) -> str:
    """A location for a message: a URL without any user or password in it."""
    if not is_url(location):
        return str(location)
    parts = urlsplit(str(location))
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a URL and the path within it, with fsspec's listing cache dropped for
    that path: other machines (the workers) write there too. Raises InputError for an unknown scheme
    or a store whose package is not installed (``pip install 'fermon[s3]'`` for S3)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        raise InputError(f"{shown(url)}: cannot use this store ({error})") from error
    fs.invalidate_cache(path)
    return fs, path


def join(base: Location, *parts: str) -> Location:
    """``base`` joined with relative POSIX parts."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return Path(base).joinpath(*parts)


def name_of(location: Location) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1] if is_url(location) else Path(location).name


def parent_of(location: Location) -> Location:
    return str(location).rstrip("/").rsplit("/", 1)[0] if is_url(location) else Path(location).parent


def is_file(location: Location) -> bool:
    if not is_url(location):
        return Path(location).is_file()
    fs, path = filesystem(str(location))
    return bool(fs.isfile(path))


def is_dir(location: Location) -> bool:
    if not is_url(location):
        return Path(location).is_dir()
    fs, path = filesystem(str(location))
    return bool(fs.isdir(path))


def size_of(location: Location) -> int:
    """A file's size in bytes; OSError (FileNotFoundError, PermissionError) when it cannot be read."""
    if not is_url(location):
        return Path(location).stat().st_size
    fs, path = filesystem(str(location))
    try:
        return int(fs.size(path))
    except OSError:
        raise
    except Exception as error:  # a store's own error (no credentials, denied): an OSError to callers
        raise OSError(f"{type(error).__name__}: {error}") from error


def is_transient(error: BaseException) -> bool:
    """Whether a store's failure may pass on its own (a timeout, a dropped connection, a 5xx), unlike
    an object that is missing or denied, or a URL whose store cannot be used at all."""
    permanent = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, InputError)
    return not isinstance(error, permanent)


def read_failure(name: str, cause: BaseException | str) -> StorageError:
    """The StorageError for a store that kept failing to serve ``name`` (a file's relative name or a
    shown URL), with ``cause`` as one short line."""
    reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}".splitlines()[0][:200]
    tries = len(RETRY_DELAYS_S) + 1
    return StorageError(
        f"{name}: the store failed while reading ({reason}); tried {tries} times, the next run tries again"
    )


def retrying(action: Callable[[], Result]) -> Result:
    """``action``, tried again after each :class:`StorageError` with backoff (``RETRY_DELAYS_S``);
    the last try's StorageError is raised."""
    for delay in RETRY_DELAYS_S:
        try:
            return action()
        except StorageError:
            time.sleep(delay)
    return action()


def open_binary(location: Location, block_size: int = READ_BLOCK) -> IO[bytes]:
    """A seekable binary reader. On an object store it fetches ``block_size`` ranges as they are read,
    so decoding a video's sampled frames or hashing its ends never copies the whole object."""
    if not is_url(location):
        return open(location, "rb")
    fs, path = filesystem(str(location))
    try:
        return fs.open(path, "rb", block_size=block_size, cache_type="readahead")
    except OSError:
        raise
    except Exception as error:
        raise OSError(f"{type(error).__name__}: {error}") from error


def read_bytes(location: Location) -> bytes:
    with open_binary(location) as handle:
        return handle.read()


def walk(url: str) -> tuple[str, list[tuple[str, str]]]:
    """The files under a URL, as (URL, POSIX path relative to the root), in name order, hidden names
    (a part starting with '.') left out; a URL naming one object gives that object. Returns the root
    too. Raises InputError when nothing is there."""
    fs, path = filesystem(url)
    try:
        if fs.isfile(path):
            return parent_of(url), [(url, name_of(url))]
        keys = sorted(fs.find(path, withdirs=False, detail=False)) if fs.isdir(path) else []
    except Exception as error:  # a store's error (denied, no credentials): the whole run cannot start
        raise InputError(f"{shown(url)}: cannot list ({type(error).__name__}: {error})") from error
    if not keys:
        raise InputError(f"{shown(url)}: no such file or folder")
    prefix = path.rstrip("/") + "/"
    files = []
    for key in keys:
        relative = key[len(prefix) :] if key.startswith(prefix) else key.rsplit("/", 1)[-1]
        if not any(part.startswith(".") for part in relative.split("/")):
            files.append((join(url, relative), relative))
    return url, files


def write_bytes_atomic(location: Location, data: bytes) -> None:
    """Publish ``data`` at ``location`` so that no reader ever sees part of it. Raises OutputError."""
    if not is_url(location):
        _write_local_atomic(Path(location), data)
        return
    fs, path = filesystem(str(location))
    try:
        if fs.protocol in ATOMIC_PUT or (isinstance(fs.protocol, tuple) and ATOMIC_PUT & set(fs.protocol)):
            fs.pipe_file(path, data)  # one PUT: the object appears whole
        else:  # a store without atomic PUTs: a hidden temporary key, then copy and delete
            folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
            temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
            try:
                fs.pipe_file(temporary, data)
                fs.mv(temporary, path)
            finally:
                if fs.exists(temporary):
                    fs.rm(temporary)
    except Exception as error:
        raise OutputError(f"{shown(location)}: cannot write ({type(error).__name__}: {error})") from error


def _write_local_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "", what: str = "") -> Iterator[Path]:
    """A hidden temporary path beside ``path`` for the caller to write; on leaving the block the file is
    synced to disk, renamed over ``path`` and the folder synced, so that ``path`` holds the old file or
    the whole new one, even after a power cut. On an error the temporary is removed, ``path`` is left as
    it was, and an OSError becomes an OutputError naming the file (``what`` says what it is).

    The one atomic write of fermon and training: every file they publish goes through it. ``suffix``
    ends the temporary's name, for writers that add their own (``np.save`` adds ``.npy``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp{suffix}")
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"{path.name}: cannot write{' ' + what if what else ''} ({error})") from error
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: the directory entry is data of the folder)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno != errno.EINVAL:  # a filesystem that cannot sync a folder has nothing to sync
            raise
    finally:
        os.close(descriptor)


def remove(location: Location) -> None:
    """Delete a file if it is there."""
    if not is_url(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = filesystem(str(location))
    if fs.exists(path):
        fs.rm(path)


def list_names(location: Location, suffix: str) -> list[str]:
    """Names of the (non-hidden) files directly in a folder that end with ``suffix``, sorted."""
    if not is_url(location):
        folder = Path(location)
        return sorted(p.name for p in folder.glob(f"*{suffix}")) if folder.is_dir() else []
    fs, path = filesystem(str(location))
    try:
        names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))


def state_dir(url: str) -> Path:
    """The client-local folder that holds the ledger and the lock of an output URL.

    SQLite's locking and fcntl locks need a local POSIX filesystem, which no object store is, so
    they stay on the client, in ``$XDG_CACHE_HOME/fermon/ledgers/<sha256 of the URL>/`` (default
    ``~/.cache``): the same URL always finds its ledger. ``location.txt`` there names the URL."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "fermon" / "ledgers" / hashlib.sha256(shown(url).encode()).hexdigest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "location.txt").write_text(shown(url) + "\n", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the ledger folder for {shown(url)} ({error.strerror})") from error
    return folder


def files_under(location: Location) -> Iterator[tuple[str, int]]:
    """(relative name, size) of every file under a folder or URL prefix: for tests and checks."""
    if not is_url(location):
        root = Path(location)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                yield path.relative_to(root).as_posix(), path.stat().st_size
        return
    fs, path = filesystem(str(location))
    for key, info in sorted(fs.find(path, detail=True).items()):
        yield key[len(path.rstrip("/")) + 1 :], int(info.get("size") or 0)
