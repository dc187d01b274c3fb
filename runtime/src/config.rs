//! nimbusd's configuration: command-line flags, each also read from a `NIMBUS_*` variable, with the
//! platform defaults as named constants. Every limit has a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Where nimbusd listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where nimbusd keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = ".nimbus";
/// Memory a guest instance may grow to, unless its manifest says less.
pub const DEFAULT_MEMORY_MB: u32 = 256;
/// Wall-clock time a request may spend in a guest, unless its manifest says otherwise.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The most memory a manifest may ask for (MiB), and the pooling allocator's size of one memory
/// slot: the whole 32-bit address space of a wasm memory, which is also the most the flag allows.
pub const DEFAULT_MAX_MEMORY_MB: u32 = 4096;
/// The longest time limit a manifest may ask for (ms).
pub const DEFAULT_MAX_TIMEOUT_MS: u64 = 600_000;
/// How long a client may take to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Largest request body passed to a guest.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 << 20;
/// Largest blob (model file, wasm) one upload may carry.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 4 << 30;
/// Engine sessions per loaded model (concurrent inferences on one model).
pub const DEFAULT_SESSIONS_PER_MODEL: usize = 2;
/// Bytes of loaded models kept in memory before the least recently used is dropped.
pub const DEFAULT_MODEL_CACHE_MB: u64 = 4096;
/// Compiled functions kept in memory.
pub const DEFAULT_COMPILED_FUNCTIONS: u64 = 256;
/// Instances of one function version running at once, unless its manifest says otherwise.
pub const DEFAULT_CONCURRENCY: u32 = 64;
/// Requests waiting for a slot of one function version before 429.
pub const DEFAULT_MAX_QUEUED_PER_FUNCTION: usize = 256;
/// Largest response body a function may answer.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 << 20;
/// Guest instances alive at once on this node (the pooling allocator's size).
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// Requests per second one API key may make (sustained), on this node.
pub const DEFAULT_RATE_PER_KEY: f64 = 500.0;
/// Requests one API key may make at once before its sustained rate applies.
pub const DEFAULT_BURST_PER_KEY: u32 = 1000;
/// Requests per second all keys of one tenant may make together (sustained), on this node; also
/// the rate of calls without a key to the tenant's public functions, counted apart.
pub const DEFAULT_RATE_PER_TENANT: f64 = 2000.0;
/// Requests one tenant may make at once before its sustained rate applies.
pub const DEFAULT_BURST_PER_TENANT: u32 = 4000;
/// Failed authentications one source address may make per window before it is answered 429.
pub const DEFAULT_AUTH_FAILURES_PER_IP: u32 = 10;
/// The window of `DEFAULT_AUTH_FAILURES_PER_IP` (seconds): after the burst, one more try per
/// `window / failures`.
pub const DEFAULT_AUTH_FAILURE_WINDOW_S: u64 = 60;
/// How long a node trusts its cached copy of a key (seconds): a key revoked on another node stops
/// working here within this time (at once on the node that revoked it).
pub const DEFAULT_AUTH_CACHE_TTL_S: u64 = 5;

/// nimbusd: the Nimbus server.
#[derive(Parser, Debug, Clone)]
#[command(name = "nimbusd", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "NIMBUS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Folder for the registry database, blobs and caches.
    #[arg(long, env = "NIMBUS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Admin key of tenant `default` (`nmb_<id>_<secret>`); generated on first start when unset.
    #[arg(long, env = "NIMBUS_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Folder holding the engine libraries (onnxruntime-*/, openvino-*/), as scripts/fetch-engines.sh
    /// lays them out. Default: $XDG_CACHE_HOME/nimbus/engines or ~/.cache/nimbus/engines.
    #[arg(long, env = "NIMBUS_ENGINES_DIR")]
    pub engines_dir: Option<PathBuf>,

    /// Path of libonnxruntime.so, overriding the engines folder.
    #[arg(long, env = "NIMBUS_ONNXRUNTIME_LIBRARY")]
    pub onnxruntime_library: Option<PathBuf>,

    /// Folder of libopenvino_c.so and its plugins, overriding the engines folder.
    #[arg(long, env = "NIMBUS_OPENVINO_DIR")]
    pub openvino_dir: Option<PathBuf>,

    /// Threads each engine session may use for one inference (default: the engine's choice).
    #[arg(long, env = "NIMBUS_INTRA_OP_THREADS")]
    pub intra_op_threads: Option<usize>,

    /// Engine sessions per loaded model: how many inferences on one model run at once.
    #[arg(long, env = "NIMBUS_SESSIONS_PER_MODEL", default_value_t = DEFAULT_SESSIONS_PER_MODEL)]
    pub sessions_per_model: usize,

    /// Memory for loaded models (MiB, weighted by model file size).
    #[arg(long, env = "NIMBUS_MODEL_CACHE_MB", default_value_t = DEFAULT_MODEL_CACHE_MB)]
    pub model_cache_mb: u64,

    /// Default memory limit of a guest instance (MiB) when its manifest sets none.
    #[arg(long, env = "NIMBUS_DEFAULT_MEMORY_MB", default_value_t = DEFAULT_MEMORY_MB)]
    pub default_memory_mb: u32,

    /// Default time limit of a request in a guest (ms) when its manifest sets none.
    #[arg(long, env = "NIMBUS_DEFAULT_TIMEOUT_MS", default_value_t = DEFAULT_TIMEOUT_MS)]
    pub default_timeout_ms: u64,

    /// The most memory a function's manifest may ask for (MiB); a deploy asking more is refused.
    #[arg(long, env = "NIMBUS_MAX_MEMORY_MB", default_value_t = DEFAULT_MAX_MEMORY_MB,
          value_parser = clap::value_parser!(u32).range(1..=DEFAULT_MAX_MEMORY_MB as i64))]
    pub max_memory_mb: u32,

    /// The longest time limit a function's manifest may ask for (ms); a deploy asking more is
    /// refused.
    #[arg(long, env = "NIMBUS_MAX_TIMEOUT_MS", default_value_t = DEFAULT_MAX_TIMEOUT_MS)]
    pub max_timeout_ms: u64,

    /// How long a client may take to send a request's headers (ms) before the connection is
    /// closed.
    #[arg(long, env = "NIMBUS_HEADER_READ_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,

    /// Serve /metrics without a key. By default it needs an admin key of tenant `default`, since
    /// its samples name every tenant's functions.
    #[arg(long, env = "NIMBUS_PUBLIC_METRICS")]
    pub public_metrics: bool,

    /// Largest request body passed to a guest (bytes).
    #[arg(long, env = "NIMBUS_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u64,

    /// Largest blob one upload may carry (bytes).
    #[arg(long, env = "NIMBUS_MAX_BLOB_BYTES", default_value_t = DEFAULT_MAX_BLOB_BYTES)]
    pub max_blob_bytes: u64,

    /// Guest instances alive at once on this node.
    #[arg(long, env = "NIMBUS_MAX_INSTANCES", default_value_t = DEFAULT_MAX_INSTANCES)]
    pub max_instances: u32,

    /// Bytes a guest may pass to wasi-nn `load` (0 turns guest-supplied models off).
    #[arg(long, env = "NIMBUS_MAX_GUEST_MODEL_BYTES", default_value_t = 64 << 20)]
    pub max_guest_model_bytes: usize,

    /// Instances of one function version running at once when its manifest sets no concurrency.
    #[arg(long, env = "NIMBUS_DEFAULT_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub default_concurrency: u32,

    /// Requests that may wait for a slot of one function version; past it, 429.
    #[arg(long, env = "NIMBUS_MAX_QUEUED_PER_FUNCTION", default_value_t = DEFAULT_MAX_QUEUED_PER_FUNCTION)]
    pub max_queued_per_function: usize,

    /// Largest response body a function may answer (bytes).
    #[arg(long, env = "NIMBUS_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,

    /// Sustained requests per second of one API key on this node (0: no limit).
    #[arg(long, env = "NIMBUS_RATE_PER_KEY", default_value_t = DEFAULT_RATE_PER_KEY)]
    pub rate_per_key: f64,

    /// Requests one API key may make at once before its rate applies.
    #[arg(long, env = "NIMBUS_BURST_PER_KEY", default_value_t = DEFAULT_BURST_PER_KEY)]
    pub burst_per_key: u32,

    /// Sustained requests per second of all keys of one tenant on this node (0: no limit); calls
    /// without a key to the tenant's public functions get the same rate, counted apart.
    #[arg(long, env = "NIMBUS_RATE_PER_TENANT", default_value_t = DEFAULT_RATE_PER_TENANT)]
    pub rate_per_tenant: f64,

    /// Requests one tenant may make at once before its rate applies.
    #[arg(long, env = "NIMBUS_BURST_PER_TENANT", default_value_t = DEFAULT_BURST_PER_TENANT)]
    pub burst_per_tenant: u32,

    /// Failed authentications one source address may make per window; beyond them it is
    /// answered 429 (0: no limit).
    #[arg(long, env = "NIMBUS_AUTH_FAILURES_PER_IP", default_value_t = DEFAULT_AUTH_FAILURES_PER_IP)]
    pub auth_failures_per_ip: u32,

    /// The window of --auth-failures-per-ip, in seconds.
    #[arg(long, env = "NIMBUS_AUTH_FAILURE_WINDOW_S", default_value_t = DEFAULT_AUTH_FAILURE_WINDOW_S)]
    pub auth_failure_window_s: u64,

    /// Seconds a node trusts its cached copy of an API key: the bound on how long a key revoked on
    /// another node keeps working here (0: no cache, every request reads the registry).
    #[arg(long, env = "NIMBUS_AUTH_CACHE_TTL_S", default_value_t = DEFAULT_AUTH_CACHE_TTL_S)]
    pub auth_cache_ttl_s: u64,

    /// Keep the registry's metadata in PostgreSQL (postgres://user:password@host:5432/db)
    /// instead of SQLite in the data dir: what lets several nodes share one registry.
    #[arg(long, env = "NIMBUS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Secret mixed into every API key hash, 64 hex characters (`openssl rand -hex 32`)
    /// [default: <data-dir>/pepper, made on first start]. Every node on one database needs the
    /// same one; a node with another is refused at start.
    #[arg(long, env = "NIMBUS_KEY_PEPPER", hide_env_values = true)]
    pub key_pepper: Option<String>,

    /// Seconds after an upload during which garbage collection (after a version is deleted)
    /// spares the uploaded blob, so that an upload and the deploy that follows never race.
    #[arg(long, env = "NIMBUS_BLOB_GC_GRACE_S", default_value_t = DEFAULT_BLOB_GC_GRACE_S)]
    pub blob_gc_grace_s: u64,

    /// Where blobs live (S3 or the data dir) and the node's disk cache of them.
    #[command(flatten)]
    pub storage: StorageConfig,
}

/// Seconds garbage collection spares a freshly uploaded blob.
pub const DEFAULT_BLOB_GC_GRACE_S: u64 = 3600;
/// Bytes of artifacts pulled from S3 kept on this node's disk, least recently used out first.
pub const DEFAULT_DISK_CACHE_MB: u64 = 10 * 1024;
/// How long an S3 call may take to connect or to start answering, and a download may pause.
pub const DEFAULT_S3_TIMEOUT_MS: u64 = 10_000;
/// Tries of one S3 call, the first included.
pub const DEFAULT_S3_MAX_ATTEMPTS: u32 = 3;

/// Blob storage flags (part of [`Config`]). Without `--s3-bucket`, blobs stay in
/// `<data-dir>/blobs/`; with it, function wasm and models live in the bucket under
/// `<prefix>sha256/<hex>` and nodes keep what they pull in `<data-dir>/cache/`. Credentials come
/// from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
/// AWS_PROFILE and the shared files, web identity, container and instance metadata) unless given
/// here.
#[derive(clap::Args, Debug, Clone)]
pub struct StorageConfig {
    /// Keep function wasm and models in this S3 bucket (instead of <data-dir>/blobs).
    #[arg(long, env = "NIMBUS_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 endpoint URL, for S3-compatible services (e.g. http://127.0.0.1:8333) [default: AWS].
    #[arg(long, env = "NIMBUS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: AWS_REGION or the profile's, else us-east-1].
    #[arg(long, env = "NIMBUS_S3_REGION")]
    pub s3_region: Option<String>,

    /// Prefix of every key nimbusd writes (`<prefix>sha256/<hex>`; a `/` is added if missing).
    #[arg(long, env = "NIMBUS_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,

    /// Path-style requests (http://host/bucket/key), which most S3-compatible services need.
    #[arg(long, env = "NIMBUS_S3_PATH_STYLE")]
    pub s3_path_style: bool,

    /// Access key id, instead of the standard AWS credential chain.
    #[arg(long, env = "NIMBUS_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,

    /// Secret access key that goes with --s3-access-key-id.
    #[arg(long, env = "NIMBUS_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Named profile of the shared AWS config and credentials files.
    #[arg(long, env = "NIMBUS_S3_PROFILE")]
    pub s3_profile: Option<String>,

    /// When uploads carry CRC checksums: when-supported (AWS's default) or when-required (for
    /// S3-compatible services that reject them). Blobs are verified by sha256 either way.
    #[arg(long, env = "NIMBUS_S3_CHECKSUMS", default_value = "when-supported")]
    pub s3_checksums: nimbus_registry::ChecksumMode,

    /// Time limit (ms) for S3 to connect, to start answering a call, and for any pause in a
    /// transfer; a call fails after --s3-max-attempts tries.
    #[arg(long, env = "NIMBUS_S3_TIMEOUT_MS", default_value_t = DEFAULT_S3_TIMEOUT_MS)]
    pub s3_timeout_ms: u64,

    /// Tries of one S3 call, the first included, with exponential backoff between them.
    #[arg(long, env = "NIMBUS_S3_MAX_ATTEMPTS", default_value_t = DEFAULT_S3_MAX_ATTEMPTS)]
    pub s3_max_attempts: u32,

    /// Disk for artifacts pulled from S3 (MiB), least recently used out first.
    #[arg(long, env = "NIMBUS_DISK_CACHE_MB", default_value_t = DEFAULT_DISK_CACHE_MB)]
    pub disk_cache_mb: u64,
}

impl StorageConfig {
    /// The S3 configuration, `None` without `--s3-bucket`; an error for S3 settings that cannot
    /// work (a key id without its secret, settings without a bucket).
    pub fn s3(&self) -> anyhow::Result<Option<nimbus_registry::S3Config>> {
        use nimbus_registry::{S3Config, S3Credentials};
        let Some(bucket) = &self.s3_bucket else {
            anyhow::ensure!(
                self.s3_endpoint.is_none()
                    && self.s3_access_key_id.is_none()
                    && self.s3_profile.is_none(),
                "S3 settings are given but no bucket: add --s3-bucket (NIMBUS_S3_BUCKET)"
            );
            return Ok(None);
        };
        let credentials = match (
            &self.s3_access_key_id,
            &self.s3_secret_access_key,
            &self.s3_profile,
        ) {
            (Some(_), _, Some(_)) => {
                anyhow::bail!("give either --s3-access-key-id or --s3-profile, not both")
            }
            (Some(id), Some(secret), None) => S3Credentials::Static {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: None,
            },
            (Some(_), None, None) | (None, Some(_), _) => {
                anyhow::bail!("--s3-access-key-id and --s3-secret-access-key go together")
            }
            (None, None, Some(profile)) => S3Credentials::Profile(profile.clone()),
            (None, None, None) => S3Credentials::Environment,
        };
        anyhow::ensure!(self.s3_timeout_ms > 0, "--s3-timeout-ms must be above 0");
        Ok(Some(S3Config {
            prefix: self.s3_prefix.clone(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            credentials,
            checksums: self.s3_checksums,
            timeout: std::time::Duration::from_millis(self.s3_timeout_ms),
            max_attempts: self.s3_max_attempts.max(1),
            ..S3Config::new(bucket.clone())
        }))
    }
}
