#!/usr/bin/env bash
# The programs some tests drive for real: Debian's `prometheus` package (prometheus and promtool,
# for tests/deploy). Installed here when missing, so that scripts/test.sh runs what CI runs.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus \
  >/dev/null
