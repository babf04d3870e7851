"""The cluster contract: what every Dask worker must reach, checked before any work starts, and the
model files sent to the workers by content.

Checked on every worker at the start of a run (``check_workers``): it runs this fermon version, it
reads the first video of each input (the same size as the client sees), and it reads a probe the
client wrote at the output location and writes one of its own there, which proves it writes where
the client reads. The model files (the checkpoint, the detector's weights, a target reference
photo) travel from the client to each worker once, in a worker plugin (``ShippedFiles``) that writes
them into a worker-local temporary folder named by their sha256, checks the hash and removes the
folder when the run ends.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from fermon import __version__
from fermon.errors import FermonError, InputError, ModelError, OutputError, UsageError
from fermon.inputs import storage
from fermon.inputs.sessions import Session
from fermon.run.options import ModelIdentity, ProcessOptions

PROBE_PREFIX = ".fermon-probe-"  # hidden and ending in .tmp: readers skip it, a rerun removes a stale one
# ProcessOptions fields that name a file the workers need, shipped like the checkpoint; a field this
# version of ProcessOptions lacks is skipped.
OPTION_FILES = ("target_reference",)
WAIT_FOR_WORKERS_S = 30


@dataclass(frozen=True)
class _InputProbe:
    location: Path | str
    shown: str  # as the user gave it (a path under their input, or the URL): for the terminal only
    size: int


def _probe_inputs(todo: Sequence[Session]) -> list[_InputProbe]:
    """The first video of each input root among the sessions to do, with the size the client sees."""
    probes: dict[str, _InputProbe] = {}
    for video in (v for session in todo for v in session.videos):
        root = str(video.path)[: -len(video.relative)]
        if root in probes:
            continue
        try:
            size = storage.size_of(video.path)
        except OSError:
            continue  # unreadable here too: that session fails on its own, as without a cluster
        probes[root] = _InputProbe(video.path, storage.shown(video.path), size)
    return list(probes.values())


def _check_here(inputs: list[_InputProbe], probe: Path | str, token: str, version: str) -> tuple[str, str] | None:
    """Run on a worker: None, or (what failed, one line why)."""
    if version != __version__:
        return "version", f"runs fermon {__version__}, the client {version}"
    for video in inputs:
        try:
            size = storage.size_of(video.location)
            with storage.open_binary(video.location, block_size=4096) as handle:
                handle.read(12)
        except Exception as error:
            return "input", f"cannot read {video.shown} ({_reason(error)})"
        if size != video.size:
            return "input", f"sees {video.shown} with {size} bytes, the client {video.size}: not the same file"
    return _check_output(probe, token)


def _check_output(probe: Path | str, token: str) -> tuple[str, str] | None:
    where = storage.shown(storage.parent_of(probe))
    try:
        seen = storage.read_bytes(probe)
    except Exception as error:
        return "output", f"cannot read the output location {where} ({_reason(error)})"
    if seen != token.encode():
        return "output", f"sees another {where} than the client: not the same storage"
    own = storage.join(storage.parent_of(probe), f"{PROBE_PREFIX}{uuid.uuid4().hex}.tmp")
    try:
        storage.write_bytes_atomic(own, token.encode())
        storage.remove(own)
    except (FermonError, OSError) as error:
        return "output", f"cannot write to the output location {where} ({_reason(error)})"
    return None


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).splitlines()[0][:160]


_ERRORS = {"input": InputError, "output": OutputError}


def check_workers(client: Any, todo: Sequence[Session], out: Path | str) -> list[str]:
    """Check the contract on every worker; raise InputError (66), OutputError (73) or UsageError (64)
    naming the first worker that fails it and the path. Returns the workers' addresses."""
    try:
        client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
    except TimeoutError as error:
        raise UsageError(f"the Dask cluster has no workers (waited {WAIT_FOR_WORKERS_S} s)") from error
    token = uuid.uuid4().hex
    probe = storage.join(out, f"{PROBE_PREFIX}{token}.tmp")
    storage.write_bytes_atomic(probe, token.encode())
    try:
        answers = client.run(_check_here, _probe_inputs(todo), probe, token, __version__, on_error="return")
    finally:
        storage.remove(probe)
    for address, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            raise UsageError(f"worker {address} cannot run fermon's check ({type(answer).__name__}: {_reason(answer)})")
        if answer is not None:
            kind, reason = answer
            raise _ERRORS.get(kind, UsageError)(f"worker {address} {reason}")
    return sorted(answers)


# --------------------------------------------------------------------------- models by content


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShippedFiles(WorkerPlugin):
    """Files the workers need, carried in the plugin itself: written on each worker into a temporary
    folder, one sub-folder per sha256 (the file keeps its name, whose suffix loaders look at),
    verified, and removed on teardown (the run's end, or the worker's)."""

    def __init__(self, files: dict[str, tuple[str, bytes]]) -> None:
        self.files = files  # sha256 -> (file name, bytes)
        self.folder: str | None = None
        self.written: dict[str, str] = {}

    def setup(self, worker: Any) -> None:
        from fermon.run.models import SHIPPED_FILES

        folder = Path(tempfile.mkdtemp(prefix="fermon-models-"))
        self.folder = str(folder)
        for sha256, (name, data) in self.files.items():
            path = folder / sha256 / name
            path.parent.mkdir()
            path.write_bytes(data)
            if _sha256(path) != sha256:
                self.teardown(worker)
                raise ModelError(f"worker {worker.address}: its copy of {name} does not match the client's sha256")
            self.written[sha256] = str(path)
            SHIPPED_FILES.setdefault(sha256, []).append(str(path))
        self.files = {}  # the bytes are on disk now

    def teardown(self, worker: Any) -> None:
        from fermon.run.models import SHIPPED_FILES

        for sha256, path in self.written.items():
            copies = SHIPPED_FILES.get(sha256, [])
            if path in copies:
                copies.remove(path)
            if not copies:
                SHIPPED_FILES.pop(sha256, None)
        self.written = {}
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _read_model_file(path: str, sha256: str, what: str) -> tuple[str, bytes]:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ModelError(
            f"{Path(path).name}: cannot read the {what} to send it to the workers ({error.strerror})"
        ) from error
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelError(f"{Path(path).name}: the {what} changed on disk during the run")
    return Path(path).name, data


def option_files(options: ProcessOptions) -> dict[str, str]:
    """The options that name files to ship (``OPTION_FILES``), as field -> client path."""
    present = {f.name for f in fields(options)}
    return {name: str(getattr(options, name)) for name in OPTION_FILES if name in present and getattr(options, name)}


def model_files(
    identity: ModelIdentity, options: ProcessOptions
) -> tuple[dict[str, tuple[str, bytes]], dict[str, str]]:
    """What to ship (sha256 -> (name, bytes)) and, for the options that name files, field -> sha256."""
    files = {
        identity.checkpoint_file_sha256: _read_model_file(
            identity.checkpoint_path, identity.checkpoint_file_sha256, "checkpoint"
        ),
        identity.detector_sha256: _read_model_file(identity.detector_path, identity.detector_sha256, "detector"),
    }
    by_field = {}
    for name, path in option_files(options).items():
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise InputError(f"{path}: cannot read it to send it to the workers ({error.strerror})") from error
        sha256 = hashlib.sha256(data).hexdigest()
        files[sha256] = (Path(path).name, data)
        by_field[name] = sha256
    return files, by_field


def with_local_files(options: ProcessOptions, by_field: dict[str, str]) -> ProcessOptions:
    """Run on a worker: the options with each shipped file's path replaced by this worker's copy."""
    from fermon.run.models import shipped_copy

    local = {name: shipped_copy(sha256) for name, sha256 in by_field.items()}
    missing = [name for name, path in local.items() if path is None]
    if missing:
        raise ModelError(f"this worker has no copy of --{missing[0].replace('_', '-')}")
    return replace(options, **local) if local else options


def ship_models(client: Any, identity: ModelIdentity, options: ProcessOptions) -> tuple[str, dict[str, str]]:
    """Send the model files to every worker (and to any that joins later); returns the plugin's name,
    for ``unship``, and the option fields' hashes for ``with_local_files``."""
    files, by_field = model_files(identity, options)
    name = f"fermon-models-{uuid.uuid4().hex}"
    client.register_plugin(ShippedFiles(files), name=name)
    return name, by_field


def unship(client: Any, name: str) -> None:
    """Remove the copies from every worker (the plugin's teardown)."""
    client.unregister_worker_plugin(name)
