"""``fermon classify``: the expression of every face in still images."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from fermon.cli._common import exit_on_error


def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).")],
    checkpoint: Annotated[
        str,
        typer.Option(
            help="A checkpoint path, or default (= fast), fast, accurate; auto: accurate on a GPU, else fast."
        ),
    ] = "auto",
    detector: Annotated[str, typer.Option(help="auto, centerface or scrfd.")] = "auto",
    model_dir: Annotated[Optional[Path], typer.Option(help="insightface model pack for SCRFD.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """Detect, align and classify every face in the given images."""
    from fermon.errors import InputError
    from fermon.expression.checkpoint import checkpoint_for_device
    from fermon.expression.classify import ExpressionClassifier
    from fermon.expression.images import classify_image_files
    from fermon.faces.detector import create_detector

    with exit_on_error():
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise InputError(f"{missing[0]}: no such file")
        classifier = ExpressionClassifier.load(checkpoint_for_device(checkpoint, device), device=device)
        faces = classify_image_files(images, create_detector(detector, model_dir, device=device), classifier)
    for face in faces:
        if json_out:
            typer.echo(json.dumps(asdict(face)))
        else:
            x1, y1, x2, y2 = (round(v) for v in face.box)
            typer.echo(f"{face.image}\t[{x1},{y1},{x2},{y2}]\t{face.label}\t{face.confidence:.2f}")
    if not json_out:
        typer.echo(f"{len(faces)} face(s) in {len(images)} image(s)", err=True)
