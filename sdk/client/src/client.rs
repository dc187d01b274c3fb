//! Owns [`Client`]: one async method per call of the HTTP API (docs/api.md), with the API key,
//! request encoding, blob hashing and the mapping of error answers to [`ClientError::Http`].

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::ClientError;
use crate::manifest::Manifest;
use crate::paths;
use crate::transport::{self, Body, Transport};
use crate::types::{
    AliasMoved, BlobRef, CreatedKey, CreatedTenant, FunctionVersion, InvokeResponse, KeyInfo,
    ModelVersion, Tenant, VersionDeleted, Whoami,
};

/// Header carrying the sha256 the client expects an uploaded blob to have.
const SHA_HEADER: &str = "x-nimbus-sha256";

/// Read buffer for hashing files.
const HASH_CHUNK: usize = 1024 * 1024;

/// A client for one nimbusd. Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.transport.base_url())
            .field("api_key", &self.auth.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Client {
    /// A client for the nimbusd at `base_url` (`http://host:port`; a missing scheme means
    /// `http://`), sending `api_key` (`nmb_<id>_<secret>`) as a bearer token when given. An empty
    /// key counts as none.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Client, ClientError> {
        let transport = Transport::new(base_url)?;
        let auth = match api_key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    ClientError::InvalidInput(
                        "the API key contains characters that cannot go in an HTTP header"
                            .to_string(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Client { transport, auth })
    }

    /// The server's base URL, as used in messages.
    pub fn base_url(&self) -> &str {
        self.transport.base_url()
    }

    /// Whether an API key is set.
    pub fn has_api_key(&self) -> bool {
        self.auth.is_some()
    }

    /// `GET /v1/whoami`: the key's tenant, id and scopes.
    pub async fn whoami(&self) -> Result<Whoami, ClientError> {
        self.call_json(Method::GET, "/v1/whoami", None).await
    }

    /// `HEAD /v1/blobs/{sha256}`: whether the tenant already has the blob.
    pub async fn blob_exists(&self, sha256: &str) -> Result<bool, ClientError> {
        let path = format!("/v1/blobs/{}", paths::segment(sha256));
        let req = self.request(Method::HEAD, &path)?.body(transport::empty());
        let (status, _, body) = self.transport.exchange(build(req)?).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            s => Err(api_error(&Method::HEAD, &path, s, &body)),
        }
    }

    /// Uploads the file at `path` as a blob unless the server already has it. The file is hashed
    /// locally first and then streamed (memory use does not grow with its size); the server
    /// checks the bytes against the hash sent in `x-nimbus-sha256`.
    pub async fn upload_blob_file(&self, path: &Path) -> Result<BlobRef, ClientError> {
        let (sha256, size) = hash_file(path).await?;
        if self.blob_exists(&sha256).await? {
            return Ok(BlobRef {
                sha256,
                size,
                already_present: true,
            });
        }
        let (body, _) = transport::file(path).await?;
        self.post_blob(&sha256, body).await
    }

    /// Uploads `bytes` as a blob unless the server already has it.
    pub async fn upload_blob_bytes(&self, bytes: Vec<u8>) -> Result<BlobRef, ClientError> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if self.blob_exists(&sha256).await? {
            return Ok(BlobRef {
                sha256,
                size: bytes.len() as u64,
                already_present: true,
            });
        }
        self.post_blob(&sha256, transport::full(bytes)).await
    }

    async fn post_blob(&self, sha256: &str, body: Body) -> Result<BlobRef, ClientError> {
        let req = self
            .request(Method::POST, "/v1/blobs")?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(SHA_HEADER, sha256)
            .body(body);
        let blob: BlobRef = self
            .send_json(Method::POST, "/v1/blobs", build(req)?)
            .await?;
        if blob.sha256 != sha256 {
            return Err(ClientError::Decode(format!(
                "nimbusd stored the upload as {} but its sha256 is {sha256}",
                blob.sha256
            )));
        }
        Ok(blob)
    }

    /// Uploads the model file at `path` (skipped when the server has it) and registers it as a
    /// version of model `name` for `engine` (`onnxruntime` | `openvino`) on `target`
    /// (`cpu` | `gpu` | `auto`).
    pub async fn push_model(
        &self,
        name: &str,
        path: &Path,
        engine: &str,
        target: &str,
    ) -> Result<ModelVersion, ClientError> {
        let blob = self.upload_blob_file(path).await?;
        let body = json!({
            "name": name,
            "sha256": blob.sha256,
            "engine": engine,
            "target": target,
        });
        self.call_json(Method::POST, "/v1/models", Some(body)).await
    }

    /// Registers the object at `uri` (`s3://bucket/key`, uploaded with any S3 tool) as a version
    /// of model `name`. Its bytes must hash to `sha256`: nodes check when they first pull it.
    pub async fn register_model(
        &self,
        name: &str,
        uri: &str,
        sha256: &str,
        engine: &str,
        target: &str,
    ) -> Result<ModelVersion, ClientError> {
        let body = json!({
            "name": name,
            "uri": uri,
            "sha256": sha256,
            "engine": engine,
            "target": target,
        });
        self.call_json(Method::POST, "/v1/models", Some(body)).await
    }

    /// `GET /v1/models`: every model version of the tenant, newest first.
    pub async fn list_models(&self) -> Result<Vec<ModelVersion>, ClientError> {
        #[derive(Deserialize)]
        struct Models {
            models: Vec<ModelVersion>,
        }
        let out: Models = self.call_json(Method::GET, "/v1/models", None).await?;
        Ok(out.models)
    }

    /// Uploads `wasm` (skipped when the server has it) and registers a function version from
    /// `manifest` (`POST /v1/functions`). The server resolves model references and moves the
    /// `latest` alias to the new version.
    pub async fn deploy(
        &self,
        manifest: &Manifest,
        wasm: &Path,
    ) -> Result<FunctionVersion, ClientError> {
        let blob = self.upload_blob_file(wasm).await?;
        let body = json!({
            "name": manifest.name,
            "wasm_sha256": blob.sha256,
            "models": manifest.models,
            "env": manifest.env,
            "limits": manifest.limits,
            "public": manifest.public,
        });
        self.call_json(Method::POST, "/v1/functions", Some(body))
            .await
    }

    /// `GET /v1/functions`: the server's answer as it is,
    /// `{"functions": [{"name", "latest": <function version>}, ...]}`.
    pub async fn list_functions(&self) -> Result<Value, ClientError> {
        self.call_json(Method::GET, "/v1/functions", None).await
    }

    /// `GET /v1/functions/{name}/versions`: the function's versions, newest first.
    pub async fn function_versions(&self, name: &str) -> Result<Vec<FunctionVersion>, ClientError> {
        #[derive(Deserialize)]
        struct Versions {
            versions: Vec<FunctionVersion>,
        }
        let path = format!("/v1/functions/{}/versions", paths::segment(name));
        let out: Versions = self.call_json(Method::GET, &path, None).await?;
        Ok(out.versions)
    }

    /// `PUT /v1/functions/{name}/aliases/{alias}`: points `alias` at `version` (atomically; the
    /// move is kept in the alias's history for rollback).
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<AliasMoved, ClientError> {
        let path = format!(
            "/v1/functions/{}/aliases/{}",
            paths::segment(name),
            paths::segment(alias)
        );
        self.call_json(Method::PUT, &path, Some(json!({ "version": version })))
            .await
    }

    /// `GET /v1/functions/{name}/aliases`: alias -> version.
    pub async fn aliases(
        &self,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ClientError> {
        #[derive(Deserialize)]
        struct Aliases {
            aliases: std::collections::BTreeMap<String, String>,
        }
        let path = format!("/v1/functions/{}/aliases", paths::segment(name));
        let out: Aliases = self.call_json(Method::GET, &path, None).await?;
        Ok(out.aliases)
    }

    /// `POST /v1/functions/{name}/rollback`: moves `alias` (`latest` when `None`) back to the
    /// version it pointed at before its last move.
    pub async fn rollback(
        &self,
        name: &str,
        alias: Option<&str>,
    ) -> Result<AliasMoved, ClientError> {
        let path = format!("/v1/functions/{}/rollback", paths::segment(name));
        let body = alias.map(|alias| json!({ "alias": alias }));
        self.call_json(Method::POST, &path, body).await
    }

    /// `DELETE /v1/functions/{name}/versions/{version}`: deletes a version no alias points at,
    /// and the blobs nothing uses any more.
    pub async fn delete_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<VersionDeleted, ClientError> {
        let path = format!(
            "/v1/functions/{}/versions/{}",
            paths::segment(name),
            paths::segment(version)
        );
        self.call_json(Method::DELETE, &path, None).await
    }

    /// `POST /v1/tenants`: creates tenant `name` and its first admin key (the full key is in the
    /// answer, and only there). Needs an admin key of tenant `default`.
    pub async fn create_tenant(&self, name: &str) -> Result<CreatedTenant, ClientError> {
        self.call_json(Method::POST, "/v1/tenants", Some(json!({ "name": name })))
            .await
    }

    /// `GET /v1/tenants`: every tenant, by name. Needs an admin key of tenant `default`.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, ClientError> {
        #[derive(Deserialize)]
        struct Tenants {
            tenants: Vec<Tenant>,
        }
        let out: Tenants = self.call_json(Method::GET, "/v1/tenants", None).await?;
        Ok(out.tenants)
    }

    /// `POST /v1/keys`: a new key with `scopes` (`admin`, `deploy`, `invoke`; empty means the
    /// server's default, `invoke`), expiring after `expires_in_s` seconds or never, in the
    /// caller's tenant or in `tenant` (which only an admin key of tenant `default` may name).
    pub async fn create_key(
        &self,
        scopes: &[String],
        expires_in_s: Option<u64>,
        tenant: Option<&str>,
    ) -> Result<CreatedKey, ClientError> {
        let mut body = serde_json::Map::new();
        if !scopes.is_empty() {
            body.insert("scopes".into(), json!(scopes));
        }
        if let Some(seconds) = expires_in_s {
            body.insert("expires_in_s".into(), json!(seconds));
        }
        if let Some(tenant) = tenant {
            body.insert("tenant".into(), json!(tenant));
        }
        self.call_json(Method::POST, "/v1/keys", Some(Value::Object(body)))
            .await
    }

    /// `GET /v1/keys`: the keys of the caller's tenant (or of `tenant`, for an admin key of
    /// tenant `default`), newest first, revoked and expired ones included. Never secrets.
    pub async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Keys {
            keys: Vec<KeyInfo>,
        }
        let path = with_tenant("/v1/keys", tenant);
        let out: Keys = self.call_json(Method::GET, &path, None).await?;
        Ok(out.keys)
    }

    /// `DELETE /v1/keys/{id}`: revokes a key of the caller's tenant (or of `tenant`, for an admin
    /// key of tenant `default`) and returns it as it now stands.
    pub async fn revoke_key(
        &self,
        key_id: &str,
        tenant: Option<&str>,
    ) -> Result<KeyInfo, ClientError> {
        let path = with_tenant(&format!("/v1/keys/{}", paths::segment(key_id)), tenant);
        self.call_json(Method::DELETE, &path, None).await
    }

    /// Invokes `function` (`name`, `name@version` or `name@alias`) of `tenant` with `method` on the
    /// guest path `path` (may carry a `?query`; empty means `/`). Returns whatever came back, error
    /// statuses included: only a failure to talk to the server is an `Err`. The client's key is
    /// sent unless `headers` has its own `authorization`.
    pub async fn invoke(
        &self,
        tenant: &str,
        function: &str,
        path: &str,
        method: Method,
        body: Vec<u8>,
        headers: &[(String, String)],
    ) -> Result<InvokeResponse, ClientError> {
        if tenant.is_empty() {
            return Err(ClientError::InvalidInput("the tenant is empty".into()));
        }
        if function.is_empty() || function.starts_with('@') {
            return Err(ClientError::InvalidInput(format!(
                "invalid function `{function}`: expected name, name@version or name@alias"
            )));
        }
        let uri = self
            .transport
            .uri(&paths::invoke_path(tenant, function, path))?;
        let mut req = Request::builder().method(method).uri(uri);
        let mut has_auth = false;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| ClientError::InvalidInput(format!("invalid header name `{name}`")))?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| {
                ClientError::InvalidInput(format!("invalid value for header `{name}`"))
            })?;
            has_auth |= name == AUTHORIZATION;
            req = req.header(name, value);
        }
        if !has_auth && let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let (status, headers, body) = self
            .transport
            .exchange(build(req.body(transport::full(body)))?)
            .await?;
        Ok(InvokeResponse {
            status: status.as_u16(),
            headers,
            body,
        })
    }

    /// `GET path` (e.g. `/healthz`, `/metrics`) with the key when set; any status is returned.
    pub async fn get(&self, path: &str) -> Result<(u16, Bytes), ClientError> {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let req = self.request(Method::GET, &path)?.body(transport::empty());
        let (status, _, body) = self.transport.exchange(build(req)?).await?;
        Ok((status.as_u16(), body))
    }

    /// A request builder for `path_and_query` with the key set.
    fn request(
        &self,
        method: Method,
        path_and_query: &str,
    ) -> Result<http::request::Builder, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(self.transport.uri(path_and_query)?);
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        Ok(req)
    }

    /// Sends a JSON request (or none) and decodes a JSON answer.
    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let mut req = self.request(method.clone(), path)?;
        let body = match body {
            Some(value) => {
                req = req.header(CONTENT_TYPE, "application/json");
                transport::full(value.to_string())
            }
            None => transport::empty(),
        };
        self.send_json(method, path, build(req.body(body))?).await
    }

    /// Sends `req`; a 2xx answer is decoded as JSON, anything else becomes an error.
    async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        req: Request<Body>,
    ) -> Result<T, ClientError> {
        let (status, _, body) = self.transport.exchange(req).await?;
        if !status.is_success() {
            return Err(api_error(&method, path, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Decode(format!(
                "unexpected answer from nimbusd to {method} {path}: {e}"
            ))
        })
    }
}

/// `path` with `?tenant=<tenant>` when one is given.
fn with_tenant(path: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(tenant) => format!("{path}?tenant={}", paths::segment(tenant)),
        None => path.to_string(),
    }
}

fn build(req: http::Result<Request<Body>>) -> Result<Request<Body>, ClientError> {
    req.map_err(|e| ClientError::InvalidInput(format!("cannot build the request: {e}")))
}

/// The error for a non-2xx answer: code and message from the API's JSON error body when it is
/// one, else derived from the status and whatever text came back.
pub(crate) fn api_error(
    method: &Method,
    path: &str,
    status: StatusCode,
    body: &[u8],
) -> ClientError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorDetail,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        code: String,
        message: String,
    }
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Http {
            status: status.as_u16(),
            code: error.code,
            message: error.message.replace('\n', " "),
        };
    }
    let code = match status.as_u16() {
        400 => "bad_request".to_string(),
        401 => "unauthorized".to_string(),
        403 => "forbidden".to_string(),
        404 => "not_found".to_string(),
        409 => "conflict".to_string(),
        413 => "payload_too_large".to_string(),
        429 => "too_many_requests".to_string(),
        500 => "internal".to_string(),
        503 => "unavailable".to_string(),
        504 => "timeout".to_string(),
        s => format!("http_{s}"),
    };
    let text = String::from_utf8_lossy(body);
    let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let message = match first_line {
        Some(line) if line.chars().count() > 200 => {
            format!("{}...", line.chars().take(200).collect::<String>())
        }
        Some(line) => line.to_string(),
        None => format!(
            "{} for {method} {path}",
            status.canonical_reason().unwrap_or("error")
        ),
    };
    ClientError::Http {
        status: status.as_u16(),
        code,
        message,
    }
}

/// Lowercase hex sha256 and size of the file at `path`, read in chunks off the async workers.
async fn hash_file(path: &Path) -> Result<(String, u64), ClientError> {
    let owned = path.to_path_buf();
    let ctx = format!("cannot read {}", path.display());
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; HASH_CHUNK];
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((hex::encode(hasher.finalize()), size))
    })
    .await
    .map_err(|e| ClientError::io(ctx.clone(), std::io::Error::other(e.to_string())))?;
    result.map_err(|e| ClientError::io(ctx, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_bodies_become_http_errors() {
        let body = br#"{"error": {"code": "not_found", "message": "no function `x`"}}"#;
        let err = api_error(
            &Method::GET,
            "/v1/functions/x/versions",
            StatusCode::NOT_FOUND,
            body,
        );
        assert_eq!(err.to_string(), "no function `x` (HTTP 404 not_found)");
        match err {
            ClientError::Http { status, code, .. } => {
                assert_eq!((status, code.as_str()), (404, "not_found"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_error_bodies_are_summarised() {
        let err = api_error(&Method::HEAD, "/v1/blobs/ab", StatusCode::UNAUTHORIZED, b"");
        assert_eq!(
            err.to_string(),
            "Unauthorized for HEAD /v1/blobs/ab (HTTP 401 unauthorized)"
        );
        let err = api_error(
            &Method::GET,
            "/x",
            StatusCode::BAD_GATEWAY,
            b"\n upstream down\nmore",
        );
        assert_eq!(err.to_string(), "upstream down (HTTP 502 http_502)");
    }

    #[test]
    fn keys_are_validated_and_hidden() {
        let c = Client::new("http://127.0.0.1:8080", Some("nmb_a_b".into())).unwrap();
        assert!(c.has_api_key());
        assert!(!format!("{c:?}").contains("nmb_a_b"));
        assert!(
            !Client::new("127.0.0.1:1", Some("  ".into()))
                .unwrap()
                .has_api_key()
        );
        assert!(Client::new("http://127.0.0.1:8080", Some("bad\nkey".into())).is_err());
    }

    /// Callers spawn client calls on multi-threaded runtimes: the client and its futures must be
    /// `Send` (and the client `Sync`).
    #[test]
    fn client_and_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        fn sync<T: Send + Sync + Clone>() {}
        sync::<Client>();
        let c = Client::new("http://127.0.0.1:1", None).unwrap();
        let p = Path::new("x");
        let m = Manifest::parse("name = \"x\"").unwrap();
        send(&c.whoami());
        send(&c.upload_blob_file(p));
        send(&c.upload_blob_bytes(vec![]));
        send(&c.push_model("m", p, "onnxruntime", "cpu"));
        send(&c.list_models());
        send(&c.deploy(&m, p));
        send(&c.list_functions());
        send(&c.function_versions("x"));
        send(&c.invoke("t", "f", "/", Method::GET, vec![], &[]));
        send(&c.create_tenant("t"));
        send(&c.list_tenants());
        send(&c.create_key(&[], None, None));
        send(&c.list_keys(None));
        send(&c.revoke_key("k", None));
        send(&c.get("/healthz"));
    }

    #[tokio::test]
    async fn hashes_files_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = vec![7u8; HASH_CHUNK * 2 + 5];
        std::fs::write(&path, &data).unwrap();
        let (sha, size) = hash_file(&path).await.unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        let err = hash_file(&dir.path().join("missing")).await.unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }

    #[tokio::test]
    async fn invoke_rejects_bad_input_before_sending() {
        let c = Client::new("http://127.0.0.1:1", None).unwrap();
        let err = c
            .invoke("t", "@v1", "/", Method::GET, vec![], &[])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::InvalidInput(_)), "{err}");
        let err = c
            .invoke(
                "t",
                "f",
                "/",
                Method::GET,
                vec![],
                &[("bad name".into(), "v".into())],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid header name"), "{err}");
    }
}
