//! The blob store's local folder backend (the embedded default):
//! `<root>/sha256/<ab>/<64 hex>`, with uploads staged in `<root>/tmp/`. A blob is written once,
//! hashed while it streams in, fsynced and renamed into place, so a path that exists always holds
//! complete bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use super::BoxError;
use crate::keys::sync_dir;
use crate::{BlobInfo, RegistryError, validate};

/// Write buffer of an upload: memory per upload stays around this plus one body chunk.
const BUFFER: usize = 256 * 1024;
/// Staged uploads older than this are removed when the store opens (left by a crash).
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// A content-addressed blob store in a local folder. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct LocalStore {
    root: Arc<PathBuf>,
}

impl LocalStore {
    /// Opens (creating when needed) a store rooted at `root`, and clears stale staged uploads.
    pub(super) async fn open(root: &Path) -> anyhow::Result<LocalStore> {
        let root = root.to_path_buf();
        let store = LocalStore {
            root: Arc::new(root.clone()),
        };
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for dir in [root.join("sha256"), root.join("tmp")] {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            remove_stale_temps(&root.join("tmp"));
            Ok(())
        })
        .await
        .context("blob store open task failed")??;
        Ok(store)
    }

    /// The folder the store lives in.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the store's folders are there (for /readyz).
    pub(super) async fn ping(&self) -> Result<(), RegistryError> {
        for dir in ["sha256", "tmp"] {
            let path = self.root.join(dir);
            let meta = tokio::fs::metadata(&path)
                .await
                .with_context(|| format!("blob store folder {}", path.display()))?;
            if !meta.is_dir() {
                return Err(RegistryError::internal(format!(
                    "blob store path {} is not a folder",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Stores the bytes of `body` and returns their digest and size.
    ///
    /// `body` is a stream of byte chunks; a hyper body adapts with
    /// `http_body_util::BodyExt::into_data_stream(body)` (or `BodyDataStream::new`). Chunks are
    /// hashed and written to a temp file as they arrive (bounded memory), then fsynced and renamed
    /// into place. More than `max_bytes` -> `TooLarge`; a digest other than `expected_sha256` ->
    /// `BadRequest` naming both; a stream error -> `BadRequest`. The temp file is removed on every
    /// error path, including when the returned future is dropped. Storing bytes that are already
    /// present succeeds and leaves one file.
    pub(super) async fn put_stream<S, E>(
        &self,
        body: S,
        expected_sha256: Option<&str>,
        max_bytes: u64,
    ) -> Result<BlobInfo, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<BoxError>,
    {
        if let Some(expected) = expected_sha256 {
            validate::digest(expected)?;
        }
        let mut body = std::pin::pin!(body);
        let mut upload = Upload::start(self, max_bytes).await?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                RegistryError::BadRequest(format!("reading the upload failed: {}", e.into()))
            })?;
            upload.write(&chunk).await?;
        }
        upload.finish(self, expected_sha256).await
    }

    /// Stores a copy of the file at `path` (no size cap).
    pub(super) async fn put_file(
        &self,
        path: &Path,
        expected_sha256: Option<&str>,
    ) -> Result<BlobInfo, RegistryError> {
        if let Some(expected) = expected_sha256 {
            validate::digest(expected)?;
        }
        let mut file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let mut upload = Upload::start(self, u64::MAX).await?;
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            upload.write(&buf[..n]).await?;
        }
        upload.finish(self, expected_sha256).await
    }

    /// The path of a stored blob; `NotFound` when it is absent.
    pub(super) async fn path(&self, sha256: &str) -> Result<PathBuf, RegistryError> {
        validate::digest(sha256)?;
        let path = self.blob_path(sha256);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(path),
            Ok(_) => Err(not_found(sha256)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found(sha256)),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("checking blob {sha256}"))
                .into()),
        }
    }

    /// The whole blob in memory, after checking that its bytes still hash to `sha256`.
    pub(super) async fn read(&self, sha256: &str) -> Result<Bytes, RegistryError> {
        let path = self.path(sha256).await?;
        let bytes = tokio::fs::read(&path)
            .await
            .with_context(|| format!("reading blob {sha256}"))?;
        let (bytes, actual) = tokio::task::spawn_blocking(move || {
            let actual = hex::encode(Sha256::digest(&bytes));
            (bytes, actual)
        })
        .await
        .context("hashing task failed")?;
        if actual != sha256 {
            return Err(RegistryError::internal(format!(
                "blob {sha256} is corrupt: its bytes hash to {actual} ({})",
                path.display()
            )));
        }
        Ok(Bytes::from(bytes))
    }

    /// The size of a stored blob; `None` when it is absent. `sha256` must have been validated.
    pub(super) async fn size(&self, sha256: &str) -> Result<Option<u64>, RegistryError> {
        match tokio::fs::metadata(self.blob_path(sha256)).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("checking blob {sha256}"))
                .into()),
        }
    }

    /// `<root>/sha256/<ab>/<hex>`; `sha256` must have been validated.
    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(&sha256[..2]).join(sha256)
    }
}

fn not_found(sha256: &str) -> RegistryError {
    RegistryError::NotFound(format!("blob `{sha256}` not found"))
}

/// An upload in progress: a temp file (removed when dropped unless renamed into place) and the
/// running hash.
struct Upload {
    file: BufWriter<tokio::fs::File>,
    temp: TempPath,
    hasher: Sha256,
    size: u64,
    max_bytes: u64,
}

impl Upload {
    async fn start(store: &LocalStore, max_bytes: u64) -> Result<Upload, RegistryError> {
        let dir = store.root.join("tmp");
        let (file, temp) = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix("upload-")
                .tempfile_in(&dir)
                .with_context(|| format!("creating a temp file in {}", dir.display()))
        })
        .await
        .context("temp file task failed")??
        .into_parts();
        Ok(Upload {
            file: BufWriter::with_capacity(BUFFER, tokio::fs::File::from_std(file)),
            temp,
            hasher: Sha256::new(),
            size: 0,
            max_bytes,
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), RegistryError> {
        self.size += chunk.len() as u64;
        if self.size > self.max_bytes {
            return Err(RegistryError::TooLarge(format!(
                "upload is larger than the limit of {} bytes",
                self.max_bytes
            )));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .context("writing an upload to the blob store")?;
        Ok(())
    }

    async fn finish(
        mut self,
        store: &LocalStore,
        expected_sha256: Option<&str>,
    ) -> Result<BlobInfo, RegistryError> {
        let sha256 = hex::encode(self.hasher.finalize());
        if let Some(expected) = expected_sha256
            && expected != sha256
        {
            return Err(RegistryError::BadRequest(format!(
                "upload hashes to sha256 {sha256}, but {expected} was expected"
            )));
        }
        self.file
            .flush()
            .await
            .context("writing an upload to the blob store")?;
        let file = self.file.into_inner();
        file.sync_all()
            .await
            .context("syncing an upload to the blob store")?;
        drop(file);

        let target = store.blob_path(&sha256);
        let temp = self.temp;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            if target.is_file() {
                // Same bytes are already stored; the temp file goes away with `temp`.
                return Ok(());
            }
            let dir = target.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // rename(2) replaces atomically: a concurrent put of the same bytes that gets there
            // first is overwritten with identical content, and readers see one or the other.
            temp.persist(&target)
                .map_err(|e| e.error)
                .with_context(|| format!("moving an upload to {}", target.display()))?;
            sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
            Ok(())
        })
        .await
        .context("blob store task failed")??;
        Ok(BlobInfo {
            sha256,
            size: self.size,
        })
    }
}

/// Best effort: removes staged uploads older than [`STALE_TEMP`].
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_TEMP));
        if old && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a stale upload");
        }
    }
}
