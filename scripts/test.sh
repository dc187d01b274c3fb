#!/usr/bin/env bash
# Runs every Nimbus test on this machine: installs the wasm target, fetches the inference engines
# (scripts/fetch-engines.sh), installs PostgreSQL's server binaries when missing (the registry
# suites run on SQLite and on throwaway PostgreSQL clusters), builds the guest components, then
# `cargo test --release --workspace`.
# Extra arguments go to cargo test (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip2 >/dev/null
fi
scripts/fetch-engines.sh

# The registry suites and tests/postgres.rs start throwaway PostgreSQL clusters: they need the
# server binaries (initdb, postgres), which Debian's postgresql package puts in
# /usr/lib/postgresql/<version>/bin. Nothing is started or enabled system-wide.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
    && [ -z "${NIMBUS_TEST_POSTGRES_URL:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing PostgreSQL (server binaries for the test clusters)"
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    else
        echo "error: the tests need PostgreSQL's server binaries: apt-get install -y postgresql" >&2
        echo "       (or set NIMBUS_TEST_POSTGRES_URL to a server the tests may create databases on)" >&2
        exit 1
    fi
fi

# Guests are built once here so that test output stays readable; the harness rebuilds if needed.
for workspace in functions tests/guests; do
    (root=$PWD; cd "$workspace" && CARGO_TARGET_DIR="$root/target/wasm" cargo build --release --target wasm32-wasip2 --quiet) \
        || { echo "error: building the guests in $workspace failed" >&2; exit 1; }
done

cargo test --release --workspace "$@"
