//! The PostgreSQL schema as an ordered list of migrations, numbered as the SQLite ones are (the
//! same version means the same tables in either backend), and the runner that applies them. A
//! migration, once released, never changes: new needs get a new entry at the end. Applied
//! versions are recorded in `schema_migrations`.

use anyhow::Context;

use super::WRITE_LOCK;

/// (version, name, SQL), in order; versions start at 1 and have no gaps.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", INITIAL),
    (
        2,
        "alias history, blob garbage collection, settings",
        ALIAS_HISTORY_GC_SETTINGS,
    ),
    (3, "model uri", MODEL_URI),
];

/// Applies the migrations not yet recorded, each in its own transaction under the write lock (so
/// that nodes starting at once apply each exactly once). Refuses a database written by a newer
/// build.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> anyhow::Result<()> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version     BIGINT PRIMARY KEY,
                name        TEXT NOT NULL,
                applied_at  BIGINT NOT NULL
            )",
        )
        .await
        .context("creating schema_migrations")?;
        tx.commit().await?;
    }
    for &(version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .await?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )
            .await?
            .try_get(0)?;
        anyhow::ensure!(
            current <= known,
            "the database is at schema version {current}, newer than this build knows ({known})"
        );
        if current >= version {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration {version} ({name})"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&version, &name, &crate::now()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied registry migration (postgres)");
    }
    Ok(())
}

const INITIAL: &str = r#"
CREATE TABLE tenants (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- An API key `nmb_<id>_<secret>` is stored as its id and sha256(pepper || secret) only.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,  -- insertion order
    tenant_id    BIGINT NOT NULL REFERENCES tenants(id),
    secret_hash  BYTEA NOT NULL,
    scopes       TEXT NOT NULL,                        -- comma-separated: admin,deploy,invoke
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,                               -- unix seconds; NULL = never
    revoked_at   BIGINT                                -- unix seconds; NULL = active
);
CREATE INDEX api_keys_by_tenant ON api_keys(tenant_id);

-- Blobs known to the store (global, content-addressed) and which tenant uploaded which.
CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE tenant_blobs (
    tenant_id   BIGINT NOT NULL REFERENCES tenants(id),
    sha256      TEXT NOT NULL REFERENCES blobs(sha256),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sha256)
);

-- version = sha256[..12]; newest first = highest id first.
CREATE TABLE model_versions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    sha256      TEXT NOT NULL REFERENCES blobs(sha256),
    size        BIGINT NOT NULL,
    engine      TEXT NOT NULL,
    target      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name, version)
);

-- version = digest[..12], digest = sha256 of the canonical form (see canonical.rs).
-- models: JSON object guest name -> {model, version, sha256, engine, target}; env: JSON object.
CREATE TABLE function_versions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    BIGINT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    wasm_sha256  TEXT NOT NULL REFERENCES blobs(sha256),
    models       TEXT NOT NULL,
    env          TEXT NOT NULL,
    memory_mb    BIGINT,
    timeout_ms   BIGINT,
    concurrency  BIGINT,
    public       BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, name, version)
);

CREATE TABLE function_aliases (
    tenant_id   BIGINT NOT NULL,
    name        TEXT NOT NULL,
    alias       TEXT NOT NULL,
    version     TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, alias),
    FOREIGN KEY (tenant_id, name, version) REFERENCES function_versions(tenant_id, name, version)
);
"#;

const ALIAS_HISTORY_GC_SETTINGS: &str = r#"
-- Every move of an alias, oldest first: what a rollback walks back through. A rollback undoes
-- the newest move that is neither a rollback nor undone, and is recorded itself (is_rollback).
CREATE TABLE function_alias_moves (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    BIGINT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    alias        TEXT NOT NULL,
    previous     TEXT,                          -- version before the move; NULL = created it
    version      TEXT NOT NULL,                 -- version after the move
    is_rollback  BOOLEAN NOT NULL,
    undone       BOOLEAN NOT NULL DEFAULT FALSE,
    moved_at     BIGINT NOT NULL
);
CREATE INDEX function_alias_moves_by_alias ON function_alias_moves(tenant_id, name, alias, id);
INSERT INTO function_alias_moves (tenant_id, name, alias, previous, version, is_rollback, moved_at)
    SELECT tenant_id, name, alias, NULL, version, FALSE, updated_at FROM function_aliases
    ORDER BY updated_at;

-- Set while a blob is being garbage-collected: its owners are forgotten, its bytes deleted.
ALTER TABLE blobs ADD COLUMN deleting_at BIGINT;
CREATE INDEX tenant_blobs_by_sha256 ON tenant_blobs(sha256);
CREATE INDEX function_versions_by_wasm ON function_versions(wasm_sha256);
CREATE INDEX model_versions_by_sha256 ON model_versions(sha256);

-- The registry's own settings (e.g. the fingerprint of the key pepper).
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"#;

// A model registered from an object someone put in S3 (`s3://bucket/key`) keeps its URI; NULL means
// the blob store's own copy. Its digest still gets a `blobs` row (model_versions refers to it) but
// no `tenant_blobs` row: the tenant registered an object, it did not upload a blob.
const MODEL_URI: &str = r#"
ALTER TABLE model_versions ADD COLUMN uri TEXT;
"#;
