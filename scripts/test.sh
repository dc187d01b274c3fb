#!/usr/bin/env bash
# Runs every Nimbus test on this machine: installs the wasm target, fetches the inference engines
# (scripts/fetch-engines.sh), builds the guest components, then `cargo test --release --workspace`.
# Extra arguments go to cargo test (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip2 >/dev/null
fi
scripts/fetch-engines.sh

# Guests are built once here so that test output stays readable; the harness rebuilds if needed.
for workspace in functions tests/guests; do
    (root=$PWD; cd "$workspace" && CARGO_TARGET_DIR="$root/target/wasm" cargo build --release --target wasm32-wasip2 --quiet) \
        || { echo "error: building the guests in $workspace failed" >&2; exit 1; }
done

cargo test --release --workspace "$@"
