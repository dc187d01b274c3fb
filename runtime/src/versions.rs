//! Versions over time on the control plane (docs/api.md, "Aliases, rollback and deletion"):
//! moving an alias, listing a function's aliases, rolling an alias back, and deleting a version
//! (which garbage-collects the blobs nothing uses any more). The registry does the work in one
//! transaction each; these handlers check the scope and shape the JSON.

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use nimbus_registry::Scope;
use serde::Deserialize;
use serde_json::json;

use crate::api::{ok, read_json};
use crate::auth;
use crate::errors::{ApiError, Body};
use crate::server::AppState;

/// The alias a rollback moves when the body names none.
const DEFAULT_ROLLBACK_ALIAS: &str = "latest";
/// Largest body of a rollback request.
const MAX_ROLLBACK_BODY: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAlias {
    version: String,
}

/// `PUT /v1/functions/{name}/aliases/{alias}` `{"version"}` -> 200
/// `{"name", "alias", "version", "previous"}`.
pub async fn set_alias(
    state: &AppState,
    req: Request<Incoming>,
    name: &str,
    alias: &str,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Deploy)?;
    let body: SetAlias = read_json(req).await?;
    let moved = state
        .registry
        .set_alias(&principal.tenant, name, alias, &body.version)
        .await?;
    ok(StatusCode::OK, moved)
}

/// `GET /v1/functions/{name}/aliases` -> `{"name", "aliases": {"<alias>": "<version>"}}`.
pub async fn list_aliases(
    state: &AppState,
    req: Request<Incoming>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::caller(&req)?;
    let aliases = state.registry.aliases(&principal.tenant, name).await?;
    ok(StatusCode::OK, json!({ "name": name, "aliases": aliases }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rollback {
    alias: Option<String>,
}

/// `POST /v1/functions/{name}/rollback` with no body or `{"alias": "prod"}` -> 200
/// `{"name", "alias", "version", "previous"}`.
pub async fn rollback(
    state: &AppState,
    req: Request<Incoming>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Deploy)?;
    let bytes = http_body_util::Limited::new(req.into_body(), MAX_ROLLBACK_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    let body: Rollback = if bytes.iter().all(u8::is_ascii_whitespace) {
        Rollback::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let alias = body.alias.as_deref().unwrap_or(DEFAULT_ROLLBACK_ALIAS);
    let moved = state
        .registry
        .rollback(&principal.tenant, name, alias)
        .await?;
    ok(StatusCode::OK, moved)
}

/// `DELETE /v1/functions/{name}/versions/{version}` -> 200
/// `{"name", "version", "collected_blobs": [...]}`; 409 while an alias points at it.
pub async fn delete_version(
    state: &AppState,
    req: Request<Incoming>,
    name: &str,
    version: &str,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Deploy)?;
    let deleted = state
        .registry
        .delete_function_version(&principal.tenant, name, version)
        .await?;
    ok(StatusCode::OK, deleted)
}
