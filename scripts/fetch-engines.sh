#!/usr/bin/env bash
# Fetches the native inference libraries that nimbusd loads at run time, from the PyPI wheels of
# ONNX Runtime and OpenVINO (pinned versions, sha256 checked by pip --require-hashes), into the
# engines folder nimbusd looks in: $NIMBUS_ENGINES_DIR, else ${XDG_CACHE_HOME:-~/.cache}/nimbus/engines.
#
# Linux x86_64 only (the pinned wheels are manylinux_2_28 x86_64). Idempotent: a version already
# unpacked is kept.
set -euo pipefail

ORT_VERSION=1.31.1
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
OV_VERSION=2026.4.1
OV_WHEEL_SHA256=2d22b1da03f7caf74df30e9f6417d0ab2f637e4a38e08e1dcd294d2c37407aaf

dest=${NIMBUS_ENGINES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimbus/engines}
ort_dir=$dest/onnxruntime-$ORT_VERSION
ov_dir=$dest/openvino-$OV_VERSION

if [ -f "$ort_dir/.complete" ] && [ -f "$ov_dir/.complete" ]; then
    echo "engines already in $dest"
    exit 0
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "error: the pinned engine wheels are for Linux x86_64; this is $(uname -s)-$(uname -m)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/requirements.txt" <<REQ
onnxruntime==$ORT_VERSION --hash=sha256:$ORT_WHEEL_SHA256
openvino==$OV_VERSION --hash=sha256:$OV_WHEEL_SHA256
REQ
python3 -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
    -r "$work/requirements.txt" -d "$work/wheels"

unpack() { # wheel, folder inside the wheel, destination
    local tmp=$3.partial
    rm -rf "$tmp" && mkdir -p "$tmp"
    python3 - "$1" "$2" "$tmp" <<'PY'
import sys, zipfile, os
wheel, inner, out = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(inner) and ".so" in name and "pybind" not in name and "cpython" not in name:
            target = os.path.join(out, os.path.basename(name))
            with z.open(name) as src, open(target, "wb") as dst:
                dst.write(src.read())
PY
}

mkdir -p "$dest"
if [ ! -f "$ort_dir/.complete" ]; then
    unpack "$work"/wheels/onnxruntime-*.whl onnxruntime/capi/ "$ort_dir"
    rm -rf "$ort_dir" && mv "$ort_dir.partial" "$ort_dir"
    ln -sf "libonnxruntime.so.$ORT_VERSION" "$ort_dir/libonnxruntime.so"
    touch "$ort_dir/.complete"
fi
if [ ! -f "$ov_dir/.complete" ]; then
    unpack "$work"/wheels/openvino-*.whl openvino/libs/ "$ov_dir"
    rm -rf "$ov_dir" && mv "$ov_dir.partial" "$ov_dir"
    # The openvino crate looks for the unversioned names.
    for lib in "$ov_dir"/*.so.*; do
        base=$(basename "$lib"); plain=${base%%.so.*}.so
        [ -e "$ov_dir/$plain" ] || ln -s "$base" "$ov_dir/$plain"
    done
    touch "$ov_dir/.complete"
fi
echo "engines ready in $dest: onnxruntime $ORT_VERSION, openvino $OV_VERSION"
