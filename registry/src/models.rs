//! Blob ownership per tenant and model versions: pushing a model (content-addressed, version =
//! sha256[..12]) from an uploaded blob or from an `s3://bucket/key` object, listing, and resolving
//! `name` / `name@version` references within a tenant.

use crate::db::Sql;
use crate::{ModelVersion, NewModelVersion, Registry, RegistryError, S3Uri, now, validate};

impl Registry {
    /// Records that `tenant` owns the stored blob `sha256` of `size` bytes (idempotent). The blob
    /// must already be in the store with that size.
    pub async fn record_blob(
        &self,
        tenant: &str,
        sha256: &str,
        size: u64,
    ) -> Result<(), RegistryError> {
        let stored = self
            .blobs()
            .size(sha256)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("blob `{sha256}` not found")))?;
        if stored != size {
            return Err(RegistryError::BadRequest(format!(
                "blob `{sha256}` has {stored} bytes, not {size}"
            )));
        }
        let tenant = tenant.to_string();
        let sha256 = sha256.to_string();
        self.db()
            .write(move |sql| {
                let tenant_id = sql.tenant_id(&tenant)?;
                sql.record_blob(tenant_id, &sha256, size, now())
            })
            .await
    }

    /// The size of blob `sha256` when `tenant` owns it; `None` otherwise (also when another
    /// tenant owns it).
    pub async fn tenant_has_blob(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Option<u64>, RegistryError> {
        validate::digest(sha256)?;
        let tenant = tenant.to_string();
        let sha256 = sha256.to_string();
        self.db()
            .read(move |sql| sql.tenant_blob_size(sql.tenant_id(&tenant)?, &sha256))
            .await
    }

    /// Registers version `sha256[..12]` of model `new.name`: blob `new.sha256` owned by the
    /// tenant, or, with `new.uri`, the object at that `s3://bucket/key` (which must exist; its
    /// bytes are checked against `sha256` when a node first pulls it). The same name, bytes,
    /// engine and target again -> the existing version and `false`; the same name and bytes with
    /// another engine or target -> `Conflict`.
    pub async fn create_model_version(
        &self,
        tenant: &str,
        new: NewModelVersion,
    ) -> Result<(ModelVersion, bool), RegistryError> {
        validate::name("model", &new.name)?;
        validate::digest(&new.sha256)?;
        validate::engine(&new.engine)?;
        validate::target(&new.target)?;
        let object_size = match &new.uri {
            Some(uri) => {
                let parsed: S3Uri = uri.parse()?;
                let size = self.blobs().object_size(&parsed).await?.ok_or_else(|| {
                    RegistryError::NotFound(format!("there is no object at {parsed}"))
                })?;
                Some(size)
            }
            None => None,
        };
        let tenant = tenant.to_string();
        self.db()
            .write(move |sql| {
                let tenant_id = sql.tenant_id(&tenant)?;
                let size = match object_size {
                    Some(size) => {
                        sql.record_blob_digest(&new.sha256, size, now())?;
                        size
                    }
                    None => sql
                        .tenant_blob_size(tenant_id, &new.sha256)?
                        .ok_or_else(|| blob_not_found(&new.sha256, &tenant))?,
                };
                let version = new.sha256[..12].to_string();
                if let Some(existing) = sql.model_version(tenant_id, &new.name, &version)? {
                    if existing.sha256 != new.sha256 {
                        return Err(RegistryError::Conflict(format!(
                            "model `{}` already has a version `{version}` with other bytes ({})",
                            new.name, existing.sha256
                        )));
                    }
                    if existing.engine != new.engine || existing.target != new.target {
                        return Err(RegistryError::Conflict(format!(
                            "model `{}@{version}` already exists with engine `{}` and target `{}`; \
                             push the same bytes under another name for other settings",
                            new.name, existing.engine, existing.target
                        )));
                    }
                    return Ok((existing, false));
                }
                let model = ModelVersion {
                    name: new.name,
                    version,
                    sha256: new.sha256,
                    uri: new.uri,
                    size,
                    engine: new.engine,
                    target: new.target,
                    created_at: now(),
                };
                sql.insert_model_version(tenant_id, &model)?;
                tracing::info!(tenant, model = %model.name, version = %model.version, "created model version");
                Ok((model, true))
            })
            .await
    }

    /// Every model version of the tenant, newest first.
    pub async fn list_models(&self, tenant: &str) -> Result<Vec<ModelVersion>, RegistryError> {
        let tenant = tenant.to_string();
        self.db()
            .read(move |sql| sql.model_versions(sql.tenant_id(&tenant)?, None))
            .await
    }

    /// The versions of one model, newest first; `NotFound` if the tenant has none.
    pub async fn model_versions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<ModelVersion>, RegistryError> {
        let tenant = tenant.to_string();
        let name = name.to_string();
        self.db()
            .read(move |sql| {
                let versions = sql.model_versions(sql.tenant_id(&tenant)?, Some(&name))?;
                if versions.is_empty() {
                    return Err(model_not_found(&name, &tenant));
                }
                Ok(versions)
            })
            .await
    }

    /// The model version a reference means in the tenant: `name` (its newest version),
    /// `name@version` (12 hex) or `name@sha256` (64 hex).
    pub async fn resolve_model(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<ModelVersion, RegistryError> {
        validate::model_ref(reference)?;
        let tenant = tenant.to_string();
        let reference = reference.to_string();
        self.db()
            .read(move |sql| resolve_in(sql, sql.tenant_id(&tenant)?, &tenant, &reference))
            .await
    }
}

/// Resolves a model reference inside a transaction (shared with function deploys).
pub(crate) fn resolve_in(
    sql: &Sql<'_>,
    tenant_id: i64,
    tenant: &str,
    reference: &str,
) -> Result<ModelVersion, RegistryError> {
    let (name, version) = validate::model_ref(reference)?;
    let found = match version {
        None => sql.newest_model_version(tenant_id, name)?,
        Some(v) if validate::is_version(v) => sql.model_version(tenant_id, name, v)?,
        Some(sha256) => sql.model_by_sha256(tenant_id, name, sha256)?,
    };
    found.ok_or_else(|| model_not_found(reference, tenant))
}

fn model_not_found(reference: &str, tenant: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "model `{}` not found in tenant `{tenant}`",
        validate::shorten(reference)
    ))
}

pub(crate) fn blob_not_found(sha256: &str, tenant: &str) -> RegistryError {
    RegistryError::NotFound(format!("blob `{sha256}` not found in tenant `{tenant}`"))
}

/// The answer to recording a blob that garbage collection is deleting (see `gc`).
pub(crate) fn blob_being_deleted(sha256: &str) -> RegistryError {
    RegistryError::Conflict(format!(
        "blob `{sha256}` is being deleted as unused; upload it again in a moment"
    ))
}
