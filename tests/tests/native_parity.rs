//! The guest's view of a model through wasi-nn equals native ONNX Runtime on the same input: the
//! sandbox adds no numerical error.

use nimbus_tests::{Nimbusd, deploy_classifier, efficientnet, image, onnxruntime_library};
use ort::session::Session;
use ort::value::Tensor;
use serde_json::Value;

fn native_outputs(input: Vec<f32>) -> (Vec<f32>, Vec<f32>) {
    let env = ort::init_from(onnxruntime_library())
        .expect("loading ONNX Runtime")
        .build()
        .expect("ONNX Runtime environment");
    let mut session = Session::builder(&env)
        .unwrap()
        .commit_from_file(efficientnet())
        .expect("loading EfficientNet natively");
    let tensor = Tensor::from_array(([1usize, 3, 224, 224], input)).unwrap();
    let outputs = session.run(ort::inputs!["input" => tensor]).unwrap();
    let logits = outputs["logits"]
        .try_extract_tensor::<f32>()
        .unwrap()
        .1
        .to_vec();
    let probs = outputs["probs"]
        .try_extract_tensor::<f32>()
        .unwrap()
        .1
        .to_vec();
    (logits, probs)
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_output_equals_native_onnxruntime() {
    let nimbusd = Nimbusd::start();
    let client = nimbusd.client();
    deploy_classifier(&client, "efficientnet", "onnxruntime", "classify-image").await;

    let preprocessed = client
        .invoke(
            "default",
            "classify-image",
            "/preprocess",
            http::Method::POST,
            image("chelsea.png"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(preprocessed.status, 200);
    assert_eq!(preprocessed.body.len(), 3 * 224 * 224 * 4);
    let input: Vec<f32> = preprocessed
        .body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    let guest = client
        .invoke(
            "default",
            "classify-image",
            "/outputs",
            http::Method::POST,
            image("chelsea.png"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        guest.status,
        200,
        "{}",
        String::from_utf8_lossy(&guest.body)
    );
    let guest: Value = serde_json::from_slice(&guest.body).unwrap();
    let floats = |name: &str| -> Vec<f64> {
        guest["outputs"][name]["data"]
            .as_array()
            .unwrap_or_else(|| panic!("output {name} in {guest:.200}"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    assert_eq!(
        guest["outputs"]["probs"]["dims"],
        serde_json::json!([1, 1000])
    );
    assert_eq!(guest["outputs"]["probs"]["type"], "fp32");

    let (logits, probs) = tokio::task::spawn_blocking(move || native_outputs(input))
        .await
        .unwrap();
    let logits_diff = max_abs_diff(&logits, &floats("logits"));
    let probs_diff = max_abs_diff(&probs, &floats("probs"));
    assert!(logits_diff < 1e-5, "max |logits diff| = {logits_diff}");
    assert!(probs_diff < 1e-5, "max |probs diff| = {probs_diff}");
    // Guard against comparing two empty or constant vectors.
    assert_eq!(
        probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i),
        Some(282),
        "native top-1 is tiger cat"
    );
}
