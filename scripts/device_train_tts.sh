#!/usr/bin/env bash
# On the lent GPU machine: train (or resume) the TTS acoustic model; returns model, config and report.
#
# A call carries 64 MiB of working tree and the tracked tree takes ~48, so the TTS pack (~47 MiB) travels
# in four parts, one call each, while the machine stays warm (30 s idle).
# Here:   speech corpus tts-pack --out corpora/ttspack && bash scripts/device_train_tts.sh --split
# There:  carry corpora/ttspack-p0, run `bash scripts/device_train_tts.sh --stage`; the same with
#         corpora/ttspack-p1 and -p2; then carry corpora/ttspack-p3 and run
#         `bash scripts/device_train_tts.sh --stage && bash scripts/device_train_tts.sh [KEY=VALUE settings]`;
#         the last command again resumes from corpora/runs/tts/ckpt.pt while the machine is warm.
# Back:   $OUT/model.safetensors, config.json, report.json (copy them to speech/models/tts/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_parts.sh
PACK=corpora/ttspack
case "${1:-}" in
--split)
    split_parts "$PACK/mels.u8.xz" 4 "$PACK"
    cp "$PACK/index.jsonl" "$PACK/pack.json" "$PACK-p0/"
    exit 0;;
--stage)
    stage_parts "$PACK" corpora/ttsstage
    exit 0;;
esac
if [ ! -f "$PACK/mels.u8.xz" ]; then
    join_parts corpora/ttsstage mels.u8.xz "$PACK"
    cp corpora/ttsstage/{index.jsonl,pack.json} "$PACK/"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-bench-results}
PYTHONPATH=. python3 -m speech.training.tts --config configs/tts.yaml ${1:+--set "$@"}
cp corpora/runs/tts/{model.safetensors,config.json,report.json} "$OUT/"
