//! HTTP side of a Nimbus function: the buffered [`Request`] a function sees, the [`Response`] it
//! returns, the [`Handler`] trait, and [`serve`], the `wasi:http/incoming-handler` glue that
//! [`export_handler!`](crate::export_handler) wires up (read the whole request, call the handler,
//! write status, headers and body).
//!
//! Requests and responses are fully buffered: Nimbus functions answer one request per instance,
//! and the host caps request and response sizes.

use serde::Serialize;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// A request as the function sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ... (upper case for the standard methods, as sent for others).
    pub method: String,
    /// The path after the function's name, with the query: `/`, `/preprocess?x=1`.
    pub path: String,
    /// Header names (lower case, as wasi:http hands them) and raw values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole request body.
    pub body: Vec<u8>,
}

impl Request {
    /// The path without the query (`/preprocess` for `/preprocess?x=1`).
    pub fn path_only(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p)
    }

    /// The query string without the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The first value of query parameter `name` (`ms` in `/sleep?ms=10`), not percent-decoded.
    /// A parameter given without `=` has the empty value.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name` as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A response a function returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code (100..=999; anything else is answered as 500 by [`serve`]).
    pub status: u16,
    /// Header names and values. Headers the host forbids a guest to set are dropped (and
    /// reported on stderr).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole response body.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status` and no headers.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `application/json` body serialised from `value` (a `serde_json::Value` or anything
    /// `Serialize`). If serialisation fails (a map with non-string keys, say) the answer is a
    /// 500 error response instead.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => Response::error(500, "internal", &format!("serialising JSON: {e}")),
        }
    }

    /// `application/octet-stream` body.
    pub fn bytes(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status)
            .with_header("content-type", "application/octet-stream")
            .with_body(body)
    }

    /// `text/plain; charset=utf-8` body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into().into_bytes())
    }

    /// The Nimbus error shape: `{"error": {"code": code, "message": message}}` as JSON.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Response::json(
            status,
            &serde_json::json!({ "error": { "code": code, "message": message } }),
        )
    }

    /// A wasi-nn error as a response: `{"error": {"code": <wasi-nn code, e.g. "not-found">,
    /// "message": ...}}` with status 503 for `timeout` (the engine was busy or slow: worth a
    /// retry) and 500 for every other code.
    pub fn nn_error(err: &crate::nn::NnError) -> Self {
        let status = if err.code == "timeout" { 503 } else { 500 };
        Response::error(status, &err.code, &err.message)
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Replaces the body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// A Nimbus function: one call per request, in a fresh instance.
pub trait Handler {
    /// Answers one request. A panic traps the instance; the host answers 500 `guest_error`
    /// with the panic message (and what was printed to stderr).
    fn handle(req: Request) -> Response;
}

/// The `wasi:http/incoming-handler.handle` behind [`export_handler!`](crate::export_handler):
/// reads the request whole, calls `H::handle` and writes its response. A request whose body
/// cannot be read is answered 400 without calling the handler.
pub fn serve<H: Handler>(request: IncomingRequest, response_out: ResponseOutparam) {
    let response = match read_request(&request) {
        Ok(req) => H::handle(req),
        Err(message) => Response::error(400, "bad_request", &message),
    };
    drop(request);
    write_response(response_out, response);
}

fn method_name(method: Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other,
    }
}

/// Largest body we pre-allocate for on the word of a `content-length` header.
const MAX_PREALLOC: usize = 64 << 20;

fn read_request(request: &IncomingRequest) -> Result<Request, String> {
    let method = method_name(request.method());
    let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let headers = request.headers().entries();

    let capacity = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_PREALLOC);

    let body = request
        .consume()
        .map_err(|()| "request body was already consumed".to_string())?;
    let stream = body
        .stream()
        .map_err(|()| "request body stream unavailable".to_string())?;
    let mut buf = Vec::with_capacity(capacity);
    read_all(&stream, &mut buf)?;
    drop(stream);
    // Trailers are not part of the model; finishing just releases the body.
    drop(IncomingBody::finish(body));

    Ok(Request {
        method,
        path,
        headers,
        body: buf,
    })
}

fn read_all(stream: &InputStream, buf: &mut Vec<u8>) -> Result<(), String> {
    loop {
        match stream.blocking_read(1 << 20) {
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(()),
            Err(StreamError::LastOperationFailed(e)) => {
                // The host's debug text may run to a backtrace: its first line says what failed.
                let debug = e.to_debug_string();
                let reason = debug.lines().next().unwrap_or_default();
                return Err(format!("reading request body: {reason}"));
            }
        }
    }
}

fn write_response(response_out: ResponseOutparam, response: Response) {
    let Response {
        status,
        headers,
        body,
    } = response;
    send(response_out, status, &headers, std::iter::once(body));
}

/// Answers with a body written chunk by chunk, for bodies too large to hold in memory at once
/// (the buffered [`Handler`] model cannot do that). Used by handlers exported through the raw
/// bindings ([`crate::wasi`]); see the crate docs. Empty chunks are skipped; a write error (the
/// host closed the stream, for one) stops the body and is reported on stderr.
pub fn respond_streaming<I>(
    response_out: ResponseOutparam,
    status: u16,
    headers: &[(String, Vec<u8>)],
    chunks: I,
) where
    I: IntoIterator<Item = Vec<u8>>,
{
    send(response_out, status, headers, chunks);
}

fn send<I>(response_out: ResponseOutparam, status: u16, headers: &[(String, Vec<u8>)], chunks: I)
where
    I: IntoIterator<Item = Vec<u8>>,
{
    let fields = Fields::new();
    for (name, value) in headers {
        if let Err(e) = fields.append(name, value) {
            eprintln!("nimbus-guest: dropping response header {name:?}: {e:?}");
        }
    }
    let outgoing = OutgoingResponse::new(fields);
    let mut replacement = None;
    if outgoing.set_status_code(status).is_err() {
        eprintln!("nimbus-guest: invalid status code {status}, answering 500");
        let _ = outgoing.set_status_code(500);
        replacement = Some(
            format!(
                r#"{{"error":{{"code":"internal","message":"guest returned invalid status code {status}"}}}}"#
            )
            .into_bytes(),
        );
    }

    let Ok(outgoing_body) = outgoing.body() else {
        // Cannot happen on a fresh response; answer without a body rather than trap.
        ResponseOutparam::set(response_out, Ok(outgoing));
        return;
    };
    ResponseOutparam::set(response_out, Ok(outgoing));

    match outgoing_body.write() {
        Ok(stream) => {
            let result = match replacement {
                Some(body) => write_all(&stream, &body),
                None => chunks
                    .into_iter()
                    .try_for_each(|chunk| write_all(&stream, &chunk)),
            };
            if let Err(e) = result.and_then(|()| flush(&stream)) {
                eprintln!("nimbus-guest: writing response body: {e}");
            }
            drop(stream);
        }
        Err(()) => eprintln!("nimbus-guest: response body stream unavailable"),
    }
    if let Err(e) = OutgoingBody::finish(outgoing_body, None) {
        eprintln!("nimbus-guest: finishing response body: {e:?}");
    }
}

fn describe(e: StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

fn flush(stream: &OutputStream) -> Result<(), String> {
    stream.blocking_flush().map_err(describe)
}

fn write_all(stream: &OutputStream, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        let permit = stream.check_write().map_err(describe)?;
        if permit == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = data
            .len()
            .min(usize::try_from(permit).unwrap_or(usize::MAX));
        stream.write(&data[..n]).map_err(describe)?;
        data = &data[n..];
    }
    Ok(())
}
