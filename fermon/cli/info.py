"""``fermon info``: what a checkpoint is (the embedded default unless one is named)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fermon.cli._common import exit_on_error
from fermon.expression.checkpoint import load_checkpoint


def info(
    checkpoint: Annotated[
        str, typer.Option(help="A checkpoint path, or an embedded model: default, fast or accurate.")
    ] = "default",
) -> None:
    """Print a checkpoint's metadata (classes, crop, calibration, training and validation figures)."""
    with exit_on_error():
        loaded = load_checkpoint(checkpoint)
    typer.echo(json.dumps(loaded.metadata, indent=2, sort_keys=True))
