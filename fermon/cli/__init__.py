"""The ``fermon`` command: a Typer app, one sub-command per module, thin over the Python API.

Errors from the library (:class:`fermon.errors.FermonError`) become a one-line message and a
sysexits exit code here, and only here; so do the command line's own usage errors (64, not
click's 2).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # recent typer releases carry their own copy of click, and raise its exceptions
    from typer._click import exceptions as click_errors
except ImportError:  # older ones use click itself
    from click import exceptions as click_errors

from fermon import __version__
from fermon.cli.classify import classify
from fermon.cli.info import info
from fermon.cli.process import process
from fermon.cli.report import report

EX_USAGE = 64
# Older click raises Abort on Ctrl-C at a prompt; typer's own copy has none (it lets KeyboardInterrupt
# through). Looked up once, so that an unexpected error is never masked by a missing name here.
_ABORT = getattr(click_errors, "Abort", KeyboardInterrupt)


class FermonGroup(TyperGroup):
    """Maps click's usage errors (missing argument, unknown option, ``--fps abc``) to sysexits' 64
    with one line on stderr, where click would exit 2 with a framed box."""

    def main(self, args: Any = None, prog_name: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args=args, prog_name=prog_name or "fermon", standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as error:
            typer.echo(error.ctx.get_help() if error.ctx else str(error), err=True)
            code = EX_USAGE
        except click_errors.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            typer.echo(f"fermon: error: {error.format_message()}{hint}", err=True)
            code = EX_USAGE
        except click_errors.ClickException as error:
            typer.echo(f"fermon: error: {error.format_message()}", err=True)
            code = error.exit_code
        except _ABORT:
            typer.echo("fermon: interrupted", err=True)
            code = 130
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=FermonGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Facial-expression timelines from clinical videos.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fermon {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print fermon's version and exit.")
    ] = False,
) -> None:
    """Facial-expression timelines from clinical videos."""


app.command()(classify)
app.command()(info)
app.command()(process)
app.command()(report)


def main() -> None:
    app()
