//! The control plane under `/v1` (docs/api.md): blobs, models and functions of the caller's tenant
//! (tenants and keys are in `tenants`). The front has already checked the key (`Auth::identify`);
//! each handler checks the scope it needs, calls the registry and answers JSON.

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyDataStream, BodyExt, Limited};
use hyper::body::Incoming;
use nimbus_registry::{Limits, NewFunctionVersion, NewModelVersion, Scope};
use serde::Deserialize;
use serde_json::json;

use crate::errors::{ApiError, Body, json};
use crate::server::AppState;
use crate::{auth, tenants, versions};

/// Largest JSON request body on the control plane.
const MAX_JSON_BYTES: usize = 1 << 20;

/// Serves one `/v1` request; `path` is what follows `/v1/`.
pub async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["whoami"]) => whoami(state, req).await,
        (&Method::POST, ["blobs"]) => upload_blob(state, req).await,
        (&Method::HEAD, ["blobs", sha]) => blob_exists(state, req, sha).await,
        (&Method::POST, ["models"]) => create_model(state, req).await,
        (&Method::GET, ["models"]) => list_models(state, req).await,
        (&Method::GET, ["models", name]) => model_versions(state, req, name).await,
        (&Method::POST, ["functions"]) => create_function(state, req).await,
        (&Method::GET, ["functions"]) => list_functions(state, req).await,
        (&Method::GET, ["functions", name, "versions"]) => {
            function_versions(state, req, name).await
        }
        (&Method::DELETE, ["functions", name, "versions", version]) => {
            versions::delete_version(state, req, name, version).await
        }
        (&Method::GET, ["functions", name, "aliases"]) => {
            versions::list_aliases(state, req, name).await
        }
        (&Method::PUT, ["functions", name, "aliases", alias]) => {
            versions::set_alias(state, req, name, alias).await
        }
        (&Method::POST, ["functions", name, "rollback"]) => {
            versions::rollback(state, req, name).await
        }
        (&Method::POST, ["tenants"]) => tenants::create_tenant(state, req).await,
        (&Method::GET, ["tenants"]) => tenants::list_tenants(state, req).await,
        (&Method::POST, ["keys"]) => tenants::create_key(state, req).await,
        (&Method::GET, ["keys"]) => tenants::list_keys(state, req).await,
        (&Method::DELETE, ["keys", id]) => tenants::revoke_key(state, req, id).await,
        (
            _,
            [
                "whoami" | "blobs" | "models" | "functions" | "tenants" | "keys",
                ..,
            ],
        ) => Err(ApiError::method_not_allowed(format!(
            "{method} is not allowed on /v1/{path}"
        ))),
        _ => Err(ApiError::not_found(format!("no such endpoint: /v1/{path}"))),
    }
}

pub(crate) async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_JSON_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub(crate) fn ok(
    status: StatusCode,
    value: impl serde::Serialize,
) -> Result<Response<Body>, ApiError> {
    let value = serde_json::to_value(value)
        .map_err(|e| ApiError::internal(format!("encoding the answer: {e}")))?;
    Ok(json(status, &value))
}

async fn whoami(_state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let principal = auth::caller(&req)?;
    ok(
        StatusCode::OK,
        json!({"tenant": principal.tenant, "key_id": principal.key_id, "scopes": principal.scopes}),
    )
}

async fn upload_blob(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Deploy)?;
    let expected = match req.headers().get("x-nimbus-sha256") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("x-nimbus-sha256 is not text"))?
                .to_owned(),
        ),
        None => None,
    };
    let max = state.config.max_blob_bytes;
    if let Some(length) = content_length(&req)
        && length > max
    {
        return Err(ApiError::too_large(format!(
            "the upload is {length} bytes; the limit is {max}"
        )));
    }
    let stream = BodyDataStream::new(req.into_body());
    let blob = state
        .registry
        .blobs()
        .put_stream(stream, expected.as_deref(), max)
        .await?;
    state
        .registry
        .record_blob(&principal.tenant, &blob.sha256, blob.size)
        .await?;
    ok(
        StatusCode::CREATED,
        json!({"sha256": blob.sha256, "size": blob.size}),
    )
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn blob_exists(
    state: &AppState,
    req: Request<Incoming>,
    sha: &str,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Deploy)?;
    match state
        .registry
        .tenant_has_blob(&principal.tenant, sha)
        .await?
    {
        Some(size) => Ok(Response::builder()
            .status(StatusCode::OK)
            .header("x-nimbus-size", size)
            .body(crate::errors::full(""))
            .expect("valid response")),
        None => Err(ApiError::not_found(format!("no blob {sha}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateModel {
    name: String,
    sha256: String,
    /// `s3://bucket/key` of an object put there with any S3 tool, instead of an uploaded blob.
    #[serde(default)]
    uri: Option<String>,
    engine: String,
    #[serde(default = "default_target")]
    target: String,
}

fn default_target() -> String {
    "cpu".to_owned()
}

async fn create_model(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Deploy)?;
    let body: CreateModel = read_json(req).await?;
    if body.engine.parse::<nimbus_engines::EngineKind>().is_err() {
        return Err(ApiError::bad_request(format!(
            "unknown engine `{}`: use onnxruntime or openvino",
            body.engine
        )));
    }
    if body.target.parse::<nimbus_engines::Target>().is_err() {
        return Err(ApiError::bad_request(format!(
            "unknown target `{}`: use cpu, gpu or auto",
            body.target
        )));
    }
    let (version, created) = state
        .registry
        .create_model_version(
            &principal.tenant,
            NewModelVersion {
                name: body.name,
                sha256: body.sha256,
                uri: body.uri,
                engine: body.engine,
                target: body.target,
            },
        )
        .await?;
    ok(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        version,
    )
}

async fn list_models(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let principal = auth::caller(&req)?;
    let models = state.registry.list_models(&principal.tenant).await?;
    ok(StatusCode::OK, json!({ "models": models }))
}

async fn model_versions(
    state: &AppState,
    req: Request<Incoming>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::caller(&req)?;
    let versions = state
        .registry
        .model_versions(&principal.tenant, name)
        .await?;
    ok(
        StatusCode::OK,
        json!({ "name": name, "versions": versions }),
    )
}

/// A manifest's limits must be positive and within this node's maxima (`--max-memory-mb`,
/// `--max-timeout-ms`, `--max-instances`).
fn check_limits(config: &crate::config::Config, limits: &Limits) -> Result<(), ApiError> {
    let check = |name: &str, value: Option<u64>, max: u64, flag: &str| match value {
        Some(v) if v == 0 || v > max => Err(ApiError::bad_request(format!(
            "limits.{name} is {v}: it must be between 1 and {max} on this node ({flag})"
        ))),
        _ => Ok(()),
    };
    check(
        "memory_mb",
        limits.memory_mb.map(u64::from),
        config.max_memory_mb.into(),
        "--max-memory-mb",
    )?;
    check(
        "timeout_ms",
        limits.timeout_ms,
        config.max_timeout_ms,
        "--max-timeout-ms",
    )?;
    check(
        "concurrency",
        limits.concurrency.map(u64::from),
        config.max_instances.into(),
        "--max-instances",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateFunction {
    name: String,
    wasm_sha256: String,
    #[serde(default)]
    models: BTreeMap<String, String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    public: bool,
}

async fn create_function(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::require(&req, Scope::Deploy)?;
    let body: CreateFunction = read_json(req).await?;
    check_limits(&state.config, &body.limits)?;
    if state
        .registry
        .tenant_has_blob(&principal.tenant, &body.wasm_sha256)
        .await?
        .is_none()
    {
        return Err(ApiError::bad_request(format!(
            "no uploaded wasm {} in this tenant: POST it to /v1/blobs first",
            body.wasm_sha256
        )));
    }
    // Compile before recording, so a broken component is refused at deploy and never becomes a
    // version, and the first request finds it warm.
    if let Err(error) = state.sandbox.function(&body.wasm_sha256).await {
        if let Some(crate::artifacts::ArtifactError::Unavailable(reason)) = error.downcast_ref() {
            return Err(ApiError::unavailable(format!(
                "the function's wasm cannot be fetched: {reason}"
            )));
        }
        return Err(ApiError::bad_request(format!(
            "the function's wasm cannot run here: {error:#}"
        )));
    }
    let (version, created) = state
        .registry
        .create_function_version(
            &principal.tenant,
            NewFunctionVersion {
                name: body.name,
                wasm_sha256: body.wasm_sha256,
                models: body.models,
                env: body.env,
                limits: body.limits,
                public: body.public,
            },
        )
        .await?;
    ok(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        version,
    )
}

async fn list_functions(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::caller(&req)?;
    let functions = state.registry.list_functions(&principal.tenant).await?;
    ok(StatusCode::OK, json!({ "functions": functions }))
}

async fn function_versions(
    state: &AppState,
    req: Request<Incoming>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let principal = auth::caller(&req)?;
    let versions = state
        .registry
        .function_versions(&principal.tenant, name)
        .await?;
    ok(
        StatusCode::OK,
        json!({ "name": name, "versions": versions }),
    )
}
