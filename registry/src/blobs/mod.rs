//! The content-addressed blob store (function wasm, model files): [`BlobStore`], one API over a
//! local folder (`local`, the embedded default) or a bucket of S3-compatible storage (`s3`), plus
//! reads of objects that users put in S3 themselves and register by [`S3Uri`]. Blobs are named by
//! the sha256 of their bytes, hashed while they stream in and checked again whenever they are read.
//! Ownership of blobs per tenant is recorded by the registry, not here; keeping downloaded blobs on
//! a node is the runtime's artifact cache.

mod local;
mod s3;
mod uri;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tempfile::TempPath;

pub use s3::{ChecksumMode, S3Config, S3Credentials};
pub use uri::S3Uri;

use crate::{BlobInfo, RegistryError, validate};

/// The boxed error a body stream may yield (what `hyper::Error`, `std::io::Error` and
/// `Infallible` convert into).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A content-addressed blob store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

/// A blob downloaded and verified into a temp file (removed when dropped; persist it to keep it).
#[derive(Debug)]
pub struct Downloaded {
    pub file: TempPath,
    pub size: u64,
    pub stats: DownloadStats,
}

/// What a download cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct DownloadStats {
    /// From the first request to the last byte on disk (hashing runs alongside).
    pub elapsed: Duration,
    /// Time spent hashing, overlapped with the transfer.
    pub hashing: Duration,
    /// GET requests made (more than one when a broken transfer was resumed).
    pub requests: u32,
}

impl BlobStore {
    /// Opens (creating when needed) a store in the local folder `root`, and clears stale staged
    /// uploads.
    pub async fn open(root: &Path) -> anyhow::Result<BlobStore> {
        Ok(BlobStore {
            backend: Backend::Local(local::LocalStore::open(root).await?),
        })
    }

    /// A store in an S3 bucket. Contacts nothing: [`BlobStore::ping`] tells whether the bucket
    /// answers to the credentials.
    pub async fn open_s3(config: S3Config) -> Result<BlobStore, RegistryError> {
        Ok(BlobStore {
            backend: Backend::S3(s3::S3Store::open(config).await?),
        })
    }

    /// Where blobs are kept, for logs: a folder, or `s3://bucket/prefix at <endpoint>`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(local) => local.root().display().to_string(),
            Backend::S3(s3) => s3.describe(),
        }
    }

    /// The folder of a local store (`None` for S3). Blobs there are read in place.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(local) => Some(local.root()),
            Backend::S3(_) => None,
        }
    }

    /// Whether the store answers: the folders exist, or the bucket answers to the credentials
    /// (for startup and /readyz). `Unavailable` names what is wrong.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        match &self.backend {
            Backend::Local(local) => local.ping().await,
            Backend::S3(s3) => s3.ping().await,
        }
    }

    /// Stores the bytes of `body` and returns their digest and size.
    ///
    /// `body` is a stream of byte chunks; a hyper body adapts with
    /// `http_body_util::BodyExt::into_data_stream(body)` (or `BodyDataStream::new`). Chunks are
    /// hashed as they arrive and memory stays bounded whatever the size (a temp file for the local
    /// folder; a multipart upload for S3). More than `max_bytes` -> `TooLarge`; a digest other than
    /// `expected_sha256` -> `BadRequest` naming both, and nothing is stored; a stream error ->
    /// `BadRequest`. Partial uploads are removed on every error path, including when the returned
    /// future is dropped. Storing bytes that are already present succeeds and leaves one copy.
    pub async fn put_stream<S, E>(
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
        match &self.backend {
            Backend::Local(local) => local.put_stream(body, expected_sha256, max_bytes).await,
            Backend::S3(s3) => s3::put_stream(s3, body, expected_sha256, max_bytes).await,
        }
    }

    /// Stores a copy of the file at `path` (no size cap).
    pub async fn put_file(
        &self,
        path: &Path,
        expected_sha256: Option<&str>,
    ) -> Result<BlobInfo, RegistryError> {
        match &self.backend {
            Backend::Local(local) => local.put_file(path, expected_sha256).await,
            Backend::S3(_) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| {
                    anyhow::Error::new(e).context(format!("opening {}", path.display()))
                })?;
                let chunks = file_chunks(file);
                self.put_stream(chunks, expected_sha256, u64::MAX).await
            }
        }
    }

    /// The path of a blob in a local store; `NotFound` when it is absent, `Internal` for S3 (whose
    /// blobs reach a node through the runtime's artifact cache).
    pub async fn path(&self, sha256: &str) -> Result<PathBuf, RegistryError> {
        match &self.backend {
            Backend::Local(local) => local.path(sha256).await,
            Backend::S3(s3) => Err(RegistryError::internal(format!(
                "blobs are in {}, not in a local folder",
                s3.describe()
            ))),
        }
    }

    /// The size of a stored blob; `None` when it is absent.
    pub async fn size(&self, sha256: &str) -> Result<Option<u64>, RegistryError> {
        validate::digest(sha256)?;
        match &self.backend {
            Backend::Local(local) => local.size(sha256).await,
            Backend::S3(s3) => s3.object_size(&s3.blob_uri(sha256)).await,
        }
    }

    /// Whether a blob with this digest is stored (`false` for anything that is not a digest, and
    /// when the store cannot be asked).
    pub async fn exists(&self, sha256: &str) -> bool {
        validate::is_digest(sha256) && matches!(self.size(sha256).await, Ok(Some(_)))
    }

    /// Deletes the store's copy of a blob (idempotent: an absent blob is not an error). Only
    /// the registry's garbage collection calls this, once nothing refers to the blob.
    pub async fn delete(&self, sha256: &str) -> Result<(), RegistryError> {
        validate::digest(sha256)?;
        match &self.backend {
            Backend::Local(local) => match local.path(sha256).await {
                Ok(path) => match tokio::fs::remove_file(&path).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(anyhow::Error::new(e)
                            .context(format!("deleting blob {sha256}"))
                            .into())
                    }
                    _ => Ok(()),
                },
                Err(RegistryError::NotFound(_)) => Ok(()),
                Err(other) => Err(other),
            },
            Backend::S3(s3) => {
                let uri = s3.blob_uri(sha256);
                match s3
                    .client()
                    .delete_object()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(error) => match s3.classify(error, &format!("deleting {uri}")) {
                        RegistryError::NotFound(_) => Ok(()),
                        other => Err(other),
                    },
                }
            }
        }
    }

    /// The size of the object at `uri`, which must be in the S3 service this store uses; `None`
    /// when there is no such object. A local store has no S3: `BadRequest`.
    pub async fn object_size(&self, uri: &S3Uri) -> Result<Option<u64>, RegistryError> {
        match &self.backend {
            Backend::S3(s3) => s3.object_size(uri).await,
            Backend::Local(_) => Err(no_s3(uri)),
        }
    }

    /// The whole blob in memory, after checking that its bytes still hash to `sha256`. For big
    /// blobs prefer [`BlobStore::download`] (S3) or [`BlobStore::path`] (local).
    pub async fn read(&self, sha256: &str) -> Result<Bytes, RegistryError> {
        match &self.backend {
            Backend::Local(local) => local.read(sha256).await,
            Backend::S3(_) => {
                let dir = tempfile::tempdir()
                    .map_err(|e| anyhow::Error::new(e).context("creating a temp folder"))?;
                let downloaded = self.download(sha256, None, dir.path()).await?;
                let bytes = tokio::fs::read(&downloaded.file).await.map_err(|e| {
                    anyhow::Error::new(e).context(format!("reading the download of {sha256}"))
                })?;
                Ok(Bytes::from(bytes))
            }
        }
    }

    /// Downloads a blob from S3 into a temp file in `dir`, checking while it streams that its
    /// bytes hash to `sha256`: the store's own copy (`source = None`) or an object registered by
    /// URI. A mismatch is an error naming both digests and leaves nothing behind. Storage that
    /// cannot be reached, or a transfer that stalls past the time limit on every attempt, is
    /// `Unavailable`. A local store has nothing to download (read blobs in place):
    /// `BadRequest`.
    pub async fn download(
        &self,
        sha256: &str,
        source: Option<&S3Uri>,
        dir: &Path,
    ) -> Result<Downloaded, RegistryError> {
        validate::digest(sha256)?;
        match &self.backend {
            Backend::S3(s3) => {
                let own;
                let uri = match source {
                    Some(uri) => uri,
                    None => {
                        own = s3.blob_uri(sha256);
                        &own
                    }
                };
                s3::download(s3, uri, sha256, dir).await
            }
            Backend::Local(local) => Err(RegistryError::BadRequest(format!(
                "blobs are in the local folder {}: read them in place",
                local.root().display()
            ))),
        }
    }
}

fn no_s3(uri: &S3Uri) -> RegistryError {
    RegistryError::BadRequest(format!(
        "{uri} cannot be used: this node keeps blobs in a local folder; objects in S3 need S3 \
         storage (--s3-bucket)"
    ))
}

/// A file as a stream of chunks.
fn file_chunks(file: tokio::fs::File) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}
