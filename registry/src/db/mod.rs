//! The metadata database behind one contract: the [`Queries`] trait, whose methods are every
//! statement the registry runs, and [`Db`], which runs a closure over a [`Sql`] handle either on a
//! read connection or inside one write transaction. Two backends implement it, each with all of
//! its SQL in its own module: `sqlite` (embedded, the default: `<data_dir>/registry.db`) and
//! `postgres` (`postgres://...`, for many nodes). The rest of the crate sees only `Sql` and
//! never knows which backend it talks to.
//!
//! Both backends give the same guarantees: a write closure runs in one transaction that commits
//! when it returns `Ok` and rolls back otherwise (also on a panic or a crash), and write
//! transactions are serialized (SQLite: one writer; PostgreSQL: one advisory lock taken first
//! in every write transaction, across all nodes), so check-then-insert logic in a write closure
//! never races. Reads never wait for writes.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::{
    FunctionSummary, FunctionVersion, KeyInfo, ModelVersion, RegistryError, Scope, Tenant,
};

type Result<T> = std::result::Result<T, RegistryError>;

/// A database handle inside [`Db::read`] or [`Db::write`].
pub(crate) type Sql<'a> = dyn Queries + 'a;

/// An API key row as stored: only the peppered hash of the secret.
pub(crate) struct KeyRow {
    pub id: String,
    pub tenant: String,
    pub secret_hash: Vec<u8>,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl KeyRow {
    pub(crate) fn info(&self) -> KeyInfo {
        KeyInfo {
            key_id: self.id.clone(),
            tenant: self.tenant.clone(),
            scopes: self.scopes.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        }
    }
}

/// One recorded move of an alias that a rollback may undo.
pub(crate) struct AliasMove {
    pub id: i64,
    /// The version the alias pointed at before the move; `None` when the move created it.
    pub previous: Option<String>,
    /// The version the move pointed the alias at.
    pub version: String,
}

/// Every statement of the registry. Each backend implements all of it; row ids are the
/// backend's, meaningful only to the same backend.
pub(crate) trait Queries {
    /// A trivial query: the database answers.
    fn ping(&self) -> Result<()>;

    // ---- tenants ----

    /// The row id of a tenant; `NotFound` when there is none of that name.
    fn tenant_id(&self, name: &str) -> Result<i64>;
    fn tenant_exists(&self, name: &str) -> Result<bool>;
    /// Inserts a tenant; `Conflict` when the name is taken.
    fn insert_tenant(&self, name: &str, now: i64) -> Result<Tenant>;
    /// All tenants, by name.
    fn list_tenants(&self) -> Result<Vec<Tenant>>;

    // ---- API keys ----

    /// Inserts a key; `false` (nothing written) when the id is already taken.
    fn insert_key(
        &self,
        id: &str,
        tenant_id: i64,
        secret_hash: &[u8],
        scopes: &[Scope],
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<bool>;
    /// Makes an existing key an active, non-expiring key with this hash and these scopes.
    fn reset_key(&self, id: &str, secret_hash: &[u8], scopes: &[Scope]) -> Result<()>;
    fn key(&self, id: &str) -> Result<Option<KeyRow>>;
    /// A tenant's keys, newest first.
    fn list_keys(&self, tenant_id: i64) -> Result<Vec<KeyInfo>>;
    /// Marks a key of the tenant revoked (keeping the first revocation time); `false` when the
    /// tenant has no key with that id.
    fn revoke_key(&self, tenant_id: i64, id: &str, now: i64) -> Result<bool>;

    // ---- blobs ----

    /// Records that a blob exists and that the tenant owns it (idempotent). `Conflict` when it
    /// is recorded with another size, or while it is being garbage-collected.
    fn record_blob(&self, tenant_id: i64, sha256: &str, size: u64, now: i64) -> Result<()>;
    /// Records that a blob exists (idempotent) without giving it to any tenant: the digest of an
    /// object registered by URI, which model versions refer to. `Conflict` as `record_blob`.
    fn record_blob_digest(&self, sha256: &str, size: u64, now: i64) -> Result<()>;
    /// The size of a blob the tenant owns; `None` when it owns no such blob.
    fn tenant_blob_size(&self, tenant_id: i64, sha256: &str) -> Result<Option<u64>>;
    /// Up to `limit` blobs that no function version and no model version of any tenant uses,
    /// that no tenant recorded after `recorded_before`, and that are not already being deleted.
    fn unused_blobs(&self, recorded_before: i64, limit: usize) -> Result<Vec<String>>;
    /// Starts deleting a blob: marks it and forgets every tenant's ownership, so that nothing
    /// can refer to it any more.
    fn mark_blob_deleting(&self, sha256: &str, now: i64) -> Result<()>;
    /// Blobs marked for deletion whose deletion has not been confirmed.
    fn blobs_being_deleted(&self) -> Result<Vec<String>>;
    /// Forgets a blob marked for deletion once its bytes are gone.
    fn forget_blob(&self, sha256: &str) -> Result<()>;

    // ---- models ----

    fn model_version(
        &self,
        tenant_id: i64,
        name: &str,
        version: &str,
    ) -> Result<Option<ModelVersion>>;
    fn model_by_sha256(
        &self,
        tenant_id: i64,
        name: &str,
        sha256: &str,
    ) -> Result<Option<ModelVersion>>;
    fn newest_model_version(&self, tenant_id: i64, name: &str) -> Result<Option<ModelVersion>>;
    fn insert_model_version(&self, tenant_id: i64, model: &ModelVersion) -> Result<()>;
    /// All model versions of a tenant (`name = None`) or of one model, newest first.
    fn model_versions(&self, tenant_id: i64, name: Option<&str>) -> Result<Vec<ModelVersion>>;

    // ---- functions ----

    /// A function version and its full digest.
    fn function_version(
        &self,
        tenant_id: i64,
        name: &str,
        version: &str,
    ) -> Result<Option<(FunctionVersion, String)>>;
    fn insert_function_version(
        &self,
        tenant_id: i64,
        function: &FunctionVersion,
        digest: &str,
    ) -> Result<()>;
    /// Deletes a function version; `false` when there is none. Fails while an alias points at
    /// it (check first).
    fn delete_function_version(&self, tenant_id: i64, name: &str, version: &str) -> Result<bool>;
    /// A function's versions, newest first.
    fn function_versions(&self, tenant_id: i64, name: &str) -> Result<Vec<FunctionVersion>>;
    /// Every function of a tenant with the version its `latest` alias points at, by name.
    fn list_functions(&self, tenant_id: i64) -> Result<Vec<FunctionSummary>>;
    /// The hot path of an invocation, in one statement: the version of function `name` of
    /// tenant `tenant` that is `version`, or that `alias` points at.
    fn find_function(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
        alias: Option<&str>,
    ) -> Result<Option<FunctionVersion>>;

    // ---- aliases ----

    /// Points `alias` of a function at `version` (which must exist).
    fn set_alias(
        &self,
        tenant_id: i64,
        name: &str,
        alias: &str,
        version: &str,
        now: i64,
    ) -> Result<()>;
    /// The version an alias points at.
    fn alias_target(&self, tenant_id: i64, name: &str, alias: &str) -> Result<Option<String>>;
    /// All aliases of a function: alias -> version.
    fn aliases(&self, tenant_id: i64, name: &str) -> Result<BTreeMap<String, String>>;
    /// Appends a move of an alias to its history.
    #[allow(clippy::too_many_arguments)]
    fn record_alias_move(
        &self,
        tenant_id: i64,
        name: &str,
        alias: &str,
        previous: Option<&str>,
        version: &str,
        rollback: bool,
        now: i64,
    ) -> Result<()>;
    /// The newest move of an alias that is not a rollback and has not been undone.
    fn last_alias_move(&self, tenant_id: i64, name: &str, alias: &str)
    -> Result<Option<AliasMove>>;
    /// Marks a move as undone by a rollback.
    fn mark_alias_move_undone(&self, id: i64) -> Result<()>;

    // ---- settings ----

    /// A value of the registry's own settings (e.g. the key pepper's fingerprint).
    fn setting(&self, key: &str) -> Result<Option<String>>;
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;
}

/// Where the metadata lives.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Location<'a> {
    /// An SQLite file.
    Sqlite(&'a Path),
    /// A PostgreSQL URL (`postgres://...` or `postgresql://...`) or key=value string.
    Postgres(&'a str),
}

/// The metadata database.
pub(crate) struct Db(Backend);

enum Backend {
    Sqlite(Arc<sqlite::Db>),
    Postgres(Arc<postgres::Db>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Backend::Sqlite(_) => "Db(sqlite)",
            Backend::Postgres(_) => "Db(postgres)",
        })
    }
}

impl Db {
    /// Opens the database and applies its pending migrations.
    pub(crate) async fn open(location: Location<'_>) -> anyhow::Result<Db> {
        Ok(Db(match location {
            Location::Sqlite(path) => {
                let path = path.to_path_buf();
                let db = tokio::task::spawn_blocking(move || sqlite::Db::open(&path))
                    .await
                    .map_err(|e| anyhow::anyhow!("database open task failed: {e}"))??;
                Backend::Sqlite(Arc::new(db))
            }
            Location::Postgres(url) => Backend::Postgres(Arc::new(postgres::Db::open(url).await?)),
        }))
    }

    /// The backend's name, for logs: `sqlite` or `postgres`.
    pub(crate) fn backend(&self) -> &'static str {
        match self.0 {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Write transactions this process has committed, when it is the database's only writer
    /// (SQLite in the data dir); `None` for PostgreSQL, where other nodes write too.
    pub(crate) fn local_commits(&self) -> Option<u64> {
        match &self.0 {
            Backend::Sqlite(db) => Some(db.commits()),
            Backend::Postgres(_) => None,
        }
    }

    /// Runs `f` on a read connection, off the async workers.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Sql<'_>) -> Result<T> + Send + 'static,
    {
        match &self.0 {
            Backend::Sqlite(db) => db.read(f).await,
            Backend::Postgres(db) => db.read(f).await,
        }
    }

    /// Runs `f` in one serialized write transaction, off the async workers; commits when `f`
    /// returns `Ok`, rolls back otherwise.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Sql<'_>) -> Result<T> + Send + 'static,
    {
        match &self.0 {
            Backend::Sqlite(db) => db.write(f).await,
            Backend::Postgres(db) => db.write(f).await,
        }
    }
}

/// Runs blocking database work on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::internal(format!("database task failed: {e}")))?
}

/// Scopes as stored: comma-separated.
fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(Scope::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses stored scopes.
fn parse_scopes(text: &str) -> std::result::Result<Vec<Scope>, RegistryError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse::<Scope>)
        .collect()
}
