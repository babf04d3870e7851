"""``python -m training``: train, evaluate and export fermon's expression models."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fermon.errors import FermonError, UsageError
from fermon.inputs.storage import atomic_path

# fermon's one precision rule (fermon.faces.runtime.network_dtype) decides auto.
AMP_HELP = "bf16 autocast: on, off, or auto (on CUDA, and on CPUs that run bfloat16 clearly faster than float32)."

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train and evaluate fermon's expression models.")


def _fail(error: FermonError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(error.exit_code)


@app.command()
def train(
    root: Annotated[Path, typer.Option(help="Dataset folder (for FERPlus: the folder holding data/).")],
    out: Annotated[Path, typer.Option(help="Where to write the exported checkpoint (.safetensors).")],
    dataset: Annotated[str, typer.Option(help="ferplus, rafdb, affectnet7, affectnet8 or folder.")] = "ferplus",
    method: Annotated[
        str, typer.Option(help="ke2nt, pmfer (action-unit prompts) or ce (cross-entropy baseline).")
    ] = "ke2nt",
    architecture: Annotated[
        str, typer.Option(help="cnn48, resnet18_112, swin_tiny_112, dlib112 (dlib150, dlib112_stage3), or a timm name.")
    ] = "cnn48",
    epochs: int = 50,
    batch_size: int = 64,
    lr: Annotated[
        Optional[float], typer.Option(help="Peak learning rate [default: 0.002 with --init, else 0.1].")
    ] = None,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    warmup_epochs: float = 1.0,
    ema_decay: Annotated[float, typer.Option(help="Weight EMA decay; 0 turns it off.")] = 0.0,
    label_mode: Annotated[
        str, typer.Option(help="soft (vote shares, where the dataset has votes) or majority.")
    ] = "soft",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N training images.")] = None,
    init: Annotated[
        Optional[Path],
        typer.Option(help="Backbone weights (safetensors) to start from, or 'dlib': dlib's ResNet (dlib112)."),
    ] = None,
    backbone_lr_scale: Annotated[
        float, typer.Option(help="The backbone's learning rate as a fraction of --lr (the head's); 1: one rate.")
    ] = 1.0,
    backbone_norm: Annotated[
        str, typer.Option(help="dlib112: affine (dlib's frozen affines) or batch (batch norms put back).")
    ] = "affine",
    region_occlusion: Annotated[
        float, typer.Option(help="Fraction of training images with the template's eyes or mouth hidden.")
    ] = 0.0,
    teacher: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Distil: a checkpoint (name or path) whose probabilities join the targets; repeat for an ensemble."
        ),
    ] = None,
    teacher_weight: Annotated[float, typer.Option(help="Distil: the teacher's share of each target.")] = 0.5,
    text_encoder: Annotated[
        str, typer.Option(help="minilm[:PATH], open_clip:ARCH@WEIGHTS or checkpoint:NAME_OR_PATH.")
    ] = "minilm",
    center_text: Annotated[bool, typer.Option(help="Remove the prompts' shared component before use.")] = True,
    logit_scale: Annotated[float, typer.Option(help="Cosine-logit scale (CLIP's is 100).")] = 100.0,
    transform_weight: float = 1.0,
    contrast_weight: float = 1.0,
    pairing: Annotated[
        str, typer.Option(help="Self-contrast pairs: own (per sample) or batch (reference code).")
    ] = "own",
    mask_weight: Annotated[float, typer.Option(help="PMFER: weight of the masked-phrase prediction loss.")] = 1.0,
    adversarial_weight: Annotated[float, typer.Option(help="PMFER: weight of the modal-adversarial loss.")] = 0.1,
    amp: Annotated[str, typer.Option(help=AMP_HELP)] = "auto",
    seed: int = 0,
    state_dir: Annotated[
        Optional[Path], typer.Option(help="Resumable state [default: ~/.cache/fermon/runs/...].")
    ] = None,
    device: str = "auto",
    name: Annotated[Optional[str], typer.Option(help="Model name written into the checkpoint.")] = None,
    full_precision: Annotated[bool, typer.Option(help="Store float32 weights instead of float16.")] = False,
    prior_adjustment: Annotated[
        bool, typer.Option(help="Choose a logit adjustment for the rare classes on validation at export.")
    ] = True,
    select: Annotated[
        str, typer.Option(help="Weights to export: best (validation epoch) or last-ema (the final weight EMA).")
    ] = "best",
    select_on: Annotated[
        str,
        typer.Option(
            help="What picks the best epoch: accuracy (clean validation) or robust (the mean of clean, "
            "eyes-covered and mouth-covered validation accuracy)."
        ),
    ] = "accuracy",
    flip_average: Annotated[
        bool, typer.Option(help="The model averages each face with its mirror image at run time (2x the cost).")
    ] = False,
) -> None:
    """Train one model (resuming if its state exists) and export its best validation epoch."""
    from training.config import TrainConfig
    from training.export import export_run
    from training.loop import train as run_training
    from training.selection import SELECTIONS, VALIDATION_SCORES, select_weights

    if select not in SELECTIONS:  # before hours of training, not after
        _fail(UsageError(f"unknown --select '{select}'; known: {', '.join(SELECTIONS)}"))
    if select_on not in VALIDATION_SCORES:
        _fail(UsageError(f"unknown --select-on '{select_on}'; known: {', '.join(VALIDATION_SCORES)}"))

    config = TrainConfig(
        root=root,
        dataset=dataset,
        method=method,
        architecture=architecture,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        nesterov=nesterov,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        ema_decay=ema_decay,
        label_mode=label_mode,
        limit=limit,
        init=init,
        backbone_lr_scale=backbone_lr_scale,
        backbone_norm=backbone_norm,
        region_occlusion=region_occlusion,
        select_on=select_on,
        teachers=tuple(teacher or ()),
        teacher_weight=teacher_weight,
        text_encoder=text_encoder,
        center_text=center_text,
        logit_scale=logit_scale,
        transform_weight=transform_weight,
        contrast_weight=contrast_weight,
        pairing=pairing,
        mask_weight=mask_weight,
        adversarial_weight=adversarial_weight,
        amp=amp,
        seed=seed,
        state_dir=state_dir,
        device=device,
    )

    def report(record: dict) -> None:
        typer.echo(
            f"epoch {record['epoch']}/{epochs}  loss {record['train_total']:.3f}  "
            f"val acc {record['val_accuracy']:.4f}  nll {record['val_nll']:.3f}"
            + (f"  eyes {record['val_eyes_accuracy']:.4f}" if "val_eyes_accuracy" in record else "")
            + (f"  mouth {record['val_mouth_accuracy']:.4f}" if "val_mouth_accuracy" in record else "")
            + f"  ({record['seconds']:.0f} s)",
            err=True,
        )

    try:
        result = select_weights(run_training(config, on_epoch=report), select)
        from training.datasets import read_dataset

        val = read_dataset(dataset, root, config.val_split, result.architecture.input_size, result.architecture.colour)
        metadata = export_run(
            result,
            val,
            out,
            name or f"{method}-{architecture}-{dataset}",
            half=not full_precision,
            adjust_prior=prior_adjustment,
            flip_average=flip_average,
        )
    except FermonError as error:
        _fail(error)
    metrics = metadata["metrics"]
    typer.echo(
        f"wrote {out}: best epoch {result.best_epoch}, {metrics['split']} accuracy {metrics['accuracy']:.4f}, "
        f"mean class recall {metrics['mean_class_recall']:.4f}, ECE {metrics['ece']:.4f} "
        f"at temperature {metadata['temperature']:.3f}"
        + (f", prior adjustment {adjustment['tau']:g}" if (adjustment := metadata.get("prior_adjustment")) else "")
    )


@app.command()
def pretrain(
    root: Annotated[Path, typer.Option(help="Dataset folder; its training images are used without labels.")],
    out: Annotated[Path, typer.Option(help="Where to write the backbone (.safetensors) for train --init.")],
    method: Annotated[str, typer.Option(help="hncl (heatmap neighbours) or contrastive (views only).")] = "hncl",
    dataset: str = "ferplus",
    architecture: Annotated[str, typer.Option(help="cnn48, resnet18_112, swin_tiny_112, or any timm name.")] = "cnn48",
    epochs: int = 50,
    batch_size: Annotated[int, typer.Option(help="Anchors per step (each brings 2-3 views).")] = 64,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    warmup_epochs: float = 1.0,
    temperature: Annotated[float, typer.Option(help="InfoNCE temperature.")] = 0.1,
    neighbours: Annotated[int, typer.Option(help="HNCL: heatmap nearest neighbours per image.")] = 5,
    landmarks: Annotated[str, typer.Option(help="HNCL: landmark source (centerface).")] = "centerface",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N training images.")] = None,
    amp: Annotated[str, typer.Option(help=AMP_HELP)] = "auto",
    seed: int = 0,
    state_dir: Annotated[
        Optional[Path], typer.Option(help="Resumable state [default: ~/.cache/fermon/runs/...].")
    ] = None,
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="HNCL neighbour cache [default: ~/.cache/fermon/hncl].")
    ] = None,
    device: str = "auto",
) -> None:
    """Self-supervised pre-training of a backbone (HNCL or its plain contrastive baseline), resumable."""
    from training.hncl import DEFAULT_CACHE, PretrainConfig
    from training.hncl import pretrain as run_pretraining

    config = PretrainConfig(
        root=root,
        out=out,
        method=method,
        dataset=dataset,
        architecture=architecture,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        temperature=temperature,
        neighbours=neighbours,
        landmarks=landmarks,
        limit=limit,
        amp=amp,
        seed=seed,
        state_dir=state_dir,
        cache_dir=cache_dir or DEFAULT_CACHE,
        device=device,
    )

    def report(record: dict) -> None:
        typer.echo(
            f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.3f}  ({record['seconds']:.0f} s)", err=True
        )

    try:
        path = run_pretraining(config, on_epoch=report)
    except FermonError as error:
        _fail(error)
    typer.echo(f"wrote {path}: {method} backbone for train --init")


@app.command()
def evaluate(
    root: Annotated[Path, typer.Option(help="Dataset folder (for FERPlus: the folder holding data/).")],
    checkpoint: Annotated[
        str, typer.Option(help="A checkpoint path, or an embedded model: default, fast or accurate.")
    ] = "default",
    dataset: str = "ferplus",
    split: str = "test",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the full report here.")] = None,
    corrupt: Annotated[
        Optional[str], typer.Option(help="Corrupt images first: eyes, mouth, random, blur, lowlight.")
    ] = None,
    via_detector: Annotated[
        bool, typer.Option(help="Crop each face again as 'fermon process' does (detector landmarks onto the template).")
    ] = False,
    limit: Optional[int] = None,
    device: str = "auto",
) -> None:
    """Accuracy, per-class recall, confusion matrix, ECE and NLL of a checkpoint on one split."""
    from training.evaluate import evaluate_checkpoint

    try:
        report = evaluate_checkpoint(
            checkpoint, dataset, root, split, device=device, limit=limit, corrupt=corrupt, via_detector=via_detector
        )
    except FermonError as error:
        _fail(error)
    text = json.dumps(report, indent=2)
    if json_out:
        try:
            with atomic_path(json_out) as temporary:
                temporary.write_text(text + "\n")
        except FermonError as error:
            _fail(error)
    typer.echo(
        f"{dataset} {split}: accuracy {report['accuracy']:.4f} on {report['n']} faces, "
        f"ECE {report['ece']:.4f}, NLL {report['nll']:.4f}"
    )


@app.command("measure-crop")
def measure_crop(
    root: Annotated[Path, typer.Option(help="Dataset folder.")],
    dataset: str = "ferplus",
    split: str = "train",
    limit: Annotated[int, typer.Option(help="How many faces to measure.")] = 3000,
) -> None:
    """Measure where the detector puts the five landmarks in a dataset's crops (a crop template)."""
    from training.crop_template import measure_landmarks, symmetric_template
    from training.datasets import read_dataset

    try:
        faces = read_dataset(dataset, root, split, 48, "gray", limit)
    except FermonError as error:
        _fail(error)
    landmarks = measure_landmarks(faces)
    size = faces.images.shape[1]
    typer.echo(
        json.dumps(
            {"size": size, "faces": len(faces), "found": len(landmarks), "points": symmetric_template(landmarks, size)}
        )
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
