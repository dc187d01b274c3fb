//! classify-image end to end: a real nimbusd, EfficientNet on ONNX Runtime and on OpenVINO, real
//! images over real HTTP.

use nimbus_tests::{Nimbusd, deploy_classifier, image};
use serde_json::Value;

async fn classify(nimbusd: &Nimbusd, function: &str, picture: &str) -> (String, f64) {
    let response = nimbusd
        .client()
        .invoke(
            "default",
            function,
            "/",
            http::Method::POST,
            image(picture),
            &[],
        )
        .await
        .expect("invoking");
    assert_eq!(
        response.status,
        200,
        "body: {}",
        String::from_utf8_lossy(&response.body)
    );
    let answer: Value = serde_json::from_slice(&response.body).expect("JSON answer");
    let top = &answer["top5"][0];
    assert_eq!(answer["top5"].as_array().map(Vec::len), Some(5), "{answer}");
    (
        top["label"].as_str().expect("label").to_owned(),
        top["probability"].as_f64().expect("probability"),
    )
}

async fn known_answers(engine: &str) {
    let nimbusd = Nimbusd::start();
    deploy_classifier(&nimbusd.client(), "efficientnet", engine, "classify-image").await;

    let (label, p) = classify(&nimbusd, "classify-image", "chelsea.png").await;
    assert_eq!(label, "tiger cat");
    assert!((p - 0.386).abs() < 0.02, "p(tiger cat) = {p}");
    let (label, p) = classify(&nimbusd, "classify-image", "coffee.png").await;
    assert_eq!(label, "espresso");
    assert!(p > 0.9, "p(espresso) = {p}");
    let (label, p) = classify(&nimbusd, "classify-image", "camera.png").await;
    assert_eq!(label, "tripod");
    assert!(p > 0.9, "p(tripod) = {p}");
}

#[tokio::test(flavor = "multi_thread")]
async fn classifies_known_images_on_onnxruntime() {
    known_answers("onnxruntime").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn classifies_known_images_on_openvino() {
    known_answers("openvino").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn classifies_a_jpeg() {
    let nimbusd = Nimbusd::start();
    deploy_classifier(
        &nimbusd.client(),
        "efficientnet",
        "onnxruntime",
        "classify-image",
    )
    .await;
    let response = nimbusd
        .client()
        .invoke(
            "default",
            "classify-image",
            "/",
            http::Method::POST,
            image("rocket.jpg"),
            &[],
        )
        .await
        .expect("invoking");
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let answer: Value = serde_json::from_slice(&response.body).unwrap();
    let probabilities: Vec<f64> = answer["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(
        probabilities.windows(2).all(|w| w[0] >= w[1]),
        "top5 sorted: {answer}"
    );
}
