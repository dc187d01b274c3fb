//! Verified downloads: an object streams from S3 into a temp file, each chunk hashed as it
//! arrives (while it is hot in the cache) and handed to a blocking thread that writes it (network
//! reads never wait on the disk); a stall or broken body is resumed with a ranged GET pinned to the
//! object's ETag, and the file is handed over only when its sha256 is the expected one. On any
//! failure the temp file is removed. (Measured on 2 cores beside the S3 server, batching chunks
//! for the writer or hashing on the writer thread were both slower; see docs/benchmarks.md.)

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::S3Store;
use super::config::{INITIAL_BACKOFF, MAX_BACKOFF};
use crate::RegistryError;
use crate::blobs::{DownloadStats, Downloaded, S3Uri};

/// Chunks (a few KiB each) buffered between the network and the writer thread.
const QUEUE_CHUNKS: usize = 64;
/// Write buffer of the temp file.
const WRITE_BUFFER: usize = 1 << 20;

/// Downloads `uri` into a temp file in `dir` and checks that it hashes to `expected_sha256`.
pub(in crate::blobs) async fn download(
    store: &S3Store,
    uri: &S3Uri,
    expected_sha256: &str,
    dir: &Path,
) -> Result<Downloaded, RegistryError> {
    let started = Instant::now();
    let dir = dir.to_path_buf();
    let (file, temp) = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new()
            .prefix("download-")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temp file in {}", dir.display()))
    })
    .await
    .context("temp file task failed")??
    .into_parts();

    let (chunks, queue) = mpsc::channel::<Bytes>(QUEUE_CHUNKS);
    let writer = tokio::task::spawn_blocking(move || write(file, queue));
    let mut received = Received::default();
    let fetched = fetch(store, uri, chunks, &mut received).await;
    let written = writer.await.context("download writer task failed")?;
    // A writer failure (disk full) is the cause when both failed: the fetch only saw it stop.
    written.with_context(|| format!("writing the download of {uri}"))?;
    let requests = fetched?;

    let actual = hex::encode(received.hasher.finalize());
    if actual != expected_sha256 {
        return Err(RegistryError::internal(format!(
            "sha256 mismatch: {uri} hashes to sha256 {actual}, but sha256 {expected_sha256} was \
             expected; the download was discarded"
        )));
    }
    Ok(Downloaded {
        file: temp,
        size: received.bytes,
        stats: DownloadStats {
            elapsed: started.elapsed(),
            hashing: received.hashing,
            requests,
        },
    })
}

/// What has arrived so far: its running hash, its size and the time spent hashing.
#[derive(Default)]
struct Received {
    hasher: Sha256,
    bytes: u64,
    hashing: Duration,
}

impl Received {
    fn add(&mut self, chunk: &[u8]) {
        let started = Instant::now();
        self.hasher.update(chunk);
        self.hashing += started.elapsed();
        self.bytes += chunk.len() as u64;
    }
}

/// Why one GET's body stopped early; the next attempt resumes where it stopped.
struct Interrupted(String);

/// GETs `uri` into `received` and `chunks`, resuming a broken body up to the configured
/// attempts. Returns the GET requests made.
async fn fetch(
    store: &S3Store,
    uri: &S3Uri,
    chunks: mpsc::Sender<Bytes>,
    received: &mut Received,
) -> Result<u32, RegistryError> {
    let config = store.config();
    let mut etag: Option<String> = None;
    let mut requests = 0u32;
    loop {
        requests += 1;
        let mut request = store
            .client()
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key);
        if received.bytes > 0 {
            request = request.range(format!("bytes={}-", received.bytes));
            if let Some(etag) = &etag {
                // The rest of the same object, or a 412 if it changed meanwhile.
                request = request.if_match(etag);
            }
        }
        let mut answer = match request.send().await {
            Ok(answer) => answer,
            Err(error) => {
                return Err(match store.classify(error, &format!("downloading {uri}")) {
                    RegistryError::NotFound(_) => {
                        RegistryError::NotFound(format!("there is no object at {uri}"))
                    }
                    other => other,
                });
            }
        };
        if etag.is_none() {
            etag = answer.e_tag().map(str::to_owned);
        }
        let interrupted = loop {
            match tokio::time::timeout(config.timeout, answer.body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    received.add(&chunk);
                    if chunks.send(chunk).await.is_err() {
                        return Err(RegistryError::internal(format!(
                            "the download of {uri} stopped: its writer failed"
                        )));
                    }
                }
                Ok(None) => return Ok(requests),
                Ok(Some(Err(error))) => break Interrupted(format!("{error}")),
                Err(_) => {
                    break Interrupted(format!("no data for {} ms", config.timeout.as_millis()));
                }
            }
        };
        if requests >= config.max_attempts.max(1) {
            return Err(RegistryError::Unavailable(format!(
                "the download of {uri} broke off after {} bytes and {requests} attempts: {}",
                received.bytes, interrupted.0
            )));
        }
        tracing::warn!(object = %uri, received = received.bytes, reason = %interrupted.0, "download interrupted; resuming");
        tokio::time::sleep(backoff(requests)).await;
    }
}

/// The pause after the `attempt`th failed attempt.
fn backoff(attempt: u32) -> Duration {
    INITIAL_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// The writer thread: writes every chunk until the queue closes.
fn write(file: std::fs::File, mut queue: mpsc::Receiver<Bytes>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    while let Some(chunk) = queue.blocking_recv() {
        out.write_all(&chunk)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), INITIAL_BACKOFF);
        assert_eq!(backoff(2), INITIAL_BACKOFF * 2);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
