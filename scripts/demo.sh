#!/usr/bin/env bash
# The main job on a fresh machine: install, generate demo preferences, train the MiniLM reward
# model, export it to ONNX, evaluate the exported model, then serve it (Ctrl-C stops the server).
# Everything lands in ./demo (override with RMSERVE_DEMO_DIR); pass --no-serve to stop after eval.
set -euo pipefail
cd "$(dirname "$0")/.."
demo="${RMSERVE_DEMO_DIR:-demo}"
bash scripts/setup.sh train
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
rm=.venv/bin/rmserve
$rm demo-data --out "$demo/data"
$rm train --train-data "$demo/data/train.jsonl" --eval-data "$demo/data/eval.jsonl" \
  --out "$demo/artifact" --base-model minilm
$rm eval --artifact "$demo/artifact" --data "$demo/data/eval.jsonl"
if [ "${1:-}" != "--no-serve" ]; then
  exec $rm serve --artifact "$demo/artifact"
fi
