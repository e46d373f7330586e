#!/usr/bin/env bash
# On the lent GPU machine: read a carried pack with the streaming loader and run the smoke training.
#
# Here:   .venv/bin/speech corpus pack corpora/synth/manifest.jsonl --hours 5 --out corpora/pack5h
#         bash scripts/device_tests.sh --fetch          (soundfile + cffi wheels into .gpu-wheels/)
# There:  run with carry [corpora/pack5h, .gpu-wheels]:  bash scripts/device_smoke_train.sh corpora/pack5h
# Resume: carry the smoke-model.pt and smoke-opt.pt that came back (e.g. in corpora/ckpt/) and pass
#         that folder as the second argument.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=${1:?usage: device_smoke_train.sh PACK_DIR [RESUME_CHECKPOINT]}
OUT=${OUT:-bench-results}
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
du -sh "$PACK"
PYTHONPATH=. python3 scripts/corpus_smoke_train.py --pack "$PACK" --steps "${STEPS:-300}" --batch 32 \
    --out "$OUT" ${2:+--resume "$2"}
