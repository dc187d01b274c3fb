//! Counters of the artifact downloads and the disk cache, part of [`crate::metrics::Metrics`] and
//! rendered with it at `/metrics`: downloads, bytes, time downloading and hashing (the split of a
//! cold model load beside `nimbus_model_load_seconds_total`, the engine's part), failures, cache
//! hits, evictions and bytes on disk.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// See the module doc.
#[derive(Default)]
pub struct ArtifactMetrics {
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    download_micros: AtomicU64,
    verify_micros: AtomicU64,
    download_failures: AtomicU64,
    cache_hits: AtomicU64,
    evictions: AtomicU64,
    cache_bytes: AtomicU64,
}

impl ArtifactMetrics {
    /// One verified download of `bytes` that took `elapsed`, `hashing` of it spent hashing.
    pub fn record_download(&self, bytes: u64, elapsed: Duration, hashing: Duration) {
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.download_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.download_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.verify_micros
            .fetch_add(hashing.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn record_download_failure(&self) {
        self.download_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_eviction(&self) {
        self.evictions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_cache_bytes(&self, bytes: u64) {
        self.cache_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The Prometheus text of these counters.
    pub fn render(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let seconds = |counter: &AtomicU64| get(counter) as f64 / 1e6;
        let mut out = String::new();
        let mut sample = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        sample(
            "nimbus_artifact_downloads_total",
            "counter",
            "Artifacts (wasm, models) downloaded from S3 and verified.",
            get(&self.downloads).to_string(),
        );
        sample(
            "nimbus_artifact_download_bytes_total",
            "counter",
            "Bytes of verified artifact downloads.",
            get(&self.download_bytes).to_string(),
        );
        sample(
            "nimbus_artifact_download_seconds_total",
            "counter",
            "Time spent downloading artifacts (hashing runs alongside).",
            seconds(&self.download_micros).to_string(),
        );
        sample(
            "nimbus_artifact_verify_seconds_total",
            "counter",
            "Time spent hashing downloaded artifacts.",
            seconds(&self.verify_micros).to_string(),
        );
        sample(
            "nimbus_artifact_download_failures_total",
            "counter",
            "Artifact downloads that failed (storage unavailable, missing object, sha256 mismatch).",
            get(&self.download_failures).to_string(),
        );
        sample(
            "nimbus_artifact_cache_hits_total",
            "counter",
            "Artifacts found in the disk cache.",
            get(&self.cache_hits).to_string(),
        );
        sample(
            "nimbus_artifact_cache_evictions_total",
            "counter",
            "Artifacts evicted from the disk cache.",
            get(&self.evictions).to_string(),
        );
        sample(
            "nimbus_artifact_cache_bytes",
            "gauge",
            "Bytes of artifacts in the disk cache.",
            get(&self.cache_bytes).to_string(),
        );
        out
    }
}
