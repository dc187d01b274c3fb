//! Test harness for the end-to-end suites: finds the repository, the shared models and the built
//! binaries, builds guest components once, and runs a real `nimbusd` on a free port with a data dir
//! of its own. Nothing here is a mock: the suites talk HTTP to the real server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};

pub mod bench;
pub mod load;
pub mod postgres;
pub mod s3;
pub mod versions;
use nimbus_client::{Client, Manifest};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The shared real models and images: `$NIMBUS_MODELS_DIR`, else `../shared/models` beside the
/// repository.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("NIMBUS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/models"));
    assert!(
        dir.join("README.md").exists(),
        "the shared models are not at {} (set NIMBUS_MODELS_DIR)",
        dir.display()
    );
    dir
}

/// A file under the shared models folder.
pub fn model_file(relative: &str) -> PathBuf {
    models_dir().join(relative)
}

/// EfficientNet-Lite0 (ONNX).
pub fn efficientnet() -> PathBuf {
    model_file("image_classifier_efficientnet_lite0/efficientnet_lite0.onnx")
}

/// A test image by name (e.g. "chelsea.png").
pub fn image(name: &str) -> Vec<u8> {
    let path = model_file(&format!("testdata/{name}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A binary built by cargo in the same profile as this test (`nimbusd`, `nimbus`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps/, bins such as nimbus-bench in target/<profile>/.
    let mut profile_dir = exe.parent().expect("executable has a folder");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("deps has a parent");
    }
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, or `cargo build --release --workspace --bins` before `cargo test --release`",
        path.display()
    );
    path
}

/// Builds the guest workspace at `workspace` (relative to the repo) once per test process and
/// returns the path of `<crate_name>.wasm`.
pub fn guest_wasm(workspace: &str, crate_name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let target_dir = repo_root().join("target/wasm");
    if !built.iter().any(|w| w == workspace) {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
            .current_dir(repo_root().join(workspace))
            .env("CARGO_TARGET_DIR", &target_dir)
            // Settings of the outer (host) build must not leak into the guest build.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo for the guests");
        assert!(
            status.success(),
            "building the guests in {workspace} failed"
        );
        built.push(workspace.to_owned());
    }
    let wasm = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(wasm.exists(), "{} was not built", wasm.display());
    wasm
}

/// Options for one nimbusd.
#[derive(Default, Clone)]
pub struct NimbusdOptions {
    /// Extra flags.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// A running nimbusd with its own data dir; killed when dropped.
pub struct Nimbusd {
    child: Child,
    pub url: String,
    pub admin_key: String,
    pub data_dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

impl Nimbusd {
    /// Starts nimbusd on embedded defaults and a free port, waiting until it listens.
    pub fn start() -> Nimbusd {
        Self::start_with(NimbusdOptions::default())
    }

    pub fn start_with(options: NimbusdOptions) -> Nimbusd {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(data_dir, options).expect("starting nimbusd")
    }

    /// Starts nimbusd on an existing data dir (a restart keeps its state).
    pub fn start_in(
        data_dir: tempfile::TempDir,
        options: NimbusdOptions,
    ) -> anyhow::Result<Nimbusd> {
        let log_path = data_dir.path().with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let options = postgres::with_database_from_env(options, data_dir.path())?;
        let mut command = Command::new(binary("nimbusd"));
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(&options.args)
            .env("NIMBUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command.spawn().context("spawning nimbusd")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut url = None;
        let mut printed_key = None;
        while url.is_none() {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    bail!(
                        "nimbusd did not start; its log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            };
            if let Some(address) = line.strip_prefix("nimbusd listening on ") {
                url = Some(address.trim().to_owned());
            } else if line.starts_with("nmb_") {
                printed_key = Some(line.trim().to_owned());
            }
        }
        let configured_key = options
            .env
            .iter()
            .find(|(k, _)| k == "NIMBUS_ADMIN_KEY")
            .map(|(_, v)| v.clone());
        let admin_key = match (printed_key, configured_key) {
            (Some(key), _) | (None, Some(key)) => key,
            (None, None) => std::fs::read_to_string(data_dir.path().join("admin.key"))
                .context("reading admin.key")?
                .trim()
                .to_owned(),
        };
        Ok(Nimbusd {
            child,
            url: url.expect("set above"),
            admin_key,
            data_dir,
            log_path,
        })
    }

    /// A client with the admin key of tenant `default`.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.admin_key.clone())).expect("client")
    }

    /// A client with no key.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, None).expect("client")
    }

    /// What nimbusd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The text of `/metrics`, read with the operator's (bootstrap admin) key.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = self.client().get("/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The value of one sample in `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|line| {
                let value = line.strip_prefix(sample)?;
                value.starts_with(' ').then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself, up to `limit`; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The value of the first sample in `/metrics` whose line starts with `prefix` (0 when
    /// absent): for samples with more labels than the test cares about.
    pub async fn metric_matching(&self, prefix: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Stops the process (SIGKILL) and hands back its data dir for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, dir)
    }
}

impl Drop for Nimbusd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads a function manifest from the repository (e.g. "functions/classify-image").
pub fn manifest(relative_dir: &str) -> (Manifest, PathBuf) {
    Manifest::load(&repo_root().join(relative_dir)).expect("loading the manifest")
}

/// Pushes EfficientNet under `name` on `engine`, and deploys classify-image as `function` bound to
/// it.
pub async fn deploy_classifier(client: &Client, name: &str, engine: &str, function: &str) {
    client
        .push_model(name, &efficientnet(), engine, "cpu")
        .await
        .expect("pushing the model");
    let (mut manifest, _) = manifest("functions/classify-image");
    manifest.name = function.to_owned();
    manifest
        .models
        .insert("image-classifier".to_owned(), name.to_owned());
    let wasm = guest_wasm("functions", "classify-image");
    client.deploy(&manifest, &wasm).await.expect("deploying");
}

/// The engines folder nimbusd uses by default (`$NIMBUS_ENGINES_DIR`, else the user cache).
pub fn engines_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NIMBUS_ENGINES_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("nimbus/engines")
}

/// The ONNX Runtime library scripts/fetch-engines.sh unpacked.
pub fn onnxruntime_library() -> PathBuf {
    let dir = engines_dir();
    let found = std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("onnxruntime-"))
        })
        .max();
    let lib = found.map(|d| d.join("libonnxruntime.so"));
    match lib {
        Some(lib) if lib.exists() => lib,
        _ => panic!(
            "no ONNX Runtime in {}: run scripts/fetch-engines.sh",
            dir.display()
        ),
    }
}
