//! `nimbus-bench`: classify-image over HTTP on a real nimbusd, beside native ONNX Runtime running
//! the same model on the same preprocessed input in this process, in one run on one machine.
//!
//!     cargo run --release -p nimbus-tests --bin nimbus-bench -- [--requests N] [--concurrency 1,2,4]
//!
//! Prints a markdown table (p50/p99 latency, requests/s) and the nimbusd/native ratios; the figures
//! in docs/benchmarks.md come from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nimbus_tests::{Nimbusd, deploy_classifier, efficientnet, image, onnxruntime_library};
use ort::session::Session;
use ort::value::Tensor;

struct Figures {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn figures(mut latencies: Vec<Duration>, wall: Duration) -> Figures {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
    }
}

async fn nimbusd_run(
    nimbusd: &Nimbusd,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Figures> {
    let client = nimbusd.client();
    let body = Arc::new(image("chelsea.png"));
    let started = Instant::now();
    let per_worker = requests / concurrency;
    let workers = (0..concurrency).map(|_| {
        let client = client.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let t = Instant::now();
                let response = client
                    .invoke(
                        "default",
                        "classify-image",
                        "/",
                        http::Method::POST,
                        (*body).clone(),
                        &[],
                    )
                    .await?;
                anyhow::ensure!(response.status == 200, "status {}", response.status);
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        })
    });
    let mut all = Vec::new();
    for worker in futures::future::join_all(workers).await {
        all.extend(worker??);
    }
    Ok(figures(all, started.elapsed()))
}

fn native_run(
    env: &ort::environment::Environment,
    input: &[f32],
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Figures> {
    let per_worker = requests / concurrency;
    let started = Instant::now();
    let all = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut session = Session::builder(env)?.commit_from_file(efficientnet())?;
                    let mut latencies = Vec::with_capacity(per_worker);
                    for _ in 0..per_worker {
                        let t = Instant::now();
                        let tensor = Tensor::from_array(([1usize, 3, 224, 224], input.to_vec()))?;
                        let outputs = session.run(ort::inputs!["input" => tensor])?;
                        let (_, probs) = outputs["probs"].try_extract_tensor::<f32>()?;
                        anyhow::ensure!(probs.len() == 1000);
                        latencies.push(t.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.join().expect("worker thread")?);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    Ok(figures(all, started.elapsed()))
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests: usize = arg("--requests")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(200);
    let levels: Vec<usize> = arg("--concurrency")
        .unwrap_or_else(|| "1,2,4".into())
        .split(',')
        .map(|c| c.parse())
        .collect::<Result<_, _>>()?;

    let nimbusd = Nimbusd::start();
    deploy_classifier(
        &nimbusd.client(),
        "efficientnet",
        "onnxruntime",
        "classify-image",
    )
    .await;
    let preprocessed = nimbusd
        .client()
        .invoke(
            "default",
            "classify-image",
            "/preprocess",
            http::Method::POST,
            image("chelsea.png"),
            &[],
        )
        .await?;
    let input: Vec<f32> = preprocessed
        .body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let env = Arc::new(
        ort::init_from(onnxruntime_library())
            .context("loading ONNX Runtime")?
            .build()?,
    );

    // Warm both sides: the model load and the first compilations are not what we measure.
    nimbusd_run(&nimbusd, 10, 1).await?;
    native_run(&env, &input, 10, 1)?;

    println!(
        "classify-image (EfficientNet-Lite0, chelsea.png), {requests} requests per row, {} cores",
        std::thread::available_parallelism()?.get()
    );
    println!();
    println!(
        "| concurrency | nimbusd p50 ms | nimbusd p99 ms | nimbusd req/s | native p50 ms | native p99 ms | native inf/s | req/s ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &concurrency in &levels {
        let served = nimbusd_run(&nimbusd, requests, concurrency).await?;
        let (input, env) = (input.clone(), env.clone());
        let native =
            tokio::task::spawn_blocking(move || native_run(&env, &input, requests, concurrency))
                .await??;
        println!(
            "| {concurrency} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2} |",
            served.p50.as_secs_f64() * 1e3,
            served.p99.as_secs_f64() * 1e3,
            served.per_second,
            native.p50.as_secs_f64() * 1e3,
            native.p99.as_secs_f64() * 1e3,
            native.per_second,
            served.per_second / native.per_second,
        );
    }
    Ok(())
}
