//! Owns the wire: the base URL, the pooled hyper-util connection client, request bodies (whole
//! buffers, or files streamed with a bounded buffer) and turning transport failures into
//! [`ClientError`]s.
//!
//! Only plain HTTP/1.1 today. TLS belongs here alone: swap the connector (and accept `https`
//! in [`Transport::new`]); nothing outside this module touches hyper's client types.

use std::error::Error as StdError;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, SizeHint};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::ClientError;

type BoxError = Box<dyn StdError + Send + Sync>;

/// A request body: any of the kinds built below.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// How long to wait for a TCP connection before reporting the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of the read buffer used when streaming a file as a request body.
const FILE_CHUNK: usize = 64 * 1024;

/// The connection to one nimbusd: cheap to clone (the pool is shared).
#[derive(Clone)]
pub(crate) struct Transport {
    client: HyperClient<HttpConnector, Body>,
    authority: Authority,
    /// Path prefix of the base URL without a trailing `/` (usually empty).
    prefix: String,
    /// The base URL as shown in messages, e.g. `http://127.0.0.1:8080`.
    display_url: String,
}

impl Transport {
    /// Parses the base URL (`http://host:port[/prefix]`; a missing scheme means `http://`).
    pub(crate) fn new(base_url: &str) -> Result<Self, ClientError> {
        let trimmed = base_url.trim();
        let full = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("http://{trimmed}")
        };
        let invalid = |why: String| {
            ClientError::InvalidInput(format!("invalid nimbusd URL `{base_url}`: {why}"))
        };
        let uri: Uri = full.parse().map_err(|e| invalid(format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported yet; use an http:// URL".to_string(),
                ));
            }
            other => {
                return Err(invalid(format!(
                    "unsupported scheme `{}`",
                    other.unwrap_or_default()
                )));
            }
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("no host".to_string()))?;
        if authority.host().is_empty() {
            return Err(invalid("no host".to_string()));
        }
        if uri.query().is_some() {
            return Err(invalid("a base URL cannot have a query".to_string()));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();

        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(Transport {
            client,
            display_url: format!("http://{authority}{prefix}"),
            authority,
            prefix,
        })
    }

    /// The base URL as shown in messages.
    pub(crate) fn base_url(&self) -> &str {
        &self.display_url
    }

    /// The absolute URI for `path_and_query` (which starts with `/`) under the base URL.
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<Uri, ClientError> {
        let pq = format!("{}{}", self.prefix, path_and_query);
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(pq.as_str())
            .build()
            .map_err(|e| ClientError::InvalidInput(format!("cannot build a URL from `{pq}`: {e}")))
    }

    /// Sends `req` and reads the whole response.
    pub(crate) async fn exchange(
        &self,
        req: Request<Body>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        let what = format!("{} {}", req.method(), req.uri().path());
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                ClientError::Connect {
                    url: self.display_url.clone(),
                    reason: connect_reason(&e),
                }
            } else {
                ClientError::Transport(format!(
                    "{what} to nimbusd at {} failed: {}",
                    self.display_url,
                    chain(&e)
                ))
            }
        })?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| {
                ClientError::Transport(format!(
                    "reading the response to {what} from nimbusd at {} failed: {}",
                    self.display_url,
                    chain(&e)
                ))
            })?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

/// An empty request body.
pub(crate) fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A request body held in memory.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A request body streamed from the file at `path`, read [`FILE_CHUNK`] bytes at a time, with an
/// exact length so the request carries `content-length`. Returns the body and that length.
pub(crate) async fn file(path: &Path) -> Result<(Body, u64), ClientError> {
    let ctx = || format!("cannot read {}", path.display());
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ClientError::io(ctx(), e))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ClientError::io(ctx(), e))?
        .len();
    let body = FileBody {
        file,
        remaining: len,
        buf: vec![0; FILE_CHUNK].into_boxed_slice(),
    };
    Ok((body.map_err(BoxError::from).boxed(), len))
}

/// Streams a file of a known length; memory stays at one chunk however large the file is.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Box<[u8]>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = this
            .buf
            .len()
            .min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
        let mut read_buf = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = read_buf.filled().len();
                if n == 0 {
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being uploaded",
                    ))));
                }
                this.remaining -= n as u64;
                let chunk = Bytes::copy_from_slice(read_buf.filled());
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Why a connection could not be made, in a few words (`connection refused`, `timed out`, or the
/// resolver's message).
fn connect_reason(err: &(dyn StdError + 'static)) -> String {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            let kind = io.kind().to_string();
            if io.kind() == io::ErrorKind::Other || kind == "uncategorized error" {
                let msg = io.to_string();
                return match msg.find(" (os error") {
                    Some(i) => msg[..i].to_string(),
                    None => msg,
                };
            }
            return kind;
        }
        cur = e.source();
    }
    chain(err)
}

/// The error and its sources as one line, `outer: inner: innermost`, skipping repeats.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !msg.is_empty() && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let t = Transport::new("http://127.0.0.1:8080/").unwrap();
        assert_eq!(t.base_url(), "http://127.0.0.1:8080");
        assert_eq!(
            t.uri("/v1/whoami").unwrap().to_string(),
            "http://127.0.0.1:8080/v1/whoami"
        );
        let t = Transport::new("localhost:9000/nimbus/").unwrap();
        assert_eq!(t.base_url(), "http://localhost:9000/nimbus");
        assert_eq!(
            t.uri("/fn/default/hello@abc?x=1").unwrap().to_string(),
            "http://localhost:9000/nimbus/fn/default/hello@abc?x=1"
        );
        let err = Transport::new("https://example.com").err().unwrap();
        assert!(err.to_string().contains("https is not supported"), "{err}");
        assert!(Transport::new("ftp://example.com").is_err());
        assert!(Transport::new("http://").is_err());
    }

    #[tokio::test]
    async fn refused_connection_is_reported_plainly() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = Transport::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let req = Request::get(t.uri("/healthz").unwrap())
            .body(empty())
            .unwrap();
        let err = t.exchange(req).await.err().unwrap();
        assert_eq!(
            err.to_string(),
            format!("cannot reach nimbusd at http://127.0.0.1:{port}: connection refused")
        );
    }

    #[tokio::test]
    async fn file_body_streams_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(FILE_CHUNK * 3 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let (body, len) = file(&path).await.unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(len));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[..]);
    }
}
