#!/usr/bin/env bash
# The measurements of docs/benchmarks.md, in one run on one machine: builds what is needed (nimbusd,
# the bench binaries, the guests, the peers under target/peers), starts the peers on free loopback
# ports, runs the Rust bench binaries (tests/src/bin/nimbus-bench-*.rs) and prints their markdown
# tables, also kept in target/bench/results.md.
#
#   bench/run.sh                 # every step: hello classify start soak
#   bench/run.sh hello classify  # some of them
#
# Environment:
#   MAX_LOAD=0.7        wait until the 1-minute load average is below this before each step
#   LOAD_WAIT_S=1800    ... but no longer than this (then measure anyway; the load is in each table)
#   NIMBUS_MODELS_DIR   the shared models (default ../shared/models beside the repository)
#   BENCH_ARGS_<STEP>   extra flags for one step's binary, e.g. BENCH_ARGS_SOAK="--seconds 20"
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
STEPS=("$@")
[[ ${#STEPS[@]} -gt 0 ]] || STEPS=(hello classify start soak)
MAX_LOAD="${MAX_LOAD:-0.7}"
LOAD_WAIT_S="${LOAD_WAIT_S:-1800}"
MODELS="${NIMBUS_MODELS_DIR:-$ROOT/../shared/models}"
PEERS="$ROOT/target/peers"
OUT="$ROOT/target/bench"
WASM="$ROOT/target/wasm/wasm32-wasip2/release"
mkdir -p "$OUT"
RESULTS="$OUT/results.md"
: >"$RESULTS"

log() { echo "[bench] $*" >&2; }

# --- build -----------------------------------------------------------------------------------
log "building nimbusd, the bench binaries and the guests"
cargo build --release --quiet -p nimbus-runtime -p nimbus-tests --bins
(cd functions && CARGO_TARGET_DIR="$ROOT/target/wasm" cargo build --release --quiet --target wasm32-wasip2)
ENGINES="${NIMBUS_ENGINES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimbus/engines}"
if ! ls "$ENGINES"/onnxruntime-*/libonnxruntime.so >/dev/null 2>&1; then
    scripts/fetch-engines.sh
fi
ORT_LIBRARY="$(ls -d "$ENGINES"/onnxruntime-*/libonnxruntime.so | sort -V | tail -1)"
log "building the peers (first time: wasmtime-cli takes 10-20 min on 2 cores)"
bench/peers.sh all

# 1000 connections need more than the usual 1024 descriptors, here and in nimbusd.
HARD_LIMIT="$(ulimit -Hn)"
if [[ "$HARD_LIMIT" == unlimited || "$HARD_LIMIT" -ge 8192 ]]; then
    ulimit -n 8192
else
    ulimit -n "$HARD_LIMIT"
fi

# --- peers -----------------------------------------------------------------------------------
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts connections on 127.0.0.1:$1 (up to 60 s).
wait_port() {
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on port $1"
    return 1
}

# Waits for a quiet machine: other builds and tests skew every figure.
wait_for_quiet() {
    local waited=0 load
    while :; do
        load="$(cut -d' ' -f1 /proc/loadavg)"
        if python3 -c "import sys; sys.exit(0 if $load < $MAX_LOAD else 1)"; then return 0; fi
        if ((waited >= LOAD_WAIT_S)); then
            log "load average still $load after ${waited}s; measuring anyway (it is in the table)"
            return 0
        fi
        ((waited == 0)) && log "load average $load >= $MAX_LOAD: waiting for the machine to quieten"
        sleep 10
        waited=$((waited + 10))
    done
}

# Starts `wasmtime serve` on a free port with the given extra flags and component; sets
# WASMTIME_URL and WASMTIME_PID (its CPU time per answer goes in the tables).
start_wasmtime() {
    local port
    port="$(free_port)"
    ORT_DYLIB_PATH="$ORT_LIBRARY" "$PEERS/bin/wasmtime" serve --addr "127.0.0.1:$port" -S cli "$@" \
        >"$OUT/wasmtime-$port.log" 2>&1 &
    PIDS+=($!)
    WASMTIME_PID=$!
    wait_port "$port"
    WASMTIME_URL="http://127.0.0.1:$port"
}

run_step() {
    local step="$1"
    shift
    local var="BENCH_ARGS_${step^^}"
    wait_for_quiet
    log "step $step"
    # shellcheck disable=SC2086 # the extra flags are words
    "$@" ${!var:-} | tee -a "$RESULTS"
    echo | tee -a "$RESULTS"
}

for step in "${STEPS[@]}"; do
    case "$step" in
        hello)
            start_wasmtime "$WASM/hello.wasm"
            run_step hello target/release/nimbus-bench-peers hello --wasmtime-url "$WASMTIME_URL" \
                --wasmtime-pid "$WASMTIME_PID"
            cleanup
            ;;
        classify)
            # wasmtime serve finds graphs by folder name: the guest loads "image-classifier".
            graphs="$OUT/graphs/image-classifier"
            mkdir -p "$graphs"
            cp "$MODELS/image_classifier_efficientnet_lite0/efficientnet_lite0.onnx" "$graphs/model.onnx"
            start_wasmtime -S nn --wasi "nn-graph=onnx::$graphs" "$WASM/classify_image.wasm"
            port="$(free_port)"
            "$PEERS/venv/bin/python" bench/python_server.py --port "$port" \
                --model "$MODELS/image_classifier_efficientnet_lite0/efficientnet_lite0.onnx" \
                --labels functions/classify-image/data/imagenet_labels.json \
                >"$OUT/python-$port.log" 2>&1 &
            PIDS+=($!)
            python_pid=$!
            wait_port "$port"
            run_step classify target/release/nimbus-bench-peers classify \
                --wasmtime-url "$WASMTIME_URL" --wasmtime-pid "$WASMTIME_PID" \
                --python-url "http://127.0.0.1:$port" --python-pid "$python_pid"
            cleanup
            ;;
        start) run_step start target/release/nimbus-bench-start ;;
        soak) run_step soak target/release/nimbus-bench-soak ;;
        *)
            log "unknown step $step (hello, classify, start, soak)"
            exit 2
            ;;
    esac
done
log "tables kept in ${RESULTS#"$ROOT"/}"
