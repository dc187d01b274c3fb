//! Every SQL statement of the SQLite backend: the [`Queries`] methods for [`SqliteSql`]. Rows
//! come back as the crate's records; rusqlite errors become `RegistryError::Internal` naming what
//! was being done.

use std::collections::BTreeMap;

use anyhow::Context;
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteSql;
use crate::db::{AliasMove, KeyRow, Queries, Result, parse_scopes, scopes_text};
use crate::{
    FunctionSummary, FunctionVersion, KeyInfo, Limits, ModelBinding, ModelVersion, RegistryError,
    Scope, Tenant,
};

trait Context2<T> {
    fn doing(self, what: &str) -> Result<T>;
}

impl<T> Context2<T> for rusqlite::Result<T> {
    fn doing(self, what: &str) -> Result<T> {
        self.with_context(|| format!("database: {what}"))
            .map_err(RegistryError::Internal)
    }
}

fn stored_scopes(text: &str) -> rusqlite::Result<Vec<Scope>> {
    parse_scopes(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

const KEY_COLUMNS: &str =
    "k.id, t.name, k.secret_hash, k.scopes, k.created_at, k.expires_at, k.revoked_at";

fn key_row(row: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        secret_hash: row.get(2)?,
        scopes: stored_scopes(&row.get::<_, String>(3)?)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

const MODEL_COLUMNS: &str = "name, version, sha256, size, engine, target, created_at, uri";

fn model_row(row: &Row<'_>) -> rusqlite::Result<ModelVersion> {
    Ok(ModelVersion {
        name: row.get(0)?,
        version: row.get(1)?,
        sha256: row.get(2)?,
        size: row.get(3)?,
        engine: row.get(4)?,
        target: row.get(5)?,
        created_at: row.get(6)?,
        uri: row.get(7)?,
    })
}

const FUNCTION_COLUMNS: &str = "f.name, f.version, f.wasm_sha256, f.models, f.env, f.memory_mb, \
     f.timeout_ms, f.concurrency, f.public, f.created_at, f.digest";

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into())
    })
}

/// A function version and its full digest.
fn function_row(row: &Row<'_>) -> rusqlite::Result<(FunctionVersion, String)> {
    let models: BTreeMap<String, ModelBinding> = json_column(row, 3)?;
    let env: BTreeMap<String, String> = json_column(row, 4)?;
    let version = FunctionVersion {
        name: row.get(0)?,
        version: row.get(1)?,
        wasm_sha256: row.get(2)?,
        models,
        env,
        limits: Limits {
            memory_mb: row.get(5)?,
            timeout_ms: row.get(6)?,
            concurrency: row.get(7)?,
        },
        public: row.get(8)?,
        created_at: row.get(9)?,
    };
    Ok((version, row.get(10)?))
}

impl Queries for SqliteSql<'_> {
    /// A trivial query: the database answers.
    fn ping(&self) -> Result<()> {
        self.0
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .doing("ping")?;
        Ok(())
    }

    // ---- tenants ----

    /// The row id of a tenant; `NotFound` when there is none of that name.
    fn tenant_id(&self, name: &str) -> Result<i64> {
        self.0
            .query_row("SELECT id FROM tenants WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .doing("looking up a tenant")?
            .ok_or_else(|| RegistryError::NotFound(format!("tenant `{name}` not found")))
    }

    fn tenant_exists(&self, name: &str) -> Result<bool> {
        self.0
            .query_row("SELECT 1 FROM tenants WHERE name = ?1", [name], |_| Ok(()))
            .optional()
            .doing("looking up a tenant")
            .map(|found| found.is_some())
    }

    /// Inserts a tenant; `Conflict` when the name is taken.
    fn insert_tenant(&self, name: &str, now: i64) -> Result<Tenant> {
        if self.tenant_exists(name)? {
            return Err(RegistryError::Conflict(format!(
                "tenant `{name}` already exists"
            )));
        }
        self.0
            .execute(
                "INSERT INTO tenants (name, created_at) VALUES (?1, ?2)",
                params![name, now],
            )
            .doing("inserting a tenant")?;
        Ok(Tenant {
            name: name.to_string(),
            created_at: now,
        })
    }

    fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT name, created_at FROM tenants ORDER BY name")
            .doing("listing tenants")?;
        stmt.query_map([], |r| {
            Ok(Tenant {
                name: r.get(0)?,
                created_at: r.get(1)?,
            })
        })
        .and_then(|rows| rows.collect())
        .doing("listing tenants")
    }

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
    ) -> Result<bool> {
        let inserted = self
            .0
            .execute(
                "INSERT INTO api_keys (id, tenant_id, secret_hash, scopes, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                params![
                    id,
                    tenant_id,
                    secret_hash,
                    scopes_text(scopes),
                    now,
                    expires_at
                ],
            )
            .doing("inserting an API key")?;
        Ok(inserted == 1)
    }

    /// Makes an existing key an active, non-expiring key with this hash and these scopes.
    fn reset_key(&self, id: &str, secret_hash: &[u8], scopes: &[Scope]) -> Result<()> {
        self.0
            .execute(
                "UPDATE api_keys SET secret_hash = ?2, scopes = ?3, expires_at = NULL,
                 revoked_at = NULL WHERE id = ?1",
                params![id, secret_hash, scopes_text(scopes)],
            )
            .doing("updating an API key")?;
        Ok(())
    }

    fn key(&self, id: &str) -> Result<Option<KeyRow>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([id], key_row).optional())
            .doing("looking up an API key")
    }

    /// A tenant's keys, newest first.
    fn list_keys(&self, tenant_id: i64) -> Result<Vec<KeyInfo>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.tenant_id = ?1 ORDER BY k.created_at DESC, k.rowid DESC"
            ))
            .doing("listing API keys")?;
        stmt.query_map([tenant_id], |r| key_row(r).map(|k| k.info()))
            .and_then(|rows| rows.collect())
            .doing("listing API keys")
    }

    /// Marks a key of the tenant revoked (keeping the first revocation time); `false` when the
    /// tenant has no key with that id.
    fn revoke_key(&self, tenant_id: i64, id: &str, now: i64) -> Result<bool> {
        let changed = self
            .0
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE tenant_id = ?1 AND id = ?2",
                params![tenant_id, id, now],
            )
            .doing("revoking an API key")?;
        Ok(changed == 1)
    }

    // ---- blobs ----

    fn record_blob(&self, tenant_id: i64, sha256: &str, size: u64, now: i64) -> Result<()> {
        self.record_blob_digest(sha256, size, now)?;
        // created_at is refreshed on every upload: garbage collection spares recent uploads.
        self.0
            .execute(
                "INSERT INTO tenant_blobs (tenant_id, sha256, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant_id, sha256) DO UPDATE SET created_at = excluded.created_at",
                params![tenant_id, sha256, now],
            )
            .doing("recording a blob")?;
        Ok(())
    }

    fn record_blob_digest(&self, sha256: &str, size: u64, now: i64) -> Result<()> {
        let known: Option<(u64, Option<i64>)> = self
            .0
            .query_row(
                "SELECT size, deleting_at FROM blobs WHERE sha256 = ?1",
                [sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .doing("looking up a blob")?;
        match known {
            Some((_, Some(_))) => return Err(crate::models::blob_being_deleted(sha256)),
            Some((known, None)) if known != size => {
                return Err(RegistryError::Conflict(format!(
                    "blob `{sha256}` is recorded with size {known}, not {size}"
                )));
            }
            Some(_) => {}
            None => {
                self.0
                    .execute(
                        "INSERT INTO blobs (sha256, size, created_at) VALUES (?1, ?2, ?3)",
                        params![sha256, size, now],
                    )
                    .doing("recording a blob")?;
            }
        }
        Ok(())
    }

    /// The size of a blob the tenant owns; `None` when it owns no such blob.
    fn tenant_blob_size(&self, tenant_id: i64, sha256: &str) -> Result<Option<u64>> {
        self.0
            .query_row(
                "SELECT b.size FROM tenant_blobs tb JOIN blobs b ON b.sha256 = tb.sha256
                 WHERE tb.tenant_id = ?1 AND tb.sha256 = ?2",
                params![tenant_id, sha256],
                |r| r.get(0),
            )
            .optional()
            .doing("looking up a blob")
    }

    // ---- models ----

    fn model_version(
        &self,
        tenant_id: i64,
        name: &str,
        version: &str,
    ) -> Result<Option<ModelVersion>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {MODEL_COLUMNS} FROM model_versions
                 WHERE tenant_id = ?1 AND name = ?2 AND version = ?3"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![tenant_id, name, version], model_row)
                    .optional()
            })
            .doing("looking up a model version")
    }

    fn model_by_sha256(
        &self,
        tenant_id: i64,
        name: &str,
        sha256: &str,
    ) -> Result<Option<ModelVersion>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {MODEL_COLUMNS} FROM model_versions
                 WHERE tenant_id = ?1 AND name = ?2 AND sha256 = ?3"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![tenant_id, name, sha256], model_row)
                    .optional()
            })
            .doing("looking up a model version")
    }

    fn newest_model_version(&self, tenant_id: i64, name: &str) -> Result<Option<ModelVersion>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {MODEL_COLUMNS} FROM model_versions
                 WHERE tenant_id = ?1 AND name = ?2 ORDER BY id DESC LIMIT 1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![tenant_id, name], model_row)
                    .optional()
            })
            .doing("looking up a model version")
    }

    fn insert_model_version(&self, tenant_id: i64, model: &ModelVersion) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO model_versions
                 (tenant_id, name, version, sha256, size, engine, target, created_at, uri)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    tenant_id,
                    model.name,
                    model.version,
                    model.sha256,
                    model.size,
                    model.engine,
                    model.target,
                    model.created_at,
                    model.uri
                ],
            )
            .doing("inserting a model version")?;
        Ok(())
    }

    /// All model versions of a tenant (`name = None`) or of one model, newest first.
    fn model_versions(&self, tenant_id: i64, name: Option<&str>) -> Result<Vec<ModelVersion>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!(
                "SELECT {MODEL_COLUMNS} FROM model_versions
                 WHERE tenant_id = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY id DESC"
            ))
            .doing("listing model versions")?;
        stmt.query_map(params![tenant_id, name], model_row)
            .and_then(|rows| rows.collect())
            .doing("listing model versions")
    }

    // ---- functions ----

    /// A function version and its full digest.
    fn function_version(
        &self,
        tenant_id: i64,
        name: &str,
        version: &str,
    ) -> Result<Option<(FunctionVersion, String)>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {FUNCTION_COLUMNS} FROM function_versions f
                 WHERE f.tenant_id = ?1 AND f.name = ?2 AND f.version = ?3"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![tenant_id, name, version], function_row)
                    .optional()
            })
            .doing("looking up a function version")
    }

    fn insert_function_version(
        &self,
        tenant_id: i64,
        function: &FunctionVersion,
        digest: &str,
    ) -> Result<()> {
        let models = serde_json::to_string(&function.models).context("encoding model bindings")?;
        let env = serde_json::to_string(&function.env).context("encoding env")?;
        self.0
            .execute(
                "INSERT INTO function_versions
                 (tenant_id, name, version, digest, wasm_sha256, models, env, memory_mb,
                  timeout_ms, concurrency, public, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    tenant_id,
                    function.name,
                    function.version,
                    digest,
                    function.wasm_sha256,
                    models,
                    env,
                    function.limits.memory_mb,
                    function.limits.timeout_ms,
                    function.limits.concurrency,
                    function.public,
                    function.created_at
                ],
            )
            .doing("inserting a function version")?;
        Ok(())
    }

    /// Points `alias` of a function at `version` (which must exist).
    fn set_alias(
        &self,
        tenant_id: i64,
        name: &str,
        alias: &str,
        version: &str,
        now: i64,
    ) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO function_aliases (tenant_id, name, alias, version, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, name, alias)
                 DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                params![tenant_id, name, alias, version, now],
            )
            .doing("setting a function alias")?;
        Ok(())
    }

    /// The version an alias points at.
    fn alias_target(&self, tenant_id: i64, name: &str, alias: &str) -> Result<Option<String>> {
        self.0
            .query_row(
                "SELECT version FROM function_aliases
                 WHERE tenant_id = ?1 AND name = ?2 AND alias = ?3",
                params![tenant_id, name, alias],
                |r| r.get(0),
            )
            .optional()
            .doing("looking up a function alias")
    }

    /// All aliases of a function: alias -> version.
    fn aliases(&self, tenant_id: i64, name: &str) -> Result<BTreeMap<String, String>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT alias, version FROM function_aliases WHERE tenant_id = ?1 AND name = ?2",
            )
            .doing("listing function aliases")?;
        stmt.query_map(params![tenant_id, name], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .doing("listing function aliases")
    }

    /// A function's versions, newest first.
    fn function_versions(&self, tenant_id: i64, name: &str) -> Result<Vec<FunctionVersion>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!(
                "SELECT {FUNCTION_COLUMNS} FROM function_versions f
                 WHERE f.tenant_id = ?1 AND f.name = ?2 ORDER BY f.id DESC"
            ))
            .doing("listing function versions")?;
        stmt.query_map(params![tenant_id, name], |r| {
            function_row(r).map(|(f, _)| f)
        })
        .and_then(|rows| rows.collect())
        .doing("listing function versions")
    }

    /// Every function of a tenant with the version its `latest` alias points at, by name.
    fn list_functions(&self, tenant_id: i64) -> Result<Vec<FunctionSummary>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!(
                "SELECT {FUNCTION_COLUMNS} FROM function_aliases a
                 JOIN function_versions f
                   ON f.tenant_id = a.tenant_id AND f.name = a.name AND f.version = a.version
                 WHERE a.tenant_id = ?1 AND a.alias = ?2 ORDER BY f.name"
            ))
            .doing("listing functions")?;
        stmt.query_map(params![tenant_id, crate::validate::LATEST], |r| {
            function_row(r).map(|(latest, _)| FunctionSummary {
                name: latest.name.clone(),
                latest,
            })
        })
        .and_then(|rows| rows.collect())
        .doing("listing functions")
    }

    fn unused_blobs(&self, recorded_before: i64, limit: usize) -> Result<Vec<String>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT b.sha256 FROM blobs b
                 WHERE b.deleting_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM function_versions f WHERE f.wasm_sha256 = b.sha256)
                   AND NOT EXISTS (SELECT 1 FROM model_versions m WHERE m.sha256 = b.sha256)
                   AND NOT EXISTS (SELECT 1 FROM tenant_blobs tb
                                   WHERE tb.sha256 = b.sha256 AND tb.created_at >= ?1)
                 ORDER BY b.sha256 LIMIT ?2",
            )
            .doing("finding unused blobs")?;
        stmt.query_map(params![recorded_before, limit as i64], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .doing("finding unused blobs")
    }

    fn mark_blob_deleting(&self, sha256: &str, now: i64) -> Result<()> {
        self.0
            .execute("DELETE FROM tenant_blobs WHERE sha256 = ?1", [sha256])
            .doing("forgetting a blob's owners")?;
        self.0
            .execute(
                "UPDATE blobs SET deleting_at = ?2 WHERE sha256 = ?1",
                params![sha256, now],
            )
            .doing("marking a blob for deletion")?;
        Ok(())
    }

    fn blobs_being_deleted(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT sha256 FROM blobs WHERE deleting_at IS NOT NULL ORDER BY sha256",
            )
            .doing("listing blobs being deleted")?;
        stmt.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .doing("listing blobs being deleted")
    }

    fn forget_blob(&self, sha256: &str) -> Result<()> {
        self.0
            .execute(
                "DELETE FROM blobs WHERE sha256 = ?1 AND deleting_at IS NOT NULL",
                [sha256],
            )
            .doing("forgetting a deleted blob")?;
        Ok(())
    }

    fn delete_function_version(&self, tenant_id: i64, name: &str, version: &str) -> Result<bool> {
        let deleted = self
            .0
            .execute(
                "DELETE FROM function_versions WHERE tenant_id = ?1 AND name = ?2 AND version = ?3",
                params![tenant_id, name, version],
            )
            .doing("deleting a function version")?;
        Ok(deleted == 1)
    }

    fn find_function(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
        alias: Option<&str>,
    ) -> Result<Option<FunctionVersion>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {FUNCTION_COLUMNS} FROM tenants t
                 JOIN function_versions f ON f.tenant_id = t.id AND f.name = ?2
                 WHERE t.name = ?1
                   AND f.version = COALESCE(?3, (SELECT a.version FROM function_aliases a
                       WHERE a.tenant_id = t.id AND a.name = ?2 AND a.alias = ?4))"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![tenant, name, version, alias], |r| {
                    function_row(r).map(|(f, _)| f)
                })
                .optional()
            })
            .doing("resolving a function")
    }

    fn record_alias_move(
        &self,
        tenant_id: i64,
        name: &str,
        alias: &str,
        previous: Option<&str>,
        version: &str,
        rollback: bool,
        now: i64,
    ) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO function_alias_moves
                 (tenant_id, name, alias, previous, version, is_rollback, moved_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![tenant_id, name, alias, previous, version, rollback, now],
            )
            .doing("recording an alias move")?;
        Ok(())
    }

    fn last_alias_move(
        &self,
        tenant_id: i64,
        name: &str,
        alias: &str,
    ) -> Result<Option<AliasMove>> {
        self.0
            .query_row(
                "SELECT id, previous, version FROM function_alias_moves
                 WHERE tenant_id = ?1 AND name = ?2 AND alias = ?3
                   AND is_rollback = 0 AND undone = 0
                 ORDER BY id DESC LIMIT 1",
                params![tenant_id, name, alias],
                |r| {
                    Ok(AliasMove {
                        id: r.get(0)?,
                        previous: r.get(1)?,
                        version: r.get(2)?,
                    })
                },
            )
            .optional()
            .doing("looking up an alias's history")
    }

    fn mark_alias_move_undone(&self, id: i64) -> Result<()> {
        self.0
            .execute(
                "UPDATE function_alias_moves SET undone = 1 WHERE id = ?1",
                [id],
            )
            .doing("recording a rollback")?;
        Ok(())
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.0
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .doing("reading a setting")
    }

    fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        self.0
            .execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .doing("writing a setting")?;
        Ok(())
    }
}
