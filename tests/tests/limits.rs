//! Limits under misbehaviour and load: every bad guest gets its status and JSON error while other
//! functions keep answering; concurrency limits queue then refuse; compiled code survives a
//! restart; SIGTERM drains requests in flight.

use std::time::Duration;

use nimbus_client::Client;
use nimbus_tests::{Nimbusd, NimbusdOptions, guest_wasm, manifest};
use serde_json::Value;

async fn deploy_guests(client: &Client, concurrency: Option<u32>) {
    let (mut misbehave, _) = manifest("tests/guests/misbehave");
    misbehave.limits.concurrency = concurrency;
    client
        .deploy(&misbehave, &guest_wasm("tests/guests", "misbehave"))
        .await
        .expect("deploying misbehave");
    let (hello, _) = manifest("functions/hello");
    client
        .deploy(&hello, &guest_wasm("functions", "hello"))
        .await
        .expect("deploying hello");
}

async fn call(
    client: &Client,
    function: &str,
    path: &str,
) -> (u16, Value, nimbus_client::InvokeResponse) {
    let response = client
        .invoke("default", function, path, http::Method::GET, vec![], &[])
        .await
        .expect("invoking");
    let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, value, response)
}

/// Runs `path` of misbehave and, while it runs, a request to hello; returns the bad request's
/// answer after checking hello answered first.
async fn misbehave_beside_hello(nimbusd: &Nimbusd, path: &str) -> (u16, Value) {
    let client = nimbusd.client();
    let bad = {
        let client = client.clone();
        let path = path.to_owned();
        tokio::spawn(async move { call(&client, "misbehave", &path).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, response) = call(&client, "hello", "/").await;
    assert_eq!(
        (status, &response.body[..]),
        (200, &b"hello from nimbus"[..])
    );
    assert!(
        !bad.is_finished(),
        "{path} was still running while hello answered"
    );
    let (status, value, _) = bad.await.unwrap();
    (status, value)
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_504_while_others_are_served() {
    let nimbusd = Nimbusd::start();
    deploy_guests(&nimbusd.client(), None).await;
    let (status, value) = misbehave_beside_hello(&nimbusd, "/loop").await;
    assert_eq!(status, 504, "{value}");
    assert_eq!(value["error"]["code"], "timeout");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2000 ms"),
        "{value}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_is_500_naming_the_limit() {
    let nimbusd = Nimbusd::start();
    deploy_guests(&nimbusd.client(), None).await;
    let (status, value, _) = call(&nimbusd.client(), "misbehave", "/memory").await;
    assert_eq!(status, 500, "{value}");
    assert_eq!(value["error"]["code"], "guest_error");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory limit of 64 MiB"),
        "{value}"
    );
    let (status, _, _) = call(&nimbusd.client(), "hello", "/").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_is_500_and_others_are_served() {
    let nimbusd = Nimbusd::start();
    deploy_guests(&nimbusd.client(), None).await;
    let (status, value, _) = call(&nimbusd.client(), "misbehave", "/recurse").await;
    assert_eq!(status, 500, "{value}");
    assert_eq!(value["error"]["code"], "guest_error");
    let (status, _, _) = call(&nimbusd.client(), "hello", "/").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_output_is_refused_past_the_response_limit() {
    let nimbusd = Nimbusd::start_with(NimbusdOptions {
        args: vec!["--max-response-bytes".into(), (8 << 20).to_string()],
        ..Default::default()
    });
    deploy_guests(&nimbusd.client(), None).await;
    let (status, value, _) = call(&nimbusd.client(), "misbehave", "/huge-output").await;
    assert_eq!(status, 500, "{value}");
    assert_eq!(value["error"]["code"], "response_too_large");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("8388608"),
        "{value}"
    );
    let (status, _, _) = call(&nimbusd.client(), "hello", "/").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_limit_queues_then_refuses_with_retry_after() {
    let nimbusd = Nimbusd::start_with(NimbusdOptions {
        args: vec!["--max-queued-per-function".into(), "4".into()],
        ..Default::default()
    });
    let client = nimbusd.client();
    deploy_guests(&client, Some(2)).await;
    let requests = (0..20).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { call(&client, "misbehave", "/sleep?ms=300").await })
    });
    let mut ok = 0;
    let mut refused = 0;
    for result in futures::future::join_all(requests).await {
        let (status, value, response) = result.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert_eq!(value["error"]["code"], "too_many_requests");
                let retry_after: u64 = response.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry_after >= 1);
            }
            other => panic!("unexpected status {other}: {value}"),
        }
    }
    // Two run, four wait, fourteen are turned away.
    assert_eq!((ok, refused), (6, 14));
    let peak = nimbusd
        .metric_matching("nimbus_function_in_flight_max{tenant=\"default\",function=\"misbehave\"")
        .await;
    assert_eq!(peak, 2.0, "at most two instances ran at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_does_not_recompile() {
    let nimbusd = Nimbusd::start();
    deploy_guests(&nimbusd.client(), None).await;
    assert_eq!(
        nimbusd
            .metric("nimbus_function_loads_total{source=\"compiled\"}")
            .await,
        2.0
    );
    let data_dir = nimbusd.stop();

    let nimbusd = Nimbusd::start_in(data_dir, NimbusdOptions::default()).unwrap();
    let (status, _, _) = call(&nimbusd.client(), "hello", "/").await;
    assert_eq!(status, 200);
    assert_eq!(
        nimbusd
            .metric("nimbus_function_loads_total{source=\"compiled\"}")
            .await,
        0.0
    );
    assert_eq!(
        nimbusd
            .metric("nimbus_function_loads_total{source=\"code_cache\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_requests_in_flight() {
    let mut nimbusd = Nimbusd::start();
    let client = nimbusd.client();
    deploy_guests(&client, None).await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { call(&client, "misbehave", "/sleep?ms=1200").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &nimbusd.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (status, _, response) = slow.await.unwrap();
    assert_eq!((status, &response.body[..]), (200, &b"slept 1200 ms"[..]));
    let exit = tokio::task::block_in_place(|| nimbusd.wait_exit(Duration::from_secs(10)));
    assert!(
        exit.is_some_and(|s| s.success()),
        "nimbusd exits cleanly: {exit:?}"
    );
    assert!(
        client.get("/healthz").await.is_err(),
        "no new connections after shutdown"
    );
}
