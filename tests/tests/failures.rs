//! Requests that fail get a status and a JSON error, never a crash, and the server keeps serving.

use nimbus_tests::{Nimbusd, deploy_classifier, guest_wasm, image, manifest};
use serde_json::Value;

fn error_of(body: &[u8]) -> (String, String) {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("a JSON error body, got {}", String::from_utf8_lossy(body)));
    (
        value["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned(),
        value["error"]["message"]
            .as_str()
            .expect("error.message")
            .to_owned(),
    )
}

async fn still_classifies(nimbusd: &Nimbusd) {
    let response = nimbusd
        .client()
        .invoke(
            "default",
            "classify-image",
            "/",
            http::Method::POST,
            image("coffee.png"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let answer: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(answer["top5"][0]["label"], "espresso");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_function_is_404_and_server_keeps_serving() {
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
            "no-such-function",
            "/",
            http::Method::POST,
            vec![],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(response.status, 404);
    let (code, message) = error_of(&response.body);
    assert_eq!(code, "not_found");
    assert!(message.contains("no-such-function"), "{message}");
    still_classifies(&nimbusd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_image_body_is_400_and_server_keeps_serving() {
    let nimbusd = Nimbusd::start();
    deploy_classifier(
        &nimbusd.client(),
        "efficientnet",
        "onnxruntime",
        "classify-image",
    )
    .await;
    for body in [
        b"this is not an image".to_vec(),
        Vec::new(),
        image("chelsea.png")[..1000].to_vec(),
    ] {
        let response = nimbusd
            .client()
            .invoke(
                "default",
                "classify-image",
                "/",
                http::Method::POST,
                body,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            response.status,
            400,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let (code, message) = error_of(&response.body);
        assert_eq!(code, "bad_request");
        assert!(message.contains("PNG or JPEG"), "{message}");
    }
    still_classifies(&nimbusd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn trapping_guest_is_500_with_the_trap_and_server_keeps_serving() {
    let nimbusd = Nimbusd::start();
    let client = nimbusd.client();
    deploy_classifier(&client, "efficientnet", "onnxruntime", "classify-image").await;
    let (misbehave, _) = manifest("tests/guests/misbehave");
    client
        .deploy(&misbehave, &guest_wasm("tests/guests", "misbehave"))
        .await
        .unwrap();

    let response = client
        .invoke(
            "default",
            "misbehave",
            "/trap",
            http::Method::GET,
            vec![],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(response.status, 500);
    let value: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(value["error"]["code"], "guest_error");
    let message = value["error"]["message"].as_str().unwrap();
    assert!(message.contains("unreachable"), "trap message: {message}");
    let stderr = value["error"]["guest_stderr"].as_str().unwrap();
    assert!(
        stderr.contains("guest panicked on purpose"),
        "stderr: {stderr}"
    );

    still_classifies(&nimbusd).await;
    let ok = client
        .invoke(
            "default",
            "misbehave",
            "/ok",
            http::Method::GET,
            vec![],
            &[],
        )
        .await
        .unwrap();
    assert_eq!((ok.status, &ok.body[..]), (200, &b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn looping_guest_is_stopped_by_its_time_limit() {
    let nimbusd = Nimbusd::start();
    let client = nimbusd.client();
    let (misbehave, _) = manifest("tests/guests/misbehave");
    client
        .deploy(&misbehave, &guest_wasm("tests/guests", "misbehave"))
        .await
        .unwrap();
    let response = client
        .invoke(
            "default",
            "misbehave",
            "/loop",
            http::Method::GET,
            vec![],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(response.status, 504);
    assert_eq!(error_of(&response.body).0, "timeout");
    let ok = client
        .invoke(
            "default",
            "misbehave",
            "/ok",
            http::Method::GET,
            vec![],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn private_function_needs_a_valid_key() {
    let nimbusd = Nimbusd::start();
    deploy_classifier(
        &nimbusd.client(),
        "efficientnet",
        "onnxruntime",
        "classify-image",
    )
    .await;
    let anonymous = nimbusd
        .anonymous()
        .invoke(
            "default",
            "classify-image",
            "/",
            http::Method::POST,
            image("coffee.png"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(error_of(&anonymous.body).0, "unauthorized");

    let forged =
        nimbus_client::Client::new(&nimbusd.url, Some("nmb_aaaaaaaaaaaa_notthesecret".into()))
            .unwrap()
            .invoke(
                "default",
                "classify-image",
                "/",
                http::Method::POST,
                image("coffee.png"),
                &[],
            )
            .await
            .unwrap();
    assert_eq!(forged.status, 401);
    assert_eq!(error_of(&forged.body).0, "unauthorized");
    still_classifies(&nimbusd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_answer() {
    let nimbusd = Nimbusd::start();
    let (status, body) = nimbusd.anonymous().get("/healthz").await.unwrap();
    assert_eq!(
        (status, String::from_utf8_lossy(&body).contains("ok")),
        (200, true)
    );
    let (status, body) = nimbusd.anonymous().get("/readyz").await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let ready: Value = serde_json::from_slice(&body).unwrap();
    let engines = ready["engines"].as_array().unwrap();
    assert!(
        engines.iter().all(|e| e["available"] == true),
        "both engines are available: {ready}"
    );
}
