//! Versions over time: alias moves and their history, rollback, deleting versions, garbage
//! collection of unused blobs, and concurrent deploys.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use nimbus_registry::{FunctionVersion, Limits, NewFunctionVersion, Registry, RegistryError};

fn deploy(name: &str, wasm: &str, mode: &str) -> NewFunctionVersion {
    NewFunctionVersion {
        name: name.to_string(),
        wasm_sha256: wasm.to_string(),
        models: BTreeMap::new(),
        env: BTreeMap::from([("MODE".to_string(), mode.to_string())]),
        limits: Limits::default(),
        public: false,
    }
}

/// Tenant `acme` with a wasm blob, and versions of `hello` deployed in the order given.
async fn with_versions(registry: &Registry, modes: &[&str]) -> (String, Vec<FunctionVersion>) {
    registry.create_tenant("acme").await.unwrap();
    let wasm = common::upload(registry, "acme", b"\0asm hello")
        .await
        .sha256;
    let mut versions = Vec::new();
    for mode in modes {
        let (version, _) = registry
            .create_function_version("acme", deploy("hello", &wasm, mode))
            .await
            .unwrap();
        versions.push(version);
    }
    (wasm, versions)
}

async fn latest(registry: &Registry) -> String {
    registry
        .resolve_function("acme", "hello", None)
        .await
        .unwrap()
        .version
}

async fn rollback_walks_latest_back_through_its_history() {
    let (_dir, registry) = common::open().await;
    let (wasm, v) = with_versions(&registry, &["a", "b", "c"]).await;
    assert_eq!(latest(&registry).await, v[2].version);

    let moved = registry.rollback("acme", "hello", "latest").await.unwrap();
    assert_eq!(moved.version, v[1].version);
    assert_eq!(moved.previous.as_deref(), Some(v[2].version.as_str()));
    assert_eq!(latest(&registry).await, v[1].version);
    registry.rollback("acme", "hello", "latest").await.unwrap();
    assert_eq!(latest(&registry).await, v[0].version);

    let err = registry
        .rollback("acme", "hello", "latest")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("no earlier version"), "{err}");

    // A new deploy is a new step: rolling it back returns to where latest was just before.
    let (d, _) = registry
        .create_function_version("acme", deploy("hello", &wasm, "d"))
        .await
        .unwrap();
    assert_eq!(latest(&registry).await, d.version);
    registry.rollback("acme", "hello", "latest").await.unwrap();
    assert_eq!(latest(&registry).await, v[0].version);
}

async fn rollback_of_a_named_alias_leaves_latest_alone() {
    let (_dir, registry) = common::open().await;
    let (_, v) = with_versions(&registry, &["a", "b"]).await;
    let created = registry
        .set_alias("acme", "hello", "prod", &v[0].version)
        .await
        .unwrap();
    assert_eq!(created.previous, None);
    let moved = registry
        .set_alias("acme", "hello", "prod", &v[1].version)
        .await
        .unwrap();
    assert_eq!(moved.previous.as_deref(), Some(v[0].version.as_str()));
    // Pointing an alias where it already points is no step of its history.
    registry
        .set_alias("acme", "hello", "prod", &v[1].version)
        .await
        .unwrap();

    let back = registry.rollback("acme", "hello", "prod").await.unwrap();
    assert_eq!(
        (back.alias.as_str(), back.version.as_str()),
        ("prod", v[0].version.as_str())
    );
    let aliases = registry.aliases("acme", "hello").await.unwrap();
    assert_eq!(aliases["prod"], v[0].version);
    assert_eq!(aliases["latest"], v[1].version);
    let err = registry
        .rollback("acme", "hello", "prod")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err:?}");

    let err = registry
        .rollback("acme", "hello", "canary")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
    let err = registry
        .rollback("acme", "nope", "latest")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
}

async fn delete_is_refused_while_an_alias_points_at_the_version() {
    let (_dir, registry) = common::open().await;
    let (_, v) = with_versions(&registry, &["a", "b"]).await;
    registry
        .set_alias("acme", "hello", "prod", &v[0].version)
        .await
        .unwrap();
    for (version, alias) in [(&v[0].version, "prod"), (&v[1].version, "latest")] {
        let err = registry
            .delete_function_version("acme", "hello", version)
            .await
            .unwrap_err();
        match err {
            RegistryError::Conflict(message) => assert!(message.contains(alias), "{message}"),
            other => panic!("{other:?}"),
        }
    }
    registry
        .set_alias("acme", "hello", "prod", &v[1].version)
        .await
        .unwrap();
    let deleted = registry
        .delete_function_version("acme", "hello", &v[0].version)
        .await
        .unwrap();
    assert_eq!(deleted.version, v[0].version);
    let versions = registry.function_versions("acme", "hello").await.unwrap();
    assert_eq!(versions, vec![v[1].clone()]);
    let err = registry
        .resolve_function("acme", "hello", Some(&v[0].version))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
    let err = registry
        .delete_function_version("acme", "hello", &v[0].version)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");

    // prod pointed at the deleted version before: rolling back there is refused.
    let err = registry
        .rollback("acme", "hello", "prod")
        .await
        .unwrap_err();
    match err {
        RegistryError::Conflict(message) => assert!(message.contains("deleted"), "{message}"),
        other => panic!("{other:?}"),
    }
}

async fn delete_collects_the_blobs_nothing_uses_and_keeps_the_rest() {
    let (_dir, registry) = common::open_without_gc_grace().await;
    registry.create_tenant("acme").await.unwrap();
    registry.create_tenant("other").await.unwrap();
    let only_v1 = common::upload(&registry, "acme", b"\0asm only in v1")
        .await
        .sha256;
    let shared = common::upload(&registry, "acme", b"\0asm shared")
        .await
        .sha256;
    let model = common::push_model(&registry, "acme", "resnet", b"model bytes").await;
    // Tenant `other` uses the shared wasm in a function of its own.
    common::upload(&registry, "other", b"\0asm shared").await;
    registry
        .create_function_version("other", deploy("greet", &shared, "x"))
        .await
        .unwrap();

    let mut v1 = deploy("hello", &only_v1, "1");
    v1.models.insert("net".into(), "resnet".into());
    let (v1, _) = registry.create_function_version("acme", v1).await.unwrap();
    let mut v2 = deploy("hello", &shared, "2");
    v2.models.insert("net".into(), "resnet".into());
    let (v2, _) = registry.create_function_version("acme", v2).await.unwrap();
    let (v3, _) = registry
        .create_function_version("acme", deploy("hello", &only_v1, "3"))
        .await
        .unwrap();

    // v1's wasm is still used by v3: nothing to collect.
    let deleted = registry
        .delete_function_version("acme", "hello", &v1.version)
        .await
        .unwrap();
    assert_eq!(deleted.collected_blobs, Vec::<String>::new());
    assert!(registry.blobs().exists(&only_v1).await);

    // Move latest off v3 and delete it: now nothing uses that wasm.
    registry
        .set_alias("acme", "hello", "latest", &v2.version)
        .await
        .unwrap();
    let deleted = registry
        .delete_function_version("acme", "hello", &v3.version)
        .await
        .unwrap();
    assert_eq!(deleted.collected_blobs, vec![only_v1.clone()]);
    assert!(!registry.blobs().exists(&only_v1).await);
    assert_eq!(
        registry.tenant_has_blob("acme", &only_v1).await.unwrap(),
        None
    );
    for kept in [&shared, &model.sha256] {
        assert!(registry.blobs().exists(kept).await, "{kept} was collected");
    }
    assert!(
        registry
            .tenant_has_blob("acme", &shared)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        registry
            .tenant_has_blob("other", &shared)
            .await
            .unwrap()
            .is_some()
    );

    // A collected wasm can be uploaded and deployed again.
    let again = common::upload(&registry, "acme", b"\0asm only in v1").await;
    assert_eq!(again.sha256, only_v1);
    let (v4, created) = registry
        .create_function_version("acme", deploy("hello", &only_v1, "4"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(latest(&registry).await, v4.version);
}

async fn garbage_collection_spares_recent_uploads() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let unused = common::upload(&registry, "acme", b"uploaded, never deployed").await;
    assert_eq!(
        registry.collect_garbage().await.unwrap(),
        Vec::<String>::new()
    );
    assert!(registry.blobs().exists(&unused.sha256).await);
    assert!(
        registry
            .tenant_has_blob("acme", &unused.sha256)
            .await
            .unwrap()
            .is_some()
    );
}

async fn concurrent_deploys_of_one_function_are_all_recorded() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let wasm = common::upload(&registry, "acme", b"\0asm hello")
        .await
        .sha256;
    const DEPLOYS: usize = 8;
    let deploys = (0..DEPLOYS).map(|i| {
        let registry = registry.clone();
        let new = deploy("hello", &wasm, &i.to_string());
        async move { registry.create_function_version("acme", new).await }
    });
    let results = futures::future::join_all(deploys).await;
    let mut deployed: Vec<String> = results
        .into_iter()
        .map(|r| {
            let (version, created) = r.unwrap();
            assert!(created);
            version.version
        })
        .collect();
    deployed.sort();

    let mut listed: Vec<String> = registry
        .function_versions("acme", "hello")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    listed.sort();
    assert_eq!(listed, deployed);
    for version in &deployed {
        registry
            .resolve_function("acme", "hello", Some(version))
            .await
            .unwrap();
    }
    // Every deploy moved latest once, one after the other: the history holds each step.
    assert!(deployed.contains(&latest(&registry).await));
    for _ in 1..DEPLOYS {
        let moved = registry.rollback("acme", "hello", "latest").await.unwrap();
        assert!(deployed.contains(&moved.version));
    }
    let err = registry
        .rollback("acme", "hello", "latest")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err:?}");
}

on_both_backends!(
    rollback_walks_latest_back_through_its_history,
    rollback_of_a_named_alias_leaves_latest_alone,
    delete_is_refused_while_an_alias_points_at_the_version,
    delete_collects_the_blobs_nothing_uses_and_keeps_the_rest,
    garbage_collection_spares_recent_uploads,
    concurrent_deploys_of_one_function_are_all_recorded,
);
