//! Who is calling: the bearer key on a request, checked against the registry, and the scope a
//! route needs. Failures never reach a guest.

use http::HeaderMap;
use nimbus_registry::{AuthError, Principal, Registry, Scope};

use crate::errors::ApiError;

/// The key on the request, if it carries one. A malformed `Authorization` header is an error,
/// not an anonymous caller.
pub async fn principal(
    registry: &Registry,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized("malformed Authorization header: expected `Bearer <key>`")
        })?;
    match registry.authenticate(token).await {
        Ok(principal) => Ok(Some(principal)),
        Err(error) => Err(auth_error(error)),
    }
}

/// The key on the request; its absence is a 401.
pub async fn require(
    registry: &Registry,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Principal, ApiError> {
    let principal = principal(registry, headers)
        .await?
        .ok_or_else(|| auth_error(AuthError::Missing))?;
    check_scope(&principal, scope)?;
    Ok(principal)
}

/// A 403 unless the key's scopes include `scope`.
pub fn check_scope(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.scopes.iter().any(|s| s.allows(scope)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this key lacks the {} scope",
            serde_json::to_value(scope)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )))
    }
}

fn auth_error(error: AuthError) -> ApiError {
    let message = match error {
        AuthError::Missing => {
            "missing API key: send `Authorization: Bearer <key>`".to_owned()
        }
        other => other.to_string(),
    };
    ApiError::unauthorized(message)
}
