#!/bin/sh
# Installs rmserve's serving runtime into a fresh venv: the ONE install step of the Dockerfile's
# build stage, also run by tests/deploy/test_install_steps.py (variant cpu) so CI checks it.
#   usage: install-venv.sh SOURCE_DIR VENV_DIR gpu|cpu
#   gpu: rmserve[cuda] = onnxruntime-gpu 1.31 + NVIDIA's CUDA 13 / cuDNN 9 wheels (locks/cuda-*)
#   cpu: rmserve       = onnxruntime-gpu 1.31 on its CPU provider, no CUDA libraries (locks/serve-*)
# Every package comes from the committed lock for this Python, with its hash; rmserve itself is
# built with the lock's setuptools. Never installs the `train` extra: the image must not contain
# torch.
set -eu
src="$1"
venv="$2"
variant="$3"
python="${PYTHON:-python3}"
case "$variant" in
  gpu) extras="[cuda]"; set_name=cuda ;;
  cpu) extras=""; set_name=serve ;;
  *) echo "variant must be gpu or cpu, got '$variant'" >&2; exit 2 ;;
esac
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
lock="$src/locks/$set_name-py$version.txt"
[ -f "$lock" ] || { echo "no lock for Python $version: $lock" >&2; exit 2; }
wheels="$(mktemp -d)"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$lock"
"$venv/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$wheels" "$src"
set -- "$wheels"/rmserve-*.whl
# --no-deps: the lock above is the whole environment ($extras names what it brought)
"$venv/bin/python" -m pip install --quiet --no-deps "$1$extras"
"$venv/bin/python" -m pip check
"$venv/bin/python" -m pip uninstall --quiet --yes setuptools wheel pip
rm -rf "$wheels"
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "torch must not be installed in the serving runtime" >&2
  exit 1
fi
