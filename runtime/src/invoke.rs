//! Invoking a function: `/fn/{tenant}/{function}[@version|@alias][/path]`. Resolves the function
//! version, checks the key (unless the function is public), gives the request to a fresh instance of
//! the function with its limits and bound models, and turns every way a guest can fail (trap, time
//! limit, no response) into a JSON error while the server keeps serving.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use nimbus_registry::{RegistryError, Scope};
use nimbus_wasi_nn::WasiNnCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::auth;
use crate::errors::{ApiError, Body};
use crate::models::BoundModels;
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
    let principal = auth::principal(&state.registry, req.headers()).await?;
    let not_found = || ApiError::not_found(format!("function `{function}` not found in tenant `{tenant}`"));
    let missing_key = || ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`");
    let version = match state.registry.resolve_function(tenant, name, selector).await {
        Ok(version) => version,
        // Without a key, say nothing about what exists.
        Err(RegistryError::NotFound(_)) if principal.is_none() => return Err(missing_key()),
        Err(RegistryError::NotFound(_)) => return Err(not_found()),
        Err(error) => return Err(error.into()),
    };
    if !version.public {
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

    let limits = InstanceLimits {
        memory_bytes: (version.limits.memory_mb.unwrap_or(state.config.default_memory_mb) as usize)
            << 20,
        timeout: Duration::from_millis(
            version.limits.timeout_ms.unwrap_or(state.config.default_timeout_ms),
        ),
    };
    let pre = state.sandbox.function(&version.wasm_sha256).await.map_err(|e| {
        ApiError::internal(format!("function `{function}` could not be loaded: {e:#}"))
    })?;

    let guest_request = guest_request(req, rest, max_body)?;
    let provider = BoundModels {
        cache: state.models.clone(),
        bindings: Arc::new(version.models.clone()),
    };
    let nn = WasiNnCtx::new(Arc::new(provider), state.nn_limits);
    let PreparedStore { mut store, stderr } = state.sandbox.store(nn, &version.env, &limits);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, guest_request)
        .map_err(|e| ApiError::bad_request(format!("the request cannot be given to a guest: {e}")))?;
    let outparam = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;

    let metrics = state.metrics.clone();
    let timeout = limits.timeout;
    let task = tokio::spawn(async move {
        let _in_flight = metrics.instance_started();
        let run = async {
            let proxy = pre.instantiate_async(&mut store).await?;
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

    match receiver.await {
        Ok(Ok(response)) => {
            Ok(response.map(|body| body.map_err(anyhow::Error::from).boxed_unsync()))
        }
        Ok(Err(code)) => Err(ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "guest_error",
            format!("function `{function}` answered with an error: {code:?}"),
        )),
        // The guest ended without setting a response: find out why from the task.
        Err(_) => {
            let failure = match task.await {
                Ok(Ok(())) => {
                    return Err(ApiError::new(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "guest_error",
                        format!("function `{function}` returned without sending a response"),
                    )
                    .with("guest_stderr", tail(&stderr.contents())));
                }
                Ok(Err(failure)) => failure,
                Err(join) => {
                    return Err(ApiError::internal(format!("the invocation task failed: {join}")));
                }
            };
            Err(match failure {
                GuestFailure::Timeout => ApiError::timeout(format!(
                    "function `{function}` ran past its time limit of {} ms",
                    timeout.as_millis()
                )),
                GuestFailure::Trap(error) => {
                    tracing::info!(function, error = format!("{error:#}"), "guest trapped");
                    ApiError::new(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "guest_error",
                        format!("function `{function}` trapped: {}", trap_message(&error)),
                    )
                    .with("guest_stderr", tail(&stderr.contents()))
                }
            })
        }
    }
}

enum GuestFailure {
    Trap(wasmtime::Error),
    Timeout,
}

fn is_interrupt(error: &wasmtime::Error) -> bool {
    matches!(error.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt))
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
        },
    ))
}

/// A request body that fails once it passes the function's request size limit.
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
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
