//! The load generator of the benchmarks: N keep-alive HTTP/1.1 connections (hyper's client
//! connection, nothing pooled or retried behind our back), each sending one request after the
//! other for a fixed time, recording the latency and status of every answer, and counting transport
//! errors apart. It speaks to any server on loopback, so that nimbusd and its peers are measured by
//! the same client in the same way.
//!
//! Quantiles are exact (every latency is kept). A 429 may be honoured: the connection then waits
//! for its `Retry-After` before the next request, as a well-behaved client does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request, sent again and again.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    pub method: Method,
    /// Path and query, e.g. `/fn/default/hello`.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl RequestSpec {
    /// A request with no headers beyond `Host`.
    pub fn new(method: Method, path: &str, body: impl Into<Bytes>) -> RequestSpec {
        RequestSpec {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds `Authorization: Bearer <key>`.
    pub fn bearer(mut self, key: &str) -> anyhow::Result<RequestSpec> {
        self.headers.push((
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}"))?,
        ));
        Ok(self)
    }
}

/// How to load one server.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub request: RequestSpec,
    pub connections: usize,
    pub duration: Duration,
    /// Wait for `Retry-After` on a 429 before the connection's next request.
    pub honour_retry_after: bool,
    /// Longest a single answer may take before it counts as an error.
    pub request_timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Latency of every 2xx answer.
    pub ok_latencies: Vec<Duration>,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport failures (connect, reset, timeout, malformed answer) by kind.
    pub errors: BTreeMap<String, u64>,
    /// From the first request to the last answer.
    pub wall: Duration,
    /// The first body of a non-2xx answer of each status, to say what went wrong.
    pub samples: BTreeMap<u16, String>,
}

impl LoadOutcome {
    fn merge(&mut self, other: LoadOutcome) {
        self.ok_latencies.extend(other.ok_latencies);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
        for (status, body) in other.samples {
            self.samples.entry(status).or_insert(body);
        }
    }

    /// 2xx answers per second.
    pub fn ok_per_second(&self) -> f64 {
        self.ok_latencies.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Answers of a status.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Answers that are neither 2xx nor in `allowed`, plus transport errors.
    pub fn unexpected(&self, allowed: &[u16]) -> u64 {
        let bad: u64 = self
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s) && !allowed.contains(s))
            .map(|(_, n)| n)
            .sum();
        bad + self.errors.values().sum::<u64>()
    }

    /// The q-quantile of the 2xx latencies (0 when there were none).
    pub fn quantile(&mut self, q: f64) -> Duration {
        if self.ok_latencies.is_empty() {
            return Duration::ZERO;
        }
        if !self.ok_latencies.is_sorted() {
            self.ok_latencies.sort_unstable();
        }
        let last = self.ok_latencies.len() - 1;
        self.ok_latencies[((last as f64) * q).round() as usize]
    }

    /// A one-line account of statuses and errors, e.g. `200: 1200, 429: 30, errors: 0`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let errors: u64 = self.errors.values().sum();
        parts.push(format!("errors: {errors}"));
        for (kind, n) in &self.errors {
            parts.push(format!("{kind} x{n}"));
        }
        parts.join(", ")
    }
}

/// Runs `spec` and gathers what every connection saw.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<LoadOutcome> {
    let spec = Arc::new(spec.clone());
    let started = Instant::now();
    let deadline = started + spec.duration;
    let tasks: Vec<_> = (0..spec.connections)
        .map(|_| tokio::spawn(connection(spec.clone(), deadline)))
        .collect();
    let mut outcome = LoadOutcome::default();
    for task in tasks {
        outcome.merge(task.await.context("a load connection panicked")?);
    }
    outcome.wall = started.elapsed();
    Ok(outcome)
}

fn error(outcome: &mut LoadOutcome, kind: &str) {
    *outcome.errors.entry(kind.to_owned()).or_default() += 1;
}

/// One connection's loop: (re)connect, send, read the answer, until the deadline.
async fn connection(spec: Arc<LoadSpec>, deadline: Instant) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    let host = HeaderValue::from_str(&spec.addr.to_string()).expect("an address is a valid host");
    'connect: while Instant::now() < deadline {
        let stream = match TcpStream::connect(spec.addr).await {
            Ok(stream) => stream,
            Err(e) => {
                error(&mut outcome, &format!("connect: {}", e.kind()));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, driver) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(_) => {
                    error(&mut outcome, "handshake");
                    continue;
                }
            };
        let driver = tokio::spawn(driver);
        while Instant::now() < deadline {
            if sender.ready().await.is_err() {
                // The server closed the connection (keep-alive ended): open another.
                driver.abort();
                continue 'connect;
            }
            let mut request = Request::builder()
                .method(spec.request.method.clone())
                .uri(spec.request.path.as_str())
                .header(http::header::HOST, host.clone());
            for (name, value) in &spec.request.headers {
                request = request.header(name, value);
            }
            let request = request
                .body(Full::new(spec.request.body.clone()))
                .expect("a valid request");
            let sent = Instant::now();
            let answered = tokio::time::timeout(spec.request_timeout, async {
                let response = sender.send_request(request).await?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, hyper::Error>((parts, body))
            })
            .await;
            let took = sent.elapsed();
            let (parts, body) = match answered {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    let kind = if e.is_incomplete_message() {
                        "closed mid-answer"
                    } else if e.is_parse() {
                        "malformed answer"
                    } else {
                        "transport"
                    };
                    error(&mut outcome, kind);
                    driver.abort();
                    continue 'connect;
                }
                Err(_) => {
                    error(&mut outcome, "timeout");
                    driver.abort();
                    continue 'connect;
                }
            };
            let status = parts.status.as_u16();
            *outcome.statuses.entry(status).or_default() += 1;
            if parts.status.is_success() {
                outcome.ok_latencies.push(took);
            } else {
                outcome.samples.entry(status).or_insert_with(|| {
                    String::from_utf8_lossy(&body[..body.len().min(300)]).into()
                });
                if status == 429 && spec.honour_retry_after {
                    let wait = parts
                        .headers
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .unwrap_or(Duration::from_secs(1));
                    let until = (Instant::now() + wait).min(deadline);
                    tokio::time::sleep_until(until.into()).await;
                }
            }
        }
        driver.abort();
    }
    outcome
}

/// `host:port` of an `http://host:port` URL.
pub fn socket_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("`{url}` is not http://<ip>:<port>"))
}

/// Sends `request` once on a new connection: status, body and the time from sending to the last
/// byte of the answer.
pub async fn once(
    addr: SocketAddr,
    request: &RequestSpec,
) -> anyhow::Result<(u16, Bytes, Duration)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(driver);
    let mut builder = Request::builder()
        .method(request.method.clone())
        .uri(request.path.as_str())
        .header(http::header::HOST, addr.to_string());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let sent = Instant::now();
    let response = sender
        .send_request(builder.body(Full::new(request.body.clone()))?)
        .await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    let took = sent.elapsed();
    driver.abort();
    Ok((status, body, took))
}

/// Waits until `GET path` on `addr` answers anything, up to `limit`.
pub async fn wait_until_up(addr: SocketAddr, path: &str, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let probe = RequestSpec::new(Method::GET, path, Bytes::new());
    loop {
        let error = match once(addr, &probe).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        anyhow::ensure!(
            started.elapsed() < limit,
            "nothing answers on {addr} after {limit:?}: {error:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Peak resident set size of a process (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM line")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short stat")?.parse::<u64>()?)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / USER_HZ))
}

/// The unit of `/proc/<pid>/stat` times: 100 per second on every Linux architecture we run on.
const USER_HZ: f64 = 100.0;
