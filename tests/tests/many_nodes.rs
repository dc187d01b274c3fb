//! Many nodes: two nimbusd processes on one PostgreSQL database and one S3 bucket (SeaweedFS
//! behind a counting proxy), each with a data dir of its own, as two machines behind a load
//! balancer would be. What one node writes, the other serves: functions, alias moves, deletions
//! (and the garbage collection of their blobs in the bucket), models.

use nimbus_tests::postgres::{database, node_options};
use nimbus_tests::s3::{CountingProxy, SeaweedFs, blob_key, nimbusd_options};
use nimbus_tests::versions::{self, FUNCTION, HELLO, MISBEHAVE, answer, greeter};
use nimbus_tests::{Nimbusd, NimbusdOptions, deploy_classifier, image};
use serde_json::Value;

/// Options for a node on `database_url` and the S3 at `endpoint`, sharing the admin key.
fn node(database_url: &str, endpoint: &str, admin_key: &str) -> NimbusdOptions {
    let mut options = nimbusd_options(endpoint, &["--blob-gc-grace-s", "0"]);
    options.args.extend(node_options(database_url).args);
    options
        .env
        .push(("NIMBUS_ADMIN_KEY".into(), admin_key.to_owned()));
    options
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_one_postgres_and_one_s3_serve_what_the_other_wrote() {
    let seaweed = SeaweedFs::start();
    let proxy = CountingProxy::start(&seaweed.endpoint());
    let url = database();
    let admin_key = format!("nmb_twonodes0001_{}", "Ab3".repeat(12));
    let one = Nimbusd::start_with(node(&url, &proxy.url(), &admin_key));
    let two = Nimbusd::start_with(node(&url, &proxy.url(), &admin_key));
    let (c1, c2) = (one.client(), two.client());
    assert_eq!(c2.whoami().await.unwrap().tenant, "default");

    // Deploy through node 1, invoke through node 2.
    let v1 = c1
        .deploy(&greeter(&[]), &versions::hello_wasm())
        .await
        .unwrap();
    assert_eq!(answer(&c2, FUNCTION).await, (200, HELLO.to_owned()));
    let v2 = c1
        .deploy(&greeter(&[]), &versions::misbehave_wasm())
        .await
        .unwrap();
    assert_eq!(answer(&c2, FUNCTION).await, (200, MISBEHAVE.to_owned()));

    // Move an alias through node 2: node 1 follows on its next request.
    let prod = format!("{FUNCTION}@prod");
    c2.set_alias(FUNCTION, "prod", &v1.version).await.unwrap();
    assert_eq!(answer(&c1, &prod).await, (200, HELLO.to_owned()));
    c2.set_alias(FUNCTION, "prod", &v2.version).await.unwrap();
    assert_eq!(answer(&c1, &prod).await, (200, MISBEHAVE.to_owned()));
    c2.rollback(FUNCTION, None).await.unwrap();
    assert_eq!(answer(&c1, FUNCTION).await, (200, HELLO.to_owned()));
    assert_eq!(answer(&c2, FUNCTION).await, (200, HELLO.to_owned()));

    // Delete v2 through node 1: gone on node 2 at once, and its wasm gone from the bucket.
    c1.set_alias(FUNCTION, "prod", &v1.version).await.unwrap();
    let deleted = c1.delete_version(FUNCTION, &v2.version).await.unwrap();
    assert_eq!(deleted.collected_blobs, vec![v2.wasm_sha256.clone()]);
    assert_eq!(
        answer(&c2, &format!("{FUNCTION}@{}", v2.version)).await.0,
        404
    );
    assert_eq!(seaweed.size(&blob_key(&v2.wasm_sha256)), None);
    assert!(seaweed.size(&blob_key(&v1.wasm_sha256)).is_some());
    assert_eq!(answer(&c2, &prod).await, (200, HELLO.to_owned()));

    // A model pushed through node 1 serves on node 2 after one GET of it from S3.
    deploy_classifier(&c1, "efficientnet", "onnxruntime", "classify-image").await;
    let model = c1.list_models().await.unwrap().remove(0);
    assert_eq!(
        proxy.gets(&blob_key(&model.sha256)),
        0,
        "pushing uploads, it does not GET"
    );
    for _ in 0..3 {
        let response = c2
            .invoke(
                "default",
                "classify-image",
                "/",
                http::Method::POST,
                image("chelsea.png"),
                &[],
            )
            .await
            .unwrap();
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
        proxy.gets(&blob_key(&model.sha256)),
        1,
        "node 2 fetched the model once"
    );
}
