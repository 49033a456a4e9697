#!/usr/bin/env bash
# Builds dist/galbridge.zip for a deployment: finds the operator's configuration, validates it with
# `galbridge validate`, then packages it with `cargo xtask package`. Run by the GitHub deploy workflow
# (step `package` of .github/workflows/deploy.yml), by azd (the prepackage hook in azure.yaml) and by
# .ci/infra-checks.sh, which runs the workflow step's own text against examples/mesh.toml.
#
#   bash infra/package.sh                # resolve the configuration, build, validate, package
#   bash infra/package.sh --config-only  # only resolve the configuration (fails fast when there is none)
#
# Where the operator's configuration comes from (docs/deploy.md "Where the configuration lives"):
#   GALBRIDGE_CONFIG_TOML   the whole galbridge.toml as text, e.g. a GitHub repository or environment
#                           variable (it holds no secret: it names Key Vault secrets, never their values)
#   GALBRIDGE_CONFIG_FILE   else a file in the checkout, e.g. committed in the operator's fork
#                           (default: galbridge.toml at the repository root)
# Other inputs (all optional):
#   GALBRIDGE_PACKAGE_OUT     where to write the zip (default: dist/galbridge.zip)
#   GALBRIDGE_PACKAGE_BINARY  package this executable instead of building the musl release binary
#   GALBRIDGE_VALIDATOR       the galbridge executable that runs `validate` (default: the packaged one)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MUSL_TARGET=x86_64-unknown-linux-musl
OUT=${GALBRIDGE_PACKAGE_OUT:-dist/galbridge.zip}
CONFIG_FILE=${GALBRIDGE_CONFIG_FILE:-galbridge.toml}
CONFIG_TOML=${GALBRIDGE_CONFIG_TOML:-}

fail() {
    # GitHub renders ::error:: lines as annotations on the run; elsewhere they read as plain text.
    if [ -n "${GITHUB_ACTIONS:-}" ]; then
        echo "::error::$*"
    else
        echo "package: error: $*" >&2
    fi
    exit 2
}

# 1. The configuration: text from a variable, else a file in the checkout.
if [ -n "$CONFIG_TOML" ]; then
    mkdir -p "$(dirname "$OUT")"
    config="$(dirname "$OUT")/galbridge.from-variable.toml"
    printf '%s\n' "$CONFIG_TOML" >"$config"
    source_text="the GALBRIDGE_CONFIG_TOML variable"
    if [ -f "$CONFIG_FILE" ]; then
        echo "package: note: GALBRIDGE_CONFIG_TOML is set, so $CONFIG_FILE is not used"
    fi
elif [ -f "$CONFIG_FILE" ]; then
    config=$CONFIG_FILE
    source_text="the file $CONFIG_FILE"
else
    fail "no operator configuration: set the repository (or environment) variable GALBRIDGE_CONFIG_TOML to the contents of your galbridge.toml, or commit the file in your fork and set GALBRIDGE_CONFIG_FILE to its path (looked for '$CONFIG_FILE'). Start from examples/ (state kind = \"table\"); docs/deploy.md, 'Where the configuration lives'."
fi
echo "package: configuration from $source_text"
if [ "${1:-}" = "--config-only" ]; then
    exit 0
fi

# 2. The executable: the static musl release build, unless one is given.
binary=${GALBRIDGE_PACKAGE_BINARY:-}
if [ -z "$binary" ]; then
    cargo build --release --locked --target "$MUSL_TARGET" --package galbridge --bin galbridge
    binary="${CARGO_TARGET_DIR:-$ROOT/target}/$MUSL_TARGET/release/galbridge"
fi
[ -f "$binary" ] || fail "no executable at $binary"

# 3. Validate before packaging: the same check an operator runs (no network, no credentials).
validator=${GALBRIDGE_VALIDATOR:-$binary}
if ! "$validator" --config "$config" validate; then
    fail "the operator configuration from $source_text does not validate (galbridge validate, above)"
fi

# 4. Package: cargo xtask checks the layout, the executable and that state is kept in Table Storage.
cargo xtask package --binary "$binary" --config "$config" --out "$OUT"
echo "package: wrote $OUT"
