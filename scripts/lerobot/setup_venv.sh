#!/usr/bin/env bash
# The real `lerobot` package in a virtualenv of its own (.venv-lerobot), for the compatibility tests
# (test/test_lerobot_compat.py) and for checking a dataset by hand with scripts/lerobot/lerobot_load.py.
# lerobot 0.6.1 needs Python >= 3.12 and torch < 2.12, which the project's venv (Python 3.11, torch 2.13) cannot
# hold. Idempotent (a stamp per version); exits 0 with a warning where it cannot be installed (no Python 3.12,
# no package index): the tests then skip and say why.
#
#   scripts/lerobot/setup_venv.sh            # LEROBOT_VENV=/path to put it elsewhere
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${LEROBOT_VENV:-$ROOT/.venv-lerobot}"
VERSION=0.6.1
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
[ -f "$VENV/.lerobot-$VERSION" ] && { log "lerobot $VERSION venv up to date"; exit 0; }
py=""
for candidate in python3.12 python3.13 "$HOME"/.pyenv/versions/3.12.*/bin/python "$HOME"/.pyenv/versions/3.13.*/bin/python; do
  command -v "$candidate" > /dev/null 2>&1 || [ -x "$candidate" ] || continue
  "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2> /dev/null && { py=$candidate; break; }
done
if [ -z "$py" ]; then
  log "WARNING: no Python >= 3.12 found: the real-lerobot compatibility tests will skip"
  exit 0
fi
log "installing lerobot[dataset]==$VERSION into $VENV (Python $("$py" -c 'import platform; print(platform.python_version())'); ~2 min, ~4 GB)"
start=$(date +%s)
rm -rf "$VENV"
if "$py" -m venv "$VENV" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "lerobot[dataset]==$VERSION" 2> "$VENV.log" \
  && "$VENV/bin/python" -c "from lerobot.datasets.lerobot_dataset import LeRobotDataset" 2>> "$VENV.log"; then
  touch "$VENV/.lerobot-$VERSION"
  log "lerobot $VERSION installed in $(( $(date +%s) - start )) s"
else
  log "WARNING: lerobot $VERSION could not be installed (see $VENV.log): the real-lerobot compatibility tests will skip"
  grep -v "^WARNING: Location" "$VENV.log" | tail -5
fi
exit 0
