#!/usr/bin/env bash
# Creates .venv (if needed) and installs rmserve with the given extras, e.g. `setup.sh train,dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
