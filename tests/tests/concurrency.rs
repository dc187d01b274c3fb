//! Many requests at once: all succeed, and the model is loaded into the engine exactly once.

use nimbus_tests::{Nimbusd, deploy_classifier, image};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_requests_share_one_model_load() {
    let nimbusd = Nimbusd::start();
    let client = nimbusd.client();
    deploy_classifier(&client, "efficientnet", "onnxruntime", "classify-image").await;
    assert_eq!(
        nimbusd
            .metric("nimbus_model_loads_total{engine=\"onnxruntime\"}")
            .await,
        0.0,
        "deploying does not load the model"
    );

    let chelsea = image("chelsea.png");
    let requests = (0..50).map(|_| {
        let client = client.clone();
        let body = chelsea.clone();
        tokio::spawn(async move {
            client
                .invoke(
                    "default",
                    "classify-image",
                    "/",
                    http::Method::POST,
                    body,
                    &[],
                )
                .await
        })
    });
    let responses = futures::future::join_all(requests).await;
    for response in responses {
        let response = response.unwrap().unwrap();
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let answer: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(answer["top5"][0]["label"], "tiger cat");
    }
    assert_eq!(
        nimbusd
            .metric("nimbus_model_loads_total{engine=\"onnxruntime\"}")
            .await,
        1.0,
        "50 concurrent first requests load the model once"
    );
    assert_eq!(
        nimbusd
            .metric("nimbus_invocations_total{tenant=\"default\",function=\"classify-image\",status=\"200\"}")
            .await,
        50.0
    );
}
