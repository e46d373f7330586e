#!/usr/bin/env bash
# On the lent GPU machine: train (or resume) the TTS acoustic model; returns model, config and report.
#
# A call carries 64 MiB of working tree and the tracked tree takes ~46, so the TTS pack (~47 MiB) travels
# in three parts, one call each, while the machine stays warm (30 s idle).
# Here:   speech corpus tts-pack --out corpora/ttspack && bash scripts/device_train_tts.sh --split
# There:  carry corpora/ttspack-p0, run `bash scripts/device_train_tts.sh --stage`; the same with
#         corpora/ttspack-p1; then carry corpora/ttspack-p2 and run
#         `bash scripts/device_train_tts.sh --stage && bash scripts/device_train_tts.sh [KEY=VALUE settings]`;
#         the last command again resumes from corpora/runs/tts/ckpt.pt while the machine is warm.
# Back:   $OUT/model.safetensors, config.json, report.json (copy them to speech/models/tts/).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=corpora/ttspack
PARTS=3
case "${1:-}" in
--split)
    for i in $(seq 0 $((PARTS - 1))); do rm -rf "$PACK-p$i" && mkdir -p "$PACK-p$i"; done
    split -n $PARTS -d -a 1 "$PACK/mels.u8.xz" "$PACK-p0/mels.u8.xz.part-"
    for i in $(seq 1 $((PARTS - 1))); do mv "$PACK-p0/mels.u8.xz.part-$i" "$PACK-p$i/"; done
    cp "$PACK/index.jsonl" "$PACK/pack.json" "$PACK-p0/"
    (cd "$PACK" && sha256sum mels.u8.xz) > "$PACK-p0/mels.u8.xz.sha256"
    exit 0;;
--stage)
    mkdir -p corpora/ttsstage
    for part in "$PACK"-p*; do [ -d "$part" ] && cp "$part"/* corpora/ttsstage/; done
    ls corpora/ttsstage
    exit 0;;
esac
if [ ! -f "$PACK/mels.u8.xz" ]; then
    mkdir -p "$PACK"
    cat corpora/ttsstage/mels.u8.xz.part-* > "$PACK/mels.u8.xz"
    cp corpora/ttsstage/{index.jsonl,pack.json,mels.u8.xz.sha256} "$PACK/"
    (cd "$PACK" && sha256sum -c mels.u8.xz.sha256)
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-bench-results}
PYTHONPATH=. python3 -m speech.training.tts --config configs/tts.yaml ${1:+--set "$@"}
cp corpora/runs/tts/{model.safetensors,config.json,report.json} "$OUT/"
