#!/usr/bin/env bash
# Makes a headless Chromium available to the status page test (tests/status_page_browser.rs), which loads the page
# the real handler serves and checks its DOM. Idempotent:
# - a browser already on PATH (chromium, chromium-browser, google-chrome; or $GALBRIDGE_CHROMIUM) is used as is;
# - otherwise the distribution's package is installed with apt-get (as root, or through `sudo -n`): on Debian,
#   `chromium`, plus a CJK font so that names in those scripts render in the screenshot.
# GitHub's ubuntu-latest runner ships Google Chrome, which is found first: Ubuntu's own `chromium` package is only a
# shim for the snap. Under CI=true the test fails (it does not skip) when no browser can be found.
set -euo pipefail

found=""
if [[ -n "${GALBRIDGE_CHROMIUM:-}" && -x "${GALBRIDGE_CHROMIUM}" ]]; then
  found="$GALBRIDGE_CHROMIUM"
else
  for name in chromium chromium-browser google-chrome; do
    if path="$(command -v "$name")"; then
      found="$path"
      break
    fi
  done
fi

if [[ -z "$found" ]]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no Chromium on PATH and no apt-get to install it: install chromium, or set GALBRIDGE_CHROMIUM" >&2
    exit 1
  fi
  as_root=()
  if [[ "$(id -u)" != 0 ]]; then
    as_root=(sudo -n)
  fi
  echo "installing the distribution's chromium with apt-get"
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core fonts-wqy-microhei >/dev/null
  found="$(command -v chromium)"
fi

echo "chromium for the status page test: $found ($("$found" --headless --no-sandbox --version 2>/dev/null | head -1))"
