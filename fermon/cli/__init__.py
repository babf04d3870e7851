"""The ``fermon`` command: a Typer app, one sub-command per module, thin over the Python API.

Errors from the library (:class:`fermon.errors.FermonError`) become a one-line message and a
sysexits exit code here, and only here.
"""

from __future__ import annotations

import typer

from fermon.cli.classify import classify
from fermon.cli.info import info
from fermon.cli.process import process
from fermon.cli.report import report

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Facial-expression timelines from clinical videos.")
app.command()(classify)
app.command()(info)
app.command()(process)
app.command()(report)


def main() -> None:
    app()
