//! Tenant isolation: another tenant's names answer NotFound.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use nimbus_registry::{
    Limits, NewFunctionVersion, NewModelVersion, Registry, RegistryError, Scope,
};

struct World {
    _dir: tempfile::TempDir,
    registry: Registry,
    wasm: String,
    model_sha: String,
}

/// Tenant `a` has a blob, a model `resnet` and a function `hello`; tenant `b` is empty.
async fn world() -> World {
    let (dir, registry) = common::open().await;
    registry.create_tenant("a").await.unwrap();
    registry.create_tenant("b").await.unwrap();
    let wasm = common::upload(&registry, "a", b"\0asm of a").await.sha256;
    let model = common::push_model(&registry, "a", "resnet", b"model of a").await;
    registry
        .create_function_version("a", function("hello", &wasm, Some("resnet")))
        .await
        .unwrap();
    World {
        _dir: dir,
        registry,
        wasm,
        model_sha: model.sha256,
    }
}

fn function(name: &str, wasm: &str, model: Option<&str>) -> NewFunctionVersion {
    NewFunctionVersion {
        name: name.to_string(),
        wasm_sha256: wasm.to_string(),
        models: model
            .map(|m| BTreeMap::from([("net".to_string(), m.to_string())]))
            .unwrap_or_default(),
        env: BTreeMap::new(),
        limits: Limits::default(),
        public: false,
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, RegistryError>) {
    match result {
        Err(RegistryError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn tenant_b_cannot_resolve_or_list_tenant_a_functions() {
    let w = world().await;
    let r = &w.registry;
    assert_not_found(r.resolve_function("b", "hello", None).await);
    let version = r
        .resolve_function("a", "hello", None)
        .await
        .unwrap()
        .version;
    assert_not_found(r.resolve_function("b", "hello", Some(&version)).await);
    assert_not_found(r.function_versions("b", "hello").await);
    assert_not_found(r.aliases("b", "hello").await);
    assert_not_found(r.set_alias("b", "hello", "latest", &version).await);
    assert!(r.list_functions("b").await.unwrap().is_empty());
}

async fn tenant_b_cannot_resolve_list_or_bind_tenant_a_models() {
    let w = world().await;
    let r = &w.registry;
    assert_not_found(r.resolve_model("b", "resnet").await);
    assert_not_found(r.model_versions("b", "resnet").await);
    assert!(r.list_models("b").await.unwrap().is_empty());
    // Even with its own wasm, b cannot bind a's model.
    let own_wasm = common::upload(r, "b", b"\0asm of b").await.sha256;
    assert_not_found(
        r.create_function_version("b", function("hello", &own_wasm, Some("resnet")))
            .await,
    );
}

async fn tenant_b_cannot_probe_or_use_tenant_a_blobs() {
    let w = world().await;
    let r = &w.registry;
    assert_eq!(r.tenant_has_blob("b", &w.wasm).await.unwrap(), None);
    assert_eq!(r.tenant_has_blob("b", &w.model_sha).await.unwrap(), None);
    assert!(r.tenant_has_blob("a", &w.wasm).await.unwrap().is_some());
    assert_not_found(
        r.create_function_version("b", function("x", &w.wasm, None))
            .await,
    );
    assert_not_found(
        r.create_model_version(
            "b",
            NewModelVersion {
                name: "stolen".into(),
                sha256: w.model_sha.clone(),
                uri: None,
                engine: "onnxruntime".into(),
                target: "cpu".into(),
            },
        )
        .await,
    );
}

async fn tenant_b_cannot_list_or_revoke_tenant_a_keys() {
    let w = world().await;
    let r = &w.registry;
    let (info, key) = r.create_key("a", &[Scope::Admin], None).await.unwrap();
    assert!(r.list_keys("b").await.unwrap().is_empty());
    assert_not_found(r.revoke_key("b", &info.key_id).await);
    assert_eq!(r.authenticate(&key).await.unwrap().tenant, "a");
}

on_both_backends!(
    tenant_b_cannot_resolve_or_list_tenant_a_functions,
    tenant_b_cannot_resolve_list_or_bind_tenant_a_models,
    tenant_b_cannot_probe_or_use_tenant_a_blobs,
    tenant_b_cannot_list_or_revoke_tenant_a_keys,
);
