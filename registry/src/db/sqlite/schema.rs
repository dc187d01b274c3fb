//! The SQLite schema as an ordered list of migrations. A migration, once released, never
//! changes: new needs get a new entry at the end. Applied versions are recorded in
//! `schema_migrations`.

/// (version, name, SQL), in order; versions start at 1 and have no gaps.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", INITIAL),
    (
        2,
        "alias history, blob garbage collection, settings",
        ALIAS_HISTORY_GC_SETTINGS,
    ),
    (3, "model uri", MODEL_URI),
];

const INITIAL: &str = r#"
CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

-- An API key `nmb_<id>_<secret>` is stored as its id and sha256(pepper || secret) only.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    INTEGER NOT NULL REFERENCES tenants(id),
    secret_hash  BLOB NOT NULL,
    scopes       TEXT NOT NULL,              -- comma-separated: admin,deploy,invoke
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,                    -- unix seconds; NULL = never
    revoked_at   INTEGER                     -- unix seconds; NULL = active
) STRICT;
CREATE INDEX api_keys_by_tenant ON api_keys(tenant_id);

-- Blobs known to the store (global, content-addressed) and which tenant uploaded which.
CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE TABLE tenant_blobs (
    tenant_id   INTEGER NOT NULL REFERENCES tenants(id),
    sha256      TEXT NOT NULL REFERENCES blobs(sha256),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, sha256)
) STRICT;

-- version = sha256[..12]; newest first = highest id first.
CREATE TABLE model_versions (
    id          INTEGER PRIMARY KEY,
    tenant_id   INTEGER NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    sha256      TEXT NOT NULL REFERENCES blobs(sha256),
    size        INTEGER NOT NULL,
    engine      TEXT NOT NULL,
    target      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name, version)
) STRICT;

-- version = digest[..12], digest = sha256 of the canonical form (see canonical.rs).
-- models: JSON object guest name -> {model, version, sha256, engine, target}; env: JSON object.
CREATE TABLE function_versions (
    id           INTEGER PRIMARY KEY,
    tenant_id    INTEGER NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    wasm_sha256  TEXT NOT NULL REFERENCES blobs(sha256),
    models       TEXT NOT NULL,
    env          TEXT NOT NULL,
    memory_mb    INTEGER,
    timeout_ms   INTEGER,
    concurrency  INTEGER,
    public       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, name, version)
) STRICT;

CREATE TABLE function_aliases (
    tenant_id   INTEGER NOT NULL,
    name        TEXT NOT NULL,
    alias       TEXT NOT NULL,
    version     TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name, alias),
    FOREIGN KEY (tenant_id, name, version) REFERENCES function_versions(tenant_id, name, version)
) STRICT;
"#;

const ALIAS_HISTORY_GC_SETTINGS: &str = r#"
-- Every move of an alias, oldest first: what a rollback walks back through. A rollback undoes
-- the newest move that is neither a rollback nor undone, and is recorded itself (is_rollback).
CREATE TABLE function_alias_moves (
    id           INTEGER PRIMARY KEY,
    tenant_id    INTEGER NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    alias        TEXT NOT NULL,
    previous     TEXT,                       -- version before the move; NULL = the move created it
    version      TEXT NOT NULL,              -- version after the move
    is_rollback  INTEGER NOT NULL,
    undone       INTEGER NOT NULL DEFAULT 0, -- 1 = a rollback undid this move
    moved_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX function_alias_moves_by_alias ON function_alias_moves(tenant_id, name, alias, id);
INSERT INTO function_alias_moves (tenant_id, name, alias, previous, version, is_rollback, moved_at)
    SELECT tenant_id, name, alias, NULL, version, 0, updated_at FROM function_aliases
    ORDER BY updated_at;

-- Set while a blob is being garbage-collected: its owners are forgotten, its bytes deleted.
ALTER TABLE blobs ADD COLUMN deleting_at INTEGER;
CREATE INDEX tenant_blobs_by_sha256 ON tenant_blobs(sha256);
CREATE INDEX function_versions_by_wasm ON function_versions(wasm_sha256);
CREATE INDEX model_versions_by_sha256 ON model_versions(sha256);

-- The registry's own settings (e.g. the fingerprint of the key pepper).
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT;
"#;

// A model registered from an object someone put in S3 (`s3://bucket/key`) keeps its URI; NULL means
// the blob store's own copy. Its digest still gets a `blobs` row (model_versions refers to it) but
// no `tenant_blobs` row: the tenant registered an object, it did not upload a blob.
const MODEL_URI: &str = r#"
ALTER TABLE model_versions ADD COLUMN uri TEXT;
"#;
