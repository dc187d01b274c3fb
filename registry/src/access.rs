//! Tenants, API keys and authentication: bootstrap of the `default` tenant and its admin key,
//! tenant creation (with a first admin key, in one transaction), key creation (the full key is
//! returned once and never stored), listing, revocation, and checking a bearer token in constant
//! time against the stored peppered hash.
//!
//! Authentication comes in two halves so that a caller may cache the stored half:
//! [`Registry::credential`] parses a token and peppers its secret (no storage touched),
//! [`Registry::stored_key`] reads a key's row, and [`StoredKey::check`] compares the two and
//! applies revocation and expiry at the moment of the check. [`Registry::authenticate`] is the
//! three in a row.

use std::fmt;

use crate::keys::{self, hashes_equal};
use crate::{
    AuthError, DEFAULT_TENANT, KeyInfo, Principal, Registry, RegistryError, Scope, Tenant, now,
    validate,
};

impl Registry {
    /// Makes sure tenant `default` exists with an admin key.
    ///
    /// With `admin_key = None`: on the first start (the call that creates `default`) a new admin
    /// key is generated and returned once as `Some(full key)`; the caller writes
    /// `<data_dir>/admin.key` (mode 0600) and prints it. Later calls return `None`.
    ///
    /// With `admin_key = Some(k)` (NIMBUS_ADMIN_KEY): `k` must have the key format, else
    /// `BadRequest`. That exact key is made an active, non-expiring admin key of `default`
    /// (inserted, or its stored hash, scopes, expiry and revocation reset); returns `None`.
    /// An id that belongs to a key of another tenant is a `Conflict`.
    pub async fn bootstrap(
        &self,
        admin_key: Option<&str>,
    ) -> Result<Option<String>, RegistryError> {
        let given = match admin_key {
            Some(key) => {
                let parsed = keys::parse(key.trim()).ok_or_else(|| {
                    RegistryError::BadRequest(
                        "the admin key (NIMBUS_ADMIN_KEY) must look like nmb_<id>_<secret>: \
                         id = 12 characters of [a-z0-9], secret = 32 to 128 characters of [A-Za-z0-9]"
                            .to_string(),
                    )
                })?;
                Some((parsed.id.to_string(), self.inner.pepper.hash(parsed.secret)))
            }
            None => None,
        };
        let (new_id, new_secret, new_full) = keys::generate()?;
        let new_hash = self.inner.pepper.hash(&new_secret);
        let created = self
            .db()
            .write(move |sql| {
                let now = now();
                let first = !sql.tenant_exists(DEFAULT_TENANT)?;
                if first {
                    sql.insert_tenant(DEFAULT_TENANT, now)?;
                    tracing::info!(tenant = DEFAULT_TENANT, "created tenant");
                }
                let tenant_id = sql.tenant_id(DEFAULT_TENANT)?;
                match given {
                    Some((id, hash)) => {
                        match sql.key(&id)? {
                            None => {
                                sql.insert_key(&id, tenant_id, &hash, &[Scope::Admin], now, None)?;
                                tracing::info!(key_id = %id, "added the configured admin key");
                            }
                            Some(row) if row.tenant == DEFAULT_TENANT => {
                                let current = hashes_equal(&row.secret_hash, &hash)
                                    && row.scopes.contains(&Scope::Admin)
                                    && row.revoked_at.is_none()
                                    && row.expires_at.is_none();
                                if !current {
                                    sql.reset_key(&id, &hash, &[Scope::Admin])?;
                                    tracing::info!(key_id = %id, "reset the configured admin key");
                                }
                            }
                            Some(row) => {
                                return Err(RegistryError::Conflict(format!(
                                    "the admin key's id `{id}` belongs to a key of tenant `{}`",
                                    row.tenant
                                )));
                            }
                        }
                        Ok(false)
                    }
                    None if first => {
                        if !sql.insert_key(
                            &new_id,
                            tenant_id,
                            &new_hash,
                            &[Scope::Admin],
                            now,
                            None,
                        )? {
                            return Err(RegistryError::internal(
                                "a fresh database already has a key with the new admin key's id",
                            ));
                        }
                        tracing::info!(key_id = %new_id, "created the admin key");
                        Ok(true)
                    }
                    None => Ok(false),
                }
            })
            .await?;
        Ok(created.then_some(new_full))
    }

    /// Creates a tenant; `Conflict` if the name is taken, `BadRequest` if it breaks the name rule.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, RegistryError> {
        validate::name("tenant", name)?;
        let name = name.to_string();
        self.db()
            .write(move |sql| sql.insert_tenant(&name, now()))
            .await
    }

    /// All tenants, by name.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, RegistryError> {
        self.db().read(|sql| sql.list_tenants()).await
    }

    /// Creates a key for `tenant` with `scopes` (at least one) that expires at `expires_at`
    /// (unix seconds, in the future) or never. Returns its info and the full key, which is
    /// shown this once: only a peppered hash of its secret is stored.
    pub async fn create_key(
        &self,
        tenant: &str,
        scopes: &[Scope],
        expires_at: Option<i64>,
    ) -> Result<(KeyInfo, String), RegistryError> {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(RegistryError::BadRequest(
                "a key needs at least one scope (admin, deploy or invoke)".to_string(),
            ));
        }
        let now = now();
        if let Some(at) = expires_at
            && at <= now
        {
            return Err(RegistryError::BadRequest(format!(
                "expires_at {at} is not in the future (now is {now})"
            )));
        }
        // Ids are 12 random characters of 36; a clash is astronomically rare but handled.
        for _ in 0..3 {
            let (id, secret, full) = keys::generate()?;
            let hash = self.inner.pepper.hash(&secret);
            let row_tenant = tenant.to_string();
            let row_scopes = scopes.clone();
            let row_id = id.clone();
            let inserted = self
                .db()
                .write(move |sql| {
                    let tenant_id = sql.tenant_id(&row_tenant)?;
                    sql.insert_key(&row_id, tenant_id, &hash, &row_scopes, now, expires_at)
                })
                .await?;
            if inserted {
                tracing::info!(tenant, key_id = %id, "created API key");
                let info = KeyInfo {
                    key_id: id,
                    tenant: tenant.to_string(),
                    scopes,
                    created_at: now,
                    expires_at,
                    revoked_at: None,
                };
                return Ok((info, full));
            }
        }
        Err(RegistryError::internal("could not find a free key id"))
    }

    /// A tenant's keys (revoked and expired ones included), newest first. Never secrets.
    pub async fn list_keys(&self, tenant: &str) -> Result<Vec<KeyInfo>, RegistryError> {
        let tenant = tenant.to_string();
        self.db()
            .read(move |sql| sql.list_keys(sql.tenant_id(&tenant)?))
            .await
    }

    /// Revokes a key of the tenant (idempotent) and returns it as it now stands; `NotFound`
    /// when the tenant has no such key.
    pub async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<KeyInfo, RegistryError> {
        let tenant = tenant.to_string();
        let key_id = key_id.to_string();
        self.db()
            .write(move |sql| {
                let tenant_id = sql.tenant_id(&tenant)?;
                let revoked = sql.revoke_key(tenant_id, &key_id, now())?;
                match sql.key(&key_id)? {
                    Some(row) if revoked => {
                        tracing::info!(tenant, key_id, "revoked API key");
                        Ok(row.info())
                    }
                    _ => Err(RegistryError::NotFound(format!(
                        "key `{}` not found in tenant `{tenant}`",
                        validate::shorten(&key_id)
                    ))),
                }
            })
            .await
    }

    /// Checks a bearer token: the key itself, or a whole `Authorization` value
    /// (`Bearer nmb_...`). The secret is compared, as a peppered hash, in constant time; a
    /// revoked or expired key is reported as such only to a caller who knows its secret.
    pub async fn authenticate(&self, bearer_token: &str) -> Result<Principal, AuthError> {
        let credential = self.credential(bearer_token)?;
        let stored = self
            .stored_key(credential.key_id())
            .await
            .map_err(|e| AuthError::Internal(anyhow::Error::new(e)))?;
        match stored {
            Some(stored) => stored.check(&credential),
            None => {
                // Same work as for a known id, so timing does not tell ids apart.
                let _ = hashes_equal(&[0u8; 32], &credential.hash);
                Err(AuthError::Unknown)
            }
        }
    }

    /// Parses a bearer token (the key, or `Bearer <key>`) and peppers its secret. Touches no
    /// storage: `Missing` for an empty token, `Malformed` for one that is not
    /// `nmb_<id>_<secret>`.
    pub fn credential(&self, bearer_token: &str) -> Result<Credential, AuthError> {
        let mut token = bearer_token.trim();
        if let Some(scheme) = token.get(..7)
            && scheme.eq_ignore_ascii_case("bearer ")
        {
            token = token[7..].trim_start();
        }
        if token.is_empty() || token.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        let parsed = keys::parse(token).ok_or(AuthError::Malformed)?;
        Ok(Credential {
            key_id: parsed.id.to_string(),
            hash: self.inner.pepper.hash(parsed.secret),
        })
    }

    /// The stored row of key `key_id` (any tenant), or `None` when there is no such key. What it
    /// holds is safe to keep in memory: the peppered hash, never the secret.
    pub async fn stored_key(&self, key_id: &str) -> Result<Option<StoredKey>, RegistryError> {
        let id = key_id.to_string();
        let row = self.db().read(move |sql| sql.key(&id)).await?;
        Ok(row.map(|row| StoredKey {
            principal: Principal {
                tenant: row.tenant,
                key_id: row.id,
                scopes: row.scopes,
            },
            secret_hash: row.secret_hash,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        }))
    }

    /// Creates tenant `name` and its first admin key in one transaction: both exist, or neither.
    /// Returns the tenant, the key's info and the full key (shown this once). `Conflict` if the
    /// name is taken, `BadRequest` if it breaks the name rule.
    pub async fn create_tenant_with_admin_key(
        &self,
        name: &str,
    ) -> Result<(Tenant, KeyInfo, String), RegistryError> {
        validate::name("tenant", name)?;
        let (id, secret, full) = keys::generate()?;
        let hash = self.inner.pepper.hash(&secret);
        let tenant_name = name.to_string();
        let key_id = id.clone();
        let (tenant, info) = self
            .db()
            .write(move |sql| {
                let now = now();
                let tenant = sql.insert_tenant(&tenant_name, now)?;
                let tenant_id = sql.tenant_id(&tenant_name)?;
                if !sql.insert_key(&key_id, tenant_id, &hash, &[Scope::Admin], now, None)? {
                    // A clash of random ids: the transaction rolls back, the caller may retry.
                    return Err(RegistryError::internal(
                        "the new admin key's id is taken; try again",
                    ));
                }
                let info = KeyInfo {
                    key_id,
                    tenant: tenant_name,
                    scopes: vec![Scope::Admin],
                    created_at: now,
                    expires_at: None,
                    revoked_at: None,
                };
                Ok((tenant, info))
            })
            .await?;
        tracing::info!(tenant = %tenant.name, key_id = %info.key_id, "created tenant and its admin key");
        Ok((tenant, info, full))
    }
}

/// A parsed bearer token: the key id and the peppered hash of its secret. The secret itself is
/// not kept; `Debug` shows the id only.
#[derive(Clone)]
pub struct Credential {
    key_id: String,
    hash: [u8; 32],
}

impl Credential {
    /// The public id part of the key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A key as stored: who it belongs to, its scopes, the peppered hash of its secret, expiry and
/// revocation. Safe to cache; [`StoredKey::check`] decides at each use.
#[derive(Clone)]
pub struct StoredKey {
    principal: Principal,
    secret_hash: Vec<u8>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl StoredKey {
    /// The key's tenant, id and scopes (before any check).
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Checks `credential` against this key: the hashes compared in constant time, then
    /// revocation, then expiry against the clock now (so a cached copy never outlives the
    /// expiry). A mismatching secret is `Unknown`, as for an id that does not exist.
    pub fn check(&self, credential: &Credential) -> Result<Principal, AuthError> {
        let matches = hashes_equal(&self.secret_hash, &credential.hash);
        if !matches || credential.key_id != self.principal.key_id {
            return Err(AuthError::Unknown);
        }
        if self.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if let Some(at) = self.expires_at
            && now() >= at
        {
            return Err(AuthError::Expired);
        }
        Ok(self.principal.clone())
    }
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}
