#!/usr/bin/env bash
# Installs everything from the lock (and the programs tests drive: scripts/test_tools.sh), checks
# lint/format/types/generated code and reference pages, builds the docs site, then runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/test_tools.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python scripts/gen_protos.py --check
.venv/bin/python scripts/gen_docs.py --check
# The docs site, every link and heading anchor checked (never --quiet: it hides the warnings
# that --strict turns into a failure).
site_dir=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site_dir"
rm -rf "$site_dir"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy rmserve rmserve_training
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest "$@"
