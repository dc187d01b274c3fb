//! nimbusd: starts the Nimbus server on its configuration (embedded defaults when none).

mod admission;
mod api;
mod artifact_metrics;
mod artifacts;
mod auth;
mod config;
mod disk_cache;
mod errors;
mod function_cache;
mod invoke;
mod metrics;
mod models;
mod ratelimit;
mod sandbox;
mod server;
mod tenants;
mod versions;

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use nimbus_engines::{Engines, EnginesConfig};
use nimbus_registry::{BlobStore, Registry, RegistryOptions};
use nimbus_wasi_nn::NnLimits;
use tracing_subscriber::EnvFilter;

use crate::artifacts::Artifacts;
use crate::config::{Config, DEFAULT_COMPILED_FUNCTIONS};
use crate::metrics::Metrics;
use crate::models::ModelCache;
use crate::sandbox::Sandbox;
use crate::server::AppState;

fn main() -> anyhow::Result<()> {
    // Errors must not carry backtraces into answers or logs (RUST_BACKTRACE=1 in the
    // environment would otherwise turn them on for every error value); panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("NIMBUS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nimbus-worker")
        .build()?;
    let result = runtime.block_on(run(config));
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    result
}

async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let blobs = match config.storage.s3()? {
        Some(s3) => Some(BlobStore::open_s3(s3).await?),
        None => None,
    };
    let registry = Registry::open_options(RegistryOptions {
        blobs,
        database_url: config.database_url.clone(),
        key_pepper: config.key_pepper.clone(),
        blob_gc_grace: std::time::Duration::from_secs(config.blob_gc_grace_s),
        ..RegistryOptions::new(&config.data_dir)
    })
    .await
    .context("opening the registry")?;
    let store = registry.blobs().describe();
    match registry.blobs().ping().await {
        Ok(()) => tracing::info!(blobs = %store, "blob store ready"),
        // Not fatal: cached artifacts still serve, and /readyz answers 503 naming the problem.
        Err(error) => tracing::error!(blobs = %store, "the blob store is not usable: {error}"),
    }
    if let Some(key) = registry
        .bootstrap(config.admin_key.as_deref())
        .await
        .context("creating tenant `default` and its admin key")?
    {
        let path = config.data_dir.join("admin.key");
        write_secret(&path, &key)?;
        // The one time the key is shown; it goes to stdout, never to the logs.
        println!(
            "admin key of tenant `default` (shown once, kept in {}):\n{key}",
            path.display()
        );
        std::io::stdout().flush()?;
    }

    let engines_config = EnginesConfig {
        dir: config.engines_dir.clone(),
        onnxruntime_library: config.onnxruntime_library.clone(),
        openvino_dir: config.openvino_dir.clone(),
        intra_op_threads: config.intra_op_threads,
    };
    let engines = tokio::task::spawn_blocking(move || Engines::load(&engines_config)).await?;
    for status in engines.status() {
        if status.available {
            tracing::info!(engine = %status.kind, version = status.version.as_deref().unwrap_or("?"), "engine ready");
        } else {
            tracing::warn!(engine = %status.kind, reason = status.reason.as_deref().unwrap_or("?"), "engine unavailable");
        }
    }

    let metrics = Arc::new(Metrics::default());
    let artifacts = Artifacts::open(
        registry.blobs().clone(),
        &config.data_dir.join("cache"),
        config.storage.disk_cache_mb,
        metrics.clone(),
    )
    .await
    .context("opening the artifact cache")?;
    let sandbox = Sandbox::new(
        config.max_instances,
        config.max_memory_mb,
        DEFAULT_COMPILED_FUNCTIONS,
        &config.data_dir,
        artifacts.clone(),
        metrics.clone(),
    )?;
    let models = Arc::new(ModelCache::new(
        Arc::new(engines),
        artifacts,
        config.model_cache_mb,
        config.sessions_per_model,
        metrics.clone(),
    ));
    let nn_limits = NnLimits {
        max_guest_model_bytes: config.max_guest_model_bytes,
        ..NnLimits::default()
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %config.data_dir.display(), "nimbusd listening");
    println!("nimbusd listening on http://{address}");
    std::io::stdout().flush()?;

    let auth = auth::Auth::new(registry.clone(), &config, metrics.clone());
    let state = Arc::new(AppState {
        auth,
        config,
        registry,
        sandbox,
        models,
        metrics,
        nn_limits,
        admission: Default::default(),
        functions: Default::default(),
    });
    server::serve(state, listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Writes a secret readable by the owner only.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}
