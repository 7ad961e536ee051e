#!/usr/bin/env bash
# GPU check, one command with its own time limit (under 8 minutes), for a GPU machine without
# network: see bench/gpu_run.md for the whole device-run sequence (wheels carried in parts).
#   bash bench/gpu_check.sh [OUT_DIR]      (default: $OUT if set, else bench/results)
# Writes OUT_DIR/gpu_check.json (rewritten after every stage) and the servers' logs beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results}}
mkdir -p "$out"
limit=${GPU_CHECK_LIMIT_S:-460}        # hard stop; the script budgets its stages in 420 s
# onnxruntime-gpu may sit in a --target folder away from the nvidia-* CUDA wheels torch brought:
# put their lib folders on the loader path for this process and the servers it starts.
nv=$(python3 - <<'PY'
import pathlib, sys
seen = []
for entry in sys.path:
    for lib in sorted((pathlib.Path(entry or ".") / "nvidia").glob("*/lib")):
        if str(lib) not in seen:
            seen.append(str(lib))
print(":".join(seen))
PY
)
export LD_LIBRARY_PATH="${nv}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
args=(--out "$out" --provider "${GPU_CHECK_PROVIDER:-cuda}" --work "${GPU_CHECK_WORK:-/tmp/gpu-check-work}")
if [[ -d .whl/small/minilm ]]; then args+=(--minilm-config .whl/small/minilm); fi
timeout --kill-after=15 "$limit" python3 bench/gpu_check.py "${args[@]}" "${@:2}"
code=$?
[[ $code -eq 124 ]] && echo "gpu_check: stopped by its ${limit}s limit; $out/gpu_check.json has what finished" >&2
exit $code
