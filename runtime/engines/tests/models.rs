//! Real models on the real engines: known answers, real names, dynamic dimensions, engines
//! agreeing with each other, targets, and model bytes the engines cannot parse.

mod common;

use std::time::Instant;

use common::{argmax, both, efficientnet_input, engines, npy, shared_model};
use nimbus_engines::{ElementType, EngineError, EngineKind, Target, Tensor, TensorInfo};

#[test]
fn digits_mlp_gets_all_twenty_right_on_both_engines() {
    let x = npy("testdata/digits_test_X.npy");
    let y = npy("testdata/digits_test_y.npy");
    assert_eq!(
        (x.descr.as_str(), x.shape.as_slice()),
        ("<f4", &[20, 64][..])
    );
    assert_eq!((y.descr.as_str(), y.shape.as_slice()), ("<i8", &[20][..]));
    let labels: Vec<i64> = y
        .data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let model_bytes = shared_model("tiny_sklearn/digits_mlp.onnx");
    for kind in both() {
        let model = engines()
            .load_model(kind, &model_bytes, Target::Cpu, 1)
            .unwrap();
        assert_eq!(model.engine(), kind);
        assert_eq!(model.target(), Target::Cpu);
        assert_eq!(
            model.inputs(),
            &[TensorInfo {
                name: "pixels".into(),
                ty: Some(ElementType::F32),
                dims: vec![None, Some(64)],
            }],
            "{kind}"
        );
        assert_eq!(
            model.outputs(),
            &[TensorInfo {
                name: "probs".into(),
                ty: Some(ElementType::F32),
                dims: vec![None, Some(10)],
            }],
            "{kind}"
        );
        // The whole batch at once (the .npy bytes are already row-major little-endian f32).
        let batch = Tensor::new(vec![20, 64], ElementType::F32, x.data.clone()).unwrap();
        let out = model.run(&[("pixels".into(), batch)]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "probs");
        assert_eq!(out[0].1.dims, vec![20, 10]);
        let probs = out[0].1.to_values::<f32>().unwrap();
        let predicted: Vec<i64> = probs.chunks(10).map(|row| argmax(row) as i64).collect();
        assert_eq!(predicted, labels, "{kind}: 20/20 expected");
        // And one row at a time, through the dynamic batch dimension.
        for (row, label) in x.data.chunks(64 * 4).zip(&labels) {
            let one = Tensor::new(vec![1, 64], ElementType::F32, row.to_vec()).unwrap();
            let out = model.run(&[("pixels".into(), one)]).unwrap();
            assert_eq!(argmax(&out[0].1.to_values::<f32>().unwrap()) as i64, *label);
        }
    }
}

#[test]
fn efficientnet_keeps_real_names_dynamic_batch_and_engines_agree() {
    let model_bytes = shared_model("image_classifier_efficientnet_lite0/efficientnet_lite0.onnx");
    let image = efficientnet_input("chelsea.png");
    let input = Tensor::from_values(vec![1, 3, 224, 224], &image).unwrap();
    let mut results = Vec::new();
    for kind in both() {
        let start = Instant::now();
        let model = engines()
            .load_model(kind, &model_bytes, Target::Cpu, 1)
            .unwrap();
        let load = start.elapsed();
        assert_eq!(
            model.inputs(),
            &[TensorInfo {
                name: "input".into(),
                ty: Some(ElementType::F32),
                dims: vec![None, Some(3), Some(224), Some(224)],
            }],
            "{kind}"
        );
        let names: Vec<&str> = model.outputs().iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["logits", "probs"], "{kind}");
        for output in model.outputs() {
            assert_eq!(output.dims, vec![None, Some(1000)], "{kind}");
            assert_eq!(output.ty, Some(ElementType::F32));
        }
        let inputs = [("input".to_string(), input.clone())];
        model.run(&inputs).unwrap(); // warm-up
        let runs = 5;
        let start = Instant::now();
        let mut out = Vec::new();
        for _ in 0..runs {
            out = model.run(&inputs).unwrap();
        }
        let per_run = start.elapsed() / runs;
        eprintln!("efficientnet-lite0 on {kind}: load {load:?}, one inference {per_run:?}");
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["logits", "probs"], "{kind}");
        let probs = out[1].1.to_values::<f32>().unwrap();
        assert_eq!(out[1].1.dims, vec![1, 1000]);
        let top = argmax(&probs);
        assert_eq!(
            top, 282,
            "{kind}: chelsea.png should be a tiger cat (282), p={}",
            probs[top]
        );
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-3);
        results.push(out);
    }
    for ((name, ort), (_, ov)) in results[0].iter().zip(&results[1]) {
        let a = ort.to_values::<f32>().unwrap();
        let b = ov.to_values::<f32>().unwrap();
        let max_diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("efficientnet {name}: max |onnxruntime - openvino| = {max_diff:e}");
        assert!(max_diff < 1e-4, "{name}: engines differ by {max_diff}");
    }
}

#[test]
fn efficientnet_runs_a_batch_of_two() {
    let model_bytes = shared_model("image_classifier_efficientnet_lite0/efficientnet_lite0.onnx");
    let mut batch = efficientnet_input("chelsea.png");
    batch.extend(efficientnet_input("coffee.png"));
    let input = Tensor::from_values(vec![2, 3, 224, 224], &batch).unwrap();
    for kind in both() {
        let model = engines()
            .load_model(kind, &model_bytes, Target::Cpu, 1)
            .unwrap();
        let out = model.run(&[("input".into(), input.clone())]).unwrap();
        assert_eq!(out[1].1.dims, vec![2, 1000]);
        let probs = out[1].1.to_values::<f32>().unwrap();
        assert_eq!(argmax(&probs[..1000]), 282, "{kind}");
        assert_eq!(
            argmax(&probs[1000..]),
            967,
            "{kind}: coffee.png should be espresso"
        );
    }
}

#[test]
fn minilm_inputs_keep_their_names_and_order() {
    let model_bytes = shared_model("text_embedder_minilm_l6_int8/all-MiniLM-L6-v2-int8.onnx");
    for kind in both() {
        let model = engines()
            .load_model(kind, &model_bytes, Target::Cpu, 1)
            .unwrap();
        let names: Vec<&str> = model.inputs().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["input_ids", "attention_mask", "token_type_ids"],
            "{kind}"
        );
        for input in model.inputs() {
            assert_eq!(input.ty, Some(ElementType::I64), "{kind}");
            assert_eq!(input.dims, vec![None, None], "{kind}");
        }
        // [CLS] hello world [SEP], given in a different order than the model's.
        let ids = Tensor::from_values(vec![1, 4], &[101i64, 7592, 2088, 102]).unwrap();
        let mask = Tensor::from_values(vec![1, 4], &[1i64; 4]).unwrap();
        let types = Tensor::from_values(vec![1, 4], &[0i64; 4]).unwrap();
        let out = model
            .run(&[
                ("token_type_ids".into(), types),
                ("input_ids".into(), ids),
                ("attention_mask".into(), mask),
            ])
            .unwrap();
        assert_eq!(out[0].0, "last_hidden_state", "{kind}");
        assert_eq!(out[0].1.dims, vec![1, 4, 384], "{kind}");
    }
}

#[test]
fn iris_with_onnx_ml_ops_loads_on_onnxruntime_only() {
    let model_bytes = shared_model("tiny_sklearn/iris_logreg.onnx");
    let model = engines()
        .load_model(EngineKind::OnnxRuntime, &model_bytes, Target::Cpu, 1)
        .unwrap();
    let x = Tensor::from_values(vec![1, 4], &[5.1f32, 3.5, 1.4, 0.2]).unwrap();
    let out = model.run(&[("X".into(), x)]).unwrap();
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["label", "probabilities"]);
    assert_eq!(out[0].1.ty, ElementType::I64);
    assert_eq!(out[0].1.to_values::<i64>().unwrap(), vec![0], "setosa");
    match engines().load_model(EngineKind::OpenVino, &model_bytes, Target::Cpu, 1) {
        Err(EngineError::Unsupported(m) | EngineError::InvalidEncoding(m)) => {
            eprintln!("openvino on iris_logreg: {m}")
        }
        Err(other) => panic!("unexpected error kind: {other:?}"),
        Ok(_) => panic!("OpenVINO has no ai.onnx.ml operators; the load should fail"),
    }
}

#[test]
fn garbage_model_bytes_are_invalid_encoding_on_both_engines() {
    let mut truncated = shared_model("tiny_sklearn/digits_mlp.onnx");
    truncated.truncate(truncated.len() / 2);
    let cases: [(&str, Vec<u8>); 5] = [
        ("text", b"this is not a model".to_vec()),
        ("zeros", vec![0u8; 1024]),
        ("ones", vec![0xffu8; 4096]),
        ("png", shared_model("testdata/chelsea.png")),
        ("truncated onnx", truncated),
    ];
    for kind in both() {
        for (what, bytes) in &cases {
            match engines().load_model(kind, bytes, Target::Cpu, 1) {
                Err(EngineError::InvalidEncoding(m)) => assert!(!m.is_empty()),
                Err(other) => panic!("{kind} on {what}: expected InvalidEncoding, got {other:?}"),
                Ok(_) => panic!("{kind} on {what}: loaded garbage"),
            }
        }
        assert!(matches!(
            engines().load_model(kind, &[], Target::Cpu, 1),
            Err(EngineError::InvalidEncoding(_))
        ));
    }
}

#[test]
fn gpu_target_without_a_gpu_is_unsupported_and_auto_falls_back_to_cpu() {
    let model_bytes = shared_model("tiny_sklearn/digits_mlp.onnx");
    for kind in both() {
        match engines().load_model(kind, &model_bytes, Target::Gpu, 1) {
            Err(EngineError::Unsupported(m)) => {
                assert!(m.contains("gpu target requested"), "{kind}: {m}");
                eprintln!("{kind} gpu: {m}");
            }
            Err(other) => panic!("{kind}: expected Unsupported, got {other:?}"),
            Ok(model) => {
                // Only on a machine with a usable GPU; then it must really be on it.
                assert_eq!(model.target(), Target::Gpu);
                eprintln!("{kind}: a GPU is available here");
            }
        }
        let model = engines()
            .load_model(kind, &model_bytes, Target::Auto, 1)
            .unwrap();
        assert!(matches!(model.target(), Target::Cpu | Target::Gpu));
        eprintln!("{kind} auto -> {}", model.target());
    }
}

#[test]
fn session_counts_are_checked() {
    let model_bytes = shared_model("tiny_sklearn/digits_mlp.onnx");
    for kind in both() {
        assert!(matches!(
            engines().load_model(kind, &model_bytes, Target::Cpu, 0),
            Err(EngineError::InvalidArgument(_))
        ));
        let model = engines()
            .load_model(kind, &model_bytes, Target::Cpu, 3)
            .unwrap();
        assert_eq!(model.sessions(), 3);
    }
}
