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
}
