//! `nimbus-bench-s3`: model artifacts in S3 (a real SeaweedFS on loopback), in one run on one
//! machine:
//! - a cold model load on a fresh nimbusd (new data dir, model registered by URI), split into
//!   download, verify (hashing, which runs alongside the download) and engine load, from
//!   nimbusd's own metrics, with the first and a warm request's latency;
//! - download throughput: nimbusd's verified download (the registry's `BlobStore::download`, the
//!   code nimbusd runs: GET, hash and write to a temp file) against a plain aws-sdk-s3 GET of the
//!   same object streamed to a file, alternating runs, for the model and for a larger object.
//!
//!     cargo run --release -p nimbus-tests --bin nimbus-bench-s3 -- [--runs N] [--size-mb M]
//!
//! Prints markdown tables; the figures in docs/benchmarks.md ("S3 artifacts") come from it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use nimbus_registry::{BlobStore, S3Config, S3Credentials, S3Uri};
use nimbus_tests::s3::{ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFs, random_file, sha256_file};
use nimbus_tests::{Nimbusd, efficientnet, guest_wasm, image, manifest};
use tokio::io::AsyncWriteExt as _;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A plain SDK client, as any program would make one (no CRC checks on answers, as nimbusd).
async fn plain_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "bench",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A plain GET of `key` streamed into a file in `dir`, hashing it too when `hash`: bytes and
/// time.
async fn plain_get(
    client: &aws_sdk_s3::Client,
    key: &str,
    dir: &Path,
    hash: bool,
) -> anyhow::Result<(u64, Duration)> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let started = Instant::now();
    let path = dir.join("plain-get");
    let mut file = tokio::fs::File::create(&path).await?;
    let mut body = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await?
        .body;
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        if hash {
            hasher.update(&chunk);
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    std::hint::black_box(hasher.finalize());
    let took = started.elapsed();
    drop(file);
    tokio::fs::remove_file(&path).await?;
    Ok((bytes, took))
}

/// nimbusd's download of `key` (verified against `sha256`): bytes, time, and time hashing.
async fn nimbus_download(
    store: &BlobStore,
    key: &str,
    sha256: &str,
    dir: &Path,
) -> anyhow::Result<(u64, Duration, Duration)> {
    let uri = S3Uri {
        bucket: BUCKET.to_owned(),
        key: key.to_owned(),
    };
    let downloaded = store.download(sha256, Some(&uri), dir).await?;
    let stats = downloaded.stats;
    Ok((downloaded.size, stats.elapsed, stats.hashing))
}

struct ColdLoad {
    download: f64,
    verify: f64,
    engine: f64,
    bytes: f64,
    first_request: f64,
    warm_request: f64,
}

/// One fresh nimbusd: registers the model by URI, deploys classify-image, and measures the first
/// (cold) and a warm request.
async fn cold_load(s3: &SeaweedFs, key: &str, sha256: &str) -> anyhow::Result<ColdLoad> {
    let options = nimbus_tests::s3::nimbusd_options(&s3.endpoint(), &[]);
    let nimbusd = Nimbusd::start_in(tempfile::tempdir()?, options)?;
    let client = nimbusd.client();
    client
        .register_model(
            "efficientnet",
            &format!("s3://{BUCKET}/{key}"),
            sha256,
            "onnxruntime",
            "cpu",
        )
        .await?;
    let (mut manifest, _) = manifest("functions/classify-image");
    manifest
        .models
        .insert("image-classifier".into(), "efficientnet".into());
    client
        .deploy(&manifest, &guest_wasm("functions", "classify-image"))
        .await?;
    let sample = async |name: &str| nimbusd.metric(name).await;
    let before = (
        sample("nimbus_artifact_download_seconds_total").await,
        sample("nimbus_artifact_verify_seconds_total").await,
        sample("nimbus_artifact_download_bytes_total").await,
    );
    let chelsea = image("chelsea.png");
    let invoke = async || {
        let started = Instant::now();
        let answer = client
            .invoke(
                "default",
                &manifest.name,
                "/",
                http::Method::POST,
                chelsea.clone(),
                &[],
            )
            .await?;
        anyhow::ensure!(answer.status == 200, "status {}", answer.status);
        Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64())
    };
    let first_request = invoke().await?;
    let warm_request = invoke().await?;
    Ok(ColdLoad {
        download: sample("nimbus_artifact_download_seconds_total").await - before.0,
        verify: sample("nimbus_artifact_verify_seconds_total").await - before.1,
        bytes: sample("nimbus_artifact_download_bytes_total").await - before.2,
        engine: sample("nimbus_model_load_seconds_total{engine=\"onnxruntime\"}").await,
        first_request,
        warm_request,
    })
}

/// Median MB/s of nimbusd's download, a plain GET, and a plain GET that also hashes, of `key`,
/// in alternating runs, and the median ms nimbusd's download spent hashing.
async fn throughput(
    store: &BlobStore,
    plain: &aws_sdk_s3::Client,
    key: &str,
    sha256: &str,
    runs: usize,
) -> anyhow::Result<[f64; 4]> {
    let dir = tempfile::tempdir()?;
    let mb_per_s = |(bytes, took): (u64, Duration)| bytes as f64 / 1e6 / took.as_secs_f64();
    let mut figures: [Vec<f64>; 4] = Default::default();
    // One of each first, unmeasured: warms the server's and the page cache.
    nimbus_download(store, key, sha256, dir.path()).await?;
    plain_get(plain, key, dir.path(), false).await?;
    for _ in 0..runs {
        figures[1].push(mb_per_s(plain_get(plain, key, dir.path(), false).await?));
        let (bytes, took, hashing) = nimbus_download(store, key, sha256, dir.path()).await?;
        figures[0].push(mb_per_s((bytes, took)));
        figures[3].push(hashing.as_secs_f64() * 1e3);
        figures[2].push(mb_per_s(plain_get(plain, key, dir.path(), true).await?));
    }
    Ok(figures.map(median))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = arg("--runs")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(5)
        .max(1);
    let size_mb: usize = arg("--size-mb")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(256);

    let s3 = SeaweedFs::start();
    let model_key = "bench/efficientnet_lite0.onnx";
    s3.put(model_key, &efficientnet());
    let model_sha = sha256_file(&efficientnet());
    let dir = tempfile::tempdir()?;
    let big = dir.path().join("big.bin");
    random_file(&big, size_mb << 20);
    let big_key = "bench/big.bin";
    s3.put(big_key, &big);
    let big_sha = sha256_file(&big);

    println!("## Cold model load (EfficientNet-Lite0, 18.5 MB), median of {runs} fresh nodes\n");
    let mut loads = Vec::new();
    for _ in 0..runs {
        loads.push(
            cold_load(&s3, model_key, &model_sha)
                .await
                .context("a cold load")?,
        );
    }
    let ms = |f: &dyn Fn(&ColdLoad) -> f64| median(loads.iter().map(f).collect()) * 1e3;
    println!("| phase | ms |\n|---|---|");
    println!(
        "| download (GET to disk, hashing alongside) | {:.1} |",
        ms(&|l| l.download)
    );
    println!(
        "| verify (hashing, overlapped with the download) | {:.1} |",
        ms(&|l| l.verify)
    );
    println!("| engine load (ONNX Runtime) | {:.1} |", ms(&|l| l.engine));
    println!(
        "| first request, end to end | {:.1} |",
        ms(&|l| l.first_request)
    );
    println!(
        "| warm request, end to end | {:.1} |",
        ms(&|l| l.warm_request)
    );
    let node_mb_s = median(loads.iter().map(|l| l.bytes / 1e6 / l.download).collect());

    let mut config = S3Config::new(BUCKET);
    config.endpoint = Some(s3.endpoint());
    config.region = Some("us-east-1".into());
    config.path_style = true;
    config.credentials = S3Credentials::Static {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    };
    let store = BlobStore::open_s3(config).await?;
    let plain = plain_client(&s3.endpoint()).await;

    println!("\n## Download throughput (MB/s), median of {runs} alternating runs\n");
    println!(
        "| object | nimbusd, verified | (ms hashing) | plain GET to a file | ratio | plain GET to a file + sha256 | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, [ours, plain, hashed, hashing]: [f64; 4]| {
        println!(
            "| {name} | {ours:.0} | {hashing:.1} | {plain:.0} | {:.2} | {hashed:.0} | {:.2} |",
            ours / plain,
            ours / hashed
        );
    };
    let model = throughput(&store, &plain, model_key, &model_sha, runs).await?;
    row("model, 18.5 MB", model);
    row(
        "model, 18.5 MB, in the cold loads above",
        [node_mb_s, model[1], model[2], ms(&|l| l.verify)],
    );
    row(
        &format!("random, {size_mb} MiB"),
        throughput(&store, &plain, big_key, &big_sha, runs).await?,
    );
    Ok(())
}
