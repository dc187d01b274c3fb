//! Function versions and aliases: deploying (model references resolved to exact versions,
//! version = digest of the canonical form, alias `latest` moved in the same transaction),
//! listing, resolving `latest` / a version / an alias, and setting aliases (rollback).

use std::collections::BTreeMap;

use crate::canonical::function_digest;
use crate::models::{blob_not_found, resolve_in};
use crate::{
    FunctionSummary, FunctionVersion, NewFunctionVersion, Registry, RegistryError, now, validate,
};

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
                sql.set_alias(
                    tenant_id,
                    &function.name,
                    validate::LATEST,
                    &function.version,
                    now(),
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
                let tenant_id = sql.tenant_id(&tenant)?;
                let version = if validate::is_version(&selector) {
                    Some(selector.clone())
                } else {
                    sql.alias_target(tenant_id, &name, &selector)?
                };
                if let Some(version) = version
                    && let Some((function, _)) = sql.function_version(tenant_id, &name, &version)?
                {
                    return Ok(function);
                }
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

    /// Points `alias` of function `name` at an existing `version` (e.g. moving `latest` back
    /// for a rollback). Alias names follow the name rule and cannot look like a version.
    pub async fn set_alias(
        &self,
        tenant: &str,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<FunctionVersion, RegistryError> {
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
                let Some((function, _)) = sql.function_version(tenant_id, &name, &version)? else {
                    return Err(RegistryError::NotFound(format!(
                        "function `{name}@{}` not found in tenant `{tenant}`",
                        validate::shorten(&version)
                    )));
                };
                sql.set_alias(tenant_id, &name, &alias, &version, now())?;
                tracing::info!(tenant, function = %name, alias, version, "set function alias");
                Ok(function)
            })
            .await
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

fn function_not_found(name: &str, tenant: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "function `{}` not found in tenant `{tenant}`",
        validate::shorten(name)
    ))
}
