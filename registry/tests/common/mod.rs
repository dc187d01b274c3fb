//! Helpers shared by the integration tests: a registry in a temp dir and blob uploads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use nimbus_registry::{BlobInfo, ModelVersion, NewModelVersion, Registry};
use tempfile::TempDir;

pub async fn open() -> (TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).await.unwrap();
    (dir, registry)
}

/// A stream of the bytes in chunks of `chunk` bytes.
pub fn chunks(
    data: &[u8],
    chunk: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + use<> {
    let parts: Vec<_> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(parts)
}

/// Stores `data` and records it as a blob of `tenant`.
pub async fn upload(registry: &Registry, tenant: &str, data: &[u8]) -> BlobInfo {
    let info = registry
        .blobs()
        .put_stream(chunks(data, 7), None, u64::MAX)
        .await
        .unwrap();
    registry
        .record_blob(tenant, &info.sha256, info.size)
        .await
        .unwrap();
    info
}

/// Uploads `data` and pushes it as a model version.
pub async fn push_model(
    registry: &Registry,
    tenant: &str,
    name: &str,
    data: &[u8],
) -> ModelVersion {
    let blob = upload(registry, tenant, data).await;
    registry
        .create_model_version(
            tenant,
            NewModelVersion {
                name: name.to_string(),
                sha256: blob.sha256,
                engine: "onnxruntime".to_string(),
                target: "cpu".to_string(),
            },
        )
        .await
        .unwrap()
        .0
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out
}
