//! End-to-end flows of versions over time, shared by the suites that run them on SQLite
//! (tests/versions.rs) and on PostgreSQL (tests/postgres.rs): rollback restoring the previous
//! version's answers, aliases, deleting versions, concurrent deploys, and deploys killed half-way.
//!
//! The function `greeter` gets its versions from two guests that answer `GET /ok` differently:
//! `hello` ("hello from nimbus") and `misbehave` ("ok").

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use nimbus_client::{Client, FunctionVersion, Manifest};

use crate::{Nimbusd, NimbusdOptions, guest_wasm, manifest};

/// The function these flows deploy.
pub const FUNCTION: &str = "greeter";
/// What the `hello` guest answers on `/ok`.
pub const HELLO: &str = "hello from nimbus";
/// What the `misbehave` guest answers on `/ok`.
pub const MISBEHAVE: &str = "ok";

/// The `hello` guest.
pub fn hello_wasm() -> PathBuf {
    guest_wasm("functions", "hello")
}

/// The `misbehave` guest.
pub fn misbehave_wasm() -> PathBuf {
    guest_wasm("tests/guests", "misbehave")
}

/// A manifest for `greeter` (private), with `env` added.
pub fn greeter(env: &[(&str, &str)]) -> Manifest {
    let (mut manifest, _) = manifest("functions/hello");
    manifest.name = FUNCTION.to_owned();
    manifest.public = false;
    for (k, v) in env {
        manifest.env.insert((*k).to_owned(), (*v).to_owned());
    }
    manifest
}

/// `GET /fn/default/<function>/ok`: status and body.
pub async fn answer(client: &Client, function: &str) -> (u16, String) {
    let response = client
        .invoke(
            "default",
            function,
            "/ok",
            http::Method::GET,
            Vec::new(),
            &[],
        )
        .await
        .expect("invoking");
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

/// Deploys `hello` then `misbehave` as `greeter`, checks each answers, rolls `latest` back and
/// sees the first answers again; then aliases, deletion and garbage collection of the second
/// version's wasm (the node must run with `--blob-gc-grace-s 0`).
pub async fn rollback_restores_the_previous_answers(nimbusd: &Nimbusd) {
    let client = nimbusd.client();
    let v1 = client.deploy(&greeter(&[]), &hello_wasm()).await.unwrap();
    assert_eq!(answer(&client, FUNCTION).await, (200, HELLO.to_owned()));
    let v2 = client
        .deploy(&greeter(&[]), &misbehave_wasm())
        .await
        .unwrap();
    assert_ne!(v1.version, v2.version);
    assert_eq!(answer(&client, FUNCTION).await, (200, MISBEHAVE.to_owned()));

    let moved = client.rollback(FUNCTION, None).await.unwrap();
    assert_eq!(
        (moved.version.as_str(), moved.previous.as_deref()),
        (v1.version.as_str(), Some(v2.version.as_str()))
    );
    assert_eq!(answer(&client, FUNCTION).await, (200, HELLO.to_owned()));
    assert_eq!(
        answer(&client, &format!("{FUNCTION}@latest")).await,
        (200, HELLO.to_owned())
    );
    // The rolled-back version still answers by its version.
    let by_version = format!("{FUNCTION}@{}", v2.version);
    assert_eq!(
        answer(&client, &by_version).await,
        (200, MISBEHAVE.to_owned())
    );
    // Nothing before v1: 409.
    let err = client.rollback(FUNCTION, None).await.unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");

    // A named alias, moved and rolled back on its own.
    client
        .set_alias(FUNCTION, "prod", &v2.version)
        .await
        .unwrap();
    let prod = format!("{FUNCTION}@prod");
    assert_eq!(answer(&client, &prod).await, (200, MISBEHAVE.to_owned()));
    client
        .set_alias(FUNCTION, "prod", &v1.version)
        .await
        .unwrap();
    assert_eq!(answer(&client, &prod).await, (200, HELLO.to_owned()));
    client.rollback(FUNCTION, Some("prod")).await.unwrap();
    assert_eq!(answer(&client, &prod).await, (200, MISBEHAVE.to_owned()));
    let aliases = client.aliases(FUNCTION).await.unwrap();
    assert_eq!(aliases["latest"], v1.version);
    assert_eq!(aliases["prod"], v2.version);

    // v2 is in use by prod: refused. Moved off, it goes, and so does its wasm.
    let err = client
        .delete_version(FUNCTION, &v2.version)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("409") && err.to_string().contains("prod"),
        "{err}"
    );
    client
        .set_alias(FUNCTION, "prod", &v1.version)
        .await
        .unwrap();
    let deleted = client.delete_version(FUNCTION, &v2.version).await.unwrap();
    assert_eq!(deleted.collected_blobs, vec![v2.wasm_sha256.clone()]);
    assert_eq!(answer(&client, &by_version).await.0, 404);
    assert!(!client.blob_exists(&v2.wasm_sha256).await.unwrap());
    assert!(client.blob_exists(&v1.wasm_sha256).await.unwrap());
    assert_eq!(answer(&client, FUNCTION).await, (200, HELLO.to_owned()));
    let versions = client.function_versions(FUNCTION).await.unwrap();
    assert_eq!(versions.len(), 1);
}

/// `n` deploys of `greeter` at once, each with its own env: all recorded, each invocable by its
/// version, `latest` on one of them.
pub async fn concurrent_deploys_are_all_recorded(nimbusd: &Nimbusd, n: usize) {
    let client = nimbusd.client();
    let wasm = hello_wasm();
    // Upload once first, so that the deploys race on the registry, not on the upload.
    client.upload_blob_file(&wasm).await.unwrap();
    let deploys = (0..n).map(|i| {
        let client = client.clone();
        let wasm = wasm.clone();
        tokio::spawn(async move {
            let round = i.to_string();
            client.deploy(&greeter(&[("ROUND", &round)]), &wasm).await
        })
    });
    let mut deployed = BTreeSet::new();
    for result in futures::future::join_all(deploys).await {
        deployed.insert(result.unwrap().unwrap().version);
    }
    assert_eq!(deployed.len(), n);
    let listed: BTreeSet<String> = client
        .function_versions(FUNCTION)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(listed, deployed);
    for version in &deployed {
        let (status, body) = answer(&client, &format!("{FUNCTION}@{version}")).await;
        assert_eq!((status, body.as_str()), (200, HELLO));
    }
    let latest = client.aliases(FUNCTION).await.unwrap()["latest"].clone();
    assert!(deployed.contains(&latest));
}

/// Every version the function lists answers, and every alias points at a listed version: no
/// half-visible version. Returns the versions.
pub async fn only_complete_versions_are_visible(client: &Client) -> Vec<FunctionVersion> {
    let versions = client.function_versions(FUNCTION).await.unwrap();
    let listed: BTreeSet<&str> = versions.iter().map(|v| v.version.as_str()).collect();
    for (alias, version) in client.aliases(FUNCTION).await.unwrap() {
        assert!(
            listed.contains(version.as_str()),
            "alias {alias} -> {version}, not listed"
        );
    }
    for version in &versions {
        let (status, body) = answer(client, &format!("{FUNCTION}@{}", version.version)).await;
        assert_eq!((status, body.as_str()), (200, HELLO), "{}", version.version);
    }
    assert_eq!(answer(client, FUNCTION).await, (200, HELLO.to_owned()));
    versions
}

/// Kills nimbusd (SIGKILL) in the middle of a blob upload, restarts it on the same data dir
/// (and `options`), and checks that nothing of the upload is visible and deploys still work.
pub async fn a_deploy_killed_during_the_upload_leaves_no_version(options: NimbusdOptions) {
    let nimbusd = Nimbusd::start_with(options.clone());
    let client = nimbusd.client();
    client.deploy(&greeter(&[]), &hello_wasm()).await.unwrap();

    // A wasm of 4 MiB of which only half arrives before the kill.
    let mut wasm = std::fs::read(misbehave_wasm()).unwrap();
    wasm.resize(4 << 20, 0);
    let sha256 = sha256_hex(&wasm);
    let address = nimbusd.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "POST /v1/blobs HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nx-nimbus-sha256: {sha256}\r\n\
         Content-Length: {}\r\n\r\n",
        nimbusd.admin_key,
        wasm.len()
    )
    .unwrap();
    stream.write_all(&wasm[..wasm.len() / 2]).unwrap();
    stream.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin_key = nimbusd.admin_key.clone();
    let dir = nimbusd.stop();
    drop(stream);

    let nimbusd = Nimbusd::start_in(dir, options).unwrap();
    assert_eq!(nimbusd.admin_key, admin_key);
    let client = nimbusd.client();
    assert!(!client.blob_exists(&sha256).await.unwrap());
    let versions = only_complete_versions_are_visible(&client).await;
    assert_eq!(versions.len(), 1);
    // The same deploy, done fully after the restart, works.
    let v2 = client
        .deploy(&greeter(&[]), &misbehave_wasm())
        .await
        .unwrap();
    assert_eq!(answer(&client, FUNCTION).await, (200, MISBEHAVE.to_owned()));
    assert_eq!(
        client.function_versions(FUNCTION).await.unwrap()[0].version,
        v2.version
    );
}

/// Kills nimbusd (SIGKILL) at several moments after a `POST /v1/functions` was sent, restarting
/// it on the same data dir each time: every version that became visible is complete and answers.
pub async fn a_deploy_killed_during_post_functions_leaves_no_half_version(options: NimbusdOptions) {
    let mut nimbusd = Nimbusd::start_with(options.clone());
    let wasm = hello_wasm();
    nimbusd.client().deploy(&greeter(&[]), &wasm).await.unwrap();
    for (round, delay_ms) in [0u64, 1, 3, 6, 10, 20, 40].into_iter().enumerate() {
        let client = nimbusd.client();
        let round = round.to_string();
        let manifest = greeter(&[("ROUND", &round)]);
        let wasm = wasm.clone();
        let deploy = tokio::spawn(async move { client.deploy(&manifest, &wasm).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let dir = nimbusd.stop();
        let _ = deploy.await;
        nimbusd = Nimbusd::start_in(dir, options.clone()).unwrap();
        only_complete_versions_are_visible(&nimbusd.client()).await;
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
