//! The bytes of the artifacts a node runs (function wasm, model files), verified. With the local
//! blob folder they are read in place; with S3 each artifact is pulled once per node — concurrent
//! requests for one artifact share one download — checked against its sha256 while it streams,
//! and kept in the disk cache (`disk_cache`), where later reads find it, across restarts too.
//! A failed or corrupt download is reported to every waiter and never cached.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use nimbus_registry::{BlobStore, DownloadStats, RegistryError, S3Uri};
use sha2::{Digest, Sha256};

use crate::disk_cache::{CachedFile, DiskCache};
use crate::metrics::Metrics;

/// Why an artifact could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArtifactError {
    /// Storage cannot be reached, does not answer in time, or refuses the credentials: worth
    /// retrying later.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: no such object, a sha256 mismatch, a disk error.
    #[error("{0}")]
    Failed(String),
}

impl From<RegistryError> for ArtifactError {
    fn from(error: RegistryError) -> ArtifactError {
        match error {
            RegistryError::Unavailable(message) => ArtifactError::Unavailable(message),
            RegistryError::Internal(e) => ArtifactError::Failed(format!("{e:#}")),
            other => ArtifactError::Failed(other.to_string()),
        }
    }
}

/// An artifact's bytes and what getting them cost.
pub struct ArtifactBytes {
    pub bytes: Vec<u8>,
    /// Time to download (zero when it was on disk already); hashing ran alongside.
    pub download: Duration,
    /// Time spent hashing, during the download or reading from disk.
    pub verify: Duration,
}

/// A cached file and, when this request downloaded it, the download's figures (its bytes were
/// verified on the way in).
#[derive(Clone)]
struct Fetched {
    file: CachedFile,
    downloaded: Option<DownloadStats>,
}

type SharedFetch = Shared<BoxFuture<'static, Result<Fetched, ArtifactError>>>;

/// The node's artifacts. Cheap to clone.
#[derive(Clone)]
pub struct Artifacts {
    inner: Arc<Inner>,
}

struct Inner {
    store: BlobStore,
    /// `None` when the store is a local folder (nothing to cache).
    cache: Option<Arc<DiskCache>>,
    /// Downloads in progress, by sha256: latecomers wait for the same one.
    in_flight: Mutex<HashMap<String, SharedFetch>>,
    metrics: Arc<Metrics>,
}

impl Artifacts {
    /// Artifacts from `store`; for S3, cached in `cache_dir` up to `cache_mb` MiB.
    pub async fn open(
        store: BlobStore,
        cache_dir: &Path,
        cache_mb: u64,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Artifacts> {
        let cache = if store.local_root().is_some() {
            None
        } else {
            let dir = cache_dir.to_path_buf();
            let metrics = metrics.clone();
            let bytes = cache_mb.saturating_mul(1 << 20);
            Some(
                tokio::task::spawn_blocking(move || DiskCache::open(&dir, bytes, metrics))
                    .await??,
            )
        };
        Ok(Artifacts {
            inner: Arc::new(Inner {
                store,
                cache,
                in_flight: Mutex::new(HashMap::new()),
                metrics,
            }),
        })
    }

    /// The verified bytes of the artifact `sha256`: the store's copy, or the object at `uri`
    /// (`s3://bucket/key`) when given.
    pub async fn read(
        &self,
        sha256: &str,
        uri: Option<&str>,
    ) -> Result<ArtifactBytes, ArtifactError> {
        let Some(cache) = &self.inner.cache else {
            // The local folder: read in place (BlobStore::read checks the digest).
            let started = Instant::now();
            let bytes = self.inner.store.read(sha256).await?;
            return Ok(ArtifactBytes {
                bytes: bytes.to_vec(),
                download: Duration::ZERO,
                verify: started.elapsed(),
            });
        };
        let uri = uri.map(str::parse::<S3Uri>).transpose()?;
        // A cached file that no longer hashes right is dropped and fetched again, once.
        for _ in 0..2 {
            let fetched = self.fetch(cache, sha256, uri.clone()).await?;
            let path = fetched.file.path.clone();
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                ArtifactError::Failed(format!(
                    "reading the cached artifact {}: {e}",
                    path.display()
                ))
            })?;
            if let Some(stats) = fetched.downloaded {
                return Ok(ArtifactBytes {
                    bytes,
                    download: stats.elapsed,
                    verify: stats.hashing,
                });
            }
            let started = Instant::now();
            let (bytes, actual) = tokio::task::spawn_blocking(move || {
                let actual = hex::encode(Sha256::digest(&bytes));
                (bytes, actual)
            })
            .await
            .map_err(|e| ArtifactError::Failed(format!("hashing task failed: {e}")))?;
            if actual == sha256 {
                return Ok(ArtifactBytes {
                    bytes,
                    download: Duration::ZERO,
                    verify: started.elapsed(),
                });
            }
            tracing::warn!(sha256, actual, path = %path.display(), "a cached artifact is corrupt; fetching it again");
            drop(fetched);
            cache.discard(sha256);
        }
        Err(ArtifactError::Failed(format!(
            "the artifact {sha256} is corrupt in the disk cache after a fresh download"
        )))
    }

    /// The artifact from the disk cache, else from the download in progress, else from a new one.
    async fn fetch(
        &self,
        cache: &Arc<DiskCache>,
        sha256: &str,
        uri: Option<S3Uri>,
    ) -> Result<Fetched, ArtifactError> {
        let shared = {
            let mut in_flight = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Checked under the lock: a download joins the cache before it leaves `in_flight`.
            if let Some(file) = cache.get(sha256) {
                self.inner.metrics.artifacts.record_cache_hit();
                return Ok(Fetched {
                    file,
                    downloaded: None,
                });
            }
            in_flight
                .entry(sha256.to_owned())
                .or_insert_with(|| {
                    let inner = self.inner.clone();
                    let cache = cache.clone();
                    let sha256 = sha256.to_owned();
                    // Spawned: the download finishes for the others even if the request that
                    // started it goes away.
                    let task = tokio::spawn(async move {
                        let result = inner.download(&cache, &sha256, uri.as_ref()).await;
                        inner
                            .in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&sha256);
                        result
                    });
                    async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ArtifactError::Failed(format!(
                                "the download task failed: {e}"
                            )))
                        })
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        shared.await
    }
}

impl Inner {
    async fn download(
        &self,
        cache: &Arc<DiskCache>,
        sha256: &str,
        uri: Option<&S3Uri>,
    ) -> Result<Fetched, ArtifactError> {
        let source = uri.map_or_else(|| format!("blob {sha256}"), ToString::to_string);
        let downloaded = match self.store.download(sha256, uri, &cache.staging_dir()).await {
            Ok(downloaded) => downloaded,
            Err(error) => {
                self.metrics.artifacts.record_download_failure();
                let error = ArtifactError::from(error);
                tracing::warn!(%source, %error, "artifact download failed");
                return Err(error);
            }
        };
        let stats = downloaded.stats;
        let size = downloaded.size;
        let file = cache
            .insert(sha256, downloaded.file, size)
            .map_err(|e| ArtifactError::Failed(format!("{e:#}")))?;
        self.metrics
            .artifacts
            .record_download(size, stats.elapsed, stats.hashing);
        tracing::info!(
            %source,
            bytes = size,
            ms = stats.elapsed.as_millis() as u64,
            hashing_ms = stats.hashing.as_millis() as u64,
            requests = stats.requests,
            "artifact downloaded and verified"
        );
        Ok(Fetched {
            file,
            downloaded: Some(stats),
        })
    }
}
