#!/usr/bin/env bash
# Builds the benchmark peers under target/peers (gitignored): `wasmtime serve` 48.0.8 with wasi-nn's
# ONNX backend, and a Python venv with aiohttp + onnxruntime + Pillow for bench/python_server.py.
# Nothing fetched here is committed. Idempotent: a peer already built is left alone.
#
# wasmtime-cli 48.0.8 has no feature for wasi-nn's ONNX backend, and wasmtime-wasi-nn 48 asks for
# `ort = "2.0.0-rc.10"`, which cargo resolves to rc.15, which does not compile with it. So we build a
# copy of the published crate with its own Cargo.lock, plus one feature that turns on
# `wasmtime-wasi-nn/onnx` and pins `ort = "=2.0.0-rc.10"` with `load-dynamic` (ONNX Runtime then comes
# from ORT_DYLIB_PATH, the same library nimbusd uses).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERS="$ROOT/target/peers"
WASMTIME_VERSION=48.0.8
# The Python peer runs the same ONNX Runtime release as nimbusd (scripts/fetch-engines.sh).
ORT_VERSION=1.31.1
mkdir -p "$PEERS"

build_wasmtime() {
    if [[ -x "$PEERS/bin/wasmtime" ]] && "$PEERS/bin/wasmtime" --version | grep -q "$WASMTIME_VERSION"; then
        return
    fi
    # Let cargo fetch the published crate, then find its unpacked source through cargo metadata.
    local probe="$PEERS/probe"
    mkdir -p "$probe/src"
    cat >"$probe/Cargo.toml" <<TOML
[package]
name = "peer-probe"
version = "0.0.0"
edition = "2021"
[dependencies]
wasmtime-cli = "=$WASMTIME_VERSION"
[workspace]
TOML
    : >"$probe/src/lib.rs"
    local manifest
    manifest="$(cd "$probe" && cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, sys
meta = json.load(sys.stdin)
print(next(p["manifest_path"] for p in meta["packages"] if p["name"] == "wasmtime-cli"))')"
    local src="$PEERS/src/wasmtime-cli-$WASMTIME_VERSION"
    rm -rf "$src"
    mkdir -p "$PEERS/src"
    cp -r "$(dirname "$manifest")" "$src"
    chmod -R u+w "$src"
    # One extra feature: the ONNX backend of wasi-nn with ort pinned to the version it compiles with.
    python3 - "$src/Cargo.toml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
text = text.replace("[features]\n", '[features]\nnimbus-onnx = ["wasmtime-wasi-nn/onnx", "dep:ort"]\n', 1)
text += '\n[workspace]\n'
text += '\n[dependencies.ort]\nversion = "=2.0.0-rc.10"\ndefault-features = false\nfeatures = ["std", "load-dynamic"]\noptional = true\n'
open(path, "w").write(text)
PY
    # Add the new dependencies to the shipped lockfile without moving anything already locked.
    (cd "$src" && cargo update -p ort --precise 2.0.0-rc.10 >/dev/null 2>&1 || cargo metadata --format-version 1 >/dev/null)
    # The build folder stays outside the copied source, so that a rebuild reuses it.
    CARGO_TARGET_DIR="$PEERS/build" cargo install --path "$src" --locked --root "$PEERS" \
        --no-default-features \
        --features "serve,run,wasi-nn,nimbus-onnx,cranelift,pooling-allocator,parallel-compilation,component-model,component-model-async"
}

build_venv() {
    if [[ -x "$PEERS/venv/bin/python" ]] && "$PEERS/venv/bin/python" -c "import aiohttp, PIL, numpy, onnxruntime; assert onnxruntime.__version__ == \"$ORT_VERSION\"" 2>/dev/null; then
        return
    fi
    python3 -m venv "$PEERS/venv"
    "$PEERS/venv/bin/pip" install --quiet aiohttp "onnxruntime==$ORT_VERSION" pillow numpy
}

case "${1:-all}" in
    wasmtime) build_wasmtime ;;
    venv) build_venv ;;
    all) build_venv; build_wasmtime ;;
    *) echo "usage: $0 [all|wasmtime|venv]" >&2; exit 2 ;;
esac
