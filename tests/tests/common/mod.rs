//! Helpers shared by the tenant suites (`tenants.rs`, `cli_tenants.rs`): two tenants with their
//! admin keys, deploying the `hello` guest, a raw HTTP/1.1 exchange that shows every status and
//! header (any `Authorization` value, `Retry-After`), and a second nimbusd on the same data dir.
//! `failures.rs` uses the raw exchange too.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nimbus_client::{Client, FunctionVersion};
use nimbus_tests::{Nimbusd, binary, guest_wasm, manifest};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tenant created through the API, with a client on its admin key.
pub struct TenantHandle {
    pub name: String,
    pub admin_key: String,
    pub client: Client,
}

/// Creates tenant `name` with the bootstrap admin key and returns it with its admin key.
pub async fn tenant(nimbusd: &Nimbusd, name: &str) -> TenantHandle {
    let created = nimbusd
        .client()
        .create_tenant(name)
        .await
        .unwrap_or_else(|e| panic!("creating tenant {name}: {e}"));
    assert_eq!(created.tenant.name, name);
    TenantHandle {
        name: name.to_owned(),
        admin_key: created.admin_key.key.clone(),
        client: Client::new(&nimbusd.url, Some(created.admin_key.key)).unwrap(),
    }
}

/// Deploys the `hello` function under `name` with its client's key; `public` as given.
pub async fn deploy_hello(client: &Client, name: &str, public: bool) -> FunctionVersion {
    let (mut hello, _) = manifest("functions/hello");
    hello.name = name.to_owned();
    hello.public = public;
    client
        .deploy(&hello, &guest_wasm("functions", "hello"))
        .await
        .unwrap_or_else(|e| panic!("deploying {name}: {e}"))
}

/// Deploys another version of `name` (the `hello` guest with env `TAG=<tag>`), private.
pub async fn deploy_hello_tagged(client: &Client, name: &str, tag: &str) -> FunctionVersion {
    let (mut hello, _) = manifest("functions/hello");
    hello.name = name.to_owned();
    hello.public = false;
    hello.env.insert("TAG".into(), tag.into());
    client
        .deploy(&hello, &guest_wasm("functions", "hello"))
        .await
        .unwrap_or_else(|e| panic!("deploying {name} ({tag}): {e}"))
}

/// A client with `key`.
pub fn with_key(nimbusd: &Nimbusd, key: &str) -> Client {
    Client::new(&nimbusd.url, Some(key.to_owned())).unwrap()
}

/// A new key with `scopes` in the tenant of `admin`.
pub async fn key(admin: &Client, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    admin.create_key(&scopes, None, None).await.unwrap().key
}

/// Guest instances started so far: the proof that a request reached a guest, or did not.
pub async fn guest_runs(nimbusd: &Nimbusd) -> f64 {
    nimbusd.metric("nimbus_instances_started_total").await
}

/// One answer of [`call`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "HTTP {} with a JSON body, got {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `error.code` of a JSON error body.
    pub fn code(&self) -> String {
        let value = self.json();
        value["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("a JSON error body, got {value}"))
            .to_owned()
    }

    /// `error.message` of a JSON error body.
    pub fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 exchange on a fresh connection: `authorization` is sent as the whole header
/// value when given (so malformed values can be sent), `body` as JSON when given.
pub async fn call(
    url: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(value) = authorization {
        request.push_str(&format!("authorization: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("content-type: application/json\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    parse_response(&send_raw(url, request.as_bytes()).await, method == "HEAD")
}

/// Sends `raw` on a fresh connection and reads until the server closes it: everything the
/// server wrote. A server that neither answers nor closes within 20 s fails the test. A failed
/// write is not an error by itself (the server may answer and close before reading all).
pub async fn send_raw(url: &str, raw: &[u8]) -> Vec<u8> {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
    let _ = stream.write_all(raw).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed the connection"
    );
    answer
}

/// The bearer value for `key`.
pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// The status, headers and (de-chunked) body of a raw HTTP/1.1 answer.
pub fn parse_response(raw: &[u8], head: bool) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {:?}", String::from_utf8_lossy(raw)));
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if head {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return body;
        };
        let size_text = String::from_utf8_lossy(&rest[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        rest = &rest[end + 2..];
        if size == 0 || rest.len() < size {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// A second nimbusd on the data dir of another (a node sharing its registry), killed when
/// dropped.
pub struct SecondNode {
    child: Child,
    pub url: String,
}

impl SecondNode {
    pub fn start(data_dir: &Path, log: &Path, args: &[&str]) -> SecondNode {
        let log_file = std::fs::File::create(log).unwrap();
        let mut child = Command::new(binary("nimbusd"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("NIMBUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawning the second nimbusd");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(address) = line.strip_prefix("nimbusd listening on ") {
                        return SecondNode {
                            child,
                            url: address.trim().to_owned(),
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "the second nimbusd did not start; its log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        }
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
