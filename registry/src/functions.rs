//! Function versions and aliases: deploying (model references resolved to exact versions,
//! version = digest of the canonical form, alias `latest` moved in the same transaction),
//! listing, resolving `latest` / a version / an alias, moving aliases with their history,
//! rollback (undoing an alias's newest move), and deleting versions (then collecting the blobs
//! no longer used, see `gc`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::canonical::function_digest;
use crate::db::Sql;
use crate::models::{blob_not_found, resolve_in};
use crate::{
    FunctionSummary, FunctionVersion, NewFunctionVersion, Registry, RegistryError, now, validate,
};

/// What moving an alias did: `{"name", "alias", "version", "previous"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasMoved {
    /// The function.
    pub name: String,
    pub alias: String,
    /// The version the alias points at now.
    pub version: String,
    /// The version it pointed at before; `None` when the move created the alias.
    pub previous: Option<String>,
}

/// What deleting a function version did: `{"name", "version", "collected_blobs"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDeleted {
    pub name: String,
    pub version: String,
    /// Blobs (sha256) deleted because no version or model of any tenant used them any more.
    pub collected_blobs: Vec<String>,
}

impl Registry {
    /// Deploys a function version. Each model reference is resolved in the tenant (a bare name
    /// means its newest version); the version is the first 12 hex characters of the sha256 of
    /// the canonical form of (wasm, resolved bindings, env, limits, public). An identical deploy
    /// returns the existing version and `false`. Either way alias `latest` now points at it.
    pub async fn create_function_version(
        &self,
        tenant: &str,
        new: NewFunctionVersion,
    ) -> Result<(FunctionVersion, bool), RegistryError> {
        validate::name("function", &new.name)?;
        validate::digest(&new.wasm_sha256)?;
        for (guest_name, reference) in &new.models {
            validate::guest_model_name(guest_name)?;
            validate::model_ref(reference)?;
        }
        validate::env(&new.env)?;
        validate::limits(&new.limits)?;
        let tenant = tenant.to_string();
        self.db()
            .write(move |sql| {
                let tenant_id = sql.tenant_id(&tenant)?;
                if sql.tenant_blob_size(tenant_id, &new.wasm_sha256)?.is_none() {
                    return Err(blob_not_found(&new.wasm_sha256, &tenant));
                }
                let mut models = BTreeMap::new();
                for (guest_name, reference) in &new.models {
                    let model = resolve_in(sql, tenant_id, &tenant, reference)?;
                    models.insert(guest_name.clone(), model.binding());
                }
                let digest =
                    function_digest(&new.wasm_sha256, &models, &new.env, &new.limits, new.public);
                let version = digest[..12].to_string();
                let (function, created) = match sql
                    .function_version(tenant_id, &new.name, &version)?
                {
                    Some((existing, existing_digest)) if existing_digest == digest => {
                        (existing, false)
                    }
                    Some(_) => {
                        return Err(RegistryError::Conflict(format!(
                            "function `{}` already has a version `{version}` with other content",
                            new.name
                        )));
                    }
                    None => {
                        let function = FunctionVersion {
                            name: new.name,
                            version,
                            wasm_sha256: new.wasm_sha256,
                            models,
                            env: new.env,
                            limits: new.limits,
                            public: new.public,
                            created_at: now(),
                        };
                        sql.insert_function_version(tenant_id, &function, &digest)?;
                        (function, true)
                    }
                };
                move_alias(
                    sql,
                    tenant_id,
                    &function.name,
                    validate::LATEST,
                    &function.version,
                )?;
                tracing::info!(
                    tenant,
                    function = %function.name,
                    version = %function.version,
                    created,
                    "deployed function version"
                );
                Ok((function, created))
            })
            .await
    }

    /// Every function of the tenant with the version `latest` points at, by name.
    pub async fn list_functions(
        &self,
        tenant: &str,
    ) -> Result<Vec<FunctionSummary>, RegistryError> {
        let tenant = tenant.to_string();
        self.db()
            .read(move |sql| sql.list_functions(sql.tenant_id(&tenant)?))
            .await
    }

    /// A function's versions, newest first; `NotFound` if the tenant has no such function.
    pub async fn function_versions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<FunctionVersion>, RegistryError> {
        let tenant = tenant.to_string();
        let name = name.to_string();
        self.db()
            .read(move |sql| {
                let versions = sql.function_versions(sql.tenant_id(&tenant)?, &name)?;
                if versions.is_empty() {
                    return Err(function_not_found(&name, &tenant));
                }
                Ok(versions)
            })
            .await
    }

    /// The function version meant by `selector`: `None` = alias `latest`, a 12-hex version, or
    /// an alias name.
    pub async fn resolve_function(
        &self,
        tenant: &str,
        name: &str,
        selector: Option<&str>,
    ) -> Result<FunctionVersion, RegistryError> {
        let tenant = tenant.to_string();
        let name = name.to_string();
        let selector = selector.unwrap_or(validate::LATEST).to_string();
        self.db()
            .read(move |sql| {
                let (version, alias) = if validate::is_version(&selector) {
                    (Some(selector.as_str()), None)
                } else {
                    (None, Some(selector.as_str()))
                };
                // One statement on the hot path; the rest only to word the error.
                if let Some(function) = sql.find_function(&tenant, &name, version, alias)? {
                    return Ok(function);
                }
                let tenant_id = sql.tenant_id(&tenant)?;
                if sql
                    .alias_target(tenant_id, &name, validate::LATEST)?
                    .is_none()
                {
                    return Err(function_not_found(&name, &tenant));
                }
                Err(RegistryError::NotFound(format!(
                    "function `{name}@{}` not found in tenant `{tenant}`",
                    validate::shorten(&selector)
                )))
            })
            .await
    }

    /// Points `alias` of function `name` at an existing `version`, recording the move in the
    /// alias's history (a move to where it already points records nothing). Alias names follow
    /// the name rule and cannot look like a version.
    pub async fn set_alias(
        &self,
        tenant: &str,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<AliasMoved, RegistryError> {
        validate::name("alias", alias)?;
        if validate::is_version(alias) {
            return Err(RegistryError::BadRequest(format!(
                "alias `{alias}` looks like a version (12 hex characters); pick another name"
            )));
        }
        let tenant = tenant.to_string();
        let name = name.to_string();
        let alias = alias.to_string();
        let version = version.to_string();
        self.db()
            .write(move |sql| {
                let tenant_id = sql.tenant_id(&tenant)?;
                if sql.function_version(tenant_id, &name, &version)?.is_none() {
                    if sql.aliases(tenant_id, &name)?.is_empty() {
                        return Err(function_not_found(&name, &tenant));
                    }
                    return Err(RegistryError::NotFound(format!(
                        "function `{name}@{}` not found in tenant `{tenant}`",
                        validate::shorten(&version)
                    )));
                }
                let previous = move_alias(sql, tenant_id, &name, &alias, &version)?;
                tracing::info!(tenant, function = %name, alias, version, ?previous, "set function alias");
                Ok(AliasMoved {
                    name,
                    alias,
                    version,
                    previous,
                })
            })
            .await
    }

    /// Rolls `alias` of function `name` back: undoes its newest move that has not been undone,
    /// pointing it at the version it pointed at before that move. Repeated rollbacks walk further
    /// back through the history; a later deploy or alias move starts a new step. `Conflict` when
    /// there is nothing earlier, or when the earlier version has since been deleted.
    pub async fn rollback(
        &self,
        tenant: &str,
        name: &str,
        alias: &str,
    ) -> Result<AliasMoved, RegistryError> {
        validate::name("alias", alias)?;
        let tenant = tenant.to_string();
        let name = name.to_string();
        let alias = alias.to_string();
        self.db()
            .write(move |sql| {
                let tenant_id = sql.tenant_id(&tenant)?;
                let Some(current) = sql.alias_target(tenant_id, &name, &alias)? else {
                    if sql.aliases(tenant_id, &name)?.is_empty() {
                        return Err(function_not_found(&name, &tenant));
                    }
                    return Err(RegistryError::NotFound(format!(
                        "function `{name}` has no alias `{alias}`"
                    )));
                };
                let step = sql.last_alias_move(tenant_id, &name, &alias)?;
                let Some((step, previous)) =
                    step.and_then(|step| step.previous.clone().map(|previous| (step, previous)))
                else {
                    return Err(RegistryError::Conflict(format!(
                        "alias `{alias}` of function `{name}` has no earlier version to roll back to"
                    )));
                };
                if sql.function_version(tenant_id, &name, &previous)?.is_none() {
                    return Err(RegistryError::Conflict(format!(
                        "alias `{alias}` of function `{name}` pointed at `{previous}` before, \
                         but that version has been deleted; point the alias at a version with \
                         PUT /v1/functions/{name}/aliases/{alias}"
                    )));
                }
                if step.version != current {
                    tracing::warn!(tenant, function = %name, alias, current, recorded = %step.version,
                        "alias history does not end where the alias points; rolling back anyway");
                }
                let now = now();
                sql.set_alias(tenant_id, &name, &alias, &previous, now)?;
                sql.mark_alias_move_undone(step.id)?;
                sql.record_alias_move(
                    tenant_id,
                    &name,
                    &alias,
                    Some(&current),
                    &previous,
                    true,
                    now,
                )?;
                tracing::info!(tenant, function = %name, alias, from = %current, to = %previous, "rolled back function alias");
                Ok(AliasMoved {
                    name,
                    alias,
                    version: previous,
                    previous: Some(current),
                })
            })
            .await
    }

    /// Deletes version `version` of function `name`, then collects the blobs that no version or
    /// model of any tenant uses any more (its wasm, unless something else uses it). `Conflict`
    /// while an alias points at the version (the message names them).
    pub async fn delete_function_version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<VersionDeleted, RegistryError> {
        let tenant_name = tenant.to_string();
        let name = name.to_string();
        let version = version.to_string();
        let (name, version) = self
            .db()
            .write(move |sql| {
                let tenant = tenant_name;
                let tenant_id = sql.tenant_id(&tenant)?;
                let aliases = sql.aliases(tenant_id, &name)?;
                if aliases.is_empty() {
                    return Err(function_not_found(&name, &tenant));
                }
                let pointing: Vec<&str> = aliases
                    .iter()
                    .filter(|(_, target)| **target == version)
                    .map(|(alias, _)| alias.as_str())
                    .collect();
                if !pointing.is_empty() {
                    return Err(RegistryError::Conflict(format!(
                        "version `{version}` of function `{name}` is in use by alias(es) {}; \
                         move them to another version first",
                        pointing.join(", ")
                    )));
                }
                if !sql.delete_function_version(tenant_id, &name, &version)? {
                    return Err(RegistryError::NotFound(format!(
                        "function `{name}@{}` not found in tenant `{tenant}`",
                        validate::shorten(&version)
                    )));
                }
                tracing::info!(tenant, function = %name, version, "deleted function version");
                Ok((name, version))
            })
            .await?;
        // The version is gone either way; a collection that fails is retried by the next one.
        let collected_blobs = match self.collect_garbage().await {
            Ok(collected) => collected,
            Err(error) => {
                tracing::warn!(%error, "collecting unused blobs failed; the next deletion retries");
                Vec::new()
            }
        };
        Ok(VersionDeleted {
            name,
            version,
            collected_blobs,
        })
    }

    /// A function's aliases (alias -> version); `NotFound` if the tenant has no such function.
    pub async fn aliases(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        let tenant = tenant.to_string();
        let name = name.to_string();
        self.db()
            .read(move |sql| {
                let aliases = sql.aliases(sql.tenant_id(&tenant)?, &name)?;
                if aliases.is_empty() {
                    return Err(function_not_found(&name, &tenant));
                }
                Ok(aliases)
            })
            .await
    }
}

/// Points `alias` at `version` and records the move in its history, unless it already points
/// there. Returns the version it pointed at before (`None` when the move created it).
fn move_alias(
    sql: &Sql<'_>,
    tenant_id: i64,
    name: &str,
    alias: &str,
    version: &str,
) -> Result<Option<String>, RegistryError> {
    let previous = sql.alias_target(tenant_id, name, alias)?;
    if previous.as_deref() == Some(version) {
        return Ok(previous);
    }
    let now = now();
    sql.set_alias(tenant_id, name, alias, version, now)?;
    sql.record_alias_move(
        tenant_id,
        name,
        alias,
        previous.as_deref(),
        version,
        false,
        now,
    )?;
    Ok(previous)
}

fn function_not_found(name: &str, tenant: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "function `{}` not found in tenant `{tenant}`",
        validate::shorten(name)
    ))
}
