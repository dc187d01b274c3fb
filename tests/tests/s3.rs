//! Models and function wasm in S3 (a real SeaweedFS per test): registered by URI after a boto3
//! upload, pulled once per node however many requests arrive, kept on disk across restarts and
//! evicted least recently used first, verified by sha256, and served through S3 outages, stalls
//! and bad credentials with clear answers. GETs are counted by a proxy in front of S3, outside
//! nimbusd.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nimbus_client::Client;
use nimbus_tests::s3::{
    ACCESS_KEY, BUCKET, CountingProxy, SeaweedFs, blob_key, nimbusd_options, random_file,
    sha256_file,
};
use nimbus_tests::{Nimbusd, efficientnet, guest_wasm, image, manifest};
use serde_json::Value;

/// A running S3 with a counting proxy in front of it.
struct S3 {
    server: SeaweedFs,
    proxy: CountingProxy,
}

impl S3 {
    fn start() -> S3 {
        let server = SeaweedFs::start();
        let proxy = CountingProxy::start(&server.endpoint());
        S3 { server, proxy }
    }

    /// nimbusd on this S3 (through the proxy) with `extra` flags.
    fn nimbusd(&self, extra: &[&str]) -> Nimbusd {
        Nimbusd::start_with(nimbusd_options(&self.proxy.url(), extra))
    }

    /// nimbusd restarted on the data dir of `old`.
    fn restart(&self, old: Nimbusd, extra: &[&str]) -> Nimbusd {
        let dir = old.stop();
        Nimbusd::start_in(dir, nimbusd_options(&self.proxy.url(), extra)).expect("restarting")
    }
}

/// EfficientNet with other bytes and the same answers: the model file plus a second `doc_string`
/// (ModelProto field 6; the last one wins when parsing), so it has a digest of its own.
fn efficientnet_copy(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(efficientnet()).expect("reading the model");
    let note = b"a copy for the Nimbus S3 tests";
    bytes.extend_from_slice(&[0x32, note.len() as u8]);
    bytes.extend_from_slice(note);
    let path = dir.join("efficientnet-copy.onnx");
    std::fs::write(&path, bytes).expect("writing the copy");
    path
}

/// Uploads `file` to `s3://models/<key>` with boto3 and registers it as model `name`.
async fn register(s3: &S3, client: &Client, name: &str, key: &str, file: &Path) -> String {
    s3.server.put(key, file);
    let sha256 = sha256_file(file);
    let uri = format!("s3://{BUCKET}/{key}");
    let version = client
        .register_model(name, &uri, &sha256, "onnxruntime", "cpu")
        .await
        .expect("registering the model");
    assert_eq!(version.uri.as_deref(), Some(uri.as_str()));
    assert_eq!(version.sha256, sha256);
    assert_eq!(version.size, std::fs::metadata(file).unwrap().len());
    version.version
}

/// Deploys classify-image as `function`, bound to `model`.
async fn deploy(client: &Client, function: &str, model: &str) {
    let (mut manifest, _) = manifest("functions/classify-image");
    manifest.name = function.to_owned();
    manifest
        .models
        .insert("image-classifier".to_owned(), model.to_owned());
    let wasm = guest_wasm("functions", "classify-image");
    client.deploy(&manifest, &wasm).await.expect("deploying");
}

/// Invokes `function` with chelsea.png: the status and the JSON answer.
async fn classify(client: &Client, function: &str) -> (u16, Value) {
    let response = client
        .invoke(
            "default",
            function,
            "/",
            http::Method::POST,
            image("chelsea.png"),
            &[],
        )
        .await
        .expect("invoking");
    let body = serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()));
    (response.status, body)
}

/// Asserts that `function` answers 200 with the known top-1 for chelsea.png.
async fn assert_tiger_cat(client: &Client, function: &str) {
    let (status, answer) = classify(client, function).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["top5"][0]["label"], "tiger cat", "{answer}");
    let p = answer["top5"][0]["probability"].as_f64().unwrap();
    assert!((p - 0.386).abs() < 0.02, "p(tiger cat) = {p}");
}

/// The artifacts in nimbusd's disk cache.
fn cached(nimbusd: &Nimbusd) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(nimbusd.data_dir.path().join("cache/sha256"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_uploaded_with_boto3_and_registered_by_uri_classifies() {
    let s3 = S3::start();
    let nimbusd = s3.nimbusd(&[]);
    let client = nimbusd.client();
    register(
        &s3,
        &client,
        "efficientnet",
        "team/efficientnet_lite0.onnx",
        &efficientnet(),
    )
    .await;
    assert_eq!(
        s3.proxy.gets("team/efficientnet_lite0.onnx"),
        0,
        "registering pulls nothing"
    );
    deploy(&client, "classify-image", "efficientnet").await;
    assert_tiger_cat(&client, "classify-image").await;
    assert_eq!(s3.proxy.gets("team/efficientnet_lite0.onnx"), 1);

    // The function's wasm went to S3 under its digest.
    let wasm = guest_wasm("functions", "classify-image");
    let wasm_size = std::fs::metadata(&wasm).unwrap().len();
    assert_eq!(
        s3.server.size(&blob_key(&sha256_file(&wasm))),
        Some(wasm_size)
    );

    let models = client.list_models().await.unwrap();
    assert_eq!(
        models[0].uri.as_deref(),
        Some("s3://models/team/efficientnet_lite0.onnx")
    );
    let sha256 = sha256_file(&efficientnet());
    let refused = client
        .register_model(
            "missing",
            "s3://models/nothing/here.onnx",
            &sha256,
            "onnxruntime",
            "cpu",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("404") && refused.contains("s3://models/nothing/here.onnx"),
        "{refused}"
    );
    let refused = client
        .register_model(
            "bad",
            "https://example.com/m.onnx",
            &sha256,
            "onnxruntime",
            "cpu",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("400") && refused.contains("s3://"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_requests_share_one_get_and_a_restart_needs_none() {
    let s3 = S3::start();
    let nimbusd = s3.nimbusd(&[]);
    let client = nimbusd.client();
    let key = "shared/efficientnet.onnx";
    register(&s3, &client, "efficientnet", key, &efficientnet()).await;
    deploy(&client, "classify-image", "efficientnet").await;
    let wasm_key = blob_key(&sha256_file(&guest_wasm("functions", "classify-image")));
    let wasm_gets = s3.proxy.gets(&wasm_key);
    assert_eq!(wasm_gets, 1, "deploying compiles the wasm once");

    let requests = (0..100).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { classify(&client, "classify-image").await })
    });
    for answer in futures::future::join_all(requests).await {
        let (status, answer) = answer.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["top5"][0]["label"], "tiger cat");
    }
    assert_eq!(
        s3.proxy.gets(key),
        1,
        "100 concurrent first requests, one GET"
    );
    assert_eq!(
        nimbusd
            .metric("nimbus_model_loads_total{engine=\"onnxruntime\"}")
            .await,
        1.0
    );

    let nimbusd = s3.restart(nimbusd, &[]);
    let client = nimbusd.client();
    for _ in 0..5 {
        assert_tiger_cat(&client, "classify-image").await;
    }
    assert_eq!(
        s3.proxy.gets(key),
        1,
        "after a restart the model comes from the disk cache"
    );
    assert_eq!(
        s3.proxy.gets(&wasm_key),
        wasm_gets,
        "and the function from the code cache"
    );
    assert_eq!(nimbusd.metric("nimbus_artifact_downloads_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_cache_smaller_than_two_models_evicts_the_older_and_serves_both() {
    let s3 = S3::start();
    // Each model is 17.7 MiB: two do not fit in 30 MiB (nor in 20 MiB of memory).
    let flags = ["--disk-cache-mb", "30", "--model-cache-mb", "20"];
    let nimbusd = s3.nimbusd(&flags);
    let client = nimbusd.client();
    let dir = tempfile::tempdir().unwrap();
    let copy = efficientnet_copy(dir.path());
    let (sha_a, sha_b) = (sha256_file(&efficientnet()), sha256_file(&copy));
    assert_ne!(sha_a, sha_b);
    register(&s3, &client, "net-a", "a.onnx", &efficientnet()).await;
    register(&s3, &client, "net-b", "b.onnx", &copy).await;
    deploy(&client, "classify-a", "net-a").await;
    deploy(&client, "classify-b", "net-b").await;

    assert_tiger_cat(&client, "classify-a").await;
    assert!(cached(&nimbusd).contains(&sha_a));
    assert_tiger_cat(&client, "classify-b").await;
    assert_eq!(
        cached(&nimbusd),
        vec![sha_b.clone()],
        "model a was least recently used"
    );
    assert_eq!((s3.proxy.gets("a.onnx"), s3.proxy.gets("b.onnx")), (1, 1));
    assert!(
        nimbusd
            .metric("nimbus_artifact_cache_evictions_total")
            .await
            >= 1.0
    );

    // A restart rebuilds the index from the folder: b is there, a is pulled again and evicts b.
    let nimbusd = s3.restart(nimbusd, &flags);
    let client = nimbusd.client();
    assert_tiger_cat(&client, "classify-b").await;
    assert_eq!(s3.proxy.gets("b.onnx"), 1);
    assert_tiger_cat(&client, "classify-a").await;
    assert_eq!(s3.proxy.gets("a.onnx"), 2);
    assert_eq!(cached(&nimbusd), vec![sha_a]);
    assert_tiger_cat(&client, "classify-b").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_stopped_cached_models_serve_and_an_uncached_one_answers_503_until_it_is_back() {
    let mut s3 = S3::start();
    let timeout_ms = 3000;
    let flags = ["--s3-timeout-ms", "3000", "--s3-max-attempts", "2"];
    let nimbusd = s3.nimbusd(&flags);
    let client = nimbusd.client();
    let dir = tempfile::tempdir().unwrap();
    let version_b = {
        register(&s3, &client, "net-a", "a.onnx", &efficientnet()).await;
        register(
            &s3,
            &client,
            "net-b",
            "b.onnx",
            &efficientnet_copy(dir.path()),
        )
        .await
    };
    deploy(&client, "classify-a", "net-a").await;
    deploy(&client, "classify-b", "net-b").await;
    assert_tiger_cat(&client, "classify-a").await;

    s3.server.stop();
    assert_tiger_cat(&client, "classify-a").await;
    let started = Instant::now();
    let (status, answer) = classify(&client, "classify-b").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("model net-b@{version_b} is unavailable: ")),
        "{message}"
    );
    assert!(
        took < Duration::from_millis(timeout_ms),
        "503 after {took:?}, past the {timeout_ms} ms timeout"
    );
    let (status, ready) = nimbusd.anonymous().get("/readyz").await.unwrap();
    let ready: Value = serde_json::from_slice(&ready).unwrap();
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["blob_store"]["ok"], false, "{ready}");
    assert_tiger_cat(&client, "classify-a").await;

    s3.server.restart();
    // The S3 port answers before the volume server has registered: allow it a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = classify(&client, "classify-b").await;
        if status == 200 {
            assert_eq!(answer["top5"][0]["label"], "tiger cat");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after S3 came back: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _) = nimbusd.anonymous().get("/readyz").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_s3_times_out_after_bounded_retries_and_never_hangs() {
    let s3 = S3::start();
    let flags = ["--s3-timeout-ms", "1000", "--s3-max-attempts", "2"];
    let nimbusd = s3.nimbusd(&flags);
    let client = nimbusd.client();
    register(&s3, &client, "efficientnet", "m.onnx", &efficientnet()).await;
    deploy(&client, "classify-image", "efficientnet").await;

    s3.proxy.stall(true);
    let started = Instant::now();
    let (status, answer) = classify(&client, "classify-image").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("did not answer within 1000 ms"),
        "{message}"
    );
    // Two attempts of 1 s each and a backoff between them, never the guest's 30 s.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(s3.proxy.gets("m.onnx"), 2, "one retry");

    s3.proxy.stall(false);
    assert_tiger_cat(&client, "classify-image").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_that_stalls_half_way_resumes_where_it_stopped() {
    let s3 = S3::start();
    let flags = ["--s3-timeout-ms", "1000", "--s3-max-attempts", "3"];
    let nimbusd = s3.nimbusd(&flags);
    let client = nimbusd.client();
    register(&s3, &client, "efficientnet", "m.onnx", &efficientnet()).await;
    deploy(&client, "classify-image", "efficientnet").await;

    // The first answer stops after 5 MB; the download resumes from there with a ranged GET.
    s3.proxy.stall_bodies(5 << 20, 1);
    assert_tiger_cat(&client, "classify-image").await;
    assert_eq!(s3.proxy.gets("m.onnx"), 2);
    assert!(nimbusd.log().contains("download interrupted; resuming"));
    assert_eq!(
        nimbusd.metric("nimbus_artifact_download_bytes_total").await as u64,
        std::fs::metadata(efficientnet()).unwrap().len()
            + std::fs::metadata(guest_wasm("functions", "classify-image"))
                .unwrap()
                .len(),
        "each byte downloaded once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_that_stalls_on_every_attempt_gives_up_with_503() {
    let s3 = S3::start();
    let flags = ["--s3-timeout-ms", "1000", "--s3-max-attempts", "3"];
    let nimbusd = s3.nimbusd(&flags);
    let client = nimbusd.client();
    register(&s3, &client, "efficientnet", "m.onnx", &efficientnet()).await;
    deploy(&client, "classify-image", "efficientnet").await;

    s3.proxy.stall_bodies(1 << 20, 3);
    let started = Instant::now();
    let (status, answer) = classify(&client, "classify-image").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("broke off after") && message.contains("3 attempts"),
        "{message}"
    );
    // Bounded: three attempts of a 1 s stall plus backoff, never a hang (generous for a loaded box).
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(s3.proxy.gets("m.onnx"), 3);
    assert!(!cached(&nimbusd).contains(&sha256_file(&efficientnet())));

    assert_tiger_cat(&client, "classify-image").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_object_is_refused_naming_the_sha256_mismatch() {
    let s3 = S3::start();
    let nimbusd = s3.nimbusd(&[]);
    let client = nimbusd.client();
    let dir = tempfile::tempdir().unwrap();
    register(&s3, &client, "efficientnet", "m.onnx", &efficientnet()).await;
    deploy(&client, "classify-image", "efficientnet").await;

    // Someone overwrites the object after it was registered.
    let tampered = efficientnet_copy(dir.path());
    s3.server.put("m.onnx", &tampered);
    let (status, answer) = classify(&client, "classify-image").await;
    assert_eq!(status, 503, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    let (registered, found) = (sha256_file(&efficientnet()), sha256_file(&tampered));
    assert!(message.contains("sha256 mismatch"), "{message}");
    assert!(
        message.contains(&registered) && message.contains(&found),
        "{message}"
    );
    assert!(
        cached(&nimbusd).iter().all(|sha| *sha != registered),
        "nothing cached"
    );
    let staged = std::fs::read_dir(nimbusd.data_dir.path().join("cache/tmp"))
        .unwrap()
        .count();
    assert_eq!(staged, 0, "the download was discarded");
    assert!(nimbusd.log().contains("sha256 mismatch"));

    // Put right again, it serves: the failure was not cached either.
    s3.server.put("m.onnx", &efficientnet());
    assert_tiger_cat(&client, "classify-image").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_are_a_clear_error_at_startup_and_in_readyz() {
    let s3 = S3::start();
    let mut options = nimbusd_options(&s3.proxy.url(), &[]);
    options.env.clear();
    options.args.extend(
        [
            "--s3-access-key-id",
            ACCESS_KEY,
            "--s3-secret-access-key",
            "not-the-secret",
        ]
        .map(String::from),
    );
    let nimbusd = Nimbusd::start_with(options);
    let log = nimbusd.log();
    assert!(
        log.contains("the blob store is not usable") && log.contains("check the credentials"),
        "{log}"
    );
    let (status, ready) = nimbusd.anonymous().get("/readyz").await.unwrap();
    let ready: Value = serde_json::from_slice(&ready).unwrap();
    assert_eq!(status, 503, "{ready}");
    let check = &ready["checks"]["blob_store"];
    assert_eq!(check["ok"], false, "{ready}");
    let error = check["error"].as_str().unwrap();
    assert!(
        error.contains("refused access") && error.contains("credentials"),
        "{error}"
    );

    // Uploads say so too, instead of failing obscurely.
    let refused = nimbusd
        .client()
        .upload_blob_bytes(b"some wasm".to_vec())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("503") && refused.contains("credentials"),
        "{refused}"
    );
}

/// The peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mb_push_streams_to_s3_in_parts_with_bounded_memory() {
    let s3 = S3::start();
    let nimbusd = s3.nimbusd(&[]);
    let client = nimbusd.client();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    random_file(&big, 200 << 20);
    let sha256 = sha256_file(&big);

    let before = peak_rss(nimbusd.pid());
    let blob = client
        .upload_blob_file(&big)
        .await
        .expect("uploading 200 MB");
    let grew = peak_rss(nimbusd.pid()).saturating_sub(before);
    assert_eq!(
        (blob.sha256.as_str(), blob.size),
        (sha256.as_str(), 200 << 20)
    );
    assert_eq!(s3.server.size(&blob_key(&sha256)), Some(200 << 20));
    assert!(
        grew < 100 << 20,
        "nimbusd's peak memory grew by {} MiB for a 200 MiB upload",
        grew >> 20
    );
    assert!(client.blob_exists(&sha256).await.unwrap());
    assert_eq!(s3.server.unfinished_uploads(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_hashes_differently_is_aborted_and_stores_nothing() {
    let s3 = S3::start();
    let nimbusd = s3.nimbusd(&[]);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    random_file(&big, 20 << 20);
    let claimed = "ab".repeat(32);
    let body = std::fs::read(&big).unwrap();
    let response = post_blob_claiming(&nimbusd, &claimed, body).await;
    assert_eq!(response.0, 400, "{}", response.1);
    assert!(
        response.1.contains(&claimed) && response.1.contains(&sha256_file(&big)),
        "{}",
        response.1
    );
    assert_eq!(s3.server.size(&blob_key(&claimed)), None);
    // The abort is sent right after the answer: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s3.server.unfinished_uploads() != 0 {
        assert!(
            Instant::now() < deadline,
            "the multipart upload was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /v1/blobs` of `body` claiming the digest `claimed`: the status and the body.
async fn post_blob_claiming(nimbusd: &Nimbusd, claimed: &str, body: Vec<u8>) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(format!("{}/v1/blobs", nimbusd.url))
        .header("authorization", format!("Bearer {}", nimbusd.admin_key))
        .header("x-nimbus-sha256", claimed)
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.expect("posting the blob");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
