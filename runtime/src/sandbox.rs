//! The wasmtime side of an invocation: one `Engine` per process (pooling allocator, epoch
//! interruption), compiled functions cached by the sha256 of their wasm (in memory as `ProxyPre`,
//! on disk as serialized code so a restart does not recompile), and a fresh `Store` and instance per
//! request with the function's limits.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nimbus_wasi_nn::{WasiNnCtx, WasiNnCtxView, WasiNnView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::artifacts::{ArtifactError, Artifacts};
use crate::metrics::Metrics;

/// How often the epoch advances; the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Bytes of a linear memory or table a pooled slot keeps resident between instances, reset in
/// place (see `Sandbox::new`): a guest's first 4 MiB are reset with memset instead of fresh pages.
const KEEP_RESIDENT: usize = 4 << 20;
/// Bytes of guest stderr kept for the error answer when a guest fails.
const STDERR_CAPTURE_BYTES: usize = 64 << 10;

/// Everything a guest instance owns while it runs.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutboundHttp,
    nn: WasiNnCtx,
    table: ResourceTable,
    limits: StoreLimits,
    deadline: Instant,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiNnView for GuestState {
    fn nn(&mut self) -> WasiNnCtxView<'_> {
        WasiNnCtxView {
            ctx: &mut self.nn,
            table: &mut self.table,
        }
    }
}

/// Guests get no outbound network: every outgoing request is denied.
struct NoOutboundHttp;

impl WasiHttpHooks for NoOutboundHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// What one request's instance may use.
#[derive(Clone, Debug)]
pub struct InstanceLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
}

/// A store ready to run, with a handle on what the guest writes to stderr.
pub struct PreparedStore {
    pub store: Store<GuestState>,
    pub stderr: MemoryOutputPipe,
}

/// The process-wide wasmtime engine and the compiled-function cache.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    compiled: moka::future::Cache<String, Arc<ProxyPre<GuestState>>>,
    code_dir: PathBuf,
    artifacts: Artifacts,
    metrics: Arc<Metrics>,
}

impl Sandbox {
    /// Builds the engine, links WASI, wasi:http and wasi-nn, and starts the epoch ticker.
    pub fn new(
        max_instances: u32,
        max_memory_mb: u32,
        compiled_capacity: u64,
        data_dir: &std::path::Path,
        artifacts: Artifacts,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Sandbox> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(max_instances);
        // A Rust wasip2 component is a handful of core instances, memories and tables.
        pool.total_core_instances(max_instances.saturating_mul(4));
        pool.total_memories(max_instances.saturating_mul(2));
        pool.total_tables(max_instances.saturating_mul(4));
        pool.max_memories_per_component(4);
        pool.max_tables_per_component(8);
        pool.max_core_instances_per_component(16);
        // The node's ceiling (--max-memory-mb); each store's limiter enforces the function's own,
        // smaller limit.
        pool.max_memory_size((max_memory_mb as usize) << 20);
        // A finished instance's memory and tables are reset in place, not given back with
        // madvise (a system call, a TLB shootdown across our threads, then page faults for the
        // next instance in the slot): with PAGEMAP_SCAN (Linux 6.7+) only the pages it wrote are
        // restored, up to KEEP_RESIDENT bytes; without it, the lowest KEEP_RESIDENT bytes are.
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        pool.linear_memory_keep_resident(KEEP_RESIDENT);
        pool.table_keep_resident(KEEP_RESIDENT);

        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::Error::from(e).context("configuring wasmtime"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        nimbus_wasi_nn::add_to_linker(&mut linker)?;

        // The epoch ticker: time limits and fair yielding are measured in its ticks.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("nimbus-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let code_dir = data_dir
            .join("compiled")
            .join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&code_dir)
            .with_context(|| format!("creating {}", code_dir.display()))?;

        Ok(Sandbox {
            engine,
            linker,
            compiled: moka::future::Cache::new(compiled_capacity),
            code_dir,
            artifacts,
            metrics,
        })
    }

    /// The compiled function for a wasm digest: from memory, else from the on-disk code cache,
    /// else compiled now. Concurrent first requests share one compilation. When the wasm could
    /// not be fetched, the error is an [`ArtifactError`] (`downcast_ref` tells storage that is
    /// unavailable from anything else).
    pub async fn function(&self, wasm_sha256: &str) -> anyhow::Result<Arc<ProxyPre<GuestState>>> {
        let sha = wasm_sha256.to_owned();
        self.compiled
            .try_get_with(sha.clone(), self.load_function(sha))
            .await
            .map_err(
                |e: Arc<anyhow::Error>| match e.downcast_ref::<ArtifactError>() {
                    Some(artifact) => anyhow::Error::new(artifact.clone()),
                    None => anyhow::anyhow!("{e:#}"),
                },
            )
    }

    async fn load_function(&self, sha: String) -> anyhow::Result<Arc<ProxyPre<GuestState>>> {
        let started = Instant::now();
        let code_path = self.code_dir.join(format!("{sha}.cwasm"));
        let engine = self.engine.clone();
        let (component, compiled_now) = if tokio::fs::try_exists(&code_path).await.unwrap_or(false)
        {
            let path = code_path.clone();
            // SAFETY: the file is code this process's engine configuration serialized into our own
            // data dir (its folder is keyed by the engine's compatibility hash); nothing else
            // writes there.
            let component = tokio::task::spawn_blocking(move || unsafe {
                Component::deserialize_file(&engine, &path)
            })
            .await??;
            (component, false)
        } else {
            // Boxed: keeps the (deeply nested) request future small.
            let wasm = Box::pin(self.artifacts.read(&sha, None)).await?.bytes;
            let component =
                tokio::task::spawn_blocking(move || Component::new(&engine, &wasm)).await??;
            let serialized = component.serialize()?;
            let tmp = code_path.with_extension(format!("tmp{}", std::process::id()));
            tokio::fs::write(&tmp, &serialized).await?;
            tokio::fs::rename(&tmp, &code_path).await?;
            (component, true)
        };
        let pre = ProxyPre::new(self.linker.instantiate_pre(&component)?).map_err(|e| {
            anyhow::Error::from(e).context("the function is not a wasi:http proxy component")
        })?;
        let elapsed = started.elapsed();
        self.metrics.record_function_load(compiled_now, elapsed);
        tracing::info!(wasm = %sha, compiled = compiled_now, ms = elapsed.as_millis() as u64, "function loaded");
        Ok(Arc::new(pre))
    }

    /// A fresh store for one request.
    pub fn store(
        &self,
        nn: WasiNnCtx,
        env: &std::collections::BTreeMap<String, String>,
        limits: &InstanceLimits,
    ) -> PreparedStore {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone());
        for (k, v) in env {
            wasi.env(k, v);
        }
        let state = GuestState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: NoOutboundHttp,
            nn,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            deadline: Instant::now() + limits.timeout,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Yield to the executor every tick so one busy guest cannot hold a worker thread, and trap
        // once the request's deadline has passed.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        PreparedStore { store, stderr }
    }
}
