#!/usr/bin/env bash
# On the lent GPU machine: train (or resume) the VC model; returns its weights, config and report.
#
# The GPU image has no Whisper weights, soundfile or soxr, and a call carries 64 MiB of working tree. The
# content encoder (Whisper base's encoder with the 300 ms adapter merged, 41 MB
# fp16), the VC pack (~18 MiB of Opus) and the wheels travel as one tar in PARTS parts (default 9: the
# tracked tree takes ~57 MiB, so a part may be ~7 MiB), one call each, while the machine stays warm (30 s idle).
# Here:   speech corpus vc-pack && bash scripts/device_train_vc.sh --split
# There:  carry corpora/vcbundle-p0 and run `bash scripts/device_train_vc.sh --stage`; the same with each
#         part but the last; then carry the last and run
#         `bash scripts/device_train_vc.sh --stage && bash scripts/device_train_vc.sh [KEY=VALUE settings]`;
#         the last command again resumes from corpora/runs/vc/ckpt.pt (features.pt saves the set-up).
# Back:   $OUT/model.safetensors, config.json, report.json (copy them to speech/models/vc/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_parts.sh
BUNDLE=corpora/vcbundle
case "${1:-}" in
--split)
    [ -f corpora/vcenc/encoder.safetensors ] || python3 -c \
        "from speech.vc_models import export_content_encoder; export_content_encoder('corpora/vcenc')"
    if [ ! -d corpora/vcgpu ]; then  # the GPU image's Python is 3.12
        python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --python-version 3.12 \
            --implementation cp -d corpora/vcgpu soundfile cffi pycparser soxr
    fi
    tar -cf corpora/vcbundle.tar corpora/vcenc corpora/vcpack corpora/vcgpu
    rm -rf "$BUNDLE"-p*
    split_parts corpora/vcbundle.tar "${PARTS:-9}" "$BUNDLE"
    rm corpora/vcbundle.tar
    exit 0;;
--stage)
    stage_parts "$BUNDLE" corpora/vcstage
    exit 0;;
esac
if [ ! -f corpora/vcpack/pack.json ]; then
    join_parts corpora/vcstage vcbundle.tar corpora
    tar -xf corpora/vcbundle.tar
fi
python3 -m pip install -q --no-deps --no-index corpora/vcgpu/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-bench-results}
RUN=corpora/runs/vc
for a in "$@"; do case $a in out=*) RUN=${a#out=};; esac; done
PYTHONPATH=. python3 -m speech.training.vc --config configs/vc.yaml ${1:+--set "$@"}
cp "$RUN"/{model.safetensors,config.json,report.json} "$OUT/"
