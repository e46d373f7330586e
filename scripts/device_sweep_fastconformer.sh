#!/usr/bin/env bash
# On the lent GPU machine: train several recipe variants of the default FastConformer at once (one GPU,
# separate processes), then return every report and the fp16 model of the variant with the lowest
# validation WER at 480 ms.
#
#   bash scripts/device_sweep_fastconformer.sh MINUTES NAME:KEY=VALUE,KEY=VALUE ...
#   e.g. bash scripts/device_sweep_fastconformer.sh 7 clean:augment_prob=0,spec_augment=false xs:encoder.xscaling=true
#
# Every variant builds its own feature bank with nproc/N loader workers before training: with four
# variants and bank_copies 1 that took nearly all of a 7-minute call, so keep N small (2-3).
# Carry what scripts/device_train_fastconformer.sh carries. Back: $OUT/reports.tgz (report.json and the
# log tail of each variant), best.txt, and best.safetensors.part-* (cat them in order) with its config and
# tokenizer. Run folders stay in sweep/NAME while the machine is warm (run again to resume them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results}
MINUTES=$1; shift
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
WORKERS=$(( $(nproc) / $# ))
mkdir -p sweep
for spec in "$@"; do
  name=${spec%%:*}; sets=${spec#*:}
  mkdir -p "sweep/$name"
  # shellcheck disable=SC2086
  PYTHONPATH=. python3 -m speech.training.fastconformer --config configs/asr_fastconformer.yaml \
    --out "sweep/$name" --minutes "$MINUTES" --workers "$WORKERS" --set ${sets//,/ } \
    > "sweep/$name/train.log" 2>&1 &
done
wait || true
for spec in "$@"; do name=${spec%%:*}; tail -c 3000 "sweep/$name/train.log" | tr '\r' '\n' | tail -n 8 > "sweep/$name/log-tail.txt"; done
tar czf "$OUT/reports.tgz" sweep/*/report.json sweep/*/log-tail.txt 2>/dev/null || true
best=$(PYTHONPATH=. python3 - "$@" <<'PY'
import json, sys
from pathlib import Path
scores = {}
for spec in sys.argv[1:]:
    name = spec.split(":")[0]
    report = Path("sweep", name, "report.json")
    if report.exists():
        wer = json.loads(report.read_text())["validation_wer"].get("480ms", {})
        scores[name] = min(wer.values()) if wer else 1e9
    print(name, scores.get(name), file=sys.stderr)
print(min(scores, key=scores.get) if scores else "")
PY
)
echo "best: $best" | tee "$OUT/best.txt"
if [ -n "$best" ]; then
  cp "sweep/$best/model/config.json" "sweep/$best/model/tokenizer.model" "$OUT/"
  split -b 15M -d "sweep/$best/model/model.safetensors" "$OUT/best.safetensors.part-"
fi
ls -la "$OUT"
