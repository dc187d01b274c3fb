//! Opening a data dir: files, modes and migrations.

mod common;

use std::os::unix::fs::PermissionsExt;

use nimbus_registry::{Registry, RegistryOptions};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn open_creates_a_private_database_pepper_and_blob_folder() {
    let (dir, registry) = common::open().await;
    registry.ping().await.unwrap();
    registry.blobs().ping().await.unwrap();
    let pepper = dir.path().join("pepper");
    assert_eq!(std::fs::read(&pepper).unwrap().len(), 32);
    assert_eq!(mode(&pepper), 0o600);
    assert_eq!(mode(&dir.path().join("registry.db")), 0o600);
    assert!(dir.path().join("blobs").join("sha256").is_dir());
}

#[tokio::test]
async fn reopening_keeps_the_pepper_and_applies_each_migration_once() {
    let (dir, registry) = common::open().await;
    let pepper = std::fs::read(dir.path().join("pepper")).unwrap();
    drop(registry);
    Registry::open(dir.path()).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("pepper")).unwrap(), pepper);
    let conn = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, vec![1, 2, 3]);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let (dir, registry) = common::open().await;
    drop(registry);
    let conn = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let err = Registry::open(dir.path()).await.unwrap_err();
    assert!(format!("{err:#}").contains("999"), "{err:#}");
}

#[tokio::test]
async fn a_configured_key_pepper_replaces_the_pepper_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = RegistryOptions {
        key_pepper: Some("ab".repeat(32)),
        ..RegistryOptions::new(dir.path())
    };
    let registry = Registry::open_options(options.clone()).await.unwrap();
    let key = registry.bootstrap(None).await.unwrap().unwrap();
    registry.authenticate(&key).await.unwrap();
    drop(registry);
    assert!(!dir.path().join("pepper").exists());
    // Opened again with the same pepper, the key still verifies.
    let registry = Registry::open_options(options).await.unwrap();
    registry.authenticate(&key).await.unwrap();
}

#[tokio::test]
async fn a_key_pepper_other_than_the_databases_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = RegistryOptions {
        key_pepper: Some("ab".repeat(32)),
        ..RegistryOptions::new(dir.path())
    };
    drop(Registry::open_options(first.clone()).await.unwrap());
    assert!(!dir.path().join("pepper").exists());
    Registry::open_options(first).await.unwrap();

    let other = RegistryOptions {
        key_pepper: Some("cd".repeat(32)),
        ..RegistryOptions::new(dir.path())
    };
    let err = Registry::open_options(other).await.unwrap_err();
    assert!(format!("{err:#}").contains("pepper"), "{err:#}");
    // Without a configured pepper the node would make its own file: refused as well.
    let err = Registry::open(dir.path()).await.unwrap_err();
    assert!(format!("{err:#}").contains("pepper"), "{err:#}");

    let malformed = RegistryOptions {
        key_pepper: Some("xyz".to_string()),
        ..RegistryOptions::new(dir.path())
    };
    let err = Registry::open_options(malformed).await.unwrap_err();
    assert!(format!("{err:#}").contains("64 hex"), "{err:#}");
}
