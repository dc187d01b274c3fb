//! nimbus-registry: tenants, API keys, blobs, models, functions and their versions.
//!
//! [`Registry`] is the one handle the runtime holds: metadata lives in SQLite at
//! `<data_dir>/registry.db` (see the `db` module, the only place with SQL), blobs in a
//! content-addressed folder at `<data_dir>/blobs/` ([`BlobStore`]), and the key pepper in
//! `<data_dir>/pepper`. Every operation that touches storage is async; database work runs on
//! tokio's blocking pool. This file owns opening the registry and the readiness probe; the
//! operations are grouped in `access` (tenants, keys, authentication), `models` (blob ownership
//! and models) and `functions`.

mod access;
mod blobs;
mod canonical;
mod db;
mod error;
mod functions;
mod keys;
mod models;
mod records;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

pub use access::{Credential, StoredKey};
pub use blobs::{BlobStore, BoxError};
pub use error::{AuthError, RegistryError};
pub use records::{
    BlobInfo, FunctionSummary, FunctionVersion, KeyInfo, Limits, ModelBinding, ModelVersion,
    NewFunctionVersion, NewModelVersion, Principal, Scope, Tenant,
};

/// The tenant created on first start; it owns the bootstrap admin key.
pub const DEFAULT_TENANT: &str = "default";

/// The registry. Cheap to clone (an `Arc` inside); share one per process.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<db::Db>,
    blobs: BlobStore,
    pepper: keys::Pepper,
    data_dir: PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens the registry under `data_dir` (created with mode 0700 when absent): the database
    /// `registry.db` with its migrations applied, the pepper file (created on first open) and the
    /// blob store `blobs/`.
    pub async fn open(data_dir: &Path) -> anyhow::Result<Registry> {
        let dir = data_dir.to_path_buf();
        let (db, pepper) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating data dir {}", dir.display()))?;
            let pepper = keys::Pepper::load_or_create(&dir)?;
            let db = db::Db::open(&dir.join("registry.db"))?;
            Ok((db, pepper))
        })
        .await
        .context("registry open task failed")??;
        let blobs = BlobStore::open(&data_dir.join("blobs")).await?;
        Ok(Registry {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                blobs,
                pepper,
                data_dir: data_dir.to_path_buf(),
            }),
        })
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The data dir this registry was opened on.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Whether the database answers (for /readyz; check the blob store with
    /// [`BlobStore::ping`]).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        self.db().read(|sql| sql.ping()).await
    }

    fn db(&self) -> &Arc<db::Db> {
        &self.inner.db
    }
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
