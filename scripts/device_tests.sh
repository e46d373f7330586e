#!/usr/bin/env bash
# Runs the test suite and the runtime benchmark on the lent GPU machine (no internet there).
#
# Here, first:   bash scripts/device_tests.sh --fetch      (downloads the missing wheels into .gpu-wheels/)
# There:         bash scripts/device_tests.sh               (run with .gpu-wheels carried; results in $OUT)
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=.gpu-wheels
if [ "${1:-}" = "--fetch" ]; then
    # The GPU image has torch, numpy, pyyaml, pytest, hypothesis, transformers and peft; these are what it lacks
    # (Python 3.12; sentencepiece for the ASR tokenizer; whisper-normalizer for the Whisper recipe's validation).
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" soxr soundfile cffi pycparser sentencepiece whisper-normalizer more-itertools
    # silero-vad (streaming Whisper's VAD) is an 11 MB wheel of model variants: keep its code and the one ONNX
    # model asr/vad.py loads, as a folder on PYTHONPATH (device_train_whisper.sh adds $WHEELS/site)
    rm -rf "$WHEELS/site" && pip download -q --no-deps -d "$WHEELS/tmp" silero-vad
    pip install -q --no-deps --target "$WHEELS/site" "$WHEELS"/tmp/silero_vad-*.whl && rm -rf "$WHEELS/tmp"
    find "$WHEELS/site/silero_vad/data" -type f ! -name silero_vad.onnx -delete
    exit 0
fi

OUT=${OUT:-bench-results}
python3 -m pip install -q --no-deps --no-index "$WHEELS"/*.whl
nvidia-smi --query-gpu=name --format=csv,noheader
PYTHONPATH=. python3 -m pytest -q -p no:cacheprovider tests 2>/dev/null | tail -3
for executor in inline thread; do
    PYTHONPATH=. python3 -m speech.cli bench runtime --device cuda --executor "$executor" \
        --json "$OUT/runtime-cuda-$executor.json" | sed -n 1,4p
done
