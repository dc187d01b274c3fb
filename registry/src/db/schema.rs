//! The SQLite schema as an ordered list of migrations. A migration, once released, never
//! changes: new needs get a new entry at the end. Applied versions are recorded in
//! `schema_migrations`.

/// (version, name, SQL), in order; versions start at 1 and have no gaps.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "initial", INITIAL)];

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
