//! Tenants, keys and isolation through the `nimbus` CLI, as a user drives it against a real
//! nimbusd: `tenant create|list`, `key create|list|revoke`, and tenant A's CLI reaching for
//! tenant B's functions, models and keys.

mod common;

use std::process::Command;

use common::{deploy_hello, deploy_hello_tagged, tenant};
use nimbus_tests::{Nimbusd, binary, model_file, repo_root};
use serde_json::Value;

/// What one `nimbus` run did.
struct Run {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|_| {
            panic!(
                "JSON on stdout, got {:?} (stderr: {})",
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }
}

/// Runs `nimbus args...` against `nimbusd` with `key`.
fn nimbus(nimbusd: &Nimbusd, key: &str, args: &[&str]) -> Run {
    let output = Command::new(binary("nimbus"))
        .args(args)
        .env("NIMBUS_URL", &nimbusd.url)
        .env("NIMBUS_API_KEY", key)
        .env_remove("NIMBUS_DATA_DIR")
        .current_dir(repo_root())
        .output()
        .expect("running nimbus");
    Run {
        ok: output.status.success(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts the run failed with HTTP `status` named on stderr.
fn failed_with(run: &Run, status: u16) {
    assert!(
        !run.ok,
        "expected a failure, got {}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(
        run.stderr.contains(&format!("HTTP {status}")),
        "stderr names HTTP {status}: {}",
        run.stderr
    );
}

#[test]
fn cli_tenant_create_prints_a_working_admin_key_once() {
    let nimbusd = Nimbusd::start();
    let run = nimbus(&nimbusd, &nimbusd.admin_key, &["tenant", "create", "alpha"]);
    assert!(run.ok, "{}", run.stderr);
    let created = run.json();
    assert_eq!(created["tenant"]["name"], "alpha");
    assert!(run.stderr.contains("only this once"), "{}", run.stderr);
    let key = created["admin_key"]["key"].as_str().unwrap().to_owned();

    let me = nimbus(&nimbusd, &key, &["whoami"]);
    assert!(me.ok, "{}", me.stderr);
    assert_eq!(me.json()["tenant"], "alpha");
    assert_eq!(me.json()["scopes"], serde_json::json!(["admin"]));

    let listed = nimbus(&nimbusd, &nimbusd.admin_key, &["tenant", "list"]);
    assert!(listed.ok, "{}", listed.stderr);
    let names: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["alpha", "default"]);

    let again = nimbus(&nimbusd, &nimbusd.admin_key, &["tenant", "create", "alpha"]);
    failed_with(&again, 409);
}

#[test]
fn cli_tenant_commands_need_the_bootstrap_admin() {
    let nimbusd = Nimbusd::start();
    let created = nimbus(&nimbusd, &nimbusd.admin_key, &["tenant", "create", "alpha"]).json();
    let alpha_admin = created["admin_key"]["key"].as_str().unwrap();
    failed_with(&nimbus(&nimbusd, alpha_admin, &["tenant", "list"]), 403);
    failed_with(
        &nimbus(&nimbusd, alpha_admin, &["tenant", "create", "gamma"]),
        403,
    );
    let listed = nimbus(&nimbusd, &nimbusd.admin_key, &["tenant", "list"]).json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "gamma was not created: {listed}"
    );
}

#[test]
fn cli_key_create_list_and_revoke() {
    let nimbusd = Nimbusd::start();
    let admin = &nimbusd.admin_key;
    let run = nimbus(
        &nimbusd,
        admin,
        &[
            "key",
            "create",
            "--scope",
            "invoke",
            "--scope",
            "deploy",
            "--expires-in",
            "3600",
        ],
    );
    assert!(run.ok, "{}", run.stderr);
    let created = run.json();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["key_id"].as_str().unwrap().to_owned();
    assert_eq!(created["scopes"], serde_json::json!(["deploy", "invoke"]));
    let expires = created["expires_at"].as_i64().unwrap() - created["created_at"].as_i64().unwrap();
    assert!((3600..=3601).contains(&expires), "{created}");
    assert!(nimbus(&nimbusd, &key, &["whoami"]).ok);

    let listed = nimbus(&nimbusd, admin, &["key", "list"]);
    assert!(listed.ok, "{}", listed.stderr);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        !text.contains(key.rsplit('_').next().unwrap()),
        "no secret in the listing"
    );
    let keys = listed.json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert_eq!(keys[0]["key_id"], id.as_str());
    assert_eq!(keys[0]["status"], "active");

    let revoked = nimbus(&nimbusd, admin, &["key", "revoke", &id]);
    assert!(revoked.ok, "{}", revoked.stderr);
    assert_eq!(revoked.json()["status"], "revoked");
    let refused = nimbus(&nimbusd, &key, &["whoami"]);
    failed_with(&refused, 401);
    assert!(refused.stderr.contains("revoked"), "{}", refused.stderr);
    let keys = nimbus(&nimbusd, admin, &["key", "list"]).json();
    assert_eq!(keys[0]["status"], "revoked");
}

#[test]
fn cli_key_create_defaults_to_an_invoke_key_that_cannot_deploy() {
    guest_wasm_hello();
    let nimbusd = Nimbusd::start();
    let created = nimbus(&nimbusd, &nimbusd.admin_key, &["key", "create"]).json();
    assert_eq!(created["scopes"], serde_json::json!(["invoke"]));
    assert_eq!(created["expires_at"], Value::Null);
    let key = created["key"].as_str().unwrap();
    failed_with(
        &nimbus(&nimbusd, key, &["deploy", "functions/hello", "--no-build"]),
        403,
    );
    failed_with(&nimbus(&nimbusd, key, &["key", "list"]), 403);
}

fn guest_wasm_hello() {
    nimbus_tests::guest_wasm("functions", "hello");
}

/// A nimbusd with tenants alpha and beta; beta has a private function `b-hello`, a model
/// `b-model` and an invoke key. Returns the admin keys.
async fn beta_has_things(nimbusd: &Nimbusd) -> (String, String, String) {
    let a = tenant(nimbusd, "alpha").await;
    let b = tenant(nimbusd, "beta").await;
    deploy_hello(&b.client, "b-hello", false).await;
    b.client
        .push_model(
            "b-model",
            &model_file("tiny_sklearn/digits_mlp.onnx"),
            "onnxruntime",
            "cpu",
        )
        .await
        .unwrap();
    let b_key = b
        .client
        .create_key(&["invoke".into()], None, None)
        .await
        .unwrap();
    (a.admin_key, b.admin_key, b_key.info.key_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_tenant_a_cannot_see_b_functions() {
    let nimbusd = Nimbusd::start();
    let (a_key, b_key, _) = beta_has_things(&nimbusd).await;
    let listed = nimbus(&nimbusd, &a_key, &["fn", "list"]);
    assert!(listed.ok, "{}", listed.stderr);
    assert_eq!(listed.json()["functions"], serde_json::json!([]));
    let b_listed = nimbus(&nimbusd, &b_key, &["fn", "list"]).json();
    assert_eq!(b_listed["functions"][0]["name"], "b-hello");
    let versions = nimbus(&nimbusd, &a_key, &["fn", "versions", "b-hello"]);
    failed_with(&versions, 404);
    assert!(!versions.stderr.contains("beta"), "{}", versions.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_tenant_a_cannot_invoke_b_function() {
    let nimbusd = Nimbusd::start();
    let (a_key, b_key, _) = beta_has_things(&nimbusd).await;
    let run = nimbus(&nimbusd, &a_key, &["invoke", "b-hello", "--tenant", "beta"]);
    failed_with(&run, 404);
    let missing = nimbus(&nimbusd, &a_key, &["invoke", "no-such", "--tenant", "beta"]);
    failed_with(&missing, 404);
    let b_json: Value = serde_json::from_slice(&run.stdout).unwrap();
    let missing_json: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(
        b_json["error"]["message"]
            .as_str()
            .unwrap()
            .replace("b-hello", "<name>"),
        missing_json["error"]["message"]
            .as_str()
            .unwrap()
            .replace("no-such", "<name>"),
        "B's function answers A as a missing one"
    );
    let own = nimbus(&nimbusd, &b_key, &["invoke", "b-hello"]);
    assert!(own.ok, "{}", own.stderr);
    assert_eq!(own.stdout, b"hello from nimbus");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_tenant_a_cannot_alias_roll_back_or_delete_b_function() {
    let nimbusd = Nimbusd::start();
    let a = tenant(&nimbusd, "alpha").await;
    let b = tenant(&nimbusd, "beta").await;
    let v1 = deploy_hello_tagged(&b.client, "b-hello", "1").await.version;
    let v2 = deploy_hello_tagged(&b.client, "b-hello", "2").await.version;
    let a_key = &a.admin_key;
    failed_with(
        &nimbus(&nimbusd, a_key, &["fn", "alias", "b-hello", "prod", &v1]),
        404,
    );
    failed_with(&nimbus(&nimbusd, a_key, &["fn", "aliases", "b-hello"]), 404);
    failed_with(
        &nimbus(&nimbusd, a_key, &["fn", "rollback", "b-hello"]),
        404,
    );
    failed_with(
        &nimbus(&nimbusd, a_key, &["fn", "delete", "b-hello", &v1]),
        404,
    );
    let aliases = nimbus(&nimbusd, &b.admin_key, &["fn", "aliases", "b-hello"]);
    assert!(aliases.ok, "{}", aliases.stderr);
    let aliases = aliases.json();
    assert_eq!(aliases["latest"], v2.as_str(), "{aliases}");
    assert!(aliases.get("prod").is_none(), "{aliases}");
    let versions = nimbus(&nimbusd, &b.admin_key, &["fn", "versions", "b-hello"]).json();
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_tenant_a_cannot_see_b_models() {
    let nimbusd = Nimbusd::start();
    let (a_key, b_key, _) = beta_has_things(&nimbusd).await;
    let listed = nimbus(&nimbusd, &a_key, &["model", "list"]);
    assert!(listed.ok, "{}", listed.stderr);
    assert_eq!(listed.json(), serde_json::json!([]));
    let b_listed = nimbus(&nimbusd, &b_key, &["model", "list"]).json();
    assert_eq!(b_listed[0]["name"], "b-model");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_tenant_a_cannot_list_revoke_or_create_b_keys() {
    let nimbusd = Nimbusd::start();
    let (a_key, b_key, b_key_id) = beta_has_things(&nimbusd).await;
    let a_listed = nimbus(&nimbusd, &a_key, &["key", "list"]).json();
    assert_eq!(
        a_listed.as_array().unwrap().len(),
        1,
        "only A's admin key: {a_listed}"
    );
    assert_eq!(a_listed[0]["tenant"], "alpha");
    failed_with(
        &nimbus(&nimbusd, &a_key, &["key", "list", "--tenant", "beta"]),
        403,
    );
    failed_with(
        &nimbus(&nimbusd, &a_key, &["key", "revoke", &b_key_id]),
        404,
    );
    failed_with(
        &nimbus(&nimbusd, &a_key, &["key", "create", "--tenant", "beta"]),
        403,
    );
    let b_listed = nimbus(&nimbusd, &b_key, &["key", "list"]).json();
    assert_eq!(
        b_listed.as_array().unwrap().len(),
        2,
        "B's keys are untouched"
    );
    assert!(
        b_listed
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["status"] == "active")
    );
}
