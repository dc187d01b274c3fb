//! Owns the typed shapes of the API's answers (docs/api.md): blobs, models, functions, who-am-I,
//! tenants, API keys and invoke responses.
//!
//! Fields the docs name are typed; anything else the server adds is kept in `extra`, so printing
//! a value shows everything the server said.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::manifest::Limits;

/// A stored blob (`POST /v1/blobs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Lowercase hex sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// True when the server already had the blob and no upload was made.
    #[serde(skip)]
    pub already_present: bool,
}

/// The caller's identity (`GET /v1/whoami`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Whoami {
    pub tenant: String,
    #[serde(default)]
    pub key_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One version of a model (`POST /v1/models`, `GET /v1/models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    /// First 12 characters of `sha256`.
    pub version: String,
    pub sha256: String,
    /// `s3://bucket/key` when the model was registered from an object in S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default)]
    pub size: u64,
    /// `onnxruntime` or `openvino`.
    pub engine: String,
    /// `cpu`, `gpu` or `auto`.
    pub target: String,
    /// As the server sent it (a timestamp string, or a number rendered as a string).
    #[serde(default, deserialize_with = "string_or_number")]
    pub created_at: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A model bound into a function version, resolved to an exact version at deploy time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBinding {
    pub model: String,
    pub version: String,
    pub sha256: String,
    pub engine: String,
    pub target: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One version of a function (`POST /v1/functions`, `GET /v1/functions/{name}/versions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionVersion {
    pub name: String,
    /// Content-addressed: 12 hex characters.
    pub version: String,
    pub wasm_sha256: String,
    /// Guest-visible name -> resolved model.
    #[serde(default)]
    pub models: BTreeMap<String, ModelBinding>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub public: bool,
    /// As the server sent it (a timestamp string, or a number rendered as a string).
    #[serde(default, deserialize_with = "string_or_number")]
    pub created_at: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A tenant (`GET /v1/tenants`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    /// As the server sent it (unix seconds rendered as a string).
    #[serde(default, deserialize_with = "string_or_number")]
    pub created_at: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What may be shown about an API key (`GET /v1/keys`): never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub tenant: String,
    /// `admin`, `deploy`, `invoke`.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` = never expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix seconds; `None` = not revoked.
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// `active`, `revoked` or `expired`, as the server saw it.
    #[serde(default)]
    pub status: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A key just created (`POST /v1/keys`): its info and the full key `nmb_<id>_<secret>`, which
/// the server shows this once. `Debug` leaves the key out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The full key, to send as `Authorization: Bearer <key>`.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &"<secret>")
            .field("info", &self.info)
            .finish()
    }
}

/// A tenant just created (`POST /v1/tenants`) and its first admin key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub admin_key: CreatedKey,
}

/// What moving or rolling back an alias did (`PUT /v1/functions/{name}/aliases/{alias}`,
/// `POST /v1/functions/{name}/rollback`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasMoved {
    /// The function.
    pub name: String,
    pub alias: String,
    /// The version the alias points at now.
    pub version: String,
    /// The version it pointed at before (`None` when the move created the alias).
    #[serde(default)]
    pub previous: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What deleting a function version did (`DELETE /v1/functions/{name}/versions/{version}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDeleted {
    pub name: String,
    pub version: String,
    /// Blobs (sha256) removed because nothing used them any more.
    #[serde(default)]
    pub collected_blobs: Vec<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What a function answered (any status: the guest's response is passed through as it is, and
/// errors before the guest ran carry the API's JSON error body).
#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl InvokeResponse {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Accepts a string, a number or null (null becomes an empty string).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn function_version_from_docs_shape() {
        let v: FunctionVersion = serde_json::from_value(json!({
            "name": "classify-image",
            "version": "3f2a9c1b7d20",
            "wasm_sha256": "ab".repeat(32),
            "models": {"image-classifier": {
                "model": "efficientnet", "version": "0123456789ab", "sha256": "cd".repeat(32),
                "engine": "onnxruntime", "target": "cpu"}},
            "env": {"K": "V"},
            "limits": {"memory_mb": 256, "timeout_ms": 30000, "concurrency": 64},
            "public": false,
            "created_at": 1733241600,
            "aliases": ["latest"]
        }))
        .unwrap();
        assert_eq!(v.models["image-classifier"].model, "efficientnet");
        assert_eq!(v.limits.memory_mb, Some(256));
        assert_eq!(v.created_at, "1733241600");
        assert_eq!(v.extra["aliases"], json!(["latest"]));
        let back = serde_json::to_value(&v).unwrap();
        assert_eq!(back["aliases"], json!(["latest"]));
    }

    #[test]
    fn model_version_from_docs_shape() {
        let m: ModelVersion = serde_json::from_value(json!({
            "name": "efficientnet", "version": "0123456789ab", "sha256": "cd".repeat(32),
            "size": 51_000_000u64, "engine": "openvino", "target": "auto",
            "created_at": "2025-12-03T16:00:00Z"
        }))
        .unwrap();
        assert_eq!(m.engine, "openvino");
        assert_eq!(m.created_at, "2025-12-03T16:00:00Z");
        assert!(m.extra.is_empty());
    }
}
