#!/usr/bin/env bash
# Issue 14, session 9: a default candidate from an HNCL backbone (the one clear gain of the issue-7
# table), trained in one go with what made the shipped default robust: eye/mouth occlusion on 30%
# of the faces, the FERPlus votes mixed half and half with the shipped default's probabilities, and
# the epoch picked on the robust score (mean of clean, eyes-covered and mouth-covered validation).
# Budget: 4 pre-training epochs (15 min each on the 2-core AMD EPYC) and 13 fine-tuning epochs
# (5 min each), what one 3-hour session of that CPU holds beside other work.
# Validation split only. Resumable per epoch (state under WORK/state).
# The teacher `default` is the embedded checkpoint as of session 9 (content hash 357875db8d0c5bb3).
# Usage: reports/accuracy/hncl-default.sh FERPLUS_ROOT [WORK]   (WORK defaults to ~/.cache/fermon/hncl)
set -euo pipefail
root=$1
work=${2:-$HOME/.cache/fermon/hncl}
here=$(cd "$(dirname "$0")" && pwd)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$work"

backbone=$work/hncl-backbone.safetensors
[[ -f $backbone ]] || python -m training pretrain --method hncl --dataset ferplus --root "$root" \
    --architecture cnn48 --epochs 4 --batch-size 128 --seed 0 --state-dir "$work/state/hncl" --out "$backbone"

model=$work/ke2nt-from-hncl-distil.safetensors
[[ -f $model ]] || python -m training train --dataset ferplus --root "$root" --method ke2nt \
    --architecture cnn48 --init "$backbone" --teacher default --teacher-weight 0.5 --region-occlusion 0.3 \
    --epochs 13 --batch-size 128 --lr 0.1 --nesterov --logit-scale 30 --ema-decay 0.999 --seed 0 \
    --select-on robust --state-dir "$work/state/ke2nt-from-hncl-distil" --name ke2nt-cnn48-ferplus --out "$model"

out=$here/table
mkdir -p "$out"
run=(python -m training evaluate --dataset ferplus --root "$root" --split valid --checkpoint "$model")
[[ -f $out/hncl-distil-clean.json ]] || "${run[@]}" --json "$out/hncl-distil-clean.json"
for corruption in eyes mouth random blur lowlight; do
    [[ -f $out/hncl-distil-$corruption.json ]] || "${run[@]}" --corrupt "$corruption" --json "$out/hncl-distil-$corruption.json"
done
