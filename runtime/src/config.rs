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
}
