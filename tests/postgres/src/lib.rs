//! A throwaway PostgreSQL for tests: the first call in a test process starts a private cluster
//! (initdb into a temp dir, the server on 127.0.0.1 and a free port, trust authentication, no
//! fsync), and every [`database`] call creates a fresh, empty database on it and returns its URL.
//! The cluster stops and its folder is removed when the test process exits, however it exits: a
//! shell that owns the server waits on a pipe from this process and cleans up when it closes.
//!
//! With `NIMBUS_TEST_POSTGRES_URL` set (`postgres://user@host:port/db` of a server the tests may
//! create databases on), that server is used instead and nothing is started.
//!
//! The server binaries are found in `NIMBUS_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
//! (Debian's layout), else on `PATH`. PostgreSQL refuses to run as root: when the tests run as root
//! (as CI does) the cluster belongs to, and runs as, the `postgres` user (via `runuser`).

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The server the tests of this process use.
struct Server {
    /// Connection URL without a database name, e.g. `postgres://postgres@127.0.0.1:5433`.
    base_url: String,
    /// The URL's query part (`?...`), kept when another database is named.
    query: String,
    bin: Option<PathBuf>,
    /// The write end of the pipe the cluster's shell waits on (throwaway cluster only).
    _lifeline: Option<Mutex<ChildStdin>>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Creates a fresh database and returns its URL (`postgres://...`). Panics with instructions when
/// no PostgreSQL can be had.
pub fn database() -> String {
    try_database().unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`database`], as a `Result`.
pub fn try_database() -> anyhow::Result<String> {
    let server = SERVER
        .get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = format!(
        "nimbus_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!("{}/postgres{}", server.base_url, server.query);
    let status = tool(server.bin.as_deref(), "createdb")
        .arg(format!("--maintenance-db={admin}"))
        .arg(&name)
        .stdin(Stdio::null())
        .status()
        .context("running createdb")?;
    anyhow::ensure!(status.success(), "createdb {name} failed ({status})");
    Ok(format!("{}/{name}{}", server.base_url, server.query))
}

/// The server: the one named by `NIMBUS_TEST_POSTGRES_URL`, or a throwaway cluster.
fn start() -> anyhow::Result<Server> {
    if let Ok(url) = std::env::var("NIMBUS_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        let (without_query, query) = match url.split_once('?') {
            Some((u, q)) => (u.to_owned(), format!("?{q}")),
            None => (url.clone(), String::new()),
        };
        // Drop the database part: postgres://user@host:port[/db]
        let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
        let base_url = match without_query[scheme_end..].find('/') {
            Some(i) => without_query[..scheme_end + i].to_owned(),
            None => without_query,
        };
        return Ok(Server {
            base_url,
            query,
            bin: bin_dir().ok(),
            _lifeline: None,
        });
    }
    start_cluster()
}

/// Starts a cluster, trying again (on a new port and folder) when the server does not come up,
/// e.g. because another process took the port in the meantime.
fn start_cluster() -> anyhow::Result<Server> {
    let mut last = None;
    for _ in 0..3 {
        match start_cluster_once() {
            Ok(server) => return Ok(server),
            Err(error) => last = Some(error),
        }
    }
    Err(last.expect("tried at least once"))
}

fn start_cluster_once() -> anyhow::Result<Server> {
    let bin = bin_dir()?;
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let dir = tempfile::Builder::new()
        .prefix("nimbus-pg-")
        .tempdir()
        .context("creating the cluster's folder")?
        .keep();
    let data = dir.join("data");
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&dir)
            .status()
            .context("running chown")?;
        anyhow::ensure!(
            status.success(),
            "cannot give {} to user postgres (is there a `postgres` user? apt-get install -y postgresql)",
            dir.display()
        );
    }
    let output = as_owner(root, &bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let port = free_port()?;
    let log = dir.join("server.log");
    let pid_file = dir.join("server.pid");
    // The shell owns the server: it starts it, waits until our end of its stdin closes (this
    // process exited), then stops it and removes the folder.
    let script = format!(
        r#""{postgres}" -D "{data}" -p {port} -c listen_addresses=127.0.0.1 \
            -c unix_socket_directories= -c fsync=off -c synchronous_commit=off \
            -c full_page_writes=off -c max_connections=300 >"{log}" 2>&1 &
        pid=$!
        echo "$pid" >"{pid_file}"
        read -r _ || true
        kill -INT "$pid" 2>/dev/null
        wait "$pid"
        rm -rf "{dir}""#,
        postgres = bin.join("postgres").display(),
        data = data.display(),
        log = log.display(),
        pid_file = pid_file.display(),
        dir = dir.display(),
    );
    let mut child = as_owner(root, Path::new("sh"))
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the PostgreSQL server")?;
    let lifeline = child.stdin.take().expect("piped stdin");
    let started = Instant::now();
    loop {
        let ready = tool(Some(&bin), "pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            break;
        }
        // The server's pid, once the shell wrote it: a server that exited (a port taken) is
        // noticed at once rather than after the timeout.
        let server_died = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if server_died || child.try_wait()?.is_some() || started.elapsed() > START_TIMEOUT {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            let mut lifeline = lifeline;
            let _ = lifeline.write_all(b"\n");
            bail!("PostgreSQL did not start on port {port}; its log:\n{log_text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server {
        base_url: format!("postgres://postgres@127.0.0.1:{port}"),
        query: String::new(),
        bin: Some(bin),
        _lifeline: Some(Mutex::new(lifeline)),
    })
}

/// A command run as the cluster's owner: `postgres` when we are root, else ourselves.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A client tool (createdb, pg_isready) from the server's folder, else from `PATH`.
fn tool(bin: Option<&Path>, name: &str) -> Command {
    match bin.map(|b| b.join(name)).filter(|p| p.exists()) {
        Some(path) => Command::new(path),
        None => Command::new(name),
    }
}

/// The folder of the server binaries (`initdb`, `postgres`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NIMBUS_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = debian {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no PostgreSQL server binaries (initdb, postgres) found in /usr/lib/postgresql/*/bin \
                 or on PATH: install them (`apt-get install -y postgresql`), set NIMBUS_PG_BIN, or \
                 point NIMBUS_TEST_POSTGRES_URL at a server the tests may create databases on"
            )
        })
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
