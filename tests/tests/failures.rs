//! Requests that fail get a status and a JSON error, never a crash, and the server keeps serving.

mod common;

use nimbus_tests::{Nimbusd, NimbusdOptions, deploy_classifier, guest_wasm, image, manifest};
use serde_json::Value;

/// A nimbusd started with `options`, with classify-image deployed on EfficientNet (ONNX Runtime).
async fn classifier_node(options: NimbusdOptions) -> Nimbusd {
    let nimbusd = Nimbusd::start_with(options);
    deploy_classifier(
        &nimbusd.client(),
        "efficientnet",
        "onnxruntime",
        "classify-image",
    )
    .await;
    nimbusd
}

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
    let nimbusd = classifier_node(NimbusdOptions::default()).await;
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
    let nimbusd = classifier_node(NimbusdOptions::default()).await;
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
    let nimbusd = classifier_node(NimbusdOptions::default()).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_chunked_body_is_413_without_internals() {
    let nimbusd = classifier_node(NimbusdOptions {
        args: vec!["--max-request-bytes".into(), "1048576".into()],
        // What a developer's shell often has: it must not put backtraces in answers.
        env: vec![("RUST_BACKTRACE".into(), "1".into())],
    })
    .await;
    // 2 MiB in 64 KiB chunks, no Content-Length.
    let mut raw = format!(
        "POST /fn/default/classify-image HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        nimbusd.admin_key
    )
    .into_bytes();
    for _ in 0..32 {
        raw.extend_from_slice(b"10000\r\n");
        raw.extend_from_slice(&[0u8; 1 << 16]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = common::parse_response(&common::send_raw(&nimbusd.url, &raw).await, false);
    assert_eq!(answer.status, 413, "{}", answer.text());
    let (code, message) = error_of(&answer.body);
    assert_eq!(code, "payload_too_large");
    assert!(message.contains("1048576"), "{message}");
    assert!(!message.contains("acktrace"), "{message}");
    still_classifies(&nimbusd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_authorization_headers_are_401() {
    let nimbusd = Nimbusd::start();
    let raw = format!(
        "GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Authorization: Bearer nmb_aaaaaaaaaaaa_other\r\nConnection: close\r\n\r\n",
        nimbusd.admin_key
    );
    let answer =
        common::parse_response(&common::send_raw(&nimbusd.url, raw.as_bytes()).await, false);
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(error_of(&answer.body).0, "unauthorized");
    let whoami = nimbusd.client().whoami().await.unwrap();
    assert_eq!(whoami.tenant, "default");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let nimbusd = Nimbusd::start_with(NimbusdOptions {
        args: vec!["--header-read-timeout-ms".into(), "300".into()],
        env: vec![],
    });
    // No blank line after the headers: hyper waits for more until the timeout closes it.
    let answer = common::send_raw(&nimbusd.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("200 OK"), "{text}");
    let (status, _) = nimbusd.anonymous().get("/healthz").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_the_operators_admin_key() {
    let nimbusd = Nimbusd::start();
    let (status, body) = nimbusd.anonymous().get("/metrics").await.unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_of(&body).0, "unauthorized");

    let acme = nimbusd.client().create_tenant("acme").await.unwrap();
    let acme_admin = nimbus_client::Client::new(&nimbusd.url, Some(acme.admin_key.key)).unwrap();
    let (status, body) = acme_admin.get("/metrics").await.unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_of(&body).0, "forbidden");

    let (status, body) = nimbusd.client().get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("nimbus_invocations_total"));
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_past_the_nodes_maxima_are_refused_at_deploy() {
    let nimbusd = Nimbusd::start();
    let client = nimbusd.client();
    let (hello, _) = manifest("functions/hello");
    let wasm = guest_wasm("functions", "hello");
    let cases: [(&str, fn(&mut nimbus_client::Manifest)); 4] = [
        ("limits.memory_mb is 4294967295", |m| {
            m.limits.memory_mb = Some(u32::MAX)
        }),
        ("limits.memory_mb is 0", |m| m.limits.memory_mb = Some(0)),
        ("limits.timeout_ms is 18446744073709551615", |m| {
            m.limits.timeout_ms = Some(u64::MAX)
        }),
        ("limits.concurrency is 4294967295", |m| {
            m.limits.concurrency = Some(u32::MAX)
        }),
    ];
    for (expected, set) in cases {
        let mut manifest = hello.clone();
        set(&mut manifest);
        match client.deploy(&manifest, &wasm).await {
            Err(nimbus_client::ClientError::Http {
                status, message, ..
            }) => {
                assert_eq!(status, 400, "{message}");
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("{expected}: expected a 400, got {other:?}"),
        }
    }
    assert!(client.function_versions("hello").await.is_err());
    client.deploy(&hello, &wasm).await.unwrap();
}
