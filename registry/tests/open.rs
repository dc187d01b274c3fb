//! Opening a data dir: files, modes and migrations.

mod common;

use std::os::unix::fs::PermissionsExt;

use nimbus_registry::Registry;

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
    assert_eq!(versions, vec![1]);
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
