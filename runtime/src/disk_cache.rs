//! The node's disk cache of artifacts (function wasm, model files) pulled from S3:
//! `<data-dir>/cache/sha256/<hex>`, bounded in bytes, least recently used first out. Files arrive
//! complete and verified (renamed in from the cache's staging folder), and an artifact in use is
//! pinned so it is never deleted under a reader. The index lives in memory and is rebuilt from the
//! folder at start (oldest modification time = least recently used; a hit touches the file), so
//! the cache survives restarts. Fetching and verifying is `artifacts`'s job, not this module's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use anyhow::Context as _;
use tempfile::TempPath;

use crate::metrics::Metrics;

/// A cached artifact, pinned (kept on disk) while any clone of it is alive.
#[derive(Clone)]
pub struct CachedFile {
    pub path: PathBuf,
    _pin: Arc<Pin>,
}

/// Unpins its entry when the last [`CachedFile`] holding it goes.
struct Pin {
    cache: Arc<DiskCache>,
    sha256: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let evicted = {
            let mut state = self.cache.lock();
            if let Some(entry) = state.entries.get_mut(&self.sha256) {
                entry.pins = entry.pins.saturating_sub(1);
            }
            state.evict_to_fit(self.cache.capacity, None)
        };
        self.cache.remove_files(evicted);
    }
}

/// The cache. Shared as an `Arc` (pins point back to it).
pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Bytes of all entries.
    used: u64,
    /// Advances on every use: the larger, the more recently used.
    clock: u64,
}

struct Entry {
    size: u64,
    last_used: u64,
    pins: u32,
}

impl State {
    /// Drops least recently used, unpinned entries (never `keep`) until `used <= capacity`, and
    /// returns them. Pinned entries may hold the cache over its bound until they are let go.
    fn evict_to_fit(&mut self, capacity: u64, keep: Option<&str>) -> Vec<(String, u64)> {
        let mut evicted = Vec::new();
        while self.used > capacity {
            let victim = self
                .entries
                .iter()
                .filter(|(sha, e)| e.pins == 0 && Some(sha.as_str()) != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(sha, _)| sha.clone());
            let Some(sha) = victim else { break };
            let entry = self.entries.remove(&sha).expect("victim is an entry");
            self.used -= entry.size;
            evicted.push((sha, entry.size));
        }
        evicted
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

impl DiskCache {
    /// Opens the cache in `dir` with room for `capacity_bytes`: clears unfinished downloads and
    /// indexes the files already there, evicting down to the bound if it shrank. Blocking.
    pub fn open(
        dir: &Path,
        capacity_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<DiskCache>> {
        let files = dir.join("sha256");
        let tmp = dir.join("tmp");
        for folder in [&files, &tmp] {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("creating {}", folder.display()))?;
        }
        for entry in
            std::fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))?
        {
            let _ = std::fs::remove_file(entry?.path());
        }
        let mut found = Vec::new();
        for entry in
            std::fs::read_dir(&files).with_context(|| format!("reading {}", files.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if !meta.is_file() || !nimbus_registry::validate::is_digest(&name) {
                tracing::warn!(path = %entry.path().display(), "removing a stray file from the artifact cache");
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            found.push((
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                name,
                meta.len(),
            ));
        }
        found.sort();
        let mut state = State::default();
        for (_, sha, size) in found {
            let last_used = state.tick();
            state.used += size;
            state.entries.insert(
                sha,
                Entry {
                    size,
                    last_used,
                    pins: 0,
                },
            );
        }
        let cache = Arc::new(DiskCache {
            dir: dir.to_path_buf(),
            capacity: capacity_bytes,
            state: Mutex::new(state),
            metrics,
        });
        let evicted = cache.lock().evict_to_fit(capacity_bytes, None);
        cache.remove_files(evicted);
        let (count, used) = {
            let state = cache.lock();
            (state.entries.len(), state.used)
        };
        cache.metrics.artifacts.set_cache_bytes(used);
        tracing::info!(dir = %dir.display(), artifacts = count, bytes = used, capacity = capacity_bytes, "artifact cache open");
        Ok(cache)
    }

    /// Where downloads are written before they join the cache (same filesystem: renames are
    /// atomic).
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn file_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    /// The cached artifact, pinned and marked most recently used; `None` on a miss.
    pub fn get(self: &Arc<Self>, sha256: &str) -> Option<CachedFile> {
        {
            let mut state = self.lock();
            let tick = state.tick();
            let entry = state.entries.get_mut(sha256)?;
            entry.last_used = tick;
            entry.pins += 1;
        }
        let path = self.file_path(sha256);
        // The order survives a restart through the file's modification time.
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Some(self.pinned(sha256, path))
    }

    /// Moves a verified download into the cache and returns it pinned, evicting least recently
    /// used artifacts to stay within the bound. An artifact larger than the whole cache is kept
    /// only while in use.
    pub fn insert(
        self: &Arc<Self>,
        sha256: &str,
        file: TempPath,
        size: u64,
    ) -> anyhow::Result<CachedFile> {
        let path = self.file_path(sha256);
        file.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("moving a download to {}", path.display()))?;
        let (evicted, used) = {
            let mut state = self.lock();
            let last_used = state.tick();
            let previous = state.entries.insert(
                sha256.to_owned(),
                Entry {
                    size,
                    last_used,
                    pins: 1,
                },
            );
            if let Some(previous) = previous {
                // Re-fetched after its file went bad: same digest, same bytes.
                state.used -= previous.size;
            }
            state.used += size;
            let evicted = state.evict_to_fit(self.capacity, Some(sha256));
            (evicted, state.used)
        };
        self.metrics.artifacts.set_cache_bytes(used);
        self.remove_files(evicted);
        Ok(self.pinned(sha256, path))
    }

    /// Drops an artifact whose file turned out unreadable or corrupt.
    pub fn discard(&self, sha256: &str) {
        let removed = {
            let mut state = self.lock();
            state.entries.remove(sha256).map(|entry| {
                state.used -= entry.size;
                (sha256.to_owned(), entry.size)
            })
        };
        self.remove_files(removed.into_iter().collect());
    }

    fn pinned(self: &Arc<Self>, sha256: &str, path: PathBuf) -> CachedFile {
        CachedFile {
            path,
            _pin: Arc::new(Pin {
                cache: self.clone(),
                sha256: sha256.to_owned(),
            }),
        }
    }

    fn remove_files(&self, evicted: Vec<(String, u64)>) {
        for (sha256, size) in evicted {
            let path = self.file_path(&sha256);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(
                    sha256,
                    bytes = size,
                    "evicted an artifact from the disk cache"
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an evicted artifact")
                }
            }
            self.metrics.artifacts.record_eviction();
        }
        self.metrics.artifacts.set_cache_bytes(self.lock().used);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(cache: &DiskCache, bytes: &[u8]) -> TempPath {
        let file = tempfile::NamedTempFile::new_in(cache.staging_dir()).unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file.into_temp_path()
    }

    fn sha(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn cached(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn least_recently_used_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 25, Default::default()).unwrap();
        drop(cache.insert(&sha(1), staged(&cache, &[1; 10]), 10).unwrap());
        drop(cache.insert(&sha(2), staged(&cache, &[2; 10]), 10).unwrap());
        drop(cache.get(&sha(1)).unwrap());
        drop(cache.insert(&sha(3), staged(&cache, &[3; 10]), 10).unwrap());
        assert_eq!(cached(dir.path()), vec![sha(1), sha(3)]);
        assert!(cache.get(&sha(2)).is_none());
    }

    #[test]
    fn pinned_artifacts_stay_until_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 15, Default::default()).unwrap();
        let first = cache.insert(&sha(1), staged(&cache, &[1; 10]), 10).unwrap();
        let second = cache.insert(&sha(2), staged(&cache, &[2; 10]), 10).unwrap();
        assert_eq!(
            cached(dir.path()).len(),
            2,
            "both in use: over the bound for now"
        );
        drop(first);
        assert_eq!(cached(dir.path()), vec![sha(2)]);
        assert_eq!(std::fs::read(&second.path).unwrap(), vec![2; 10]);
    }

    #[test]
    fn the_index_survives_a_restart_in_use_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = DiskCache::open(dir.path(), 100, Default::default()).unwrap();
            for n in 1..=3 {
                drop(cache.insert(&sha(n), staged(&cache, &[n; 10]), 10).unwrap());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            drop(cache.get(&sha(1)).unwrap());
            std::fs::write(cache.staging_dir().join("download-x"), b"partial").unwrap();
        }
        // Reopened smaller: the two least recently used (2, then 3) go.
        let cache = DiskCache::open(dir.path(), 10, Default::default()).unwrap();
        assert_eq!(cached(dir.path()), vec![sha(1)]);
        assert_eq!(
            std::fs::read(cache.get(&sha(1)).unwrap().path).unwrap(),
            vec![1; 10]
        );
        assert_eq!(std::fs::read_dir(cache.staging_dir()).unwrap().count(), 0);
    }

    #[test]
    fn an_artifact_larger_than_the_cache_is_kept_only_while_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 5, Default::default()).unwrap();
        let big = cache.insert(&sha(1), staged(&cache, &[1; 10]), 10).unwrap();
        assert!(big.path.exists());
        drop(big);
        assert!(cached(dir.path()).is_empty());
    }
}
