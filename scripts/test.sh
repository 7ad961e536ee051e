#!/usr/bin/env bash
# Installs everything from the lock (and the programs tests drive: scripts/test_tools.sh), checks
# lint/format/types/generated code, then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/test_tools.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python scripts/gen_protos.py --check
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy rmserve training
.venv/bin/python -m pytest "$@"
