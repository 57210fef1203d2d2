#!/usr/bin/env bash
# Debian's Chromium, for the viewer's headless-browser test (test/test_viewer.py) and the docs' screenshots.
# Idempotent; exits 0 with a warning where it cannot be installed (not root, no apt): those tests then skip.
set -uo pipefail
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
for name in chromium chromium-browser google-chrome; do
  command -v "$name" > /dev/null 2>&1 && { log "browser: $name present"; exit 0; }
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null 2>&1; then
  log "WARNING: no Chromium and no way to install it here (needs root and apt): the viewer's browser test will skip"
  exit 0
fi
log "installing chromium (apt; ~1 min)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium > /tmp/nanovla_chromium.log 2>&1; then
  apt-get update -q > /dev/null 2>&1 && apt-get install -y -q chromium > /tmp/nanovla_chromium.log 2>&1 \
    || { log "WARNING: chromium could not be installed (see /tmp/nanovla_chromium.log): the browser test will skip"; exit 0; }
fi
log "chromium installed"
