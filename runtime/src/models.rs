//! Loaded models on this node: one engine load per model however many requests arrive at once,
//! kept in a moka cache weighted by model size, and the wasi-nn `GraphProvider` that lets a function
//! see only the models its manifest binds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use nimbus_engines::{EngineKind, Engines, Model, Target};
use nimbus_registry::{BlobStore, ModelBinding};
use nimbus_wasi_nn::{BoxFuture, ErrorCode, GraphProvider, NnError};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;

/// Identifies one loaded model: the same bytes on another engine or target is another load.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ModelKey {
    sha256: String,
    engine: EngineKind,
    target: Target,
}

/// A model in an engine and the size of the file it came from (its cache weight).
#[derive(Clone)]
struct LoadedModel {
    model: Arc<dyn Model>,
    file_bytes: usize,
}

/// The node's loaded models.
pub struct ModelCache {
    engines: Arc<Engines>,
    blobs: BlobStore,
    loaded: moka::future::Cache<ModelKey, LoadedModel>,
    sessions: usize,
    metrics: Arc<Metrics>,
}

impl ModelCache {
    pub fn new(
        engines: Arc<Engines>,
        blobs: BlobStore,
        capacity_mb: u64,
        sessions: usize,
        metrics: Arc<Metrics>,
    ) -> ModelCache {
        let loaded = moka::future::Cache::builder()
            // Weighted in KiB of model file so the total fits a u32 weight per entry.
            .weigher(|_key: &ModelKey, loaded: &LoadedModel| {
                u32::try_from(loaded.file_bytes / 1024).unwrap_or(u32::MAX).max(1)
            })
            .max_capacity(capacity_mb.saturating_mul(1024))
            .build();
        ModelCache {
            engines,
            blobs,
            loaded,
            sessions: sessions.max(1),
            metrics,
        }
    }

    /// The engines this node has.
    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    /// A model stored in the blob store, loaded on first use.
    pub async fn get(&self, binding: &ModelBinding) -> Result<Arc<dyn Model>, NnError> {
        let engine: EngineKind = binding.engine.parse().map_err(|_| {
            NnError::new(
                ErrorCode::RuntimeError,
                format!("model {} has unknown engine {}", binding.model, binding.engine),
            )
        })?;
        let target: Target = binding.target.parse().map_err(|_| {
            NnError::new(
                ErrorCode::RuntimeError,
                format!("model {} has unknown target {}", binding.model, binding.target),
            )
        })?;
        let key = ModelKey {
            sha256: binding.sha256.clone(),
            engine,
            target,
        };
        let blobs = self.blobs.clone();
        let name = format!("{}@{}", binding.model, binding.version);
        self.load(key, name, move |sha| async move {
            blobs.read(&sha).await.map(|b| b.to_vec()).map_err(|e| {
                NnError::new(ErrorCode::NotFound, format!("reading the model's file: {e}"))
            })
        })
        .await
    }

    /// A model whose bytes a guest passed to `load`, cached by digest.
    pub async fn get_guest_model(
        &self,
        bytes: Vec<u8>,
        engine: EngineKind,
        target: Target,
    ) -> Result<Arc<dyn Model>, NnError> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let key = ModelKey {
            sha256: sha256.clone(),
            engine,
            target,
        };
        self.load(key, format!("guest model {}", &sha256[..12]), move |_| async move { Ok(bytes) })
            .await
    }

    async fn load<F, Fut>(&self, key: ModelKey, name: String, bytes: F) -> Result<Arc<dyn Model>, NnError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, NnError>>,
    {
        let engines = self.engines.clone();
        let sessions = self.sessions;
        let metrics = self.metrics.clone();
        let init_key = key.clone();
        self.loaded
            .try_get_with(key, async move {
                let started = Instant::now();
                let bytes = bytes(init_key.sha256.clone()).await?;
                let file_bytes = bytes.len();
                let ModelKey { engine, target, .. } = init_key;
                let model = tokio::task::spawn_blocking(move || {
                    engines.load_model(engine, &bytes, target, sessions)
                })
                .await
                .map_err(|e| NnError::new(ErrorCode::RuntimeError, format!("model load failed: {e}")))?
                .map_err(|e| {
                    let e = NnError::from(e);
                    NnError::new(e.code, format!("loading {name}: {}", e.message))
                })?;
                let took = started.elapsed();
                metrics.record_model_load(&engine.to_string(), took);
                tracing::info!(model = %name, %engine, ms = took.as_millis() as u64, "model loaded");
                Ok(LoadedModel { model, file_bytes })
            })
            .await
            .map(|loaded| loaded.model)
            .map_err(|e: Arc<NnError>| (*e).clone())
    }
}

/// The models one function version may load by name.
pub struct BoundModels {
    pub cache: Arc<ModelCache>,
    pub bindings: Arc<BTreeMap<String, ModelBinding>>,
}

impl GraphProvider for BoundModels {
    fn load_by_name(&self, name: &str) -> BoxFuture<Result<Arc<dyn Model>, NnError>> {
        let cache = self.cache.clone();
        let binding = self.bindings.get(name).cloned();
        let name = name.to_owned();
        Box::pin(async move {
            match binding {
                Some(binding) => cache.get(&binding).await,
                None => Err(NnError::new(
                    ErrorCode::NotFound,
                    format!("no model named `{name}` is bound to this function"),
                )),
            }
        })
    }

    fn load_bytes(
        &self,
        mut parts: Vec<Vec<u8>>,
        engine: EngineKind,
        target: Target,
    ) -> BoxFuture<Result<Arc<dyn Model>, NnError>> {
        let cache = self.cache.clone();
        let bytes = parts.pop().unwrap_or_default();
        Box::pin(async move { cache.get_guest_model(bytes, engine, target).await })
    }
}
