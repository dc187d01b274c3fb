//! Model versions.

#[macro_use]
mod common;

use nimbus_registry::{NewModelVersion, RegistryError};

fn new_model(name: &str, sha256: &str, engine: &str, target: &str) -> NewModelVersion {
    NewModelVersion {
        name: name.to_string(),
        sha256: sha256.to_string(),
        uri: None,
        engine: engine.to_string(),
        target: target.to_string(),
    }
}

async fn model_version_is_the_first_12_characters_of_the_sha256() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let blob = common::upload(&registry, "acme", b"model bytes").await;
    let (model, created) = registry
        .create_model_version("acme", new_model("resnet", &blob.sha256, "openvino", "gpu"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(model.version, blob.sha256[..12]);
    assert_eq!(model.sha256, blob.sha256);
    assert_eq!(model.size, 11);
    assert_eq!(
        (model.engine.as_str(), model.target.as_str()),
        ("openvino", "gpu")
    );
}

async fn pushing_the_same_model_again_returns_the_existing_version() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let blob = common::upload(&registry, "acme", b"model bytes").await;
    let push = || new_model("resnet", &blob.sha256, "onnxruntime", "cpu");
    let (first, created) = registry.create_model_version("acme", push()).await.unwrap();
    assert!(created);
    let (again, created) = registry.create_model_version("acme", push()).await.unwrap();
    assert!(!created);
    assert_eq!(again, first);
    assert_eq!(
        registry
            .model_versions("acme", "resnet")
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn same_bytes_with_another_engine_or_target_conflict() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let blob = common::upload(&registry, "acme", b"model bytes").await;
    registry
        .create_model_version(
            "acme",
            new_model("resnet", &blob.sha256, "onnxruntime", "cpu"),
        )
        .await
        .unwrap();
    for (engine, target) in [("openvino", "cpu"), ("onnxruntime", "gpu")] {
        let err = registry
            .create_model_version("acme", new_model("resnet", &blob.sha256, engine, target))
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Conflict(_)), "{err:?}");
    }
    // Under another name the same bytes may have other settings.
    registry
        .create_model_version(
            "acme",
            new_model("resnet-ov", &blob.sha256, "openvino", "cpu"),
        )
        .await
        .unwrap();
}

async fn model_push_needs_a_blob_of_the_tenant() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let missing = "e".repeat(64);
    let err = registry
        .create_model_version("acme", new_model("resnet", &missing, "onnxruntime", "cpu"))
        .await
        .unwrap_err();
    match err {
        RegistryError::NotFound(message) => assert!(message.contains(&missing), "{message}"),
        other => panic!("{other:?}"),
    }
}

async fn model_push_refuses_bad_names_engines_and_targets() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let blob = common::upload(&registry, "acme", b"model bytes").await;
    for (name, engine, target, expect) in [
        ("ResNet", "onnxruntime", "cpu", "[a-z0-9][a-z0-9._-]{0,62}"),
        ("res net", "onnxruntime", "cpu", "[a-z0-9][a-z0-9._-]{0,62}"),
        ("resnet", "tensorflow", "cpu", "onnxruntime, openvino"),
        ("resnet", "onnxruntime", "tpu", "cpu, gpu, auto"),
    ] {
        let err = registry
            .create_model_version("acme", new_model(name, &blob.sha256, engine, target))
            .await
            .unwrap_err();
        match err {
            RegistryError::BadRequest(message) => assert!(message.contains(expect), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}

async fn models_are_listed_newest_first_and_resolved_by_name_or_version() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let v1 = common::push_model(&registry, "acme", "resnet", b"v1").await;
    let other = common::push_model(&registry, "acme", "bert", b"b1").await;
    let v2 = common::push_model(&registry, "acme", "resnet", b"v2").await;

    let all = registry.list_models("acme").await.unwrap();
    assert_eq!(all, vec![v2.clone(), other, v1.clone()]);
    let versions = registry.model_versions("acme", "resnet").await.unwrap();
    assert_eq!(versions, vec![v2.clone(), v1.clone()]);

    assert_eq!(registry.resolve_model("acme", "resnet").await.unwrap(), v2);
    let by_version = format!("resnet@{}", v1.version);
    assert_eq!(
        registry.resolve_model("acme", &by_version).await.unwrap(),
        v1
    );
    let by_digest = format!("resnet@{}", v1.sha256);
    assert_eq!(
        registry.resolve_model("acme", &by_digest).await.unwrap(),
        v1
    );

    let missing = format!("resnet@{}", "0".repeat(12));
    let err = registry.resolve_model("acme", &missing).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
    let err = registry.model_versions("acme", "nope").await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
    let err = registry
        .resolve_model("acme", "resnet@latest!")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BadRequest(_)), "{err:?}");
}

async fn model_version_json_has_the_api_field_names() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let model = common::push_model(&registry, "acme", "resnet", b"v1").await;
    let json = serde_json::to_value(&model).unwrap();
    let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "engine",
            "name",
            "sha256",
            "size",
            "target",
            "version"
        ]
    );
    let parsed: NewModelVersion =
        serde_json::from_str(r#"{"name": "m", "sha256": "x", "engine": "openvino"}"#).unwrap();
    assert_eq!(parsed.target, "cpu");
}

on_both_backends!(
    model_version_is_the_first_12_characters_of_the_sha256,
    pushing_the_same_model_again_returns_the_existing_version,
    same_bytes_with_another_engine_or_target_conflict,
    model_push_needs_a_blob_of_the_tenant,
    model_push_refuses_bad_names_engines_and_targets,
    models_are_listed_newest_first_and_resolved_by_name_or_version,
    model_version_json_has_the_api_field_names,
);
