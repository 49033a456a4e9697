#!/usr/bin/env bash
# Installs the Azurite Table and Queue Storage emulator (pinned: 3.36+ needs Node 22; this machine and CI have Node 20)
# into a local prefix outside the repository, shared by every clone on the machine:
# `${XDG_CACHE_HOME:-~/.cache}/galbridge/azurite-3.35.0` by default (GALBRIDGE_AZURITE_PREFIX overrides).
# Idempotent and quick when the pinned version is already there. The tests find it through
# tests/support/azurite.rs (GALBRIDGE_AZURITE_TABLE, PATH, node_modules/.bin, then this prefix).
set -euo pipefail

AZURITE_VERSION="3.35.0"
prefix="${GALBRIDGE_AZURITE_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/galbridge/azurite-$AZURITE_VERSION}"
bin="$prefix/node_modules/.bin/azurite-table"
queue_bin="$prefix/node_modules/.bin/azurite-queue"
stamp="$prefix/node_modules/azurite/package.json"

if [[ -x "$bin" && -x "$queue_bin" && -f "$stamp" ]] && grep -q "\"version\": \"$AZURITE_VERSION\"" "$stamp"; then
  echo "azurite $AZURITE_VERSION already installed: $bin, $queue_bin"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "npm is required to install Azurite (install Node.js 20+ first)" >&2
  exit 1
fi

mkdir -p "$prefix"
# A private package.json keeps npm from walking up into the repository.
[[ -f "$prefix/package.json" ]] || echo '{"name":"galbridge-ci-tools","private":true}' >"$prefix/package.json"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
"$bin" --version >/dev/null
"$queue_bin" --version >/dev/null
echo "azurite $AZURITE_VERSION installed: $bin"
