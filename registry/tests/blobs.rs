//! The content-addressed blob store.

mod common;

use bytes::Bytes;
use futures::StreamExt;
use nimbus_registry::RegistryError;

const HELLO: &[u8] = b"hello world";
const HELLO_SHA256: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

fn leftovers(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    common::files_under(&root.join("tmp"))
}

#[tokio::test]
async fn put_stream_computes_the_sha256_and_stores_content_addressed() {
    let (_dir, registry) = common::open().await;
    let blobs = registry.blobs();
    let info = blobs
        .put_stream(common::chunks(HELLO, 3), None, 1024)
        .await
        .unwrap();
    assert_eq!(info.sha256, HELLO_SHA256);
    assert_eq!(info.size, HELLO.len() as u64);
    let path = blobs.path(HELLO_SHA256).await.unwrap();
    assert_eq!(
        path,
        blobs
            .local_root()
            .unwrap()
            .join("sha256")
            .join("b9")
            .join(HELLO_SHA256)
    );
    assert_eq!(
        blobs.read(HELLO_SHA256).await.unwrap(),
        Bytes::from_static(HELLO)
    );
    assert!(blobs.exists(HELLO_SHA256).await);
    assert!(leftovers(blobs.local_root().unwrap()).is_empty());
}

#[tokio::test]
async fn put_stream_accepts_the_expected_digest() {
    let (_dir, registry) = common::open().await;
    let info = registry
        .blobs()
        .put_stream(common::chunks(HELLO, 4), Some(HELLO_SHA256), 1024)
        .await
        .unwrap();
    assert_eq!(info.sha256, HELLO_SHA256);
}

#[tokio::test]
async fn put_stream_refuses_a_digest_mismatch_and_leaves_no_file() {
    let (_dir, registry) = common::open().await;
    let blobs = registry.blobs();
    let wrong = "0".repeat(64);
    let err = blobs
        .put_stream(common::chunks(HELLO, 4), Some(&wrong), 1024)
        .await
        .unwrap_err();
    match err {
        RegistryError::BadRequest(message) => {
            assert!(
                message.contains(&wrong) && message.contains(HELLO_SHA256),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(common::files_under(blobs.local_root().unwrap()).is_empty());
    assert!(!blobs.exists(HELLO_SHA256).await);
}

#[tokio::test]
async fn put_stream_refuses_more_than_max_bytes_and_leaves_no_file() {
    let (_dir, registry) = common::open().await;
    let blobs = registry.blobs();
    let data = vec![7u8; 10_000];
    let err = blobs
        .put_stream(common::chunks(&data, 1000), None, 9_999)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge(_)), "{err:?}");
    assert!(common::files_under(blobs.local_root().unwrap()).is_empty());
    // Exactly at the cap is fine.
    blobs
        .put_stream(common::chunks(&data, 1000), None, 10_000)
        .await
        .unwrap();
}

#[tokio::test]
async fn put_stream_refuses_a_failing_body_and_leaves_no_file() {
    let (_dir, registry) = common::open().await;
    let blobs = registry.blobs();
    let body = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("client went away")),
    ]);
    let err = blobs.put_stream(body, None, 1024).await.unwrap_err();
    match err {
        RegistryError::BadRequest(message) => assert!(message.contains("client went away")),
        other => panic!("{other:?}"),
    }
    assert!(common::files_under(blobs.local_root().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_the_same_bytes_both_succeed_with_one_file() {
    let (_dir, registry) = common::open().await;
    let blobs = registry.blobs().clone();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let blobs = blobs.clone();
            let data = data.clone();
            tokio::spawn(async move {
                blobs
                    .put_stream(common::chunks(&data, 64 * 1024), None, u64::MAX)
                    .await
            })
        })
        .collect();
    let mut digests = Vec::new();
    for task in tasks {
        digests.push(task.await.unwrap().unwrap().sha256);
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    let files = common::files_under(blobs.local_root().unwrap());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(blobs.read(&digests[0]).await.unwrap().len(), data.len());
}

#[tokio::test]
async fn put_file_stores_a_copy_of_the_file() {
    let (dir, registry) = common::open().await;
    let source = dir.path().join("model.onnx");
    std::fs::write(&source, HELLO).unwrap();
    let info = registry
        .blobs()
        .put_file(&source, Some(HELLO_SHA256))
        .await
        .unwrap();
    assert_eq!(info.sha256, HELLO_SHA256);
    assert!(source.exists());
    assert_eq!(registry.blobs().read(HELLO_SHA256).await.unwrap(), HELLO);
}

#[tokio::test]
async fn read_reports_a_corrupt_blob_by_digest() {
    let (_dir, registry) = common::open().await;
    let blobs = registry.blobs();
    blobs
        .put_stream(common::chunks(HELLO, 4), None, 1024)
        .await
        .unwrap();
    let path = blobs.path(HELLO_SHA256).await.unwrap();
    std::fs::write(&path, b"hello w0rld").unwrap();
    let err = blobs.read(HELLO_SHA256).await.unwrap_err();
    assert!(matches!(err, RegistryError::Internal(_)), "{err:?}");
    assert!(err.to_string().contains(HELLO_SHA256), "{err}");
}

#[tokio::test]
async fn digests_that_are_not_64_lowercase_hex_never_reach_a_path() {
    let (_dir, registry) = common::open().await;
    let blobs = registry.blobs();
    for bad in [
        "../../../../etc/passwd",
        "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9",
        "b94d27b9",
        "",
    ] {
        assert!(matches!(
            blobs.path(bad).await,
            Err(RegistryError::BadRequest(_))
        ));
        assert!(matches!(
            blobs.read(bad).await,
            Err(RegistryError::BadRequest(_))
        ));
        assert!(!blobs.exists(bad).await);
        let put = blobs
            .put_stream(common::chunks(HELLO, 4), Some(bad), 1024)
            .await;
        assert!(matches!(put, Err(RegistryError::BadRequest(_))));
    }
    let absent = "f".repeat(64);
    assert!(matches!(
        blobs.path(&absent).await,
        Err(RegistryError::NotFound(_))
    ));
}

#[tokio::test]
async fn record_blob_needs_the_stored_blob_with_its_size() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let err = registry
        .record_blob("acme", HELLO_SHA256, 11)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
    registry
        .blobs()
        .put_stream(common::chunks(HELLO, 4), None, 1024)
        .await
        .unwrap();
    let err = registry
        .record_blob("acme", HELLO_SHA256, 12)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BadRequest(_)), "{err:?}");
    registry
        .record_blob("acme", HELLO_SHA256, 11)
        .await
        .unwrap();
    registry
        .record_blob("acme", HELLO_SHA256, 11)
        .await
        .unwrap();
    assert_eq!(
        registry
            .tenant_has_blob("acme", HELLO_SHA256)
            .await
            .unwrap(),
        Some(11)
    );
}

#[tokio::test]
async fn put_stream_takes_a_hyper_style_body_as_a_data_stream() {
    use http_body_util::{BodyExt, Full};
    let (_dir, registry) = common::open().await;
    let body = Full::new(Bytes::from_static(HELLO));
    let info = registry
        .blobs()
        .put_stream(body.into_data_stream(), Some(HELLO_SHA256), 1024)
        .await
        .unwrap();
    assert_eq!(info.size, HELLO.len() as u64);
}

#[tokio::test]
async fn a_dropped_upload_leaves_no_file() {
    let (_dir, registry) = common::open().await;
    let blobs = registry.blobs();
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"start"))])
        .chain(futures::stream::pending());
    let upload = blobs.put_stream(body, None, 1024);
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(200), upload).await;
    assert!(timed_out.is_err());
    assert!(common::files_under(blobs.local_root().unwrap()).is_empty());
}
