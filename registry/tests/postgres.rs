//! What only PostgreSQL has: migrations shared by nodes that start together, and several
//! registries (nodes) on one database seeing each other's writes at once.

mod common;

use std::collections::BTreeMap;

use nimbus_registry::{BlobStore, Limits, NewFunctionVersion, Registry, RegistryOptions};

const PEPPER: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// Options for a node with its own data dir on the database at `url`.
fn node(dir: &tempfile::TempDir, url: &str) -> RegistryOptions {
    RegistryOptions {
        database_url: Some(url.to_string()),
        key_pepper: Some(PEPPER.to_string()),
        ..RegistryOptions::new(dir.path())
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_apply_each_migration_once() {
    let url = nimbus_test_postgres::database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let opens = dirs
        .iter()
        .map(|dir| Registry::open_options(node(dir, &url)));
    for opened in futures::future::join_all(opens).await {
        opened.unwrap().ping().await.unwrap();
    }
    let client = connect(&url).await;
    let versions: Vec<i64> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let url = nimbus_test_postgres::database();
    let dir = tempfile::tempdir().unwrap();
    drop(Registry::open_options(node(&dir, &url)).await.unwrap());
    connect(&url)
        .await
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
            &[],
        )
        .await
        .unwrap();
    let err = Registry::open_options(node(&dir, &url)).await.unwrap_err();
    assert!(format!("{err:#}").contains("999"), "{err:#}");
}

#[tokio::test]
async fn a_node_with_another_key_pepper_is_refused() {
    let url = nimbus_test_postgres::database();
    let first = tempfile::tempdir().unwrap();
    Registry::open_options(node(&first, &url)).await.unwrap();
    let second = tempfile::tempdir().unwrap();
    // Its own pepper file, not the shared one.
    let options = RegistryOptions {
        key_pepper: None,
        ..node(&second, &url)
    };
    let err = Registry::open_options(options).await.unwrap_err();
    assert!(format!("{err:#}").contains("pepper"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_database_see_each_others_writes_at_once() {
    let url = nimbus_test_postgres::database();
    let shared_blobs = tempfile::tempdir().unwrap();
    let (dir_one, dir_two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut nodes = Vec::new();
    for dir in [&dir_one, &dir_two] {
        let options = RegistryOptions {
            blobs: Some(BlobStore::open(shared_blobs.path()).await.unwrap()),
            ..node(dir, &url)
        };
        nodes.push(Registry::open_options(options).await.unwrap());
    }
    let (one, two) = (&nodes[0], &nodes[1]);

    let admin = one
        .bootstrap(None)
        .await
        .unwrap()
        .expect("first start makes a key");
    assert_eq!(two.bootstrap(None).await.unwrap(), None);
    assert_eq!(two.authenticate(&admin).await.unwrap().tenant, "default");

    let wasm = common::upload(one, "default", b"\0asm shared").await.sha256;
    let mut versions = Vec::new();
    for mode in ["a", "b"] {
        let new = NewFunctionVersion {
            name: "hello".into(),
            wasm_sha256: wasm.clone(),
            models: BTreeMap::new(),
            env: BTreeMap::from([("MODE".to_string(), mode.to_string())]),
            limits: Limits::default(),
            public: false,
        };
        versions.push(one.create_function_version("default", new).await.unwrap().0);
    }
    let resolved = two
        .resolve_function("default", "hello", None)
        .await
        .unwrap();
    assert_eq!(resolved, versions[1]);

    two.set_alias("default", "hello", "prod", &versions[0].version)
        .await
        .unwrap();
    let prod = one
        .resolve_function("default", "hello", Some("prod"))
        .await
        .unwrap();
    assert_eq!(prod, versions[0]);
    one.rollback("default", "hello", "latest").await.unwrap();
    let latest = two
        .resolve_function("default", "hello", None)
        .await
        .unwrap();
    assert_eq!(latest, versions[0]);
}
