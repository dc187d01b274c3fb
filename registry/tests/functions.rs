//! Function versions and aliases.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use nimbus_registry::{Limits, NewFunctionVersion, Registry, RegistryError};

async fn setup() -> (tempfile::TempDir, Registry, String) {
    let (dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let wasm = common::upload(&registry, "acme", b"\0asm fake component").await;
    (dir, registry, wasm.sha256)
}

fn deploy(name: &str, wasm: &str) -> NewFunctionVersion {
    NewFunctionVersion {
        name: name.to_string(),
        wasm_sha256: wasm.to_string(),
        models: BTreeMap::new(),
        env: BTreeMap::new(),
        limits: Limits::default(),
        public: false,
    }
}

async fn deploy_resolves_a_bare_model_name_to_its_newest_version() {
    let (_dir, registry, wasm) = setup().await;
    let v1 = common::push_model(&registry, "acme", "resnet", b"v1").await;
    let v2 = common::push_model(&registry, "acme", "resnet", b"v2").await;
    let mut new = deploy("classify", &wasm);
    new.models.insert("net".into(), "resnet".into());
    new.models
        .insert("old_net".into(), format!("resnet@{}", v1.version));
    let (function, created) = registry.create_function_version("acme", new).await.unwrap();
    assert!(created);
    assert_eq!(function.models["net"], v2.binding());
    assert_eq!(function.models["old_net"], v1.binding());

    let mut missing = deploy("classify", &wasm);
    missing.models.insert("net".into(), "bert".into());
    let err = registry
        .create_function_version("acme", missing)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
}

async fn deploy_is_content_addressed() {
    let (_dir, registry, wasm) = setup().await;
    let (first, created) = registry
        .create_function_version("acme", deploy("hello", &wasm))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.version.len(), 12);
    let (again, created) = registry
        .create_function_version("acme", deploy("hello", &wasm))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, first);

    let mut changed = deploy("hello", &wasm);
    changed.env.insert("GREETING".into(), "hi".into());
    let (second, created) = registry
        .create_function_version("acme", changed)
        .await
        .unwrap();
    assert!(created);
    assert_ne!(second.version, first.version);

    let mut limited = deploy("hello", &wasm);
    limited.limits.memory_mb = Some(64);
    let (third, _) = registry
        .create_function_version("acme", limited)
        .await
        .unwrap();
    assert_ne!(third.version, first.version);
    assert_ne!(third.version, second.version);

    // The name is not part of the content: another function with the same content has the
    // same version.
    let (other, _) = registry
        .create_function_version("acme", deploy("hello2", &wasm))
        .await
        .unwrap();
    assert_eq!(other.version, first.version);
}

async fn deploy_moves_latest_even_to_an_existing_version() {
    let (_dir, registry, wasm) = setup().await;
    let (a, _) = registry
        .create_function_version("acme", deploy("hello", &wasm))
        .await
        .unwrap();
    let mut new_b = deploy("hello", &wasm);
    new_b.public = true;
    let (b, _) = registry
        .create_function_version("acme", new_b)
        .await
        .unwrap();
    assert_eq!(
        registry
            .resolve_function("acme", "hello", None)
            .await
            .unwrap(),
        b
    );
    let listed = registry.list_functions("acme").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].latest, b);

    let (again, created) = registry
        .create_function_version("acme", deploy("hello", &wasm))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, a);
    assert_eq!(
        registry
            .resolve_function("acme", "hello", None)
            .await
            .unwrap(),
        a
    );
    let versions = registry.function_versions("acme", "hello").await.unwrap();
    assert_eq!(versions, vec![b, a]);
}

async fn resolve_function_by_version_and_by_latest() {
    let (_dir, registry, wasm) = setup().await;
    let (a, _) = registry
        .create_function_version("acme", deploy("hello", &wasm))
        .await
        .unwrap();
    let mut new_b = deploy("hello", &wasm);
    new_b.env.insert("MODE".into(), "b".into());
    let (b, _) = registry
        .create_function_version("acme", new_b)
        .await
        .unwrap();

    let by_version = registry
        .resolve_function("acme", "hello", Some(&a.version))
        .await
        .unwrap();
    assert_eq!(by_version, a);
    let latest = registry
        .resolve_function("acme", "hello", Some("latest"))
        .await
        .unwrap();
    assert_eq!(latest, b);

    for selector in ["000000000000", "stable"] {
        let err = registry
            .resolve_function("acme", "hello", Some(selector))
            .await
            .unwrap_err();
        match err {
            RegistryError::NotFound(message) => {
                assert!(message.contains(&format!("hello@{selector}")), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
    let err = registry
        .resolve_function("acme", "nope", None)
        .await
        .unwrap_err();
    match err {
        RegistryError::NotFound(message) => {
            assert_eq!(message, "function `nope` not found in tenant `acme`")
        }
        other => panic!("{other:?}"),
    }
}

async fn aliases_point_at_versions_and_latest_can_roll_back() {
    let (_dir, registry, wasm) = setup().await;
    let (a, _) = registry
        .create_function_version("acme", deploy("hello", &wasm))
        .await
        .unwrap();
    let mut new_b = deploy("hello", &wasm);
    new_b.limits.timeout_ms = Some(100);
    let (b, _) = registry
        .create_function_version("acme", new_b)
        .await
        .unwrap();

    registry
        .set_alias("acme", "hello", "stable", &a.version)
        .await
        .unwrap();
    assert_eq!(
        registry
            .resolve_function("acme", "hello", Some("stable"))
            .await
            .unwrap(),
        a
    );
    registry
        .set_alias("acme", "hello", "latest", &a.version)
        .await
        .unwrap();
    assert_eq!(
        registry
            .resolve_function("acme", "hello", None)
            .await
            .unwrap(),
        a
    );
    let aliases = registry.aliases("acme", "hello").await.unwrap();
    assert_eq!(aliases["stable"], a.version);
    assert_eq!(aliases["latest"], a.version);

    let err = registry
        .set_alias("acme", "hello", "abcdefabcdef", &b.version)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BadRequest(_)), "{err:?}");
    let err = registry
        .set_alias("acme", "hello", "stable", "000000000000")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
}

async fn deploy_refuses_invalid_names_env_and_limits() {
    let (_dir, registry, wasm) = setup().await;
    let mut cases = vec![deploy("Hello", &wasm), deploy("hello", "not-a-digest")];
    let mut bad_env = deploy("hello", &wasm);
    bad_env.env.insert("1BAD".into(), "x".into());
    cases.push(bad_env);
    let mut bad_limit = deploy("hello", &wasm);
    bad_limit.limits.concurrency = Some(0);
    cases.push(bad_limit);
    let mut bad_ref = deploy("hello", &wasm);
    bad_ref.models.insert("net".into(), "resnet@v1".into());
    cases.push(bad_ref);
    for new in cases {
        let err = registry
            .create_function_version("acme", new)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::BadRequest(_)), "{err:?}");
    }
    let err = registry
        .create_function_version("acme", deploy("hello", &"d".repeat(64)))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
}

async fn function_version_json_has_the_api_field_names() {
    let (_dir, registry, wasm) = setup().await;
    common::push_model(&registry, "acme", "resnet", b"v1").await;
    let new: NewFunctionVersion = serde_json::from_value(serde_json::json!({
        "name": "classify",
        "wasm_sha256": wasm,
        "models": {"net": "resnet"},
        "limits": {"memory_mb": 128}
    }))
    .unwrap();
    let (function, _) = registry.create_function_version("acme", new).await.unwrap();
    let json = serde_json::to_value(&function).unwrap();
    let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "env",
            "limits",
            "models",
            "name",
            "public",
            "version",
            "wasm_sha256"
        ]
    );
    let binding = json["models"]["net"].as_object().unwrap();
    let mut binding_keys: Vec<_> = binding.keys().cloned().collect();
    binding_keys.sort();
    assert_eq!(
        binding_keys,
        ["engine", "model", "sha256", "target", "version"]
    );
    assert_eq!(json["limits"]["memory_mb"], 128);
}

on_both_backends!(
    deploy_resolves_a_bare_model_name_to_its_newest_version,
    deploy_is_content_addressed,
    deploy_moves_latest_even_to_an_existing_version,
    resolve_function_by_version_and_by_latest,
    aliases_point_at_versions_and_latest_can_roll_back,
    deploy_refuses_invalid_names_env_and_limits,
    function_version_json_has_the_api_field_names,
);
