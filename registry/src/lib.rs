//! nimbus-registry: tenants, API keys, blobs, models, functions and their versions.
//!
//! [`Registry`] is the one handle the runtime holds: metadata lives in SQLite at
//! `<data_dir>/registry.db` or in PostgreSQL for many nodes (see the `db` module, the only place
//! with SQL; [`RegistryOptions`] picks), blobs in a
//! content-addressed store ([`BlobStore`]: the folder `<data_dir>/blobs/` by default, or an S3
//! bucket), and the key pepper in `<data_dir>/pepper` unless configured. Every operation that touches storage is async; database work runs on
//! tokio's blocking pool. This file owns opening the registry and the readiness probe; the
//! operations are grouped in `access` (tenants, keys, authentication), `models` (blob ownership
//! and models), `functions` (versions, aliases, rollback, deletion) and `gc` (unused blobs).

mod access;
mod blobs;
mod canonical;
mod db;
mod error;
mod functions;
mod gc;
mod keys;
mod models;
mod records;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use access::{Credential, StoredKey};
pub use blobs::{
    BlobStore, BoxError, ChecksumMode, DownloadStats, Downloaded, S3Config, S3Credentials, S3Uri,
};
pub use error::{AuthError, RegistryError};
pub use functions::{AliasMoved, VersionDeleted};
pub use records::{
    BlobInfo, FunctionSummary, FunctionVersion, KeyInfo, Limits, ModelBinding, ModelVersion,
    NewFunctionVersion, NewModelVersion, Principal, Scope, Tenant,
};

/// The tenant created on first start; it owns the bootstrap admin key.
pub const DEFAULT_TENANT: &str = "default";
/// How long garbage collection spares a blob after a tenant uploaded it (see `gc`).
pub const DEFAULT_BLOB_GC_GRACE: Duration = Duration::from_secs(3600);

/// How to open a [`Registry`]; [`RegistryOptions::new`] gives the embedded defaults.
#[derive(Clone)]
pub struct RegistryOptions {
    /// The data dir (created with mode 0700 when absent): the SQLite database, the pepper file
    /// and the local blob folder when nothing else is configured.
    pub data_dir: PathBuf,
    /// `postgres://...` (or a key=value connection string) for PostgreSQL; `None` for SQLite at
    /// `<data_dir>/registry.db`.
    pub database_url: Option<String>,
    /// The blob store; `None` for the folder `<data_dir>/blobs/`.
    pub blobs: Option<BlobStore>,
    /// The key pepper as 64 hex characters; `None` for `<data_dir>/pepper` (created on first
    /// open). Every node on one database must use the same pepper: the database records its
    /// fingerprint and a node with another one refuses to open.
    pub key_pepper: Option<String>,
    /// How long garbage collection spares a recently uploaded blob.
    pub blob_gc_grace: Duration,
}

impl RegistryOptions {
    /// The embedded defaults under `data_dir`.
    pub fn new(data_dir: &Path) -> RegistryOptions {
        RegistryOptions {
            data_dir: data_dir.to_path_buf(),
            database_url: None,
            blobs: None,
            key_pepper: None,
            blob_gc_grace: DEFAULT_BLOB_GC_GRACE,
        }
    }
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("data_dir", &self.data_dir)
            .field("database", &self.database_url.as_ref().map(|_| "postgres"))
            .field("key_pepper", &self.key_pepper.as_ref().map(|_| "<set>"))
            .field("blob_gc_grace", &self.blob_gc_grace)
            .finish_non_exhaustive()
    }
}

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
    blob_gc_grace: Duration,
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
        Registry::open_with(data_dir, None).await
    }

    /// [`Registry::open`] with the blobs in `blobs` when given (an S3 bucket, say) instead of
    /// the folder `<data_dir>/blobs/`.
    pub async fn open_with(data_dir: &Path, blobs: Option<BlobStore>) -> anyhow::Result<Registry> {
        Registry::open_options(RegistryOptions {
            blobs,
            ..RegistryOptions::new(data_dir)
        })
        .await
    }

    /// Opens the registry as `options` say: the data dir, the database (SQLite or PostgreSQL)
    /// with its migrations applied, the key pepper (checked against the one the database's keys
    /// were made with) and the blob store.
    pub async fn open_options(options: RegistryOptions) -> anyhow::Result<Registry> {
        let data_dir = options.data_dir.clone();
        let dir = data_dir.clone();
        let given_pepper = options.key_pepper.clone();
        let pepper = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating data dir {}", dir.display()))?;
            match given_pepper {
                Some(hex) => keys::Pepper::from_hex(&hex),
                None => keys::Pepper::load_or_create(&dir),
            }
        })
        .await
        .context("registry open task failed")??;
        let sqlite_path = data_dir.join("registry.db");
        let location = match &options.database_url {
            Some(url) => db::Location::Postgres(url),
            None => db::Location::Sqlite(&sqlite_path),
        };
        let db = db::Db::open(location).await?;
        check_pepper(&db, &pepper).await?;
        let blobs = match options.blobs {
            Some(blobs) => blobs,
            None => BlobStore::open(&data_dir.join("blobs")).await?,
        };
        tracing::debug!(database = db.backend(), blobs = %blobs.describe(), "registry open");
        Ok(Registry {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                blobs,
                pepper,
                data_dir,
                blob_gc_grace: options.blob_gc_grace,
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

    /// How many write transactions this process has committed, when it is the database's only
    /// writer (the embedded SQLite): a read made while this number did not change is still
    /// current, which lets a node cache what it reads. `None` with PostgreSQL, where other nodes
    /// write too.
    pub fn local_commits(&self) -> Option<u64> {
        self.db().local_commits()
    }

    fn db(&self) -> &Arc<db::Db> {
        &self.inner.db
    }
}

/// Records the pepper's fingerprint on first open; refuses a pepper other than the recorded one
/// (keys hashed with one pepper never verify with another: nodes must share it).
async fn check_pepper(db: &db::Db, pepper: &keys::Pepper) -> anyhow::Result<()> {
    const SETTING: &str = "key_pepper_fingerprint";
    let fingerprint = pepper.fingerprint();
    db.write(move |sql| match sql.setting(SETTING)? {
        None => sql.set_setting(SETTING, &fingerprint),
        Some(recorded) if recorded == fingerprint => Ok(()),
        Some(_) => Err(RegistryError::Conflict(
            "this node's key pepper is not the one the database's API keys were made with: give \
             every node on one database the same pepper (--key-pepper / NIMBUS_KEY_PEPPER, or \
             the same <data-dir>/pepper file)"
                .to_string(),
        )),
    })
    .await
    .map_err(anyhow::Error::new)
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
