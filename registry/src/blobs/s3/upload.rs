//! Streamed uploads to S3: the body is hashed as it arrives and sent in parts of
//! [`PART_BYTES`], a few at a time, so memory stays at about `(PARTS_IN_FLIGHT + 1) * PART_BYTES`
//! whatever the size. A body that fits in one part is one PUT. With the digest announced
//! (`x-nimbus-sha256`) the parts go straight to the blob's key and the digest is checked before the
//! upload is completed; without it they go to a staging key that is copied into place once the
//! digest is known. A failed, refused or abandoned upload is aborted.

use std::pin::Pin;

use anyhow::Context;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::{ChecksumMode, S3Store};
use crate::blobs::{BoxError, S3Uri};
use crate::{BlobInfo, RegistryError};

/// Bytes per part (S3 wants at least 5 MiB in every part but the last).
const PART_BYTES: usize = 8 << 20;
/// Parts sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Stores the bytes of `body` under their digest (see `BlobStore::put_stream`).
pub(in crate::blobs) async fn put_stream<S, E>(
    store: &S3Store,
    body: S,
    expected_sha256: Option<&str>,
    max_bytes: u64,
) -> Result<BlobInfo, RegistryError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    let mut body = Body {
        stream: Box::pin(body),
        hasher: Sha256::new(),
        size: 0,
        max_bytes,
        ended: false,
    };
    if let Some(expected) = expected_sha256
        && store
            .object_size(&store.blob_uri(expected))
            .await?
            .is_some()
    {
        // Already stored: take in and check the bytes, send nothing.
        while body.next_part().await?.is_some() {}
        return body.finish(expected_sha256);
    }

    let first = body.next_part().await?.unwrap_or_default();
    if body.ended {
        let blob = body.finish(expected_sha256)?;
        let target = store.blob_uri(&blob.sha256);
        let request = store
            .client()
            .put_object()
            .bucket(&target.bucket)
            .key(&target.key)
            .body(ByteStream::from(first));
        if let Err(error) = request.send().await {
            return Err(store.classify(error, &format!("uploading {target}")));
        }
        return Ok(blob);
    }

    let target = match expected_sha256 {
        Some(expected) => store.blob_uri(expected),
        None => store.staging_uri(&random_id()?),
    };
    let mut upload = Multipart::create(store, target).await?;
    upload.send(first);
    while let Some(part) = body.next_part().await? {
        upload.send(part);
        upload.wait_while_busy().await?;
    }
    let blob = body.finish(expected_sha256);
    let blob = match blob {
        Ok(blob) => blob,
        Err(error) => {
            upload.abort().await;
            return Err(error);
        }
    };
    let staged = upload.complete().await?;
    let target = store.blob_uri(&blob.sha256);
    if staged != target {
        let copied = copy_into_place(store, &staged, &target).await;
        store.delete_quietly(&staged).await;
        copied?;
    }
    Ok(blob)
}

/// The upload's body: hashed and counted as it is read.
struct Body<S> {
    stream: Pin<Box<S>>,
    hasher: Sha256,
    size: u64,
    max_bytes: u64,
    ended: bool,
}

impl<S, E> Body<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    /// The next part: at least [`PART_BYTES`] unless the body ends first; `None` at the end.
    async fn next_part(&mut self) -> Result<Option<Bytes>, RegistryError> {
        let mut part = BytesMut::new();
        while part.len() < PART_BYTES {
            let Some(chunk) = self.stream.next().await else {
                self.ended = true;
                break;
            };
            let chunk = chunk.map_err(|e| {
                RegistryError::BadRequest(format!("reading the upload failed: {}", e.into()))
            })?;
            self.size += chunk.len() as u64;
            if self.size > self.max_bytes {
                return Err(RegistryError::TooLarge(format!(
                    "upload is larger than the limit of {} bytes",
                    self.max_bytes
                )));
            }
            self.hasher.update(&chunk);
            if part.is_empty() {
                part.reserve(PART_BYTES.max(chunk.len()));
            }
            part.extend_from_slice(&chunk);
        }
        Ok((!part.is_empty()).then(|| part.freeze()))
    }

    /// The digest and size of everything read, checked against the announced digest.
    fn finish(self, expected_sha256: Option<&str>) -> Result<BlobInfo, RegistryError> {
        let sha256 = hex::encode(self.hasher.finalize());
        if let Some(expected) = expected_sha256
            && expected != sha256
        {
            return Err(RegistryError::BadRequest(format!(
                "upload hashes to sha256 {sha256}, but {expected} was expected"
            )));
        }
        Ok(BlobInfo {
            sha256,
            size: self.size,
        })
    }
}

/// A multipart upload in progress. Dropped before [`Multipart::complete`], it aborts itself in
/// the background, so S3 keeps no orphaned parts (when S3 is reachable).
struct Multipart {
    store: S3Store,
    target: S3Uri,
    upload_id: String,
    checksums: bool,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, RegistryError>>,
    done: Vec<CompletedPart>,
    finished: bool,
}

impl Multipart {
    async fn create(store: &S3Store, target: S3Uri) -> Result<Multipart, RegistryError> {
        let checksums = store.config().checksums == ChecksumMode::WhenSupported;
        let mut request = store
            .client()
            .create_multipart_upload()
            .bucket(&target.bucket)
            .key(&target.key);
        if checksums {
            request = request.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        let created = request
            .send()
            .await
            .map_err(|e| store.classify(e, &format!("starting an upload to {target}")))?;
        let upload_id = created.upload_id().map(str::to_owned).ok_or_else(|| {
            RegistryError::internal(format!("S3 started an upload to {target} without an id"))
        })?;
        Ok(Multipart {
            store: store.clone(),
            target,
            upload_id,
            checksums,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            finished: false,
        })
    }

    /// Starts sending one part.
    fn send(&mut self, part: Bytes) {
        let number = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let target = self.target.clone();
        let upload_id = self.upload_id.clone();
        let checksums = self.checksums;
        self.in_flight.spawn(async move {
            let mut request = store
                .client()
                .upload_part()
                .bucket(&target.bucket)
                .key(&target.key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part));
            if checksums {
                request = request.checksum_algorithm(ChecksumAlgorithm::Crc32);
            }
            let sent = request
                .send()
                .await
                .map_err(|e| store.classify(e, &format!("uploading part {number} of {target}")))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(str::to_owned))
                .set_checksum_crc32(sent.checksum_crc32().map(str::to_owned))
                .build())
        });
    }

    /// Waits until fewer than [`PARTS_IN_FLIGHT`] parts are being sent.
    async fn wait_while_busy(&mut self) -> Result<(), RegistryError> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<(), RegistryError> {
        if let Some(joined) = self.in_flight.join_next().await {
            let part = joined.context("a part upload task failed")??;
            self.done.push(part);
        }
        Ok(())
    }

    /// Waits for the parts and completes the upload; returns where the object now is.
    async fn complete(mut self) -> Result<S3Uri, RegistryError> {
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let completed = self
            .store
            .client()
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&self.target.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        completed.map_err(|e| {
            self.store
                .classify(e, &format!("completing the upload to {}", self.target))
        })?;
        self.finished = true;
        Ok(self.target.clone())
    }

    /// Stops the parts in flight and aborts the upload now.
    async fn abort(mut self) {
        self.in_flight.abort_all();
        self.finished = true;
        abort(&self.store, &self.target, &self.upload_id).await;
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.in_flight.abort_all();
        let store = self.store.clone();
        let target = self.target.clone();
        let upload_id = std::mem::take(&mut self.upload_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { abort(&store, &target, &upload_id).await });
        }
    }
}

async fn abort(store: &S3Store, target: &S3Uri, upload_id: &str) {
    let aborted = store
        .client()
        .abort_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(upload_id)
        .send()
        .await;
    match aborted {
        Ok(_) => tracing::info!(object = %target, "aborted an unfinished upload"),
        Err(error) => {
            tracing::warn!(object = %target, error = %DisplayErrorContext(&error), "cannot abort an unfinished upload")
        }
    }
}

/// Copies a staged upload to its blob key (server-side), unless the blob is already there.
async fn copy_into_place(
    store: &S3Store,
    staged: &S3Uri,
    target: &S3Uri,
) -> Result<(), RegistryError> {
    if store.object_size(target).await?.is_some() {
        return Ok(());
    }
    let source = format!("{}/{}", staged.bucket, encode_key(&staged.key));
    store
        .client()
        .copy_object()
        .bucket(&target.bucket)
        .key(&target.key)
        .copy_source(source)
        .send()
        .await
        .map_err(|e| store.classify(e, &format!("copying {staged} to {target}")))?;
    Ok(())
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and unreserved characters.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A random name for a staged upload.
fn random_id() -> Result<String, RegistryError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| RegistryError::internal(format!("OS random source failed: {e}")))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(encode_key("p/uploads/ab12"), "p/uploads/ab12");
        assert_eq!(encode_key("a b/ü+x"), "a%20b/%C3%BC%2Bx");
    }
}
