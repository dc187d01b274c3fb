"""Builds the tiny ONNX models the nimbus-engines tests use to check every tensor type.

Each `identity_<type>.onnx` has one input `x` of that element type with shape [N, 3] (N dynamic)
and one output `y`, produced by an Identity node, so a run must return the input bit for bit.
Only the `onnx` package is needed (`pip install onnx`). Run from anywhere:

    python3 runtime/engines/tests/models/make_models.py

The outputs are committed next to this script; rerunning it rewrites them byte for byte.
"""

import os

import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))

TYPES = {
    "f16": TensorProto.FLOAT16,
    "f32": TensorProto.FLOAT,
    "f64": TensorProto.DOUBLE,
    "bf16": TensorProto.BFLOAT16,
    "u8": TensorProto.UINT8,
    "i32": TensorProto.INT32,
    "i64": TensorProto.INT64,
}


def identity_model(name, elem_type):
    x = helper.make_tensor_value_info("x", elem_type, ["N", 3])
    y = helper.make_tensor_value_info("y", elem_type, ["N", 3])
    node = helper.make_node("Identity", ["x"], ["y"], name="identity")
    graph = helper.make_graph([node], f"identity_{name}", [x], [y])
    # Opset 14 (Identity takes bfloat16 since opset 13); ir_version 8, which every ONNX Runtime
    # since 1.10 and OpenVINO since 2022 read.
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 14)],
        producer_name="nimbus-engines tests",
        ir_version=8,
    )
    onnx.checker.check_model(model)
    return model


def main():
    for name, elem_type in TYPES.items():
        path = os.path.join(HERE, f"identity_{name}.onnx")
        onnx.save(identity_model(name, elem_type), path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
