//! The HTTP front: accepts connections, gives each request an id, routes it (probes, metrics,
//! `/v1` control plane, `/fn` invocations) and drains connections in flight on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nimbus_registry::Registry;
use nimbus_wasi_nn::NnLimits;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::auth::{Auth, ClientIp};
use crate::config::Config;
use crate::errors::{ApiError, Body, json};
use crate::metrics::Metrics;
use crate::models::ModelCache;
use crate::sandbox::Sandbox;
use crate::{api, invoke};

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    pub config: Config,
    pub registry: Registry,
    pub sandbox: Sandbox,
    pub models: Arc<ModelCache>,
    pub metrics: Arc<Metrics>,
    pub nn_limits: NnLimits,
    /// Keys, their cache and the rate limits.
    pub auth: Auth,
    /// Per-function concurrency limits and queues.
    pub admission: crate::admission::Admission,
    /// Function versions resolved on this node (see `function_cache`).
    pub functions: crate::function_cache::FunctionCache,
}

/// Serves until `shutdown` resolves, then stops accepting and drains what is in flight.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let next_id = Arc::new(AtomicU64::new(0));
    let header_read_timeout = Duration::from_millis(state.config.header_read_timeout_ms.max(1));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let next_id = next_id.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientIp(peer.ip()));
            let state = state.clone();
            let id = request_id(&req, &next_id);
            async move { Ok::<_, Infallible>(handle(state, req, id).await) }
        });
        // A client that trickles its headers (slowloris) is cut off after the header timeout.
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out"),
    }
    Ok(())
}

fn request_id(req: &Request<Incoming>, next: &AtomicU64) -> String {
    if let Some(given) = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        && !given.is_empty()
        && given.len() <= 64
        && given
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return given.to_owned();
    }
    format!(
        "{:x}-{:x}",
        std::process::id(),
        next.fetch_add(1, Ordering::Relaxed)
    )
}

async fn handle(state: Arc<AppState>, req: Request<Incoming>, id: String) -> Response<Body> {
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        let started = Instant::now();
        let mut response = route(&state, req)
            .await
            .unwrap_or_else(ApiError::into_response);
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert("x-request-id", value);
        }
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "done"
        );
        response
    }
    .instrument(span)
    .await
}

async fn route(
    state: &Arc<AppState>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    if let Some(rest) = path.strip_prefix("/fn/") {
        let mut parts = rest.splitn(3, '/');
        let tenant = parts.next().unwrap_or_default().to_owned();
        let function = parts.next().unwrap_or_default().to_owned();
        if tenant.is_empty() || function.is_empty() {
            return Err(ApiError::not_found(
                "invoke a function at /fn/{tenant}/{function}[/path]",
            ));
        }
        let rest = parts.next().map(|r| format!("/{r}")).unwrap_or_default();
        // The key is checked (and charged) before anything else, for public functions too.
        let result = match state.auth.identify(&mut req).await {
            Ok(()) => invoke::handle(state, req, &tenant, &function, &rest).await,
            Err(error) => Err(error),
        };
        let status = match &result {
            Ok(response) => response.status().as_u16(),
            Err(error) => error.status.as_u16(),
        };
        // Names that resolved to nothing are not counted: a caller could otherwise grow the
        // metrics without bound by inventing names.
        if !matches!(status, 401 | 404) {
            let name = function.split('@').next().unwrap_or_default();
            state
                .metrics
                .record_invocation(&tenant, name, status, started.elapsed());
        }
        return result;
    }
    if let Some(rest) = path.strip_prefix("/v1/") {
        state.auth.identify(&mut req).await?;
        return api::handle(state, req, rest).await;
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => Ok(json(StatusCode::OK, &json!({"status": "ok"}))),
        (&Method::GET, "/readyz") => Ok(readyz(state).await),
        (&Method::GET, "/metrics") => {
            // Its samples name every tenant's functions: only the operator reads them.
            if !state.config.public_metrics {
                state.auth.identify_uncharged(&mut req).await?;
                crate::tenants::require_bootstrap_admin(&req)?;
            }
            Ok(Response::builder()
                .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(crate::errors::full(
                    state.metrics.render()
                        + &crate::metrics::render_admission(&state.admission.stats()),
                ))
                .expect("valid response"))
        }
        _ => Err(ApiError::not_found(format!("no such endpoint: {path}"))),
    }
}

async fn readyz(state: &AppState) -> Response<Body> {
    let registry = match state.registry.ping().await {
        Ok(()) => json!({"ok": true}),
        Err(error) => json!({"ok": false, "error": error.to_string()}),
    };
    let blobs = match state.registry.blobs().ping().await {
        Ok(()) => json!({"ok": true}),
        Err(error) => json!({"ok": false, "error": error.to_string()}),
    };
    let ready = registry["ok"] == true && blobs["ok"] == true;
    let engines = serde_json::to_value(state.models.engines().status()).unwrap_or_default();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {"registry": registry, "blob_store": blobs},
            "engines": engines,
        }),
    )
}
