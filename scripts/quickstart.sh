#!/usr/bin/env bash
# The whole Nimbus tour on this machine: builds nimbusd and the `nimbus` CLI, fetches the inference
# engines, starts nimbusd on its embedded defaults (SQLite + local blob folder under .nimbus/),
# pushes EfficientNet-Lite0, deploys functions/classify-image bound to it, classifies an image and
# prints the answer. nimbusd is stopped at the end unless KEEP_RUNNING=1.
#
#   NIMBUS_MODELS_DIR  the shared models (default ../shared/models)
#   NIMBUS_LISTEN      where nimbusd listens (default 127.0.0.1:8080)
#   IMAGE              the picture to classify (default testdata/chelsea.png of the models)
set -euo pipefail
cd "$(dirname "$0")/.."

models=${NIMBUS_MODELS_DIR:-../shared/models}
listen=${NIMBUS_LISTEN:-127.0.0.1:8080}
image=${IMAGE:-$models/testdata/chelsea.png}
export NIMBUS_DATA_DIR=${NIMBUS_DATA_DIR:-.nimbus}
export NIMBUS_URL=http://$listen

[ -f "$models/image_classifier_efficientnet_lite0/efficientnet_lite0.onnx" ] || {
    echo "error: EfficientNet not found under $models (set NIMBUS_MODELS_DIR)" >&2; exit 1; }

step() { printf '\n==> %s\n' "$*"; }

step "installing the wasm32-wasip2 target"
command -v rustup >/dev/null && rustup target add wasm32-wasip2
step "fetching ONNX Runtime and OpenVINO from their PyPI wheels"
scripts/fetch-engines.sh
step "building nimbusd and nimbus (release)"
cargo build --release -p nimbus-runtime -p nimbus-cli
bin=${CARGO_TARGET_DIR:-target}/release
nimbus=$bin/nimbus

step "starting nimbusd on $listen (state in $NIMBUS_DATA_DIR, log in $NIMBUS_DATA_DIR.log)"
# The first start prints the admin key: its output stays readable by this user only.
for f in "$NIMBUS_DATA_DIR.out" "$NIMBUS_DATA_DIR.log"; do : >"$f" && chmod 600 "$f"; done
"$bin/nimbusd" --listen "$listen" >"$NIMBUS_DATA_DIR.out" 2>"$NIMBUS_DATA_DIR.log" &
pid=$!
if [ "${KEEP_RUNNING:-0}" != 1 ]; then
    trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
fi
for _ in $(seq 1 100); do
    curl -fsS "$NIMBUS_URL/healthz" >/dev/null 2>&1 && break
    kill -0 $pid 2>/dev/null || { echo "error: nimbusd exited; its log:" >&2; cat "$NIMBUS_DATA_DIR.log" >&2; exit 1; }
    sleep 0.1
done
cat "$NIMBUS_DATA_DIR.out"

step "pushing EfficientNet-Lite0 as model 'efficientnet' (ONNX Runtime)"
$nimbus model push efficientnet "$models/image_classifier_efficientnet_lite0/efficientnet_lite0.onnx" --engine onnxruntime
step "deploying functions/classify-image"
# The manifest names the wasm under this repository's target/wasm: build the guest there.
env -u CARGO_TARGET_DIR $nimbus deploy functions/classify-image
step "classifying $image"
$nimbus invoke classify-image --data "@$image"
echo
if [ "${KEEP_RUNNING:-0}" = 1 ]; then
    echo "nimbusd keeps running (pid $pid) at $NIMBUS_URL; stop it with: kill $pid"
fi
