"""The probe behind `--backbone-norm batch`, its learning rate and the backbone's share of it
(reports/accuracy.md, issue 14).

KE2NT from dlib's ResNet on the first 6,400 FERPlus training faces, 2 epochs, warm-up a quarter
epoch then cosine; validation accuracy per epoch in each run's metrics.jsonl. A case is (backbone
norm, head learning rate, backbone learning rate as a fraction of it).

    python reports/accuracy/probe_backbone_norm.py FERPLUS_ROOT [WORK]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.config import TrainConfig
from training.loop import train

CASES = [
    ("batch", 0.01, 1.0),
    ("batch", 0.03, 1.0),
    ("affine", 0.002, 1.0),
    # session 5: the same backbone rate (0.01) under a faster head, and a slower backbone under the same head
    ("batch", 0.03, 1 / 3),
    ("batch", 0.1, 0.1),
    ("batch", 0.01, 0.3),
    ("batch", 0.01, 0.1),
]


def main(root: Path, work: Path) -> None:
    for norm, lr, backbone_share in CASES:
        name = f"{norm}-lr{lr}" + (f"-backbone{backbone_share:.2g}" if backbone_share != 1.0 else "")
        config = TrainConfig(
            root=root,
            dataset="ferplus",
            method="ke2nt",
            architecture="dlib112",
            init=Path("dlib"),
            epochs=2,
            warmup_epochs=0.25,
            lr=lr,
            backbone_lr_scale=backbone_share,
            limit=6400,
            backbone_norm=norm,
            logit_scale=100.0,
            state_dir=work / name,
        )
        train(config, on_epoch=lambda record, name=name: print(name, json.dumps(record), flush=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path.home() / ".cache/fermon/probe2")
