//! Tenants, API keys, isolation and rate limits over the HTTP API, against a real nimbusd.
//!
//! Two tenants, `alpha` (A) and `beta` (B), each created by the bootstrap admin with its own
//! admin key. Every isolation rule is checked as A reaching for B's things, and B's names must
//! answer A exactly as names that do not exist. "Never reached a guest" is read from
//! `nimbus_instances_started_total`.

mod common;

use std::time::{Duration, Instant};

use common::{
    Answer, SecondNode, bearer, call, deploy_hello, deploy_hello_tagged, guest_runs, key, tenant,
    with_key,
};
use nimbus_tests::{Nimbusd, NimbusdOptions, guest_wasm, manifest, model_file};
use serde_json::{Value, json};

/// A nimbusd with tenants `alpha` and `beta`.
async fn two_tenants(
    options: NimbusdOptions,
) -> (Nimbusd, common::TenantHandle, common::TenantHandle) {
    let nimbusd = Nimbusd::start_with(options);
    let a = tenant(&nimbusd, "alpha").await;
    let b = tenant(&nimbusd, "beta").await;
    (nimbusd, a, b)
}

fn options(args: &[&str]) -> NimbusdOptions {
    NimbusdOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

/// `message` with `name` replaced, to compare the answers for two different names.
fn masked(message: &str, name: &str) -> String {
    message.replace(name, "<name>")
}

async fn invoke(nimbusd: &Nimbusd, path: &str, authorization: Option<&str>) -> Answer {
    call(&nimbusd.url, "GET", path, authorization, None).await
}

// ---- tenants ----

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_admin_creates_a_tenant_with_a_working_admin_key() {
    let nimbusd = Nimbusd::start();
    let answer = call(
        &nimbusd.url,
        "POST",
        "/v1/tenants",
        Some(&bearer(&nimbusd.admin_key)),
        Some(&json!({"name": "alpha"})),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let created = answer.json();
    assert_eq!(created["tenant"]["name"], "alpha");
    assert_eq!(created["admin_key"]["tenant"], "alpha");
    assert_eq!(created["admin_key"]["scopes"], json!(["admin"]));
    let key = created["admin_key"]["key"].as_str().unwrap();
    let key_id = created["admin_key"]["key_id"].as_str().unwrap();
    assert!(key.starts_with(&format!("nmb_{key_id}_")), "{key}");

    let me = with_key(&nimbusd, key).whoami().await.unwrap();
    assert_eq!((me.tenant.as_str(), me.key_id.as_str()), ("alpha", key_id));
    assert_eq!(me.scopes, vec!["admin"]);

    let tenants = nimbusd.client().list_tenants().await.unwrap();
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "default"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_names_are_unique_and_follow_the_name_rule() {
    let nimbusd = Nimbusd::start();
    tenant(&nimbusd, "alpha").await;
    let again = nimbusd.client().create_tenant("alpha").await.unwrap_err();
    assert_eq!(
        (again.status(), again.code()),
        (Some(409), Some("conflict"))
    );
    for bad in ["Alpha", "-x", "a/b", ""] {
        let err = nimbusd.client().create_tenant(bad).await.unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (Some(400), Some("bad_request")),
            "{bad:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_admin_key_of_the_bootstrap_tenant_manages_tenants() {
    let (nimbusd, a, _b) = two_tenants(NimbusdOptions::default()).await;
    let default_deployer = key(&nimbusd.client(), &["deploy", "invoke"]).await;
    for (who, k) in [
        ("alpha admin", a.admin_key.as_str()),
        ("default deploy+invoke", &default_deployer),
    ] {
        let create = call(
            &nimbusd.url,
            "POST",
            "/v1/tenants",
            Some(&bearer(k)),
            Some(&json!({"name": "gamma"})),
        )
        .await;
        assert_eq!(
            (create.status, create.code()),
            (403, "forbidden".into()),
            "{who}"
        );
        let list = call(&nimbusd.url, "GET", "/v1/tenants", Some(&bearer(k)), None).await;
        assert_eq!(
            (list.status, list.code()),
            (403, "forbidden".into()),
            "{who}"
        );
    }
    let names: Vec<String> = nimbusd
        .client()
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        names,
        vec!["alpha", "beta", "default"],
        "gamma was not created"
    );
}

// ---- isolation: functions ----

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_list_b_functions() {
    let (_nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    deploy_hello(&b.client, "b-hello", false).await;
    deploy_hello(&a.client, "a-hello", false).await;
    let listed = a.client.list_functions().await.unwrap();
    let names: Vec<&str> = listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a-hello"]);
    let listed = b.client.list_functions().await.unwrap();
    assert_eq!(listed["functions"][0]["name"], "b-hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_reading_b_function_versions_gets_the_404_of_a_missing_function() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    deploy_hello(&b.client, "b-hello", false).await;
    let auth = bearer(&a.admin_key);
    let b_fn = call(
        &nimbusd.url,
        "GET",
        "/v1/functions/b-hello/versions",
        Some(&auth),
        None,
    )
    .await;
    let missing = call(
        &nimbusd.url,
        "GET",
        "/v1/functions/no-such/versions",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!((b_fn.status, b_fn.code()), (404, "not_found".into()));
    assert_eq!(missing.status, 404);
    assert_eq!(
        masked(&b_fn.message(), "b-hello"),
        masked(&missing.message(), "no-such")
    );
    assert!(
        !b_fn.text().contains("beta"),
        "no mention of B: {}",
        b_fn.text()
    );
    // B itself sees it.
    assert_eq!(
        b.client.function_versions("b-hello").await.unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_invoking_b_private_function_gets_the_404_of_a_missing_function() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    deploy_hello(&b.client, "b-hello", false).await;
    let auth = bearer(&a.admin_key);
    let b_fn = invoke(&nimbusd, "/fn/beta/b-hello", Some(&auth)).await;
    let missing = invoke(&nimbusd, "/fn/beta/no-such", Some(&auth)).await;
    assert_eq!((b_fn.status, b_fn.code()), (404, "not_found".into()));
    assert_eq!(missing.status, 404);
    assert_eq!(
        masked(&b_fn.message(), "b-hello"),
        masked(&missing.message(), "no-such")
    );
    assert_eq!(guest_runs(&nimbusd).await, 0.0, "B's guest never ran");
    // B's own key runs it.
    let own = invoke(&nimbusd, "/fn/beta/b-hello", Some(&bearer(&b.admin_key))).await;
    assert_eq!(
        (own.status, own.text().as_str()),
        (200, "hello from nimbus")
    );
    assert_eq!(guest_runs(&nimbusd).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_deploy_with_b_wasm_blob() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    let b_version = deploy_hello(&b.client, "b-hello", false).await;
    let sha = b_version.wasm_sha256.clone();
    assert!(
        !a.client.blob_exists(&sha).await.unwrap(),
        "A does not see B's blob"
    );
    assert!(b.client.blob_exists(&sha).await.unwrap());
    let auth = bearer(&a.admin_key);
    let deploy = |wasm: String| {
        let auth = auth.clone();
        let url = nimbusd.url.clone();
        async move {
            call(
                &url,
                "POST",
                "/v1/functions",
                Some(&auth),
                Some(&json!({"name": "stolen", "wasm_sha256": wasm})),
            )
            .await
        }
    };
    let with_b = deploy(sha.clone()).await;
    let with_missing = deploy("0".repeat(64)).await;
    assert_eq!((with_b.status, with_b.code()), (400, "bad_request".into()));
    assert_eq!(with_missing.status, 400);
    assert_eq!(
        masked(&with_b.message(), &sha),
        masked(&with_missing.message(), &"0".repeat(64))
    );
    assert_eq!(
        a.client.list_functions().await.unwrap()["functions"],
        json!([])
    );
}

/// B has `b-hello` in two versions (`latest` on the second); returns them, oldest first.
async fn b_has_two_versions(b: &common::TenantHandle) -> (String, String) {
    let v1 = deploy_hello_tagged(&b.client, "b-hello", "1").await.version;
    let v2 = deploy_hello_tagged(&b.client, "b-hello", "2").await.version;
    assert_ne!(v1, v2);
    (v1, v2)
}

/// Sends the same request for B's function and for a missing one, as A; both must be the same 404.
async fn same_404_as_missing(
    nimbusd: &Nimbusd,
    a: &common::TenantHandle,
    method: &str,
    path_of: impl Fn(&str) -> String,
    body: Option<Value>,
) {
    let auth = bearer(&a.admin_key);
    let b_fn = call(
        &nimbusd.url,
        method,
        &path_of("b-hello"),
        Some(&auth),
        body.as_ref(),
    )
    .await;
    let missing = call(
        &nimbusd.url,
        method,
        &path_of("no-such"),
        Some(&auth),
        body.as_ref(),
    )
    .await;
    assert_eq!(
        (b_fn.status, b_fn.code()),
        (404, "not_found".into()),
        "{method} {}: {}",
        path_of("b-hello"),
        b_fn.text()
    );
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(
        masked(&b_fn.message(), "b-hello"),
        masked(&missing.message(), "no-such")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_alias_or_list_the_aliases_of_b_function() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    let (v1, v2) = b_has_two_versions(&b).await;
    same_404_as_missing(
        &nimbusd,
        &a,
        "PUT",
        |name| format!("/v1/functions/{name}/aliases/prod"),
        Some(json!({ "version": v1 })),
    )
    .await;
    same_404_as_missing(
        &nimbusd,
        &a,
        "GET",
        |name| format!("/v1/functions/{name}/aliases"),
        None,
    )
    .await;
    let aliases = b.client.aliases("b-hello").await.unwrap();
    assert_eq!(aliases.get("latest"), Some(&v2));
    assert_eq!(aliases.get("prod"), None, "A did not create B's alias");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_roll_back_b_function() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    let (_v1, v2) = b_has_two_versions(&b).await;
    same_404_as_missing(
        &nimbusd,
        &a,
        "POST",
        |name| format!("/v1/functions/{name}/rollback"),
        Some(json!({ "alias": "latest" })),
    )
    .await;
    assert_eq!(
        b.client.aliases("b-hello").await.unwrap().get("latest"),
        Some(&v2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_delete_b_function_version() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    let (v1, _v2) = b_has_two_versions(&b).await;
    same_404_as_missing(
        &nimbusd,
        &a,
        "DELETE",
        |name| format!("/v1/functions/{name}/versions/{v1}"),
        None,
    )
    .await;
    assert_eq!(
        b.client.function_versions("b-hello").await.unwrap().len(),
        2
    );
    let old = invoke(
        &nimbusd,
        &format!("/fn/beta/b-hello@{v1}"),
        Some(&bearer(&b.admin_key)),
    )
    .await;
    assert_eq!(old.status, 200, "B's first version still runs");
}

// ---- isolation: models ----

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_list_or_read_b_models() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    let digits = model_file("tiny_sklearn/digits_mlp.onnx");
    b.client
        .push_model("b-model", &digits, "onnxruntime", "cpu")
        .await
        .unwrap();
    assert!(a.client.list_models().await.unwrap().is_empty());
    assert_eq!(b.client.list_models().await.unwrap()[0].name, "b-model");
    let auth = bearer(&a.admin_key);
    let b_model = call(&nimbusd.url, "GET", "/v1/models/b-model", Some(&auth), None).await;
    let missing = call(&nimbusd.url, "GET", "/v1/models/no-such", Some(&auth), None).await;
    assert_eq!((b_model.status, b_model.code()), (404, "not_found".into()));
    assert_eq!(
        masked(&b_model.message(), "b-model"),
        masked(&missing.message(), "no-such")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_bind_b_model_to_its_function() {
    let (_nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    let digits = model_file("tiny_sklearn/digits_mlp.onnx");
    b.client
        .push_model("b-model", &digits, "onnxruntime", "cpu")
        .await
        .unwrap();
    let (mut hello, _) = manifest("functions/hello");
    let wasm = guest_wasm("functions", "hello");
    let mut errors = Vec::new();
    for model in ["b-model", "no-such"] {
        hello.models.insert("m".into(), model.into());
        let err = a.client.deploy(&hello, &wasm).await.unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (Some(404), Some("not_found")),
            "{err}"
        );
        errors.push(masked(&err.to_string(), model));
    }
    assert_eq!(errors[0], errors[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_nn_load_by_name_of_b_model_is_not_found_for_a_function_of_a() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    let digits = model_file("tiny_sklearn/digits_mlp.onnx");
    // B has a model and a function that binds it under a guest-visible name.
    b.client
        .push_model("b-secret", &digits, "onnxruntime", "cpu")
        .await
        .unwrap();
    let (mut b_fn, _) = manifest("tests/guests/nn-adversary");
    b_fn.models.clear();
    b_fn.models.insert("b-bound".into(), "b-secret".into());
    let adversary = guest_wasm("tests/guests", "nn-adversary");
    b.client.deploy(&b_fn, &adversary).await.unwrap();
    // A has its own model bound as `mine`, and no model named like any of B's.
    a.client
        .push_model("a-model", &digits, "onnxruntime", "cpu")
        .await
        .unwrap();
    let (mut a_fn, _) = manifest("tests/guests/nn-adversary");
    a_fn.models.clear();
    a_fn.models.insert("mine".into(), "a-model".into());
    a.client.deploy(&a_fn, &adversary).await.unwrap();

    let auth = bearer(&a.admin_key);
    let load = |name: &'static str| {
        let auth = auth.clone();
        let url = nimbusd.url.clone();
        async move {
            let answer = call(
                &url,
                "GET",
                &format!("/fn/alpha/nn-adversary/load?name={name}"),
                Some(&auth),
                None,
            )
            .await;
            assert_eq!(answer.status, 200, "{name}: {}", answer.text());
            answer.json()
        }
    };
    assert_eq!(
        load("mine").await["ok"]["loaded"],
        "mine",
        "the route loads bound models"
    );
    for name in ["b-secret", "b-bound", "b-secret@latest"] {
        let answer = load(name).await;
        assert_eq!(answer["error"]["code"], "not-found", "{name}: {answer}");
        assert!(answer["ok"].is_null(), "{name}: {answer}");
    }
    // B's function does load it: the model is there, only not for A.
    let b_load = call(
        &nimbusd.url,
        "GET",
        "/fn/beta/nn-adversary/load?name=b-bound",
        Some(&bearer(&b.admin_key)),
        None,
    )
    .await;
    assert_eq!(b_load.json()["ok"]["loaded"], "b-bound");
}

// ---- isolation: keys ----

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_list_or_revoke_b_keys() {
    let (nimbusd, a, b) = two_tenants(NimbusdOptions::default()).await;
    let b_invoke = key(&b.client, &["invoke"]).await;
    let b_id = b.client.list_keys(None).await.unwrap()[0].key_id.clone();
    let a_ids: Vec<String> = a
        .client
        .list_keys(None)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(a_ids.len(), 1, "A sees only its own admin key: {a_ids:?}");
    assert!(!a_ids.contains(&b_id));

    let auth = bearer(&a.admin_key);
    let revoke_b = call(
        &nimbusd.url,
        "DELETE",
        &format!("/v1/keys/{b_id}"),
        Some(&auth),
        None,
    )
    .await;
    let revoke_missing = call(
        &nimbusd.url,
        "DELETE",
        "/v1/keys/zzzzzzzzzzzz",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(
        (revoke_b.status, revoke_b.code()),
        (404, "not_found".into())
    );
    assert_eq!(
        masked(&revoke_b.message(), &b_id),
        masked(&revoke_missing.message(), "zzzzzzzzzzzz")
    );
    let list_b = call(
        &nimbusd.url,
        "GET",
        "/v1/keys?tenant=beta",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!((list_b.status, list_b.code()), (403, "forbidden".into()));
    let create_in_b = call(
        &nimbusd.url,
        "POST",
        "/v1/keys",
        Some(&auth),
        Some(&json!({"scopes": ["admin"], "tenant": "beta"})),
    )
    .await;
    assert_eq!(
        (create_in_b.status, create_in_b.code()),
        (403, "forbidden".into())
    );

    assert_eq!(
        with_key(&nimbusd, &b_invoke).whoami().await.unwrap().tenant,
        "beta"
    );
    assert_eq!(
        b.client.list_keys(None).await.unwrap().len(),
        2,
        "B's keys are untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_admin_manages_the_keys_of_another_tenant() {
    let (nimbusd, _a, b) = two_tenants(NimbusdOptions::default()).await;
    let admin = nimbusd.client();
    let created = admin
        .create_key(&["invoke".into()], None, Some("beta"))
        .await
        .unwrap();
    assert_eq!(created.info.tenant, "beta");
    assert_eq!(
        with_key(&nimbusd, &created.key)
            .whoami()
            .await
            .unwrap()
            .tenant,
        "beta"
    );
    let listed = admin.list_keys(Some("beta")).await.unwrap();
    assert!(listed.iter().any(|k| k.key_id == created.info.key_id));
    assert_eq!(listed.len(), b.client.list_keys(None).await.unwrap().len());
    let revoked = admin
        .revoke_key(&created.info.key_id, Some("beta"))
        .await
        .unwrap();
    assert_eq!(revoked.status, "revoked");
    let err = with_key(&nimbusd, &created.key).whoami().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let missing = admin.list_keys(Some("no-such")).await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
}

// ---- keys that must not get in ----

/// A nimbusd with tenant `alpha`, a private `hello` in it and its admin key.
async fn private_hello() -> (Nimbusd, common::TenantHandle) {
    let nimbusd = Nimbusd::start();
    let a = tenant(&nimbusd, "alpha").await;
    deploy_hello(&a.client, "hello", false).await;
    (nimbusd, a)
}

/// Asserts a 401 with a JSON `unauthorized` error whose message contains `says`, and that no
/// guest ran; then that the right key does run it (so the counter would have moved).
async fn refused(nimbusd: &Nimbusd, a: &common::TenantHandle, answer: Answer, says: &str) {
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(answer.code(), "unauthorized");
    assert!(
        answer.message().contains(says),
        "{:?} should say {says:?}",
        answer.message()
    );
    assert_eq!(guest_runs(nimbusd).await, 0.0, "the guest never ran");
    let ok = invoke(nimbusd, "/fn/alpha/hello", Some(&bearer(&a.admin_key))).await;
    assert_eq!(ok.status, 200);
    assert_eq!(guest_runs(nimbusd).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_key_is_401_and_never_reaches_the_guest() {
    let (nimbusd, a) = private_hello().await;
    let answer = invoke(&nimbusd, "/fn/alpha/hello", None).await;
    refused(&nimbusd, &a, answer, "missing API key").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_key_is_401_and_never_reaches_the_guest() {
    let (nimbusd, a) = private_hello().await;
    for value in [
        "Bearer not-a-key",
        "Basic YWxhZGRpbjpvcGVu",
        "Bearer nmb_short_x",
    ] {
        let answer = invoke(&nimbusd, "/fn/alpha/hello", Some(value)).await;
        assert_eq!(
            (answer.status, answer.code()),
            (401, "unauthorized".into()),
            "{value}"
        );
        assert!(
            answer.message().contains("malformed"),
            "{value}: {}",
            answer.message()
        );
    }
    let answer = invoke(&nimbusd, "/fn/alpha/hello", Some("Bearer nmb_")).await;
    refused(&nimbusd, &a, answer, "malformed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_key_is_401_and_never_reaches_the_guest() {
    let (nimbusd, a) = private_hello().await;
    let invented = format!("nmb_aaaaaaaaaaaa_{}", "b".repeat(64));
    let answer = invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&invented))).await;
    assert_eq!(
        (answer.status, answer.message()),
        (401, "unknown API key".into())
    );
    // A real id with a wrong secret is just as unknown.
    let real_id = a.admin_key.split('_').nth(1).unwrap();
    let forged = format!("nmb_{real_id}_{}", "c".repeat(64));
    let answer = invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&forged))).await;
    refused(&nimbusd, &a, answer, "unknown API key").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_key_is_401_at_once_and_never_reaches_the_guest() {
    let (nimbusd, a) = private_hello().await;
    let k = key(&a.client, &["invoke"]).await;
    // Used once, so this node has it cached when it is revoked.
    assert_eq!(
        with_key(&nimbusd, &k).whoami().await.unwrap().tenant,
        "alpha"
    );
    let id = k.split('_').nth(1).unwrap();
    let revoked = a.client.revoke_key(id, None).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let answer = invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&k))).await;
    refused(&nimbusd, &a, answer, "revoked").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_key_is_401_and_never_reaches_the_guest() {
    let (nimbusd, a) = private_hello().await;
    let created = a
        .client
        .create_key(&["invoke".into()], Some(2), None)
        .await
        .unwrap();
    assert_eq!(
        with_key(&nimbusd, &created.key)
            .whoami()
            .await
            .unwrap()
            .tenant,
        "alpha"
    );
    let expires_at = created.info.expires_at.expect("an expiry");
    assert!(
        (2..=3).contains(&(expires_at - created.info.created_at)),
        "{:?}",
        created.info
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let answer = invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&created.key))).await;
    refused(&nimbusd, &a, answer, "expired").await;
    let listed = a.client.list_keys(None).await.unwrap();
    let status = listed
        .iter()
        .find(|k| k.key_id == created.info.key_id)
        .unwrap()
        .status
        .clone();
    assert_eq!(status, "expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_only_key_is_403_on_invoke_and_never_reaches_the_guest() {
    let (nimbusd, a) = private_hello().await;
    let deployer = key(&a.client, &["deploy"]).await;
    let answer = invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&deployer))).await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "forbidden".into()),
        "{}",
        answer.text()
    );
    assert!(answer.message().contains("invoke"), "{}", answer.message());
    assert_eq!(guest_runs(&nimbusd).await, 0.0);
    // It can deploy, and read.
    deploy_hello(&with_key(&nimbusd, &deployer), "hello2", false).await;
    assert_eq!(
        with_key(&nimbusd, &deployer)
            .function_versions("hello2")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_only_key_is_403_on_deploy_and_on_key_management() {
    let (nimbusd, a) = private_hello().await;
    let invoker = key(&a.client, &["invoke"]).await;
    let auth = bearer(&invoker);
    let checks: [(&str, &str, Option<Value>); 5] = [
        (
            "POST",
            "/v1/functions",
            Some(json!({"name": "x", "wasm_sha256": "0".repeat(64)})),
        ),
        (
            "POST",
            "/v1/models",
            Some(json!({"name": "m", "sha256": "0".repeat(64), "engine": "onnxruntime"})),
        ),
        ("POST", "/v1/keys", Some(json!({"scopes": ["admin"]}))),
        ("GET", "/v1/keys", None),
        (
            "DELETE",
            &format!("/v1/keys/{}", a.admin_key.split('_').nth(1).unwrap()),
            None,
        ),
    ];
    for (method, path, body) in checks {
        let answer = call(&nimbusd.url, method, path, Some(&auth), body.as_ref()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (403, "forbidden".into()),
            "{method} {path}"
        );
    }
    // The admin key is still there, and the invoke key does invoke.
    assert_eq!(a.client.whoami().await.unwrap().tenant, "alpha");
    let ok = invoke(&nimbusd, "/fn/alpha/hello", Some(&auth)).await;
    assert_eq!((ok.status, guest_runs(&nimbusd).await), (200, 1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn key_creation_refuses_bad_scopes_and_expiries() {
    let (nimbusd, a) = private_hello().await;
    let auth = bearer(&a.admin_key);
    for body in [
        json!({"scopes": ["root"]}),
        json!({"scopes": []}),
        json!({"scopes": ["invoke"], "expires_in_s": 0}),
        json!({"scopes": ["invoke"], "expires_in_s": -5}),
        json!({"scopes": ["invoke"], "colour": "red"}),
    ] {
        let answer = call(&nimbusd.url, "POST", "/v1/keys", Some(&auth), Some(&body)).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "bad_request".into()),
            "{body}"
        );
    }
    // No scopes given: an invoke key.
    let answer = call(
        &nimbusd.url,
        "POST",
        "/v1/keys",
        Some(&auth),
        Some(&json!({})),
    )
    .await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.json()["scopes"], json!(["invoke"]));
    assert_eq!(a.client.list_keys(None).await.unwrap().len(), 2);
}

// ---- secrets ----

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_key_secret_is_nowhere_in_the_data_dir_or_the_log() {
    let (nimbusd, a, _b) = two_tenants(NimbusdOptions::default()).await;
    let created = a
        .client
        .create_key(&["invoke".into()], Some(3600), None)
        .await
        .unwrap();
    let k = created.key.clone();
    // Use them, fail with a wrong secret, revoke: every path that touches a key.
    deploy_hello(&a.client, "hello", false).await;
    assert_eq!(
        invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&k)))
            .await
            .status,
        200
    );
    let id = &created.info.key_id;
    let wrong = format!("nmb_{id}_{}", "d".repeat(64));
    assert_eq!(
        invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&wrong)))
            .await
            .status,
        401
    );
    a.client.revoke_key(id, None).await.unwrap();
    assert_eq!(
        invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&k)))
            .await
            .status,
        401
    );

    let secrets = [
        k.clone(),
        k.rsplit('_').next().unwrap().to_owned(),
        a.admin_key.clone(),
        a.admin_key.rsplit('_').next().unwrap().to_owned(),
    ];
    let mut id_seen = false;
    let all = files(nimbusd.data_dir.path());
    assert!(all.len() > 3, "the data dir has files: {all:?}");
    for path in &all {
        let bytes = std::fs::read(path).unwrap();
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "a secret is in {}",
                path.display()
            );
        }
        id_seen |= contains(&bytes, id.as_bytes());
    }
    assert!(
        id_seen,
        "the key's id is stored somewhere, so the files scanned are the right ones"
    );
    let log = nimbusd.log();
    assert!(log.contains(id.as_str()), "the log names the key by id");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_keys_never_shows_a_secret() {
    let (nimbusd, a, _b) = two_tenants(NimbusdOptions::default()).await;
    let k = key(&a.client, &["deploy"]).await;
    let listed = call(
        &nimbusd.url,
        "GET",
        "/v1/keys",
        Some(&bearer(&a.admin_key)),
        None,
    )
    .await;
    assert_eq!(listed.status, 200);
    let text = listed.text();
    for secret in [&k, &a.admin_key] {
        assert!(!text.contains(secret.rsplit('_').next().unwrap()), "{text}");
    }
    let keys = listed.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        keys[0]["key_id"],
        k.split('_').nth(1).unwrap(),
        "newest first"
    );
    assert_eq!(keys[0]["scopes"], json!(["deploy"]));
    assert_eq!(keys[0]["status"], "active");
    assert!(keys.iter().all(|key| key.get("key").is_none()));
}

// ---- revocation across nodes ----

#[tokio::test(flavor = "multi_thread")]
async fn revocation_reaches_another_node_within_the_cache_ttl() {
    const TTL: u64 = 2;
    let ttl_arg = TTL.to_string();
    let nimbusd = Nimbusd::start_with(options(&["--auth-cache-ttl-s", &ttl_arg]));
    let log = nimbusd.data_dir.path().with_extension("node2.log");
    let node2 = SecondNode::start(
        nimbusd.data_dir.path(),
        &log,
        &["--auth-cache-ttl-s", &ttl_arg],
    );
    let k = key(&nimbusd.client(), &["invoke"]).await;
    let on_node2 =
        || async { call(&node2.url, "GET", "/v1/whoami", Some(&bearer(&k)), None).await };
    // Node 2 caches the key during this first call, so its copy expires no earlier than this
    // instant plus the TTL.
    let first_call = Instant::now();
    assert_eq!(
        on_node2().await.status,
        200,
        "a key created on node 1 works on node 2 at once"
    );

    let id = k.split('_').nth(1).unwrap();
    nimbusd.client().revoke_key(id, None).await.unwrap();
    let revoked_at = Instant::now();
    let here = call(&nimbusd.url, "GET", "/v1/whoami", Some(&bearer(&k)), None).await;
    assert_eq!(
        (here.status, here.message()),
        (401, "API key has been revoked".into())
    );

    let early_sent_at = first_call.elapsed();
    let early = on_node2().await;
    if early_sent_at < Duration::from_millis(TTL * 1000 - 500) {
        assert_eq!(
            early.status, 200,
            "node 2 trusts its cached copy until the TTL"
        );
    }
    loop {
        let answer = on_node2().await;
        if answer.status == 401 {
            assert_eq!(answer.message(), "API key has been revoked");
            break;
        }
        assert!(
            // The TTL, plus slack for one slow request on a loaded machine.
            revoked_at.elapsed() <= Duration::from_secs(TTL + 1),
            "node 2 still accepts the key {:?} after its revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- rate limits ----

fn retry_after(answer: &Answer) -> u64 {
    let header: u64 = answer
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!(header >= 1);
    assert_eq!(answer.json()["error"]["retry_after_s"], header);
    header
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_over_its_rate_gets_429_with_retry_after_while_the_other_tenant_is_unaffected() {
    // Burst 5 leaves room for the setup: each admin key makes at most 5 requests here.
    let (nimbusd, a, b) =
        two_tenants(options(&["--rate-per-key", "0.2", "--burst-per-key", "5"])).await;
    deploy_hello(&a.client, "hello", false).await;
    deploy_hello(&b.client, "hello", false).await;
    let admin = nimbusd.client();
    let new_key = |tenant: &'static str| {
        let admin = admin.clone();
        async move {
            let created = admin
                .create_key(&["invoke".into()], None, Some(tenant))
                .await
                .unwrap();
            bearer(&created.key)
        }
    };
    let a_key = new_key("alpha").await;
    let b_key = new_key("beta").await;
    for i in 0..5 {
        let answer = invoke(&nimbusd, "/fn/alpha/hello", Some(&a_key)).await;
        assert_eq!(answer.status, 200, "request {i} is within the burst");
    }
    let runs = guest_runs(&nimbusd).await;
    let over = invoke(&nimbusd, "/fn/alpha/hello", Some(&a_key)).await;
    let other = invoke(&nimbusd, "/fn/beta/hello", Some(&b_key)).await;
    assert_eq!(
        (over.status, over.code()),
        (429, "rate_limited".into()),
        "{}",
        over.text()
    );
    let wait = retry_after(&over);
    assert!(
        (4..=5).contains(&wait),
        "one request per 5 s: retry after {wait}"
    );
    assert!(over.message().contains("key"), "{}", over.message());
    assert_eq!(
        (other.status, other.text().as_str()),
        (200, "hello from nimbus")
    );
    assert_eq!(
        guest_runs(&nimbusd).await,
        runs + 1.0,
        "only B's request reached a guest"
    );
    // Another key of the same tenant has its own bucket.
    let a_other = new_key("alpha").await;
    assert_eq!(
        invoke(&nimbusd, "/fn/alpha/hello", Some(&a_other))
            .await
            .status,
        200
    );
    assert_eq!(
        nimbusd
            .metric("nimbus_rate_limited_total{limit=\"key\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_rate_gets_429_on_all_its_keys_while_the_other_tenant_is_unaffected() {
    let (nimbusd, a, b) = two_tenants(options(&[
        "--rate-per-tenant",
        "0.05",
        "--burst-per-tenant",
        "12",
    ]))
    .await;
    let a_keys = [
        key(&a.client, &["invoke"]).await,
        key(&a.client, &["invoke"]).await,
    ];
    let b_key = bearer(&key(&b.client, &["invoke"]).await);
    let mut limited = None;
    for i in 0..20 {
        let answer = call(
            &nimbusd.url,
            "GET",
            "/v1/whoami",
            Some(&bearer(&a_keys[i % 2])),
            None,
        )
        .await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 200);
    }
    let limited = limited.expect("tenant alpha ran into its limit within 20 requests");
    assert!(
        limited.message().contains("tenant"),
        "{}",
        limited.message()
    );
    assert!(retry_after(&limited) >= 19, "one request per 20 s");
    for k in &a_keys {
        let answer = call(&nimbusd.url, "GET", "/v1/whoami", Some(&bearer(k)), None).await;
        assert_eq!(answer.status, 429, "every key of alpha is limited");
    }
    let other = call(&nimbusd.url, "GET", "/v1/whoami", Some(&b_key), None).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.json()["tenant"], "beta");
}

#[tokio::test(flavor = "multi_thread")]
async fn public_calls_without_a_key_are_limited_per_tenant() {
    let (nimbusd, a, b) = two_tenants(options(&[
        "--rate-per-tenant",
        "0.05",
        "--burst-per-tenant",
        "10",
    ]))
    .await;
    deploy_hello(&a.client, "hello", true).await;
    deploy_hello(&b.client, "hello", true).await;
    for i in 0..10 {
        let answer = invoke(&nimbusd, "/fn/alpha/hello", None).await;
        assert_eq!(answer.status, 200, "anonymous call {i} is within the burst");
    }
    let runs = guest_runs(&nimbusd).await;
    let over = invoke(&nimbusd, "/fn/alpha/hello", None).await;
    assert_eq!((over.status, over.code()), (429, "rate_limited".into()));
    assert!(retry_after(&over) >= 19);
    assert!(over.message().contains("public"), "{}", over.message());
    assert_eq!(
        guest_runs(&nimbusd).await,
        runs,
        "the refused call never reached the guest"
    );
    // Beta's public function, and alpha's own keyed traffic, are unaffected.
    assert_eq!(invoke(&nimbusd, "/fn/beta/hello", None).await.status, 200);
    let keyed = invoke(&nimbusd, "/fn/alpha/hello", Some(&bearer(&a.admin_key))).await;
    assert_eq!(keyed.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_failed_authentication_from_one_address_is_answered_429_before_the_registry() {
    let nimbusd = Nimbusd::start_with(options(&[
        "--auth-failures-per-ip",
        "3",
        "--auth-failure-window-s",
        "60",
        "--auth-cache-ttl-s",
        "600",
    ]));
    let admin = bearer(&nimbusd.admin_key);
    // A valid key this node has not looked up yet (creating it used only the admin key).
    let fresh = bearer(&key(&nimbusd.client(), &["invoke"]).await);
    let invented = bearer(&format!("nmb_aaaaaaaaaaaa_{}", "b".repeat(64)));
    for i in 0..3 {
        let answer = call(&nimbusd.url, "GET", "/v1/whoami", Some(&invented), None).await;
        assert_eq!(answer.status, 401, "failure {i} is answered normally");
    }
    let blocked = call(&nimbusd.url, "GET", "/v1/whoami", Some(&invented), None).await;
    assert_eq!(
        (blocked.status, blocked.code()),
        (429, "rate_limited".into())
    );
    let wait = retry_after(&blocked);
    assert!(
        (19..=20).contains(&wait),
        "3 failures per 60 s: one more try per 20 s, got {wait}"
    );
    // The registry is not asked even for a good key it has not cached...
    let fresh_answer = call(&nimbusd.url, "GET", "/v1/whoami", Some(&fresh), None).await;
    assert_eq!(fresh_answer.status, 429);
    // ...but a key already cached on this node that checks out still gets in.
    let admin_answer = call(&nimbusd.url, "GET", "/v1/whoami", Some(&admin), None).await;
    assert_eq!(admin_answer.status, 200);
    // Requests without a key are not authentication failures.
    assert_eq!(
        call(&nimbusd.url, "GET", "/healthz", None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        nimbusd
            .metric("nimbus_auth_failures_total{reason=\"unknown\"}")
            .await,
        3.0
    );
    assert_eq!(
        nimbusd
            .metric("nimbus_rate_limited_total{limit=\"auth_failures\"}")
            .await,
        2.0
    );
}
