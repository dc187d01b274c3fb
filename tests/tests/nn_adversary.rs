//! A guest that misuses wasi-nn on purpose: every misuse gets a wasi-nn error (or a trap for
//! out-of-bounds memory), the host never panics, and the next normal request succeeds.

use nimbus_tests::{Nimbusd, efficientnet, guest_wasm, manifest, model_file};
use serde_json::Value;

async fn call(nimbusd: &Nimbusd, route: &str, body: Vec<u8>) -> (u16, Value) {
    let response = nimbusd
        .client()
        .invoke(
            "default",
            "nn-adversary",
            route,
            http::Method::POST,
            body,
            &[],
        )
        .await
        .unwrap();
    let value = serde_json::from_slice(&response.body).unwrap_or_else(|_| {
        panic!(
            "{route}: JSON body, got {}",
            String::from_utf8_lossy(&response.body)
        )
    });
    (response.status, value)
}

async fn still_works(nimbusd: &Nimbusd, after: &str) {
    let (status, value) = call(nimbusd, "/ok", vec![]).await;
    assert_eq!(status, 200, "after {after}: {value}");
    assert_eq!(
        value["ok"]["outputs"],
        serde_json::json!(["logits", "probs"]),
        "after {after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_misuse_gets_an_error_and_the_host_survives() {
    let nimbusd = Nimbusd::start();
    let client = nimbusd.client();
    client
        .push_model("efficientnet", &efficientnet(), "onnxruntime", "cpu")
        .await
        .unwrap();
    let (adversary, _) = manifest("tests/guests/nn-adversary");
    client
        .deploy(&adversary, &guest_wasm("tests/guests", "nn-adversary"))
        .await
        .unwrap();
    still_works(&nimbusd, "deploy").await;

    let tiny_model = std::fs::read(model_file("tiny_sklearn/digits_mlp.onnx")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 10] = [
        ("/wrong-length", vec![], "invalid-argument"),
        ("/not-multiple", vec![], "invalid-argument"),
        ("/overflow-dims", vec![], "invalid-argument"),
        ("/wrong-type", vec![], "invalid-argument"),
        ("/wrong-name", vec![], "invalid-argument"),
        ("/no-inputs", vec![], "invalid-argument"),
        ("/unknown-model", vec![], "not-found"),
        ("/tpu", vec![], "unsupported-operation"),
        ("/gpu", tiny_model, "unsupported-operation"),
        ("/garbage-model", vec![], "invalid-encoding"),
    ];
    for (route, body, expected) in cases {
        let (status, value) = call(&nimbusd, route, body).await;
        assert_eq!(status, 200, "{route}: {value}");
        assert_eq!(value["error"]["code"], expected, "{route}: {value}");
        assert!(
            !value["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{route} has a message: {value}"
        );
        still_works(&nimbusd, route).await;
    }

    let (status, value) = call(&nimbusd, "/oob", vec![]).await;
    assert_eq!(status, 500, "/oob: {value}");
    assert_eq!(value["error"]["code"], "guest_error");
    still_works(&nimbusd, "/oob").await;
    assert!(
        !nimbusd.log().contains("panicked"),
        "the host panicked:\n{}",
        nimbusd.log()
    );
}
