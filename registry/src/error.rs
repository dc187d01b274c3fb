//! Errors of the registry: [`RegistryError`] for every operation and [`AuthError`] for
//! [`crate::Registry::authenticate`]. Messages name the thing that went wrong
//! ("function `x` not found in tenant `t`") and never contain secrets.

/// An error from a registry or blob-store operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The named thing does not exist (or belongs to another tenant). HTTP 404.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what is stored. HTTP 409.
    #[error("{0}")]
    Conflict(String),
    /// The request is invalid; the message names the rule it breaks. HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// An upload is over its size cap. HTTP 413.
    #[error("{0}")]
    TooLarge(String),
    /// Storage that should answer does not (S3 down, timed out, or refusing the credentials):
    /// worth retrying later. HTTP 503.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed (database, filesystem, a corrupt blob). HTTP 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl RegistryError {
    /// The error code of docs/api.md for this error (`not_found`, `conflict`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NotFound(_) => "not_found",
            RegistryError::Conflict(_) => "conflict",
            RegistryError::BadRequest(_) => "bad_request",
            RegistryError::TooLarge(_) => "payload_too_large",
            RegistryError::Unavailable(_) => "unavailable",
            RegistryError::Internal(_) => "internal",
        }
    }

    /// The HTTP status that goes with [`RegistryError::code`].
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::NotFound(_) => 404,
            RegistryError::Conflict(_) => 409,
            RegistryError::BadRequest(_) => 400,
            RegistryError::TooLarge(_) => 413,
            RegistryError::Unavailable(_) => 503,
            RegistryError::Internal(_) => 500,
        }
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> RegistryError {
        RegistryError::Internal(anyhow::anyhow!("{message}"))
    }
}

/// Why a bearer token was not accepted. All but `Internal` answer 401 `unauthorized`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token at all.
    #[error("missing API key: send `Authorization: Bearer nmb_<id>_<secret>`")]
    Missing,
    /// Not of the form `nmb_<id>_<secret>`.
    #[error("malformed API key: expected `nmb_<id>_<secret>`")]
    Malformed,
    /// Well-formed, but no key with that id and secret exists.
    #[error("unknown API key")]
    Unknown,
    /// The key was revoked.
    #[error("API key has been revoked")]
    Revoked,
    /// The key is past its expiry time.
    #[error("API key has expired")]
    Expired,
    /// The registry could not be asked (HTTP 500/503, not the client's fault).
    #[error("cannot check API key: {0}")]
    Internal(#[from] anyhow::Error),
}

impl AuthError {
    /// The error code of docs/api.md for this error.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Internal(_) => "internal",
            _ => "unauthorized",
        }
    }

    /// The HTTP status that goes with [`AuthError::code`].
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Internal(_) => 500,
            _ => 401,
        }
    }
}
