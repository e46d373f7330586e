#!/usr/bin/env bash
# On the lent GPU: train two recipes side by side (one GPU holds both) and return the better model.
# Usage: bash scripts/device_sweep_fastconformer.sh "ARGS A" "ARGS B"   (each: extra args of the recipe)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results}
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl
i=0
for args in "$@"; do
    PYTHONPATH=. python3 -m speech.training.fastconformer --config configs/asr_fastconformer.yaml \
        --out "corpora/sweep-$i" $args > "$OUT/train-$i.log" 2>&1 &
    i=$((i + 1))
done
wait
best=$(python3 - "$#" <<'PY'
import json, sys
scores = []
for i in range(int(sys.argv[1])):
    try:
        r = json.load(open(f"corpora/sweep-{i}/report.json"))
        scores.append((r["validation_wer"]["480ms"]["ctc"], i))
        print(i, r["step"], json.dumps(r["validation_wer"]), file=sys.stderr)
    except OSError:
        print(i, "failed", file=sys.stderr)
print(min(scores)[1])
PY
)
RUN=corpora/sweep-$best
cp "$RUN/report.json" "$RUN/model/config.json" "$RUN/model/tokenizer.model" "$OUT/"
split -b 15M -d "$RUN/model/model.safetensors" "$OUT/model.safetensors.part-"
for f in "$OUT"/train-*.log; do tr '\r' '\n' < "$f" | grep -v "it/s\]$" | tail -2 > "$f.tail"; rm "$f"; done
echo "returned run $best"
