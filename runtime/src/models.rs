//! Loaded models on this node: one artifact fetch and one engine load per model however many
//! requests arrive at once, kept in a moka cache weighted by model size (least recently used goes
//! first), and the wasi-nn `GraphProvider` that lets a function see only the models its manifest
//! binds. A bound model whose file cannot be fetched is recorded in [`UnavailableModel`], so that
//! the invocation answers 503 naming it whatever the guest makes of the wasi-nn error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nimbus_engines::{EngineKind, Engines, Model, Target};
use nimbus_registry::ModelBinding;
use nimbus_wasi_nn::{BoxFuture, ErrorCode, GraphProvider, NnError};
use sha2::{Digest, Sha256};

use crate::artifacts::{ArtifactBytes, ArtifactError, Artifacts};
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

/// Why a model could not be loaded.
#[derive(Debug, Clone)]
pub enum LoadError {
    /// Its file could not be had (storage down, missing object, sha256 mismatch).
    Artifact(ArtifactError),
    /// The engine refused it, or it is not a model this node can run.
    Engine(NnError),
}

impl From<LoadError> for NnError {
    fn from(error: LoadError) -> NnError {
        match error {
            LoadError::Artifact(e) => NnError::new(ErrorCode::RuntimeError, e.to_string()),
            LoadError::Engine(e) => e,
        }
    }
}

/// The node's loaded models.
pub struct ModelCache {
    engines: Arc<Engines>,
    artifacts: Artifacts,
    loaded: moka::future::Cache<ModelKey, LoadedModel>,
    sessions: usize,
    metrics: Arc<Metrics>,
}

impl ModelCache {
    pub fn new(
        engines: Arc<Engines>,
        artifacts: Artifacts,
        capacity_mb: u64,
        sessions: usize,
        metrics: Arc<Metrics>,
    ) -> ModelCache {
        let loaded = moka::future::Cache::builder()
            // Weighted in KiB of model file so the total fits a u32 weight per entry.
            .weigher(|_key: &ModelKey, loaded: &LoadedModel| {
                u32::try_from(loaded.file_bytes / 1024)
                    .unwrap_or(u32::MAX)
                    .max(1)
            })
            .max_capacity(capacity_mb.saturating_mul(1024))
            // Plain LRU: a model loaded once is kept over an older one even while it is still
            // "rare" (the default admission policy would reload it on every request).
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        ModelCache {
            engines,
            artifacts,
            loaded,
            sessions: sessions.max(1),
            metrics,
        }
    }

    /// The engines this node has.
    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    /// A model stored in the blob store (or at its registered URI), loaded on first use.
    pub async fn get(&self, binding: &ModelBinding) -> Result<Arc<dyn Model>, LoadError> {
        let engine: EngineKind = binding.engine.parse().map_err(|_| {
            LoadError::Engine(NnError::new(
                ErrorCode::RuntimeError,
                format!(
                    "model {} has unknown engine {}",
                    binding.model, binding.engine
                ),
            ))
        })?;
        let target: Target = binding.target.parse().map_err(|_| {
            LoadError::Engine(NnError::new(
                ErrorCode::RuntimeError,
                format!(
                    "model {} has unknown target {}",
                    binding.model, binding.target
                ),
            ))
        })?;
        let key = ModelKey {
            sha256: binding.sha256.clone(),
            engine,
            target,
        };
        let artifacts = self.artifacts.clone();
        let uri = binding.uri.clone();
        let name = format!("{}@{}", binding.model, binding.version);
        self.load(key, name, move |sha| async move {
            artifacts
                .read(&sha, uri.as_deref())
                .await
                .map_err(LoadError::Artifact)
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
        let name = format!("guest model {}", &sha256[..12]);
        self.load(key, name, move |_| async move {
            Ok(ArtifactBytes {
                bytes,
                download: Duration::ZERO,
                verify: Duration::ZERO,
            })
        })
        .await
        .map_err(NnError::from)
    }

    async fn load<F, Fut>(
        &self,
        key: ModelKey,
        name: String,
        bytes: F,
    ) -> Result<Arc<dyn Model>, LoadError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<ArtifactBytes, LoadError>>,
    {
        let engines = self.engines.clone();
        let sessions = self.sessions;
        let metrics = self.metrics.clone();
        let init_key = key.clone();
        self.loaded
            .try_get_with(key, async move {
                let artifact = bytes(init_key.sha256.clone()).await?;
                let bytes = artifact.bytes;
                let file_bytes = bytes.len();
                let ModelKey { engine, target, .. } = init_key;
                let started = Instant::now();
                let model = tokio::task::spawn_blocking(move || {
                    engines.load_model(engine, &bytes, target, sessions)
                })
                .await
                .map_err(|e| {
                    LoadError::Engine(NnError::new(
                        ErrorCode::RuntimeError,
                        format!("model load failed: {e}"),
                    ))
                })?
                .map_err(|e| {
                    let e = NnError::from(e);
                    LoadError::Engine(NnError::new(
                        e.code,
                        format!("loading {name}: {}", e.message),
                    ))
                })?;
                let took = started.elapsed();
                metrics.record_model_load(&engine.to_string(), took);
                tracing::info!(
                    model = %name,
                    %engine,
                    download_ms = artifact.download.as_millis() as u64,
                    verify_ms = artifact.verify.as_millis() as u64,
                    engine_ms = took.as_millis() as u64,
                    "model loaded"
                );
                Ok(LoadedModel { model, file_bytes })
            })
            .await
            .map(|loaded| loaded.model)
            .map_err(|e: Arc<LoadError>| (*e).clone())
    }
}

/// The first bound model of one invocation whose file could not be fetched, as the message of the
/// 503 the invocation answers instead of whatever the guest answered. Shared between the
/// [`BoundModels`] of an instance and the invocation that reads it.
#[derive(Clone, Default)]
pub struct UnavailableModel(Arc<Mutex<Option<String>>>);

impl UnavailableModel {
    fn record(&self, message: String) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(message);
    }

    /// What was recorded, if anything.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The models one function version may load by name.
pub struct BoundModels {
    pub cache: Arc<ModelCache>,
    pub bindings: Arc<BTreeMap<String, ModelBinding>>,
    pub unavailable: UnavailableModel,
}

impl GraphProvider for BoundModels {
    fn load_by_name(&self, name: &str) -> BoxFuture<Result<Arc<dyn Model>, NnError>> {
        let cache = self.cache.clone();
        let binding = self.bindings.get(name).cloned();
        let unavailable = self.unavailable.clone();
        let name = name.to_owned();
        Box::pin(async move {
            match binding {
                Some(binding) => match cache.get(&binding).await {
                    Ok(model) => Ok(model),
                    Err(LoadError::Artifact(error)) => {
                        let message = format!(
                            "model {}@{} is unavailable: {error}",
                            binding.model, binding.version
                        );
                        unavailable.record(message.clone());
                        Err(NnError::new(ErrorCode::RuntimeError, message))
                    }
                    Err(LoadError::Engine(error)) => Err(error),
                },
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
