//! Versions over time on the embedded defaults (SQLite): rollback restores the previous version's
//! answers, aliases and deletion over HTTP and the CLI, concurrent deploys, and deploys killed
//! half-way. tests/postgres.rs runs the same flows on PostgreSQL.

use std::process::Command;

use nimbus_tests::versions::{self, FUNCTION, HELLO, MISBEHAVE, answer, greeter};
use nimbus_tests::{Nimbusd, NimbusdOptions, binary, repo_root};
use serde_json::Value;

/// A node whose garbage collection spares nothing, so deletions show their effect at once.
fn no_gc_grace() -> NimbusdOptions {
    NimbusdOptions {
        args: vec!["--blob-gc-grace-s".into(), "0".into()],
        env: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_restores_the_previous_versions_answers() {
    let nimbusd = Nimbusd::start_with(no_gc_grace());
    versions::rollback_restores_the_previous_answers(&nimbusd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_deploys_of_one_function_are_all_recorded() {
    let nimbusd = Nimbusd::start();
    versions::concurrent_deploys_are_all_recorded(&nimbusd, 6).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_killed_during_the_upload_leaves_no_version() {
    versions::a_deploy_killed_during_the_upload_leaves_no_version(NimbusdOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_killed_during_post_functions_leaves_no_half_version() {
    versions::a_deploy_killed_during_post_functions_leaves_no_half_version(
        NimbusdOptions::default(),
    )
    .await;
}

fn nimbus(nimbusd: &Nimbusd, args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(binary("nimbus"))
        .args(args)
        .env("NIMBUS_URL", &nimbusd.url)
        .env("NIMBUS_API_KEY", &nimbusd.admin_key)
        .current_dir(repo_root())
        .output()
        .expect("running nimbus");
    let stdout = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (
        output.status.success(),
        stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_moves_aliases_rolls_back_and_deletes_versions() {
    let nimbusd = Nimbusd::start_with(no_gc_grace());
    let client = nimbusd.client();
    let v1 = client
        .deploy(&greeter(&[]), &versions::hello_wasm())
        .await
        .unwrap();
    let v2 = client
        .deploy(&greeter(&[]), &versions::misbehave_wasm())
        .await
        .unwrap();

    let (ok, out, err) = nimbus(&nimbusd, &["fn", "alias", FUNCTION, "prod", &v1.version]);
    assert!(ok, "fn alias: {err}");
    assert_eq!(out["version"], v1.version.as_str());
    assert_eq!(
        answer(&client, &format!("{FUNCTION}@prod")).await,
        (200, HELLO.to_owned())
    );

    let (ok, out, err) = nimbus(&nimbusd, &["fn", "aliases", FUNCTION]);
    assert!(ok, "fn aliases: {err}");
    assert_eq!(out["prod"], v1.version.as_str());
    assert_eq!(out["latest"], v2.version.as_str());

    assert_eq!(answer(&client, FUNCTION).await, (200, MISBEHAVE.to_owned()));
    let (ok, out, err) = nimbus(&nimbusd, &["fn", "rollback", FUNCTION]);
    assert!(ok, "fn rollback: {err}");
    assert_eq!(out["version"], v1.version.as_str());
    assert_eq!(answer(&client, FUNCTION).await, (200, HELLO.to_owned()));

    let (ok, _, err) = nimbus(&nimbusd, &["fn", "rollback", FUNCTION, "--alias", "prod"]);
    assert!(!ok, "nothing before prod's first version");
    assert!(err.contains("409"), "{err}");

    let (ok, _, err) = nimbus(&nimbusd, &["fn", "delete", FUNCTION, &v1.version]);
    assert!(!ok && err.contains("409"), "v1 is in use: {err}");
    let (ok, out, err) = nimbus(&nimbusd, &["fn", "delete", FUNCTION, &v2.version]);
    assert!(ok, "fn delete: {err}");
    assert_eq!(out["collected_blobs"][0], v2.wasm_sha256.as_str());
    assert_eq!(client.function_versions(FUNCTION).await.unwrap().len(), 1);
}
