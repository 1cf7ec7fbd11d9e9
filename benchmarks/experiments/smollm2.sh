#!/usr/bin/env bash
# The real-model experiment of docs/results.md: SFT over two generations, then DPO (and the
# objectives in MORE) over one generation from the same generation 0.
#
#   make real-model && bash benchmarks/experiments/smollm2.sh          # OUT=bench-out/smollm2
#   MORE="dpo kto" bash benchmarks/experiments/smollm2.sh
#
# Each run resumes where it stopped when started again (improve skips finished stages).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-out/smollm2}
BIN=${BIN:-.venv/bin}
CONFIG=benchmarks/experiments/smollm2.yaml
"$BIN/agir-retrain" improve --config "$CONFIG" --objective sft --generations 2 --out "$OUT/sft"
for objective in ${MORE:-dpo}; do
  # The same generation 0: the base's held-out evaluation, the reference corpus, its dataset.
  mkdir -p "$OUT/$objective"
  cp -a -n "$OUT/sft/heldout_tasks.jsonl" "$OUT/sft/gen-0" "$OUT/$objective/"
  "$BIN/agir-retrain" improve --config "$CONFIG" --objective "$objective" --generations 1 \
    --out "$OUT/$objective"
done
