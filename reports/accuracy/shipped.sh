#!/usr/bin/env bash
# Reproduces the issue-14 runs and their rows in reports/accuracy.md:
#   accurate: KE2NT on dlib's face-recognition ResNet (dlib112: 112 px grey), batch norms put back,
#             eye/mouth occlusion in training, 12 epochs (80.0% on validation: below the default,
#             so not shipped; the file name is the model it was meant to be);
#   default:  the 48 px CPU model (cnn48) fine-tuned from the previous default for 6 epochs with
#             eye/mouth occlusion, on the FERPlus votes mixed half and half with the previous
#             default's own flip-averaged probabilities (the dlib run, alone or in an ensemble, was
#             a worse teacher on validation: reports/accuracy/ensemble.json).
# Validation split only. Resumable: each run keeps its state per epoch under ~/.cache/fermon/runs/,
# so rerunning the script continues where it stopped. WORK/default.safetensors is what
# fermon/weights/ke2nt_cnn48_ferplus.safetensors holds where it beats the previous default.
# Usage: reports/accuracy/shipped.sh FERPLUS_ROOT [WORK]   (WORK defaults to ~/.cache/fermon)
set -euo pipefail
root=$1
work=${2:-$HOME/.cache/fermon}
here=$(cd "$(dirname "$0")" && pwd)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

[[ -f $work/accurate.safetensors ]] || python -m training train --dataset ferplus --root "$root" \
    --method ke2nt --architecture dlib112 --init dlib --backbone-norm batch --region-occlusion 0.25 \
    --epochs 12 --lr 0.01 --name ke2nt-dlib112-ferplus --out "$work/accurate.safetensors"

# The second dlib run (session 5): restarted from the first's best epoch, head/backbone rates split,
# taught by the previous default (81.4% on validation: not shipped either).
previous=$work/previous-default.safetensors
[[ -f $previous ]] || git -C "$here/../.." show 3907809:fermon/weights/ke2nt_cnn48_ferplus.safetensors > "$previous"
[[ -f $work/accurate3.safetensors ]] || python -m training train --dataset ferplus --root "$root" \
    --method ke2nt --architecture dlib112 --init "$work/accurate.safetensors" --backbone-norm batch \
    --teacher "$previous" --teacher-weight 0.5 --region-occlusion 0.25 --epochs 14 --warmup-epochs 0.5 \
    --lr 0.02 --backbone-lr-scale 0.5 --nesterov --logit-scale 30 --ema-decay 0.999 --seed 1 \
    --name ke2nt-dlib112-ferplus --out "$work/accurate3.safetensors"

# The student starts from the previous default (git show 3907809:fermon/weights/ke2nt_cnn48_ferplus.safetensors).
[[ -f $work/default.safetensors ]] || python -m training train --dataset ferplus --root "$root" \
    --method ke2nt --architecture cnn48 --init "$previous" --teacher "$previous" \
    --teacher-weight 0.5 --region-occlusion 0.3 --epochs 6 --warmup-epochs 0.5 --batch-size 128 \
    --lr 0.02 --nesterov --logit-scale 30 --ema-decay 0.999 --seed 0 --select last-ema \
    --name ke2nt-cnn48-ferplus --out "$work/default.safetensors"

evaluate() {  # NAME CHECKPOINT: clean and each corruption, into reports/accuracy/table/NAME-*.json
    local name=$1 checkpoint=$2 out=$here/table
    mkdir -p "$out"
    [[ -f $out/$name-lowlight.json ]] && return
    local run=(python -m training evaluate --dataset ferplus --root "$root" --split valid --checkpoint "$checkpoint")
    "${run[@]}" --json "$out/$name-clean.json"
    for corruption in eyes mouth random blur lowlight; do
        "${run[@]}" --corrupt "$corruption" --json "$out/$name-$corruption.json"
    done
}
evaluate previous-default "$previous"
evaluate accurate "$work/accurate.safetensors"
evaluate accurate3 "$work/accurate3.safetensors"
evaluate default "$work/default.safetensors"
python "$here/ensemble.py" "$root" "$previous" "$work/accurate.safetensors" > "$here/ensemble.json"
python "$here/table_md.py"
