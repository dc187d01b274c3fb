//! Bad caller input through `Model::run` on both real engines: every case is an
//! `InvalidArgument` naming the problem, and the model keeps working afterwards.

mod common;

use common::{both, engines, shared_model};
use nimbus_engines::{ElementType, EngineError, EngineKind, Model, Target, Tensor};
use std::sync::Arc;

fn digits(kind: EngineKind) -> Arc<dyn Model> {
    engines()
        .load_model(
            kind,
            &shared_model("tiny_sklearn/digits_mlp.onnx"),
            Target::Cpu,
            2,
        )
        .unwrap()
}

fn raw(dims: Vec<u32>, ty: ElementType, len: usize) -> Tensor {
    Tensor {
        dims,
        ty,
        data: vec![0; len],
    }
}

fn expect_invalid(model: &dyn Model, inputs: Vec<(String, Tensor)>, needle: &str) {
    match model.run(&inputs) {
        Err(EngineError::InvalidArgument(m)) => {
            assert!(
                m.contains(needle),
                "{}: `{m}` lacks `{needle}`",
                model.engine()
            )
        }
        other => panic!(
            "{}: expected InvalidArgument, got {other:?}",
            model.engine()
        ),
    }
}

#[test]
fn bad_inputs_are_invalid_arguments_on_both_engines() {
    for kind in both() {
        let model = digits(kind);
        let m = model.as_ref();
        let pixels = |t: Tensor| vec![("pixels".to_string(), t)];
        // Byte length that does not match the shape.
        expect_invalid(
            m,
            pixels(raw(vec![1, 64], ElementType::F32, 100 * 4)),
            "needs 256 bytes, got 400",
        );
        // A length that is not a whole number of elements.
        expect_invalid(
            m,
            pixels(raw(vec![1, 64], ElementType::F32, 255)),
            "not a whole number of fp32",
        );
        // Dimensions whose product overflows.
        expect_invalid(
            m,
            pixels(raw(vec![u32::MAX, u32::MAX], ElementType::F32, 256)),
            "overflows",
        );
        expect_invalid(
            m,
            pixels(raw(
                vec![u32::MAX, u32::MAX, u32::MAX, u32::MAX],
                ElementType::F32,
                0,
            )),
            "overflows",
        );
        // Wrong element type.
        expect_invalid(
            m,
            pixels(raw(vec![1, 64], ElementType::I64, 512)),
            "input `pixels` expects fp32, got i64",
        );
        // Unknown name: the message lists what the model expects.
        expect_invalid(
            m,
            vec![("image".into(), raw(vec![1, 64], ElementType::F32, 256))],
            "unknown input `image`; the model's inputs are `pixels` (fp32 [?, 64])",
        );
        // Missing input.
        expect_invalid(m, vec![], "missing input `pixels`");
        // Rank and static dimension.
        expect_invalid(
            m,
            pixels(raw(vec![64], ElementType::F32, 256)),
            "expects rank 2",
        );
        expect_invalid(
            m,
            pixels(raw(vec![2, 32], ElementType::F32, 256)),
            "dimension 1 must be 64",
        );
        // A name with a NUL byte never reaches the C APIs.
        expect_invalid(
            m,
            vec![("pix\0els".into(), raw(vec![1, 64], ElementType::F32, 256))],
            "unknown input",
        );
        // Still healthy afterwards.
        let ok = raw(vec![3, 64], ElementType::F32, 3 * 256);
        let out = model.run(&[("pixels".into(), ok)]).unwrap();
        assert_eq!(out[0].1.dims, vec![3, 10]);
    }
}

#[test]
fn an_empty_batch_runs() {
    for kind in both() {
        let model = digits(kind);
        let out = model
            .run(&[("pixels".into(), raw(vec![0, 64], ElementType::F32, 0))])
            .unwrap();
        assert_eq!(out[0].0, "probs");
        assert_eq!(out[0].1.dims, vec![0, 10], "{kind}");
        assert!(out[0].1.data.is_empty());
    }
}
