//! The `/v1/tenants` and `/v1/keys` endpoints (docs/api.md): creating and listing tenants (an
//! admin key of the bootstrap tenant `default` only), and creating, listing and revoking API keys
//! (an admin key, in its own tenant; the bootstrap admin may name another tenant). A full key is
//! in the answer that creates it and nowhere else: not in a listing, a log line or a file.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use nimbus_registry::{DEFAULT_TENANT, KeyInfo, Principal, Scope};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ok, read_json};
use crate::auth;
use crate::errors::{ApiError, Body};
use crate::server::AppState;

/// Longest lifetime a key may be given (ten years).
const MAX_EXPIRES_IN_S: u64 = 10 * 365 * 24 * 3600;

/// The caller, which must be an admin key of the bootstrap tenant (the operator).
pub(crate) fn require_bootstrap_admin<B>(req: &Request<B>) -> Result<Principal, ApiError> {
    let principal = auth::require(req, Scope::Admin)?;
    if principal.tenant != DEFAULT_TENANT {
        return Err(ApiError::forbidden(format!(
            "only an admin key of tenant `{DEFAULT_TENANT}` manages tenants"
        )));
    }
    Ok(principal)
}

/// The tenant whose keys an admin request acts on: its own, or with `?tenant=` / `"tenant"` another
/// one, which only the bootstrap admin may name.
fn target_tenant(principal: &Principal, named: Option<String>) -> Result<String, ApiError> {
    match named {
        None => Ok(principal.tenant.clone()),
        Some(tenant) if tenant == principal.tenant || principal.tenant == DEFAULT_TENANT => {
            Ok(tenant)
        }
        Some(_) => Err(ApiError::forbidden(format!(
            "only an admin key of tenant `{DEFAULT_TENANT}` acts on another tenant's keys"
        ))),
    }
}

/// `?tenant=NAME` from the query, if present.
fn tenant_query<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("tenant="))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// A key as listed: its info and whether it works now.
fn key_json(info: &KeyInfo) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let status = if info.revoked_at.is_some() {
        "revoked"
    } else if info.expires_at.is_some_and(|at| now >= at) {
        "expired"
    } else {
        "active"
    };
    let mut value = json!(info);
    value["status"] = json!(status);
    value
}

/// A key as created: its info, plus the full key, shown this once.
fn created_key_json(info: &KeyInfo, key: String) -> serde_json::Value {
    let mut value = key_json(info);
    value["key"] = json!(key);
    value
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
}

/// `POST /v1/tenants {"name"}` -> 201 `{"tenant", "admin_key"}`.
pub async fn create_tenant(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_bootstrap_admin(&req)?;
    let body: CreateTenant = read_json(req).await?;
    let (tenant, info, key) = state
        .registry
        .create_tenant_with_admin_key(&body.name)
        .await?;
    ok(
        StatusCode::CREATED,
        json!({"tenant": tenant, "admin_key": created_key_json(&info, key)}),
    )
}

/// `GET /v1/tenants` -> `{"tenants": [...]}`.
pub async fn list_tenants(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_bootstrap_admin(&req)?;
    let tenants = state.registry.list_tenants().await?;
    ok(StatusCode::OK, json!({ "tenants": tenants }))
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Invoke]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default = "default_scopes")]
    scopes: Vec<Scope>,
    #[serde(default)]
    expires_in_s: Option<u64>,
    #[serde(default)]
    tenant: Option<String>,
}

/// `POST /v1/keys {"scopes", "expires_in_s"?, "tenant"?}` -> 201 with the full key.
pub async fn create_key(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Admin)?;
    let body: CreateKey = read_json(req).await?;
    let tenant = target_tenant(&principal, body.tenant)?;
    let expires_at = match body.expires_in_s {
        None => None,
        Some(0) => return Err(ApiError::bad_request("expires_in_s must be at least 1")),
        Some(s) if s > MAX_EXPIRES_IN_S => {
            return Err(ApiError::bad_request(format!(
                "expires_in_s must be at most {MAX_EXPIRES_IN_S} (ten years)"
            )));
        }
        Some(s) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            Some(now + s as i64)
        }
    };
    let (info, key) = state
        .registry
        .create_key(&tenant, &body.scopes, expires_at)
        .await?;
    ok(StatusCode::CREATED, created_key_json(&info, key))
}

/// `GET /v1/keys[?tenant=T]` -> `{"keys": [...]}`, newest first, never a secret.
pub async fn list_keys(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Admin)?;
    let tenant = target_tenant(&principal, tenant_query(&req))?;
    let keys = state.registry.list_keys(&tenant).await?;
    let keys: Vec<_> = keys.iter().map(key_json).collect();
    ok(StatusCode::OK, json!({ "tenant": tenant, "keys": keys }))
}

/// `DELETE /v1/keys/{id}[?tenant=T]` -> 200 with the revoked key. Effective on this node at once.
pub async fn revoke_key(
    state: &AppState,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Admin)?;
    let tenant = target_tenant(&principal, tenant_query(&req))?;
    let info = state.registry.revoke_key(&tenant, id).await?;
    state.auth.forget(&info.key_id).await;
    ok(StatusCode::OK, key_json(&info))
}
