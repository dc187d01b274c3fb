//! The registry's records: the plain data types of the public API, serialized with the field
//! names of docs/api.md. No storage details live here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::RegistryError;

/// What an API key may do. `admin` allows everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Admin,
    Deploy,
    Invoke,
}

impl Scope {
    /// Every scope, in canonical order.
    pub const ALL: [Scope; 3] = [Scope::Admin, Scope::Deploy, Scope::Invoke];

    /// Whether a key holding `self` may do something that needs `needed`.
    pub fn allows(&self, needed: Scope) -> bool {
        *self == Scope::Admin || *self == needed
    }

    /// The lowercase name (`admin`, `deploy`, `invoke`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Deploy => "deploy",
            Scope::Invoke => "invoke",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Scope, RegistryError> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                RegistryError::BadRequest(format!(
                    "unknown scope `{s}`: expected admin, deploy or invoke"
                ))
            })
    }
}

/// A tenant: the unit of isolation for keys, blobs, models and functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// What may be shown about an API key: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` = never expires.
    pub expires_at: Option<i64>,
    /// Unix seconds; `None` = not revoked.
    pub revoked_at: Option<i64>,
}

/// Who a request comes from: the result of a successful authentication (`GET /v1/whoami`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub tenant: String,
    pub key_id: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Whether one of the key's scopes allows `needed`.
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|scope| scope.allows(needed))
    }
}

/// A stored blob: `{"sha256", "size"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub sha256: String,
    pub size: u64,
}

/// The body of `POST /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewModelVersion {
    pub name: String,
    pub sha256: String,
    /// `s3://bucket/key` of an object uploaded with any S3 tool, whose bytes hash to `sha256`;
    /// `None`: a blob the tenant uploaded to nimbusd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `onnxruntime` or `openvino`.
    pub engine: String,
    /// `cpu`, `gpu` or `auto`; `cpu` when absent from the JSON.
    #[serde(default = "default_target")]
    pub target: String,
}

fn default_target() -> String {
    "cpu".to_string()
}

/// A model version: `{"name", "version", "sha256", "size", "engine", "target", "created_at"}`,
/// and `"uri"` when it was registered by URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    /// The first 12 hex characters of `sha256`.
    pub version: String,
    pub sha256: String,
    /// Where the bytes are when the model was registered by `s3://bucket/key`; `None`: the blob
    /// store's own copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    pub size: u64,
    pub engine: String,
    pub target: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl ModelVersion {
    /// The binding a function gets when it refers to this version.
    pub fn binding(&self) -> ModelBinding {
        ModelBinding {
            model: self.name.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
            uri: self.uri.clone(),
            engine: self.engine.clone(),
            target: self.target.clone(),
        }
    }
}

/// A model reference of a function, resolved at deploy time to one exact model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBinding {
    pub model: String,
    pub version: String,
    pub sha256: String,
    /// Where the bytes are fetched from when not the blob store's own copy (see
    /// [`ModelVersion::uri`]). Not part of the function version's digest: the bytes are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    pub engine: String,
    pub target: String,
}

/// Resource limits of a function; `None` means the platform default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// The body of `POST /v1/functions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFunctionVersion {
    pub name: String,
    pub wasm_sha256: String,
    /// Guest-visible name -> `model` or `model@version`.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub public: bool,
}

/// An immutable, content-addressed function version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionVersion {
    pub name: String,
    /// The first 12 hex characters of the digest over wasm, bindings, env, limits and public.
    pub version: String,
    pub wasm_sha256: String,
    pub models: BTreeMap<String, ModelBinding>,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub public: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// One entry of `GET /v1/functions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSummary {
    pub name: String,
    pub latest: FunctionVersion,
}
