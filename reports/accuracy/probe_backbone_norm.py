"""The probe behind `--backbone-norm batch` and its learning rate (reports/accuracy.md, issue 14).

KE2NT from dlib's ResNet on the first 6,400 FERPlus training faces, 2 epochs, warm-up a quarter
epoch then cosine; validation accuracy per epoch in each run's metrics.jsonl.

    python reports/accuracy/probe_backbone_norm.py FERPLUS_ROOT [WORK]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.config import TrainConfig
from training.loop import train

CASES = [("batch", 0.01), ("batch", 0.03), ("affine", 0.002)]


def main(root: Path, work: Path) -> None:
    for norm, lr in CASES:
        name = f"{norm}-lr{lr}"
        config = TrainConfig(
            root=root,
            dataset="ferplus",
            method="ke2nt",
            architecture="dlib112",
            init=Path("dlib"),
            epochs=2,
            warmup_epochs=0.25,
            lr=lr,
            limit=6400,
            backbone_norm=norm,
            logit_scale=100.0,
            state_dir=work / name,
        )
        train(config, on_epoch=lambda record, name=name: print(name, json.dumps(record), flush=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path.home() / ".cache/fermon/probe2")
