#!/usr/bin/env bash
# Creates .venv (if needed) and installs one locked environment into it, then rmserve itself:
#   setup.sh train   the demo's environment (locks/train-py3.11.txt)
#   setup.sh dev     train + tests, linters, the lock tool (locks/dev-py3.11.txt)
# Exact versions and hashes come from the committed lock (python scripts/lock.py refreshes it);
# nothing is resolved here, so a release published yesterday changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
set_name="${1:-train}"
python="${PYTHON:-python3}"
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
lock="locks/${set_name}-py${version}.txt"
if [ ! -f "$lock" ]; then
  echo "setup.sh: no lock $lock (locked: $(cd locks && ls ./*.txt | tr '\n' ' '))" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --require-hashes --no-deps -r "$lock"
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
.venv/bin/python -m pip check
