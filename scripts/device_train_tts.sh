#!/usr/bin/env bash
# On the lent GPU machine: train (or resume) the TTS acoustic model; returns model, config and report.
#
# A call carries 64 MiB of working tree and the tracked tree takes ~39, so the TTS pack (~50 MB) travels
# in two parts, one call each, while the machine stays warm (30 s idle).
# Here:   speech corpus tts-pack --out corpora/ttspack && bash scripts/device_train_tts.sh --split
# There:  carry corpora/ttspack-p0, run `bash scripts/device_train_tts.sh --stage`; then carry
#         corpora/ttspack-p1 and run `bash scripts/device_train_tts.sh [KEY=VALUE recipe settings]`;
#         the same again resumes from corpora/runs/tts/ckpt.pt while the machine is warm.
# Back:   $OUT/model.safetensors, config.json, report.json (copy them to speech/models/tts/).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=corpora/ttspack
case "${1:-}" in
--split)
    rm -rf "$PACK-p0" "$PACK-p1" && mkdir -p "$PACK-p0" "$PACK-p1"
    split -n 2 -d -a 1 "$PACK/mels.u8.xz" "$PACK-p0/mels.u8.xz.part-"
    mv "$PACK-p0/mels.u8.xz.part-1" "$PACK-p1/"
    cp "$PACK/index.jsonl" "$PACK/pack.json" "$PACK-p0/"
    (cd "$PACK" && sha256sum mels.u8.xz) > "$PACK-p0/mels.u8.xz.sha256"
    exit 0;;
--stage)
    mkdir -p corpora/ttsstage && cp "$PACK-p0"/* corpora/ttsstage/
    exit 0;;
esac
if [ ! -f "$PACK/mels.u8.xz" ]; then
    mkdir -p "$PACK"
    cat corpora/ttsstage/mels.u8.xz.part-0 "$PACK-p1/mels.u8.xz.part-1" > "$PACK/mels.u8.xz"
    cp corpora/ttsstage/{index.jsonl,pack.json,mels.u8.xz.sha256} "$PACK/"
    (cd "$PACK" && sha256sum -c mels.u8.xz.sha256)
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-bench-results}
PYTHONPATH=. python3 -m speech.training.tts --config configs/tts.yaml ${1:+--set "$@"}
cp corpora/runs/tts/{model.safetensors,config.json,report.json} "$OUT/"
