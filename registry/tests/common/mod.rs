//! Helpers shared by the integration tests: a registry on either metadata backend, blob uploads,
//! and [`on_both_backends!`], which runs each listed test once on SQLite (`sqlite::<test>`) and
//! once on a fresh PostgreSQL database (`postgres::<test>`, see the nimbus-test-postgres crate).
#![allow(dead_code, unused_macros)]

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use nimbus_registry::{BlobInfo, ModelVersion, NewModelVersion, Registry, RegistryOptions};
use tempfile::TempDir;

/// The metadata backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
    /// The PostgreSQL database of the running test's last [`options`] call.
    static DATABASE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `test` with [`open`] on `backend` (tests run on a current-thread runtime: the
/// thread-local holds for the whole test).
pub async fn run<F: Future<Output = ()>>(backend: Backend, test: F) {
    BACKEND.set(backend);
    test.await
}

/// The backend of the running test.
pub fn backend() -> Backend {
    BACKEND.get()
}

/// Generates `sqlite::<name>` and `postgres::<name>` tests that run each `async fn <name>()`
/// on that backend.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::common::run(crate::common::Backend::Sqlite, super::$test()).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::common::run(crate::common::Backend::Postgres, super::$test()).await
                }
            )+
        }
    };
}

/// Options for a registry in `dir` on the running test's backend (a fresh PostgreSQL database
/// for each call on PostgreSQL).
pub fn options(dir: &Path) -> RegistryOptions {
    let database_url = match backend() {
        Backend::Sqlite => None,
        Backend::Postgres => Some(nimbus_test_postgres::database()),
    };
    DATABASE.set(database_url.clone());
    RegistryOptions {
        database_url,
        ..RegistryOptions::new(dir)
    }
}

/// The registry in `dir` opened again, on the same database (a restart).
pub async fn reopen(dir: &Path) -> Registry {
    let options = RegistryOptions {
        database_url: DATABASE.with_borrow(Clone::clone),
        ..RegistryOptions::new(dir)
    };
    Registry::open_options(options).await.unwrap()
}

/// A registry in a temp dir on the running test's backend.
pub async fn open() -> (TempDir, Registry) {
    open_with(|_| {}).await
}

/// [`open`], with the options changed by `change` first.
pub async fn open_with(change: impl FnOnce(&mut RegistryOptions)) -> (TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    change(&mut options);
    let registry = Registry::open_options(options).await.unwrap();
    (dir, registry)
}

/// A registry whose garbage collection spares nothing (no grace period).
pub async fn open_without_gc_grace() -> (TempDir, Registry) {
    open_with(|options| options.blob_gc_grace = Duration::ZERO).await
}

/// A stream of the bytes in chunks of `chunk` bytes.
pub fn chunks(
    data: &[u8],
    chunk: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + use<> {
    let parts: Vec<_> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(parts)
}

/// Stores `data` and records it as a blob of `tenant`.
pub async fn upload(registry: &Registry, tenant: &str, data: &[u8]) -> BlobInfo {
    let info = registry
        .blobs()
        .put_stream(chunks(data, 7), None, u64::MAX)
        .await
        .unwrap();
    registry
        .record_blob(tenant, &info.sha256, info.size)
        .await
        .unwrap();
    info
}

/// Uploads `data` and pushes it as a model version.
pub async fn push_model(
    registry: &Registry,
    tenant: &str,
    name: &str,
    data: &[u8],
) -> ModelVersion {
    let blob = upload(registry, tenant, data).await;
    registry
        .create_model_version(
            tenant,
            NewModelVersion {
                name: name.to_string(),
                sha256: blob.sha256,
                uri: None,
                engine: "onnxruntime".to_string(),
                target: "cpu".to_string(),
            },
        )
        .await
        .unwrap()
        .0
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out
}
