//! S3 for the end-to-end suites: a real SeaweedFS (`weed mini` from the repository's `.venv`,
//! which scripts/test.sh installs) on free loopback ports with credentials and a folder of its own;
//! a counting proxy in front of its S3 port, which counts requests per method and path (so GETs of
//! an object are counted outside nimbusd) and can stall; and boto3 from the same venv, to put
//! objects there as users do.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::{NimbusdOptions, repo_root};

/// The credentials SeaweedFS accepts and nimbusd and boto3 use.
pub const ACCESS_KEY: &str = "nimbus-test";
pub const SECRET_KEY: &str = "nimbus-test-secret";
/// The bucket every test server has.
pub const BUCKET: &str = "models";

/// A program from the repository's virtualenv (`$NIMBUS_VENV`, else `<repo>/.venv`).
fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("NIMBUS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it installs SeaweedFS and boto3 into .venv)",
        path.display()
    );
    path
}

/// `n` distinct loopback ports that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// A SeaweedFS server (`weed mini`) with bucket [`BUCKET`]; killed when dropped.
pub struct SeaweedFs {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    log_path: PathBuf,
}

impl SeaweedFs {
    /// Starts a server and creates the bucket.
    pub fn start() -> SeaweedFs {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().with_extension("weed.log");
        let mut server = SeaweedFs {
            child: None,
            dir,
            ports: free_ports(10),
            log_path,
        };
        // The ports were free a moment ago; another test may take one before weed binds it
        // (weed then exits, saying so in one of two ways), so a start that loses that race tries
        // again on fresh ports.
        let lost_port_race = |message: &str| {
            message.contains("address already in use") || message.contains("Port allocation failed")
        };
        for attempt in 1.. {
            match server.run() {
                Ok(()) => break,
                Err(error) if attempt < 5 && lost_port_race(&error.to_string()) => {
                    server.stop();
                    server.ports = free_ports(10);
                    let _ = std::fs::remove_file(&server.log_path);
                }
                Err(error) => panic!("starting SeaweedFS: {error:#}"),
            }
        }
        server.boto3(&["mb", BUCKET]).expect("creating the bucket");
        server
    }

    /// `http://127.0.0.1:<s3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// Stops the server (SIGKILL): S3 is gone until [`SeaweedFs::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same folder and ports, with what it stored.
    pub fn restart(&mut self) {
        self.stop();
        self.run().expect("restarting SeaweedFS");
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let p = &self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(venv_bin("weed"))
            .arg("mini")
            .arg(format!("-dir={}", self.dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={}", p[0]))
            .arg(format!("-s3.port.grpc={}", p[1]))
            .arg(format!("-master.port={}", p[2]))
            .arg(format!("-master.port.grpc={}", p[3]))
            .arg(format!("-volume.port={}", p[4]))
            .arg(format!("-volume.port.grpc={}", p[5]))
            .arg(format!("-filer.port={}", p[6]))
            .arg(format!("-filer.port.grpc={}", p[7]))
            .arg(format!("-admin.port={}", p[8]))
            .arg(format!("-admin.port.grpc={}", p[9]))
            .args([
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning weed")?;
        self.child = Some(child);
        // Ready when the S3 port answers HTTP (about a second).
        let deadline = Instant::now() + Duration::from_secs(60);
        let address: SocketAddr = ([127, 0, 0, 1], self.ports[0]).into();
        loop {
            if http_answers(address) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("weed exited with {status}; its log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "SeaweedFS did not answer within 60 s; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs tests/tools/s3.py (boto3) against this server; its stdout, trimmed.
    pub fn boto3(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(venv_bin("python"))
            .arg(repo_root().join("tests/tools/s3.py"))
            .arg(self.endpoint())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .output()
            .context("running python")?;
        if !output.status.success() {
            bail!(
                "s3.py {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Uploads `file` to `s3://models/<key>` with boto3, as a user would.
    pub fn put(&self, key: &str, file: &Path) {
        self.boto3(&["put", BUCKET, key, &file.to_string_lossy()])
            .expect("uploading with boto3");
    }

    /// The size of `s3://models/<key>`, `None` when there is no such object.
    pub fn size(&self, key: &str) -> Option<u64> {
        let answer = self.boto3(&["size", BUCKET, key]).expect("asking boto3");
        answer
            .parse::<i64>()
            .ok()
            .and_then(|n| u64::try_from(n).ok())
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub fn unfinished_uploads(&self) -> usize {
        self.boto3(&["uploads", BUCKET])
            .expect("asking boto3")
            .parse()
            .expect("a count")
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something at `address` answers an HTTP request.
fn http_answers(address: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = format!("GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Requests counted by `(method, path)`.
type Counts = Mutex<HashMap<(String, String), u64>>;

/// The faults a proxy is told to make.
#[derive(Default)]
struct Faults {
    /// Accept requests and never answer them.
    stall_requests: AtomicBool,
    /// GET answers still to cut off (the body stops, the connection stays open)...
    body_stalls: AtomicU32,
    /// ...after this many bytes of body.
    body_stall_after: AtomicU64,
}

/// An HTTP proxy in front of an S3 port that counts requests per method and path (the path is
/// `/<bucket>/<key>` with path-style addressing) and can stall: accept requests and never answer,
/// or stop sending a body half-way. While its upstream is down it answers 502. Stops when dropped.
pub struct CountingProxy {
    address: SocketAddr,
    counts: Arc<Counts>,
    faults: Arc<Faults>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountingProxy {
    /// A proxy to `upstream` (`http://host:port`) on a free loopback port.
    pub fn start(upstream: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let address = listener.local_addr().expect("proxy address");
        let counts: Arc<Counts> = Arc::default();
        let faults: Arc<Faults> = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let upstream: http::Uri = upstream.parse().expect("upstream URL");
        let (c, f) = (counts.clone(), faults.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(serve(listener, upstream, c, f, stopped));
        });
        CountingProxy {
            address,
            counts,
            faults,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`: the S3 endpoint to give nimbusd.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// GET requests of `s3://models/<key>` so far.
    pub fn gets(&self, key: &str) -> u64 {
        self.count("GET", &format!("/{BUCKET}/{key}"))
    }

    /// Requests with this method and path so far.
    pub fn count(&self, method: &str, path: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&(method.to_owned(), path.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// From now on, accept requests and never answer them (`true`), or forward again.
    pub fn stall(&self, stalled: bool) {
        self.faults.stall_requests.store(stalled, Ordering::SeqCst);
    }

    /// Cuts off the body of the next `responses` GET answers after `after_bytes` bytes: the rest
    /// never comes, and the connection stays open.
    pub fn stall_bodies(&self, after_bytes: u64, responses: u32) {
        self.faults
            .body_stall_after
            .store(after_bytes, Ordering::SeqCst);
        self.faults.body_stalls.store(responses, Ordering::SeqCst);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    upstream: http::Uri,
    counts: Arc<Counts>,
    faults: Arc<Faults>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let client: HttpClient<HttpConnector, Incoming> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let (client, upstream, counts, faults) = (
            client.clone(),
            upstream.clone(),
            counts.clone(),
            faults.clone(),
        );
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let (client, upstream, counts, faults) = (
                client.clone(),
                upstream.clone(),
                counts.clone(),
                faults.clone(),
            );
            async move { Ok::<_, Infallible>(forward(req, &client, &upstream, &counts, &faults).await) }
        });
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    connections.abort_all();
}

async fn forward(
    mut req: http::Request<Incoming>,
    client: &HttpClient<HttpConnector, Incoming>,
    upstream: &http::Uri,
    counts: &Counts,
    faults: &Faults,
) -> http::Response<ProxyBody> {
    {
        let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry((req.method().to_string(), req.uri().path().to_owned()))
            .or_default() += 1;
    }
    if faults.stall_requests.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let is_get = req.method() == http::Method::GET;
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut parts = upstream.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().expect("path and query"));
    *req.uri_mut() = http::Uri::from_parts(parts).expect("upstream URI");
    // The Host header stays the proxy's: it is part of what the client signed.
    match client.request(req).await {
        Ok(response) => {
            let cut = is_get
                && faults
                    .body_stalls
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            let after = faults.body_stall_after.load(Ordering::SeqCst);
            response.map(|body| {
                if cut {
                    cut_off(body, after)
                } else {
                    body.boxed()
                }
            })
        }
        Err(error) => http::Response::builder()
            .status(502)
            .body(
                Full::new(Bytes::from(format!("upstream unreachable: {error}")))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .expect("a 502"),
    }
}

/// `body` up to `limit` bytes, then nothing, ever.
fn cut_off(body: Incoming, limit: u64) -> ProxyBody {
    use futures::StreamExt as _;
    let frames = http_body_util::BodyStream::new(body);
    let stream = futures::stream::unfold((frames, 0u64), move |(mut frames, sent)| async move {
        if sent >= limit {
            std::future::pending::<()>().await;
        }
        let frame = match frames.next().await? {
            Ok(frame) => frame,
            Err(error) => return Some((Err(error), (frames, sent))),
        };
        match frame.into_data() {
            Ok(mut data) => {
                data.truncate(usize::try_from(limit - sent).unwrap_or(usize::MAX));
                let sent = sent + data.len() as u64;
                Some((Ok(hyper::body::Frame::data(data)), (frames, sent)))
            }
            Err(frame) => Some((Ok(frame), (frames, sent))),
        }
    });
    BodyExt::boxed(http_body_util::StreamBody::new(stream))
}

/// nimbusd options for S3 at `endpoint` (the proxy's URL, usually): bucket [`BUCKET`],
/// path-style, the test credentials from the standard AWS variables, and `extra` flags.
pub fn nimbusd_options(endpoint: &str, extra: &[&str]) -> NimbusdOptions {
    let mut args: Vec<String> = [
        "--s3-bucket",
        BUCKET,
        "--s3-endpoint",
        endpoint,
        "--s3-path-style",
        "--s3-region",
        "us-east-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    NimbusdOptions {
        args,
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ],
    }
}

/// The key nimbusd stores a blob under (no prefix).
pub fn blob_key(sha256: &str) -> String {
    format!("sha256/{sha256}")
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex::encode(hasher.finalize())
}

/// Writes `size` pseudo-random bytes (whole MiB) to `path`: nothing compresses or deduplicates
/// them.
pub fn random_file(path: &Path, size: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size / block.len() {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
}
