#!/usr/bin/env bash
# On the lent GPU machine: train (or resume) the default FastConformer; returns the fp16 model in parts.
#
# Here:   speech corpus pack corpora/synth/manifest.jsonl --hours 5 --out corpora/pack5h
#         speech corpus pack corpora/real/{an4-train,ljspeech385,fsdd600}.jsonl --hours 3 --out corpora/packreal
#         speech corpus pack corpora/synth/manifest.jsonl --splits test --hours 0.25 --out corpora/packval
#         bash scripts/device_tests.sh --fetch            (soundfile/soxr wheels into .gpu-wheels/)
# There:  carry the packs and .gpu-wheels (64 MiB per call: carry pack5h first, packreal in a later call;
#         the machine keeps them, and the run folder, while it stays warm), then
#         bash scripts/device_train_fastconformer.sh [extra args for speech.training.fastconformer]
# Back:   $OUT/report.json, config.json, tokenizer.model, model.safetensors.part-* (cat them in order).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results}
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONPATH=. python3 -m speech.training.fastconformer --config configs/asr_fastconformer.yaml "$@"
RUN=$(PYTHONPATH=. python3 -c "import yaml,sys; print(yaml.safe_load(open('configs/asr_fastconformer.yaml'))['out'])")
for a in "$@"; do [ "${prev:-}" = "--out" ] && RUN=$a; prev=$a; done
cp "$RUN/report.json" "$RUN/model/config.json" "$RUN/model/tokenizer.model" "$OUT/"
split -b 15M -d "$RUN/model/model.safetensors" "$OUT/model.safetensors.part-"
ls -la "$OUT"
