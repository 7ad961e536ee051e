#!/bin/sh
# Installs rmserve's serving runtime into a fresh venv: the ONE install step of the Dockerfile's
# build stage, also run by tests/deploy/test_install_steps.py (variant cpu) so CI checks it.
#   usage: install-venv.sh SOURCE_DIR VENV_DIR gpu|cpu
#   gpu: rmserve[cuda] = onnxruntime-gpu 1.31 + NVIDIA's CUDA 13 / cuDNN 9 wheels
#   cpu: rmserve       = onnxruntime-gpu 1.31 on its CPU provider, no CUDA libraries
# Never installs the `train` extra: the image must not contain torch.
set -eu
src="$1"
venv="$2"
variant="$3"
python="${PYTHON:-python3}"
case "$variant" in
  gpu) extras="[cuda]" ;;
  cpu) extras="" ;;
  *) echo "variant must be gpu or cpu, got '$variant'" >&2; exit 2 ;;
esac
wheels="$(mktemp -d)"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$src"
"$python" -m venv "$venv"
set -- "$wheels"/rmserve-*.whl
"$venv/bin/python" -m pip install --quiet "$1$extras"
"$venv/bin/python" -m pip uninstall --quiet --yes setuptools wheel pip
rm -rf "$wheels"
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "torch must not be installed in the serving runtime" >&2
  exit 1
fi
