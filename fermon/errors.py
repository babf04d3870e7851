"""One exception hierarchy for fermon. Library code raises these; only the CLI maps them to exit codes."""

from __future__ import annotations


class FermonError(Exception):
    """Base of every error fermon raises on purpose. ``exit_code`` follows sysexits(3)."""

    exit_code: int = 70  # EX_SOFTWARE

    def __init__(self, message: str = "", detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail  # the raw text behind a plain-words message (a decoder's), for the ledger


class UsageError(FermonError):
    """The command line or a configuration value is wrong."""

    exit_code = 64  # EX_USAGE


class InputError(FermonError):
    """An input file is missing, unreadable or not what it claims to be."""

    exit_code = 66  # EX_NOINPUT


class DataError(InputError):
    """An input exists but its content is bad (corrupt video, malformed label file)."""

    exit_code = 65  # EX_DATAERR


class StorageError(FermonError):
    """Object storage or the network failed while reading (a timeout, a dropped connection, a 5xx):
    the machine's fault, not the file's. Retried with backoff within the run, then recorded as a
    failure that the next run retries."""

    exit_code = 75  # EX_TEMPFAIL


class ModelError(FermonError):
    """A model, checkpoint or vocabulary cannot be loaded or does not fit."""

    exit_code = 78  # EX_CONFIG


class OutputError(FermonError):
    """An output cannot be written, or another run holds the output folder."""

    exit_code = 73  # EX_CANTCREAT


class BusyError(OutputError):
    """Another fermon run holds the output folder's lock."""

    exit_code = 75  # EX_TEMPFAIL


class RunInterruptedError(FermonError):
    """The run was stopped (Ctrl-C, SIGTERM); what finished is recorded, the rest is left for the next run."""

    exit_code = 130  # the shell's 128 + SIGINT; the CLI gives 143 for SIGTERM

    def __init__(self, done: int, left: int) -> None:
        super().__init__(f"interrupted: {done} sessions done, {left} left for the next run")
        self.done = done
        self.left = left
