//! Invoking a function: `/fn/{tenant}/{function}[@version|@alias][/path]`. Resolves the function
//! version, checks the key (unless the function is public), gives the request to a fresh instance of
//! the function with its limits and bound models, and turns every way a guest can fail (trap, time
//! limit, no response) into a JSON error while the server keeps serving.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use nimbus_registry::{RegistryError, Scope};
use nimbus_wasi_nn::WasiNnCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::admission::Rejected;
use crate::artifacts::ArtifactError;
use crate::auth;
use crate::errors::{ApiError, Body};
use crate::models::{BoundModels, UnavailableModel};
use crate::sandbox::{InstanceLimits, PreparedStore};
use crate::server::AppState;

/// Bytes of a failing guest's stderr returned in the error answer.
const STDERR_IN_ANSWER: usize = 4096;

/// Serves one invocation.
pub async fn handle(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    tenant: &str,
    function: &str,
    rest: &str,
) -> Result<Response<Body>, ApiError> {
    let (name, selector) = match function.split_once('@') {
        Some((name, selector)) => (name, Some(selector)),
        None => (function, None),
    };
    // The front checked the key (if any) and charged it; see `Auth::identify`.
    let principal = auth::optional_caller(&req);
    let not_found = || {
        ApiError::not_found(format!(
            "function `{function}` not found in tenant `{tenant}`"
        ))
    };
    let missing_key =
        || ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`");
    let version = match state
        .functions
        .resolve(&state.registry, tenant, name, selector)
        .await
    {
        Ok(version) => version,
        // Without a key, say nothing about what exists.
        Err(RegistryError::NotFound(_)) if principal.is_none() => return Err(missing_key()),
        Err(RegistryError::NotFound(_)) => return Err(not_found()),
        Err(error) => return Err(error.into()),
    };
    if version.public {
        if principal.is_none() {
            state.auth.charge_public(tenant)?;
        }
    } else {
        let principal = principal.as_ref().ok_or_else(missing_key)?;
        if principal.tenant != tenant {
            // Another tenant's private function looks exactly like a missing one.
            return Err(not_found());
        }
        auth::check_scope(principal, Scope::Invoke)?;
    }

    let max_body = state.config.max_request_bytes;
    if let Some(length) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > max_body
    {
        return Err(ApiError::too_large(format!(
            "the request body is {length} bytes; functions take at most {max_body}"
        )));
    }

    // Deploys are refused past this node's maxima; a version recorded by a node with larger
    // ones is held to this node's.
    let config = &state.config;
    let limits = InstanceLimits {
        memory_bytes: (version
            .limits
            .memory_mb
            .unwrap_or(config.default_memory_mb)
            .min(config.max_memory_mb) as usize)
            << 20,
        timeout: Duration::from_millis(
            version
                .limits
                .timeout_ms
                .unwrap_or(config.default_timeout_ms)
                .min(config.max_timeout_ms),
        ),
    };
    let concurrency = version
        .limits
        .concurrency
        .unwrap_or(config.default_concurrency)
        .min(config.max_instances);
    let gate = format!("{tenant}/{name}@{}", version.version);
    let slot = state
        .admission
        .admit(
            &gate,
            concurrency,
            state.config.max_queued_per_function,
            limits.timeout,
        )
        .await
        .map_err(|r| rejected(function, r))?;
    let pre = state
        .sandbox
        .function(&version.wasm_sha256)
        .await
        .map_err(|e| {
            let message = format!("function `{function}` could not be loaded: {e:#}");
            match e.downcast_ref::<ArtifactError>() {
                Some(ArtifactError::Unavailable(_)) => ApiError::unavailable(message),
                _ => ApiError::internal(message),
            }
        })?;

    let over_limit = Arc::new(AtomicBool::new(false));
    let guest_request = guest_request(req, rest, max_body, over_limit.clone())?;
    // A bound model whose file cannot be fetched makes the answer a 503 naming it, whatever the
    // guest answers (it only sees a wasi-nn error): see docs/api.md, Invoke.
    let unavailable = UnavailableModel::default();
    let provider = BoundModels {
        cache: state.models.clone(),
        bindings: Arc::new(version.models.clone()),
        unavailable: unavailable.clone(),
    };
    let nn = WasiNnCtx::new(Arc::new(provider), state.nn_limits);
    let store_started = std::time::Instant::now();
    let PreparedStore { mut store, stderr } = state.sandbox.store(nn, &version.env, &limits);
    let store_took = store_started.elapsed();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, guest_request)
        .map_err(|e| {
            ApiError::bad_request(format!("the request cannot be given to a guest: {e}"))
        })?;
    let outparam = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;

    let metrics = state.metrics.clone();
    let timeout = limits.timeout;
    let task = tokio::spawn(async move {
        // The slot and the in-flight count last as long as the guest runs, which may be past the
        // moment its response head was handed over.
        let _slot = slot;
        let _in_flight = metrics.instance_started();
        let run = async {
            let instantiate_started = std::time::Instant::now();
            let proxy = pre.instantiate_async(&mut store).await?;
            metrics.record_instance_start(store_took + instantiate_started.elapsed());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) if is_interrupt(&error) => Err(GuestFailure::Timeout),
            Ok(Err(error)) => Err(GuestFailure::Trap(error)),
            Err(_) => Err(GuestFailure::Timeout),
        }
    });

    let failed = |failure: GuestFailure| -> ApiError {
        match failure {
            GuestFailure::Timeout => ApiError::timeout(format!(
                "function `{function}` ran past its time limit of {} ms",
                timeout.as_millis()
            )),
            GuestFailure::Trap(error) => {
                tracing::info!(function, error = format!("{error:#}"), "guest trapped");
                let message = if is_memory_limit(&error) {
                    format!(
                        "function `{function}` went past its memory limit of {} MiB",
                        limits.memory_bytes >> 20
                    )
                } else {
                    format!("function `{function}` trapped: {}", trap_message(&error))
                };
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "guest_error", message)
                    .with("guest_stderr", tail(&stderr.contents()))
            }
        }
    };

    let answered = receiver.await;
    // A body without Content-Length (chunked) that ran past the limit: the guest only saw a
    // stream error, the client gets the same 413 as a declared length would have.
    if over_limit.load(Ordering::Relaxed) {
        task.abort();
        return Err(ApiError::too_large(format!(
            "the request body is larger than {max_body} bytes, the most a function takes"
        )));
    }
    if let Some(message) = unavailable.take() {
        task.abort();
        return Err(ApiError::unavailable(message));
    }
    let response = match answered {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "guest_error",
                format!("function `{function}` answered with an error: {code:?}"),
            ));
        }
        // The guest ended without setting a response: find out why from the task.
        Err(_) => {
            return Err(match task.await {
                Ok(Ok(())) => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "guest_error",
                    format!("function `{function}` returned without sending a response"),
                )
                .with("guest_stderr", tail(&stderr.contents())),
                Ok(Err(failure)) => failed(failure),
                Err(join) => ApiError::internal(format!("the invocation task failed: {join}")),
            });
        }
    };

    // The body is gathered before anything is sent, so that a guest that traps, runs out of time
    // or writes too much half-way through still gets a clean error answer instead of a cut-off
    // body. Responses are bounded by --max-response-bytes.
    let (parts, body) = response.into_parts();
    let max_response = state.config.max_response_bytes;
    match http_body_util::Limited::new(body, max_response)
        .collect()
        .await
    {
        Ok(collected) => Ok(Response::from_parts(
            parts,
            crate::errors::full(collected.to_bytes()),
        )),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            task.abort();
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "response_too_large",
                format!(
                    "function `{function}` answered more than {max_response} bytes \
                     (--max-response-bytes)"
                ),
            ))
        }
        Err(error) => Err(match task.await {
            Ok(Err(failure)) => failed(failure),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "guest_error",
                format!("function `{function}` failed while writing its response: {error}"),
            ),
        }),
    }
}

/// The 429 for a request the function's admission gate turned away.
fn rejected(function: &str, rejected: Rejected) -> ApiError {
    let message = match rejected {
        Rejected::QueueFull { concurrency, queue } => format!(
            "function `{function}` is at its concurrency limit ({concurrency} running, \
             {queue} queued); retry later"
        ),
        Rejected::WaitedTooLong { waited } => format!(
            "function `{function}` had no free slot within {} ms; retry later",
            waited.as_millis()
        ),
    };
    let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message);
    error.retry_after = Some(1);
    error
}

fn is_memory_limit(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .to_string()
            .contains("forcing trap when growing memory")
    })
}

enum GuestFailure {
    Trap(wasmtime::Error),
    Timeout,
}

fn is_interrupt(error: &wasmtime::Error) -> bool {
    matches!(
        error.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    )
}

/// The trap and its context, on one line (the wasm backtrace stays in the logs).
fn trap_message(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or_default().to_owned();
        if !first.is_empty() && !first.starts_with("error while executing at wasm backtrace") {
            parts.push(first);
        }
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_IN_ANSWER);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The request as the guest sees it: the path after the function name, no credentials.
fn guest_request(
    req: Request<Incoming>,
    rest: &str,
    max_body: u64,
    over_limit: Arc<AtomicBool>,
) -> Result<Request<LimitedBody>, ApiError> {
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(http::header::AUTHORIZATION);
    let path = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ApiError::bad_request(format!("invalid request target: {e}")))?;
    Ok(Request::from_parts(
        parts,
        LimitedBody {
            inner: body,
            remaining: max_body,
            limit: max_body,
            over_limit,
        },
    ))
}

/// A request body that fails once it passes the function's request size limit, and says so
/// in `over_limit`.
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    over_limit: Arc<AtomicBool>,
}

impl hyper::body::Body for LimitedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.over_limit.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.limit)),
                        )));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}
