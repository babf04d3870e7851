#!/usr/bin/env bash
# Reproduces every figure in reports/accuracy.md from checkpoints: validation only (the FERPlus
# test split is held out). Usage: reports/accuracy/evaluate.sh FERPLUS_ROOT NAME CHECKPOINT
# writes reports/accuracy/NAME-*.json.
set -euo pipefail
root=$1 name=$2 checkpoint=$3
here=$(dirname "$0")
run() { python -m training evaluate --dataset ferplus --root "$root" --split valid --checkpoint "$checkpoint" "$@"; }
run --json "$here/$name-valid.json"
for corruption in eyes mouth random blur lowlight; do
    run --corrupt "$corruption" --json "$here/$name-valid-$corruption.json"
done
run --via-detector --json "$here/$name-valid-video-crop.json"
