//! Who is calling: the bearer key on a request, checked against the registry through a
//! short-lived cache of stored keys, the rate limits charged to it, and the scope a route needs.
//! The front ([`Auth::identify`]) runs once per `/v1` and `/fn` request, before routing, and
//! leaves a [`Caller`] in the request's extensions for the handlers. Failures never reach a guest.
//!
//! The cache holds what the registry stores (key id, tenant, scopes, the peppered hash of the
//! secret, expiry, revocation), never a secret; each request's secret is hashed and compared in
//! constant time against it, and expiry is checked against the clock at every use. A revocation
//! on this node drops the cached copy at once; other nodes drop theirs when it ages out
//! (`--auth-cache-ttl-s`, the documented bound). Ids that do not exist are not cached: creating
//! a key takes effect everywhere at once.
//!
//! A source address that keeps failing authentication is answered 429 before the registry is
//! asked; a key already in the cache that checks out still passes, so honest clients behind the
//! same address keep working.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use nimbus_registry::{
    AuthError, Credential, Principal, Registry, RegistryError, Scope, StoredKey,
};

use crate::config::Config;
use crate::errors::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::{Limit, Limited, Rate, RateLimits};

/// Cached keys at most.
const MAX_CACHED_KEYS: u64 = 100_000;

/// The caller of a request, as [`Auth::identify`] found it: `None` when it sent no key.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

/// The address the request came from (the TCP peer), put in the extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Why a cached lookup could not answer.
#[derive(Debug, thiserror::Error)]
enum Lookup {
    #[error("unknown API key")]
    Unknown,
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Authentication and rate limits of this node.
pub struct Auth {
    registry: Registry,
    /// Stored keys by id; `None` when caching is off.
    keys: Option<moka::future::Cache<String, Arc<StoredKey>>>,
    limits: RateLimits,
    metrics: Arc<Metrics>,
}

impl Auth {
    pub fn new(registry: Registry, config: &Config, metrics: Arc<Metrics>) -> Auth {
        let keys = (config.auth_cache_ttl_s > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_CACHED_KEYS)
                .time_to_live(Duration::from_secs(config.auth_cache_ttl_s))
                .build()
        });
        let limits = RateLimits::new(
            Rate::new(config.rate_per_key, config.burst_per_key),
            Rate::new(config.rate_per_tenant, config.burst_per_tenant),
            Rate::per_window(
                config.auth_failures_per_ip,
                Duration::from_secs(config.auth_failure_window_s),
            ),
        );
        Auth {
            registry,
            keys,
            limits,
            metrics,
        }
    }

    /// Finds who sent `req` and charges the request to its key and tenant, then records the
    /// [`Caller`] in the request's extensions. No `Authorization` header: an anonymous caller.
    /// A bad key: 401 (`unauthorized`); over a rate limit, or from a source that failed too often:
    /// 429 (`rate_limited`) with `Retry-After`.
    pub async fn identify<B>(&self, req: &mut Request<B>) -> Result<(), ApiError> {
        self.identify_charging(req, true).await
    }

    /// [`Auth::identify`] without charging the rate limits: for the operator's /metrics, so that
    /// monitoring keeps working while the admin key is busy (and does not shift its buckets).
    pub async fn identify_uncharged<B>(&self, req: &mut Request<B>) -> Result<(), ApiError> {
        self.identify_charging(req, false).await
    }

    async fn identify_charging<B>(
        &self,
        req: &mut Request<B>,
        charge: bool,
    ) -> Result<(), ApiError> {
        let Some(value) = req.headers().get(http::header::AUTHORIZATION) else {
            req.extensions_mut().insert(Caller(None));
            return Ok(());
        };
        let source = req.extensions().get::<ClientIp>().map(|ip| ip.0);
        let blocked = source.and_then(|ip| self.limits.auth_blocked(ip));
        // One Authorization header only: with two, which one counts would be a guess.
        let single = req
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .count()
            == 1;
        let credential = value
            .to_str()
            .ok()
            .filter(|_| single)
            .and_then(bearer_token)
            .ok_or(AuthError::Malformed)
            .and_then(|token| self.registry.credential(token));
        let outcome = match credential {
            Ok(credential) => self.check(&credential, blocked.is_none()).await,
            Err(error) => Err(Some(error)),
        };
        let principal = match outcome {
            Ok(principal) => principal,
            Err(Some(AuthError::Internal(error))) => {
                tracing::error!(error = format!("{error:#}"), "cannot check an API key");
                return Err(ApiError::internal(format!(
                    "cannot check the API key: {error:#}"
                )));
            }
            Err(failure) => {
                if let Some(limited) = blocked {
                    return Err(self.limited(limited));
                }
                let error = failure.unwrap_or(AuthError::Unknown);
                self.metrics.record_auth_failure(reason(&error));
                if let Some(ip) = source {
                    self.limits.auth_failed(ip);
                }
                return Err(unauthorized(error));
            }
        };
        if charge && let Err(limited) = self.limits.charge_key(&principal.tenant, &principal.key_id)
        {
            return Err(self.limited(limited));
        }
        req.extensions_mut().insert(Caller(Some(principal)));
        Ok(())
    }

    /// Checks a credential against the cached key, or the registry's when `may_ask_registry`.
    /// `Err(None)`: not in the cache and the registry may not be asked.
    async fn check(
        &self,
        credential: &Credential,
        may_ask_registry: bool,
    ) -> Result<Principal, Option<AuthError>> {
        let id = credential.key_id();
        let Some(keys) = &self.keys else {
            if !may_ask_registry {
                return Err(None);
            }
            return match self.registry.stored_key(id).await {
                Ok(Some(stored)) => stored.check(credential).map_err(Some),
                Ok(None) => Err(Some(AuthError::Unknown)),
                Err(error) => Err(Some(AuthError::Internal(error.into()))),
            };
        };
        let stored = if may_ask_registry {
            let registry = &self.registry;
            keys.try_get_with_by_ref(id, async move {
                match registry.stored_key(id).await? {
                    Some(stored) => Ok(Arc::new(stored)),
                    None => Err(Lookup::Unknown),
                }
            })
            .await
            .map_err(|error| match &*error {
                Lookup::Unknown => Some(AuthError::Unknown),
                Lookup::Registry(e) => Some(AuthError::Internal(anyhow::anyhow!("{e}"))),
            })?
        } else {
            keys.get(id).await.ok_or(None)?
        };
        stored.check(credential).map_err(Some)
    }

    /// Forgets the cached copy of a key (after it was revoked here), so the next request with it
    /// reads the registry.
    pub async fn forget(&self, key_id: &str) {
        if let Some(keys) = &self.keys {
            keys.invalidate(key_id).await;
        }
    }

    /// Charges a call without a key to a public function of `tenant`.
    pub fn charge_public(&self, tenant: &str) -> Result<(), ApiError> {
        self.limits
            .charge_public(tenant)
            .map_err(|limited| self.limited(limited))
    }

    fn limited(&self, limited: Limited) -> ApiError {
        self.metrics.record_rate_limited(limited.limit.as_str());
        let seconds = limited.retry_after_secs();
        let what = match limited.limit {
            Limit::Key => "this API key is over its rate limit",
            Limit::Tenant => "this tenant is over its rate limit",
            Limit::Public => {
                "calls without a key to this tenant's public functions are over their rate limit"
            }
            Limit::AuthFailures => "too many failed authentications from this address",
        };
        ApiError::rate_limited(format!("{what}; retry in {seconds} s"), seconds)
    }
}

/// The token of an `Authorization` value: `Bearer <token>` (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller of a request that passed [`Auth::identify`], if it sent a key.
pub fn optional_caller<B>(req: &Request<B>) -> Option<Principal> {
    req.extensions()
        .get::<Caller>()
        .and_then(|caller| caller.0.clone())
}

/// The caller of a request, any scope; a 401 when it sent no key.
pub fn caller<B>(req: &Request<B>) -> Result<Principal, ApiError> {
    optional_caller(req).ok_or_else(|| unauthorized(AuthError::Missing))
}

/// The caller of a request, which must hold `scope`: 401 without a key, 403 without the scope.
pub fn require<B>(req: &Request<B>, scope: Scope) -> Result<Principal, ApiError> {
    let principal = caller(req)?;
    check_scope(&principal, scope)?;
    Ok(principal)
}

/// A 403 unless the key's scopes include `scope`.
pub fn check_scope(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.allows(scope) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this key lacks the {scope} scope"
        )))
    }
}

/// The label of a refused key in `nimbus_auth_failures_total`.
fn reason(error: &AuthError) -> &'static str {
    match error {
        AuthError::Missing => "missing",
        AuthError::Malformed => "malformed",
        AuthError::Unknown => "unknown",
        AuthError::Revoked => "revoked",
        AuthError::Expired => "expired",
        AuthError::Internal(_) => "internal",
    }
}

fn unauthorized(error: AuthError) -> ApiError {
    let message = match error {
        AuthError::Missing => "missing API key: send `Authorization: Bearer <key>`".to_owned(),
        AuthError::Malformed => {
            "malformed API key: send `Authorization: Bearer nmb_<id>_<secret>`".to_owned()
        }
        other => other.to_string(),
    };
    ApiError::unauthorized(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer nmb_x"), Some("nmb_x"));
        assert_eq!(bearer_token("bearer   nmb_x "), Some("nmb_x"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("nmb_x"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
