//! Every SQL statement of the PostgreSQL backend: the [`Queries`] methods for [`PgSql`].
//! Statements are prepared once per connection (deadpool's statement cache); rows come back as
//! the crate's records; tokio-postgres errors become `RegistryError::Internal` naming what was
//! being done.

use std::collections::BTreeMap;

use anyhow::Context;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Conn, PgSql};
use crate::db::{AliasMove, KeyRow, Queries, Result, parse_scopes, scopes_text};
use crate::{
    FunctionSummary, FunctionVersion, KeyInfo, Limits, ModelBinding, ModelVersion, RegistryError,
    Scope, Tenant,
};

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

fn failed(error: impl Into<anyhow::Error>, what: &str) -> RegistryError {
    RegistryError::Internal(error.into().context(format!("database: {what}")))
}

impl PgSql<'_> {
    /// Runs one statement and returns its rows.
    fn rows(&self, sql: &str, params: Params<'_>, what: &str) -> Result<Vec<Row>> {
        self.rt
            .block_on(async {
                match self.conn {
                    Conn::Client(client) => {
                        let statement = client.prepare_cached(sql).await?;
                        client.query(&statement, params).await
                    }
                    Conn::Tx(tx) => {
                        let statement = tx.prepare_cached(sql).await?;
                        tx.query(&statement, params).await
                    }
                }
            })
            .map_err(|e| failed(e, what))
    }

    /// Runs one statement and returns its first row, if any.
    fn row(&self, sql: &str, params: Params<'_>, what: &str) -> Result<Option<Row>> {
        Ok(self.rows(sql, params, what)?.into_iter().next())
    }

    /// Runs one statement and returns how many rows it changed.
    fn execute(&self, sql: &str, params: Params<'_>, what: &str) -> Result<u64> {
        self.rt
            .block_on(async {
                match self.conn {
                    Conn::Client(client) => {
                        let statement = client.prepare_cached(sql).await?;
                        client.execute(&statement, params).await
                    }
                    Conn::Tx(tx) => {
                        let statement = tx.prepare_cached(sql).await?;
                        tx.execute(&statement, params).await
                    }
                }
            })
            .map_err(|e| failed(e, what))
    }

    /// Maps every row with `f`.
    fn map<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        what: &str,
        f: impl Fn(&Row) -> anyhow::Result<T>,
    ) -> Result<Vec<T>> {
        self.rows(sql, params, what)?
            .iter()
            .map(|row| f(row).map_err(|e| failed(e, what)))
            .collect()
    }

    /// Maps the first row, if any, with `f`.
    fn map_one<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        what: &str,
        f: impl Fn(&Row) -> anyhow::Result<T>,
    ) -> Result<Option<T>> {
        match self.row(sql, params, what)? {
            Some(row) => f(&row).map(Some).map_err(|e| failed(e, what)),
            None => Ok(None),
        }
    }
}

fn size(value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| RegistryError::BadRequest(format!("size {value} is out of range")))
}

fn unsigned<T: TryFrom<i64>>(row: &Row, index: usize) -> anyhow::Result<T> {
    let value: i64 = row.try_get(index)?;
    T::try_from(value).map_err(|_| anyhow::anyhow!("column {index}: {value} is out of range"))
}

fn optional_unsigned<T: TryFrom<i64>>(row: &Row, index: usize) -> anyhow::Result<Option<T>> {
    let value: Option<i64> = row.try_get(index)?;
    value
        .map(|v| T::try_from(v).map_err(|_| anyhow::anyhow!("column {index}: {v} is out of range")))
        .transpose()
}

const KEY_COLUMNS: &str =
    "k.id, t.name, k.secret_hash, k.scopes, k.created_at, k.expires_at, k.revoked_at";

fn key_row(row: &Row) -> anyhow::Result<KeyRow> {
    Ok(KeyRow {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        secret_hash: row.try_get(2)?,
        scopes: parse_scopes(row.try_get(3)?)?,
        created_at: row.try_get(4)?,
        expires_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
    })
}

const MODEL_COLUMNS: &str = "name, version, sha256, size, engine, target, created_at, uri";

fn model_row(row: &Row) -> anyhow::Result<ModelVersion> {
    Ok(ModelVersion {
        name: row.try_get(0)?,
        version: row.try_get(1)?,
        sha256: row.try_get(2)?,
        size: unsigned(row, 3)?,
        engine: row.try_get(4)?,
        target: row.try_get(5)?,
        created_at: row.try_get(6)?,
        uri: row.try_get(7)?,
    })
}

const FUNCTION_COLUMNS: &str = "f.name, f.version, f.wasm_sha256, f.models, f.env, f.memory_mb, \
     f.timeout_ms, f.concurrency, f.public, f.created_at, f.digest";

/// A function version and its full digest.
fn function_row(row: &Row) -> anyhow::Result<(FunctionVersion, String)> {
    let models: BTreeMap<String, ModelBinding> =
        serde_json::from_str(row.try_get(3)?).context("decoding model bindings")?;
    let env: BTreeMap<String, String> =
        serde_json::from_str(row.try_get(4)?).context("decoding env")?;
    let version = FunctionVersion {
        name: row.try_get(0)?,
        version: row.try_get(1)?,
        wasm_sha256: row.try_get(2)?,
        models,
        env,
        limits: Limits {
            memory_mb: optional_unsigned(row, 5)?,
            timeout_ms: optional_unsigned(row, 6)?,
            concurrency: optional_unsigned(row, 7)?,
        },
        public: row.try_get(8)?,
        created_at: row.try_get(9)?,
    };
    Ok((version, row.try_get(10)?))
}

impl Queries for PgSql<'_> {
    fn ping(&self) -> Result<()> {
        self.rows("SELECT 1", &[], "ping")?;
        Ok(())
    }

    // ---- tenants ----

    fn tenant_id(&self, name: &str) -> Result<i64> {
        self.map_one(
            "SELECT id FROM tenants WHERE name = $1",
            &[&name],
            "looking up a tenant",
            |r| Ok(r.try_get(0)?),
        )?
        .ok_or_else(|| RegistryError::NotFound(format!("tenant `{name}` not found")))
    }

    fn tenant_exists(&self, name: &str) -> Result<bool> {
        Ok(self
            .row(
                "SELECT 1 FROM tenants WHERE name = $1",
                &[&name],
                "looking up a tenant",
            )?
            .is_some())
    }

    fn insert_tenant(&self, name: &str, now: i64) -> Result<Tenant> {
        if self.tenant_exists(name)? {
            return Err(RegistryError::Conflict(format!(
                "tenant `{name}` already exists"
            )));
        }
        self.execute(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2)",
            &[&name, &now],
            "inserting a tenant",
        )?;
        Ok(Tenant {
            name: name.to_string(),
            created_at: now,
        })
    }

    fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.map(
            "SELECT name, created_at FROM tenants ORDER BY name",
            &[],
            "listing tenants",
            |r| {
                Ok(Tenant {
                    name: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                })
            },
        )
    }

    // ---- API keys ----

    fn insert_key(
        &self,
        id: &str,
        tenant_id: i64,
        secret_hash: &[u8],
        scopes: &[Scope],
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<bool> {
        let inserted = self.execute(
            "INSERT INTO api_keys (id, tenant_id, secret_hash, scopes, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            &[
                &id,
                &tenant_id,
                &secret_hash,
                &scopes_text(scopes),
                &now,
                &expires_at,
            ],
            "inserting an API key",
        )?;
        Ok(inserted == 1)
    }

    fn reset_key(&self, id: &str, secret_hash: &[u8], scopes: &[Scope]) -> Result<()> {
        self.execute(
            "UPDATE api_keys SET secret_hash = $2, scopes = $3, expires_at = NULL,
             revoked_at = NULL WHERE id = $1",
            &[&id, &secret_hash, &scopes_text(scopes)],
            "updating an API key",
        )?;
        Ok(())
    }

    fn key(&self, id: &str) -> Result<Option<KeyRow>> {
        self.map_one(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.id = $1"
            ),
            &[&id],
            "looking up an API key",
            key_row,
        )
    }

    fn list_keys(&self, tenant_id: i64) -> Result<Vec<KeyInfo>> {
        self.map(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.tenant_id = $1 ORDER BY k.created_at DESC, k.seq DESC"
            ),
            &[&tenant_id],
            "listing API keys",
            |r| key_row(r).map(|k| k.info()),
        )
    }

    fn revoke_key(&self, tenant_id: i64, id: &str, now: i64) -> Result<bool> {
        let changed = self.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3)
             WHERE tenant_id = $1 AND id = $2",
            &[&tenant_id, &id, &now],
            "revoking an API key",
        )?;
        Ok(changed == 1)
    }

    // ---- blobs ----

    fn record_blob(&self, tenant_id: i64, sha256: &str, size_bytes: u64, now: i64) -> Result<()> {
        self.record_blob_digest(sha256, size_bytes, now)?;
        // created_at is refreshed on every upload: garbage collection spares recent uploads.
        self.execute(
            "INSERT INTO tenant_blobs (tenant_id, sha256, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, sha256) DO UPDATE SET created_at = excluded.created_at",
            &[&tenant_id, &sha256, &now],
            "recording a blob",
        )?;
        Ok(())
    }

    fn record_blob_digest(&self, sha256: &str, size_bytes: u64, now: i64) -> Result<()> {
        let stored = size(size_bytes)?;
        let known = self.map_one(
            "SELECT size, deleting_at FROM blobs WHERE sha256 = $1",
            &[&sha256],
            "looking up a blob",
            |r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, Option<i64>>(1)?)),
        )?;
        match known {
            Some((_, Some(_))) => return Err(crate::models::blob_being_deleted(sha256)),
            Some((known, None)) if known != stored => {
                return Err(RegistryError::Conflict(format!(
                    "blob `{sha256}` is recorded with size {known}, not {size_bytes}"
                )));
            }
            Some(_) => {}
            None => {
                self.execute(
                    "INSERT INTO blobs (sha256, size, created_at) VALUES ($1, $2, $3)",
                    &[&sha256, &stored, &now],
                    "recording a blob",
                )?;
            }
        }
        Ok(())
    }

    fn tenant_blob_size(&self, tenant_id: i64, sha256: &str) -> Result<Option<u64>> {
        self.map_one(
            "SELECT b.size FROM tenant_blobs tb JOIN blobs b ON b.sha256 = tb.sha256
             WHERE tb.tenant_id = $1 AND tb.sha256 = $2",
            &[&tenant_id, &sha256],
            "looking up a blob",
            |r| unsigned(r, 0),
        )
    }

    fn unused_blobs(&self, recorded_before: i64, limit: usize) -> Result<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.map(
            "SELECT b.sha256 FROM blobs b
             WHERE b.deleting_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM function_versions f WHERE f.wasm_sha256 = b.sha256)
               AND NOT EXISTS (SELECT 1 FROM model_versions m WHERE m.sha256 = b.sha256)
               AND NOT EXISTS (SELECT 1 FROM tenant_blobs tb
                               WHERE tb.sha256 = b.sha256 AND tb.created_at >= $1)
             ORDER BY b.sha256 LIMIT $2",
            &[&recorded_before, &limit],
            "finding unused blobs",
            |r| Ok(r.try_get(0)?),
        )
    }

    fn mark_blob_deleting(&self, sha256: &str, now: i64) -> Result<()> {
        self.execute(
            "DELETE FROM tenant_blobs WHERE sha256 = $1",
            &[&sha256],
            "forgetting a blob's owners",
        )?;
        self.execute(
            "UPDATE blobs SET deleting_at = $2 WHERE sha256 = $1",
            &[&sha256, &now],
            "marking a blob for deletion",
        )?;
        Ok(())
    }

    fn blobs_being_deleted(&self) -> Result<Vec<String>> {
        self.map(
            "SELECT sha256 FROM blobs WHERE deleting_at IS NOT NULL ORDER BY sha256",
            &[],
            "listing blobs being deleted",
            |r| Ok(r.try_get(0)?),
        )
    }

    fn forget_blob(&self, sha256: &str) -> Result<()> {
        self.execute(
            "DELETE FROM blobs WHERE sha256 = $1 AND deleting_at IS NOT NULL",
            &[&sha256],
            "forgetting a deleted blob",
        )?;
        Ok(())
    }

    // ---- models ----

    fn model_version(
        &self,
        tenant_id: i64,
        name: &str,
        version: &str,
    ) -> Result<Option<ModelVersion>> {
        self.map_one(
            &format!(
                "SELECT {MODEL_COLUMNS} FROM model_versions
                 WHERE tenant_id = $1 AND name = $2 AND version = $3"
            ),
            &[&tenant_id, &name, &version],
            "looking up a model version",
            model_row,
        )
    }

    fn model_by_sha256(
        &self,
        tenant_id: i64,
        name: &str,
        sha256: &str,
    ) -> Result<Option<ModelVersion>> {
        self.map_one(
            &format!(
                "SELECT {MODEL_COLUMNS} FROM model_versions
                 WHERE tenant_id = $1 AND name = $2 AND sha256 = $3"
            ),
            &[&tenant_id, &name, &sha256],
            "looking up a model version",
            model_row,
        )
    }

    fn newest_model_version(&self, tenant_id: i64, name: &str) -> Result<Option<ModelVersion>> {
        self.map_one(
            &format!(
                "SELECT {MODEL_COLUMNS} FROM model_versions
                 WHERE tenant_id = $1 AND name = $2 ORDER BY id DESC LIMIT 1"
            ),
            &[&tenant_id, &name],
            "looking up a model version",
            model_row,
        )
    }

    fn insert_model_version(&self, tenant_id: i64, model: &ModelVersion) -> Result<()> {
        self.execute(
            "INSERT INTO model_versions
             (tenant_id, name, version, sha256, size, engine, target, created_at, uri)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &tenant_id,
                &model.name,
                &model.version,
                &model.sha256,
                &size(model.size)?,
                &model.engine,
                &model.target,
                &model.created_at,
                &model.uri,
            ],
            "inserting a model version",
        )?;
        Ok(())
    }

    fn model_versions(&self, tenant_id: i64, name: Option<&str>) -> Result<Vec<ModelVersion>> {
        self.map(
            &format!(
                "SELECT {MODEL_COLUMNS} FROM model_versions
                 WHERE tenant_id = $1 AND ($2::TEXT IS NULL OR name = $2) ORDER BY id DESC"
            ),
            &[&tenant_id, &name],
            "listing model versions",
            model_row,
        )
    }

    // ---- functions ----

    fn function_version(
        &self,
        tenant_id: i64,
        name: &str,
        version: &str,
    ) -> Result<Option<(FunctionVersion, String)>> {
        self.map_one(
            &format!(
                "SELECT {FUNCTION_COLUMNS} FROM function_versions f
                 WHERE f.tenant_id = $1 AND f.name = $2 AND f.version = $3"
            ),
            &[&tenant_id, &name, &version],
            "looking up a function version",
            function_row,
        )
    }

    fn insert_function_version(
        &self,
        tenant_id: i64,
        function: &FunctionVersion,
        digest: &str,
    ) -> Result<()> {
        let models = serde_json::to_string(&function.models).context("encoding model bindings")?;
        let env = serde_json::to_string(&function.env).context("encoding env")?;
        let memory_mb = function.limits.memory_mb.map(i64::from);
        let timeout_ms = function.limits.timeout_ms.map(size).transpose()?;
        let concurrency = function.limits.concurrency.map(i64::from);
        self.execute(
            "INSERT INTO function_versions
             (tenant_id, name, version, digest, wasm_sha256, models, env, memory_mb,
              timeout_ms, concurrency, public, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &tenant_id,
                &function.name,
                &function.version,
                &digest,
                &function.wasm_sha256,
                &models,
                &env,
                &memory_mb,
                &timeout_ms,
                &concurrency,
                &function.public,
                &function.created_at,
            ],
            "inserting a function version",
        )?;
        Ok(())
    }

    fn delete_function_version(&self, tenant_id: i64, name: &str, version: &str) -> Result<bool> {
        let deleted = self.execute(
            "DELETE FROM function_versions WHERE tenant_id = $1 AND name = $2 AND version = $3",
            &[&tenant_id, &name, &version],
            "deleting a function version",
        )?;
        Ok(deleted == 1)
    }

    fn function_versions(&self, tenant_id: i64, name: &str) -> Result<Vec<FunctionVersion>> {
        self.map(
            &format!(
                "SELECT {FUNCTION_COLUMNS} FROM function_versions f
                 WHERE f.tenant_id = $1 AND f.name = $2 ORDER BY f.id DESC"
            ),
            &[&tenant_id, &name],
            "listing function versions",
            |r| function_row(r).map(|(f, _)| f),
        )
    }

    fn list_functions(&self, tenant_id: i64) -> Result<Vec<FunctionSummary>> {
        self.map(
            &format!(
                "SELECT {FUNCTION_COLUMNS} FROM function_aliases a
                 JOIN function_versions f
                   ON f.tenant_id = a.tenant_id AND f.name = a.name AND f.version = a.version
                 WHERE a.tenant_id = $1 AND a.alias = $2 ORDER BY f.name"
            ),
            &[&tenant_id, &crate::validate::LATEST],
            "listing functions",
            |r| {
                function_row(r).map(|(latest, _)| FunctionSummary {
                    name: latest.name.clone(),
                    latest,
                })
            },
        )
    }

    fn find_function(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
        alias: Option<&str>,
    ) -> Result<Option<FunctionVersion>> {
        self.map_one(
            &format!(
                "SELECT {FUNCTION_COLUMNS} FROM tenants t
                 JOIN function_versions f ON f.tenant_id = t.id AND f.name = $2
                 WHERE t.name = $1
                   AND f.version = COALESCE($3::TEXT, (SELECT a.version FROM function_aliases a
                       WHERE a.tenant_id = t.id AND a.name = $2 AND a.alias = $4::TEXT))"
            ),
            &[&tenant, &name, &version, &alias],
            "resolving a function",
            |r| function_row(r).map(|(f, _)| f),
        )
    }

    // ---- aliases ----

    fn set_alias(
        &self,
        tenant_id: i64,
        name: &str,
        alias: &str,
        version: &str,
        now: i64,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO function_aliases (tenant_id, name, alias, version, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, name, alias)
             DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
            &[&tenant_id, &name, &alias, &version, &now],
            "setting a function alias",
        )?;
        Ok(())
    }

    fn alias_target(&self, tenant_id: i64, name: &str, alias: &str) -> Result<Option<String>> {
        self.map_one(
            "SELECT version FROM function_aliases
             WHERE tenant_id = $1 AND name = $2 AND alias = $3",
            &[&tenant_id, &name, &alias],
            "looking up a function alias",
            |r| Ok(r.try_get(0)?),
        )
    }

    fn aliases(&self, tenant_id: i64, name: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .map(
                "SELECT alias, version FROM function_aliases WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id, &name],
                "listing function aliases",
                |r| Ok((r.try_get(0)?, r.try_get(1)?)),
            )?
            .into_iter()
            .collect())
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
        self.execute(
            "INSERT INTO function_alias_moves
             (tenant_id, name, alias, previous, version, is_rollback, moved_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &tenant_id, &name, &alias, &previous, &version, &rollback, &now,
            ],
            "recording an alias move",
        )?;
        Ok(())
    }

    fn last_alias_move(
        &self,
        tenant_id: i64,
        name: &str,
        alias: &str,
    ) -> Result<Option<AliasMove>> {
        self.map_one(
            "SELECT id, previous, version FROM function_alias_moves
             WHERE tenant_id = $1 AND name = $2 AND alias = $3
               AND NOT is_rollback AND NOT undone
             ORDER BY id DESC LIMIT 1",
            &[&tenant_id, &name, &alias],
            "looking up an alias's history",
            |r| {
                Ok(AliasMove {
                    id: r.try_get(0)?,
                    previous: r.try_get(1)?,
                    version: r.try_get(2)?,
                })
            },
        )
    }

    fn mark_alias_move_undone(&self, id: i64) -> Result<()> {
        self.execute(
            "UPDATE function_alias_moves SET undone = TRUE WHERE id = $1",
            &[&id],
            "recording a rollback",
        )?;
        Ok(())
    }

    // ---- settings ----

    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.map_one(
            "SELECT value FROM settings WHERE name = $1",
            &[&name],
            "reading a setting",
            |r| Ok(r.try_get(0)?),
        )
    }

    fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        self.execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&name, &value],
            "writing a setting",
        )?;
        Ok(())
    }
}
