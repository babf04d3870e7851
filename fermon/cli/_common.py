"""What every sub-command shares: turning fermon's errors into a message and an exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from fermon.errors import FermonError


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Print a FermonError as one line on stderr and exit with its sysexits code."""
    try:
        yield
    except FermonError as error:
        typer.echo(f"fermon: error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
