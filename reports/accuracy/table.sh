#!/usr/bin/env bash
# Reproduces the method table in reports/accuracy.md: every row on one recipe (cnn48, 48 px,
# batch 128, lr 0.1 Nesterov, cosine schedule, the same augmentation with occlusion, blur and dim
# light), validation split only. Resumable: each run keeps its state per epoch under WORK/state,
# so rerunning the script continues where it stopped and skips finished rows.
# Usage: reports/accuracy/table.sh FERPLUS_ROOT [WORK]   (WORK defaults to ~/.cache/fermon/table)
set -euo pipefail
root=$1
work=${2:-$HOME/.cache/fermon/table}
here=$(cd "$(dirname "$0")" && pwd)
epochs=${EPOCHS:-6}                    # supervised epochs over all labels
pretrain_epochs=${PRETRAIN_EPOCHS:-4}  # self-supervised epochs over the same images, labels unused
low_label_epochs=${LOW_LABEL_EPOCHS:-30}
low_label_limit=2839                   # 10% of FERPlus train's 28,385 majority-labelled faces
mkdir -p "$work/state"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

recipe=(--dataset ferplus --root "$root" --architecture cnn48 --batch-size 128 --lr 0.1 --nesterov
        --logit-scale 30 --ema-decay 0.999 --seed 0)

train() {  # NAME METHOD EPOCHS [extra options]
    local name=$1 method=$2 n=$3; shift 3
    [[ -f $work/$name.safetensors ]] && return
    python -m training train "${recipe[@]}" --method "$method" --epochs "$n" --name "$name" \
        --state-dir "$work/state/$name" --out "$work/$name.safetensors" "$@"
}
pretrain() {  # METHOD
    [[ -f $work/$1-backbone.safetensors ]] && return
    python -m training pretrain --method "$1" --dataset ferplus --root "$root" --architecture cnn48 \
        --epochs "$pretrain_epochs" --batch-size 128 --seed 0 --state-dir "$work/state/pretrain-$1" \
        --cache-dir "$work/hncl-cache" --out "$work/$1-backbone.safetensors"
}
evaluate() {  # NAME: clean and each corruption, into reports/accuracy/table/NAME-*.json
    local name=$1 out=$here/table
    mkdir -p "$out"
    [[ -f $out/$name-lowlight.json ]] && return
    local run=(python -m training evaluate --dataset ferplus --root "$root" --split valid
               --checkpoint "$work/$name.safetensors")
    "${run[@]}" --json "$out/$name-clean.json"
    for corruption in eyes mouth random blur lowlight; do
        "${run[@]}" --corrupt "$corruption" --json "$out/$name-$corruption.json"
    done
}

train ke2nt ke2nt "$epochs" && evaluate ke2nt
train ce ce "$epochs" && evaluate ce
train pmfer pmfer "$epochs" && evaluate pmfer
pretrain hncl
train ke2nt-from-hncl ke2nt "$epochs" --init "$work/hncl-backbone.safetensors" && evaluate ke2nt-from-hncl
train ke2nt-10pct ke2nt "$low_label_epochs" --limit "$low_label_limit" && evaluate ke2nt-10pct
train ke2nt-10pct-from-hncl ke2nt "$low_label_epochs" --limit "$low_label_limit" \
    --init "$work/hncl-backbone.safetensors" && evaluate ke2nt-10pct-from-hncl
pretrain contrastive
train ke2nt-from-contrastive ke2nt "$epochs" --init "$work/contrastive-backbone.safetensors" \
    && evaluate ke2nt-from-contrastive
echo "table done"
