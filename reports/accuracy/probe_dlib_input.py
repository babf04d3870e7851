"""The probe behind dlib's input size and method (reports/accuracy.md, issue 14; session 6).

Same protocol as ``probe_backbone_norm.py`` (the first 6,400 FERPlus training faces, 2 epochs,
warm-up a quarter epoch then cosine, batch norms put back, head lr 0.01 with the backbone at 0.3x,
logit scale 100), varying one thing at a time against its best row: a second seed (the probe's
noise), 150 px input (dlib's own chip size, against 112), the cross-entropy method (learned
class vectors instead of KE2NT's text targets and terms), and the network cut after its third stage.

    python reports/accuracy/probe_dlib_input.py FERPLUS_ROOT [WORK]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.config import TrainConfig
from training.loop import train

# (case name, architecture, method, seed)
CASES = [
    ("dlib112-ke2nt-seed1", "dlib112", "ke2nt", 1),
    ("dlib150-ke2nt", "dlib150", "ke2nt", 0),
    ("dlib112-ce", "dlib112", "ce", 0),
    ("dlib112-stage3-ke2nt", "dlib112_stage3", "ke2nt", 0),
]


def main(root: Path, work: Path, only: set[str]) -> None:
    for name, architecture, method, seed in CASES:
        if only and name not in only:
            continue
        config = TrainConfig(
            root=root,
            dataset="ferplus",
            method=method,
            architecture=architecture,
            init=Path("dlib"),
            epochs=2,
            warmup_epochs=0.25,
            lr=0.01,
            backbone_lr_scale=0.3,
            limit=6400,
            backbone_norm="batch",
            logit_scale=100.0,
            seed=seed,
            state_dir=work / name,
        )
        train(config, on_epoch=lambda record, name=name: print(name, json.dumps(record), flush=True))


if __name__ == "__main__":
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path.home() / ".cache/fermon/probe3"
    main(Path(sys.argv[1]), work, set(sys.argv[3:]))
