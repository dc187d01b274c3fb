//! `nimbus-bench-peers`: nimbusd against what users would run instead, in one run on one machine,
//! with the same load generator (`nimbus_tests::load`) for every server. bench/run.sh starts the
//! peers and passes their URLs; this binary starts its own nimbusd (keys, metrics, rate limits and
//! request logs on) and prints markdown tables with the ratios.
//!
//!     nimbus-bench-peers hello --wasmtime-url http://127.0.0.1:P
//!         [--connections 1,16,256] [--seconds 5] [--rounds 3] [--client-threads 1]
//!     nimbus-bench-peers classify --wasmtime-url http://127.0.0.1:P --python-url http://127.0.0.1:Q
//!         [--connections 1,4,16] [--seconds 10] [--rounds 2] [--sessions 2] [--intra-op-threads N]
//!         [--image chelsea.png]
//!
//! `hello`: the hello component on nimbusd (public, and a private copy called with an API key)
//! and on `wasmtime serve`. `classify`: classify-image on nimbusd and on `wasmtime serve -S nn`,
//! bench/python_server.py, and native ONNX Runtime in this process, both with the guest's own
//! preprocessing code compiled natively (decode, resize, crop, normalise, infer, top-5) and as
//! inference alone. Rounds interleave the servers so that drift on the machine hits them alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http::Method;
use nimbus_engines::{ElementType, EngineKind, Engines, EnginesConfig, Model, Target, Tensor};
use nimbus_tests::bench::{
    arg, arg_or, conditions, deploy_hello, list_arg, ms, required_url, start_nimbusd,
};
use nimbus_tests::load::{self, LoadOutcome, LoadSpec, RequestSpec, socket_addr};
use nimbus_tests::{deploy_classifier, efficientnet, image};

/// The guest's own preprocessing, compiled for this machine: the native pipeline does exactly
/// what the component does, minus the sandbox.
#[path = "../../../functions/classify-image/src/preprocess.rs"]
#[allow(dead_code)]
mod preprocess;

/// One server under load.
struct Server {
    name: String,
    addr: SocketAddr,
    request: RequestSpec,
    /// Its process, when known: its CPU time per answer is reported.
    pid: Option<u32>,
}

/// What one server did at one connection count.
#[derive(Default)]
struct Measured {
    outcome: LoadOutcome,
    /// The server process's CPU time over the runs, when its pid is known.
    cpu: Option<Duration>,
}

impl Measured {
    /// Server CPU per 2xx answer, in microseconds, or "-".
    fn cpu_per_answer(&self) -> String {
        match self.cpu {
            Some(cpu) if !self.outcome.ok_latencies.is_empty() => format!(
                "{:.0}",
                cpu.as_secs_f64() * 1e6 / self.outcome.ok_latencies.len() as f64
            ),
            _ => "-".into(),
        }
    }
}

/// `--<name>-pid <pid>` from the command line.
fn pid_arg(name: &str) -> anyhow::Result<Option<u32>> {
    arg(&format!("--{name}-pid"))
        .map(|p| p.parse().with_context(|| format!("--{name}-pid {p}")))
        .transpose()
}

/// Runs every server at `connections` for `rounds` rounds of `seconds`, interleaved; the merged
/// outcome of each, with the CPU time its process used.
async fn measure(
    servers: &[Server],
    connections: usize,
    seconds: f64,
    rounds: usize,
) -> anyhow::Result<Vec<Measured>> {
    let mut merged: Vec<Measured> = servers.iter().map(|_| Measured::default()).collect();
    for _ in 0..rounds {
        for (server, total) in servers.iter().zip(&mut merged) {
            let cpu_before = server.pid.map(load::cpu_time).transpose()?;
            let outcome = load::run(&LoadSpec {
                addr: server.addr,
                request: server.request.clone(),
                connections,
                duration: Duration::from_secs_f64(seconds),
                honour_retry_after: false,
                request_timeout: Duration::from_secs(120),
            })
            .await?;
            if let (Some(pid), Some(before)) = (server.pid, cpu_before) {
                let used = load::cpu_time(pid)?.saturating_sub(before);
                total.cpu = Some(total.cpu.unwrap_or_default() + used);
            }
            absorb(&mut total.outcome, outcome);
        }
    }
    Ok(merged)
}

/// Adds one round to the running total (walls add up, so req/s is over all rounds).
fn absorb(total: &mut LoadOutcome, round: LoadOutcome) {
    total.ok_latencies.extend(round.ok_latencies);
    for (s, n) in round.statuses {
        *total.statuses.entry(s).or_default() += n;
    }
    for (e, n) in round.errors {
        *total.errors.entry(e).or_default() += n;
    }
    for (s, body) in round.samples {
        total.samples.entry(s).or_insert(body);
    }
    total.wall += round.wall;
}

fn row(connections: usize, name: &str, outcome: &mut LoadOutcome, cpu: &str) -> String {
    format!(
        "| {connections} | {name} | {:.1} | {} | {} | {cpu} | {} |",
        outcome.ok_per_second(),
        ms(outcome.quantile(0.50)),
        ms(outcome.quantile(0.99)),
        outcome.summary(),
    )
}

/// The header of the tables `row` fills.
const TABLE_HEADER: &str = "| connections | server | req/s | p50 ms | p99 ms | server CPU us/answer | answers |\n|---|---|---|---|---|---|---|";

/// Checks that every server gives the expected answer before anything is measured.
async fn check_answers(servers: &[Server], expect: impl Fn(&[u8]) -> bool) -> anyhow::Result<()> {
    for server in servers {
        let (status, body, _) = load::once(server.addr, &server.request).await?;
        ensure!(
            status == 200 && expect(&body),
            "{} answered {status}: {}",
            server.name,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Warms every server (compiled code, connections, model loads) for `seconds` at 4 connections.
async fn warm(servers: &[Server], seconds: f64) -> anyhow::Result<()> {
    measure(servers, 4, seconds, 1).await.map(drop)
}

async fn hello() -> anyhow::Result<()> {
    let wasmtime = socket_addr(&required_url("--wasmtime-url")?)?;
    let levels = list_arg("--connections", &[1, 16, 256])?;
    let seconds: f64 = arg_or("--seconds", 5.0)?;
    let rounds: usize = arg_or("--rounds", 3)?;

    let nimbusd = start_nimbusd(&[])?;
    let key = deploy_hello(&nimbusd.client()).await?;
    let addr = socket_addr(&nimbusd.url)?;
    let servers = [
        Server {
            name: "nimbusd, private copy + API key".into(),
            addr,
            request: RequestSpec::new(Method::GET, "/fn/default/hello-private", Bytes::new())
                .bearer(&key)?,
            pid: Some(nimbusd.pid()),
        },
        Server {
            name: "nimbusd, public (no key)".into(),
            addr,
            request: RequestSpec::new(Method::GET, "/fn/default/hello", Bytes::new()),
            pid: Some(nimbusd.pid()),
        },
        Server {
            name: "wasmtime serve 48".into(),
            addr: wasmtime,
            request: RequestSpec::new(Method::GET, "/", Bytes::new()),
            pid: pid_arg("wasmtime")?,
        },
    ];
    check_answers(&servers, |body| body == b"hello from nimbus").await?;
    warm(&servers, 1.0).await?;

    println!("### hello: nimbusd against `wasmtime serve`");
    println!();
    println!(
        "{}; {rounds} interleaved rounds of {seconds} s per row; client: {} tokio thread(s) in one \
         process on the same machine",
        conditions(),
        arg_or("--client-threads", 1usize)?
    );
    println!();
    println!("{TABLE_HEADER}");
    let mut ratios = Vec::new();
    for &connections in &levels {
        let mut measured = measure(&servers, connections, seconds, rounds).await?;
        for (server, m) in servers.iter().zip(measured.iter_mut()) {
            let cpu = m.cpu_per_answer();
            println!("{}", row(connections, &server.name, &mut m.outcome, &cpu));
        }
        let [keyed, public, peer] = &mut measured[..] else {
            bail!("three servers");
        };
        let (keyed, public, peer) = (&mut keyed.outcome, &mut public.outcome, &mut peer.outcome);
        ratios.push(format!(
            "| {connections} | {:.2} | {:.2} | {:.2} | {:.2} |",
            keyed.ok_per_second() / peer.ok_per_second(),
            public.ok_per_second() / peer.ok_per_second(),
            peer.quantile(0.5).as_secs_f64() / keyed.quantile(0.5).as_secs_f64(),
            peer.quantile(0.99).as_secs_f64() / keyed.quantile(0.99).as_secs_f64(),
        ));
    }
    println!();
    println!(
        "| connections | req/s ratio, nimbusd (key) / wasmtime serve | req/s ratio, nimbusd (public) / wasmtime serve | p50 ratio, wasmtime / nimbusd (key) | p99 ratio, wasmtime / nimbusd (key) |"
    );
    println!("|---|---|---|---|---|");
    for line in ratios {
        println!("{line}");
    }
    println!();
    println!(
        "nimbusd peak RSS: {:.1} MiB",
        load::peak_rss_mib(nimbusd.pid())?
    );
    Ok(())
}

/// A native run: `connections` threads, each doing the whole pipeline (or inference alone) one
/// request after the other for `seconds`.
fn native(
    model: &Arc<dyn Model>,
    png: &[u8],
    input: &Tensor,
    connections: usize,
    seconds: f64,
    pipeline: bool,
) -> anyhow::Result<LoadOutcome> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let latencies = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<Duration>> {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let tensor = if pipeline {
                            let values = preprocess::preprocess(png)
                                .map_err(|e| anyhow::anyhow!("preprocessing: {e:?}"))?;
                            Tensor {
                                dims: preprocess::INPUT_DIMS.to_vec(),
                                ty: ElementType::F32,
                                data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                            }
                        } else {
                            input.clone()
                        };
                        let outputs = model.run(&[("input".to_owned(), tensor)])?;
                        let probs = &outputs
                            .iter()
                            .find(|(name, _)| name == "probs")
                            .context("no probs output")?
                            .1;
                        let probs: Vec<f32> = probs
                            .data
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect();
                        let top5 = preprocess::top_k(&probs, 5);
                        ensure!(top5.len() == 5);
                        latencies.push(t.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.join().expect("a native worker panicked")?);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let mut outcome = LoadOutcome {
        wall: started.elapsed(),
        ..Default::default()
    };
    outcome.statuses.insert(200, latencies.len() as u64);
    outcome.ok_latencies = latencies;
    Ok(outcome)
}

async fn classify() -> anyhow::Result<()> {
    let wasmtime = socket_addr(&required_url("--wasmtime-url")?)?;
    let python = socket_addr(&required_url("--python-url")?)?;
    let levels = list_arg("--connections", &[1, 4, 16])?;
    let seconds: f64 = arg_or("--seconds", 10.0)?;
    let rounds: usize = arg_or("--rounds", 2)?;
    let sessions: usize = arg_or("--sessions", 2)?;
    let picture = arg("--image").unwrap_or_else(|| "chelsea.png".into());
    let png = image(&picture);

    let intra_op_threads: Option<usize> =
        arg("--intra-op-threads").map(|n| n.parse()).transpose()?;
    let sessions_flag = sessions.to_string();
    let mut flags = vec!["--sessions-per-model".to_owned(), sessions_flag];
    if let Some(n) = intra_op_threads {
        flags.extend(["--intra-op-threads".to_owned(), n.to_string()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let nimbusd = start_nimbusd(&flags)?;
    let client = nimbusd.client();
    deploy_classifier(&client, "efficientnet", "onnxruntime", "classify-image").await;
    let key = client
        .create_key(&["invoke".to_string()], None, None)
        .await?
        .key;
    let servers = [
        Server {
            name: "nimbusd (API key)".into(),
            addr: socket_addr(&nimbusd.url)?,
            request: RequestSpec::new(
                Method::POST,
                "/fn/default/classify-image",
                Bytes::from(png.clone()),
            )
            .bearer(&key)?,
            pid: Some(nimbusd.pid()),
        },
        Server {
            name: "wasmtime serve 48 -S nn".into(),
            addr: wasmtime,
            request: RequestSpec::new(Method::POST, "/", Bytes::from(png.clone())),
            pid: pid_arg("wasmtime")?,
        },
        Server {
            name: "Python (aiohttp + onnxruntime + Pillow)".into(),
            addr: python,
            request: RequestSpec::new(Method::POST, "/", Bytes::from(png.clone())),
            pid: pid_arg("python")?,
        },
    ];
    let top1 = |body: &[u8]| -> Option<u64> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        value["top5"][0]["index"].as_u64()
    };
    let expected = top1(&load::once(servers[0].addr, &servers[0].request).await?.1)
        .context("nimbusd gave no top-5")?;
    check_answers(&servers, |body| top1(body) == Some(expected)).await?;

    // Native: nimbusd's own engine layer (same ONNX Runtime library and settings, same session
    // pool size), in this process, with no HTTP and no sandbox.
    let engines = Engines::load(&EnginesConfig {
        intra_op_threads,
        ..EnginesConfig::default()
    });
    ensure!(
        engines.is_available(EngineKind::OnnxRuntime),
        "ONNX Runtime is unavailable: {:?}",
        engines.engine_status(EngineKind::OnnxRuntime).reason
    );
    let model = engines.load_model(
        EngineKind::OnnxRuntime,
        &std::fs::read(efficientnet())?,
        Target::Cpu,
        sessions,
    )?;
    let values = preprocess::preprocess(&png).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let input = Tensor {
        dims: preprocess::INPUT_DIMS.to_vec(),
        ty: ElementType::F32,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };

    warm(&servers, 2.0).await?;
    native(&model, &png, &input, 2, 1.0, true)?;

    println!("### classify-image: nimbusd against `wasmtime serve -S nn`, Python and native");
    println!();
    println!(
        "{}; EfficientNet-Lite0 on ONNX Runtime (CPU), {picture} ({} bytes); {rounds} \
         interleaved rounds of {seconds} s per row; {sessions} sessions per model and {} intra-op \
         threads in nimbusd and native",
        conditions(),
        png.len(),
        intra_op_threads.map_or("default".to_owned(), |n| n.to_string()),
    );
    println!();
    println!("{TABLE_HEADER}");
    let mut ratios = Vec::new();
    let me = std::process::id();
    for &connections in &levels {
        let mut measured = measure(&servers, connections, seconds, rounds).await?;
        let mut full = Measured::default();
        let mut infer = Measured::default();
        for _ in 0..rounds {
            for (pipeline, total) in [(true, &mut full), (false, &mut infer)] {
                let (model, png, input) = (model.clone(), png.clone(), input.clone());
                let before = load::cpu_time(me)?;
                let outcome = tokio::task::spawn_blocking(move || {
                    native(&model, &png, &input, connections, seconds, pipeline)
                })
                .await??;
                let used = load::cpu_time(me)?.saturating_sub(before);
                total.cpu = Some(total.cpu.unwrap_or_default() + used);
                absorb(&mut total.outcome, outcome);
            }
        }
        for (server, m) in servers.iter().zip(measured.iter_mut()) {
            let cpu = m.cpu_per_answer();
            println!("{}", row(connections, &server.name, &mut m.outcome, &cpu));
        }
        for (name, m) in [
            (
                "native, same pipeline (Rust preprocessing + ONNX Runtime)",
                &mut full,
            ),
            ("native, inference alone", &mut infer),
        ] {
            let cpu = m.cpu_per_answer();
            println!("{}", row(connections, name, &mut m.outcome, &cpu));
        }
        let outcomes: Vec<&LoadOutcome> = measured.iter().map(|m| &m.outcome).collect();
        let (full, infer) = (&full.outcome, &infer.outcome);
        let ours = outcomes[0].ok_per_second();
        ratios.push(format!(
            "| {connections} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ours / outcomes[1].ok_per_second(),
            ours / outcomes[2].ok_per_second(),
            ours / full.ok_per_second(),
            ours / infer.ok_per_second(),
        ));
    }
    println!();
    println!(
        "| connections | nimbusd / wasmtime serve (target >= 5) | nimbusd / Python (target >= 1.5) | nimbusd / native pipeline (target >= 0.8) | nimbusd / native inference alone |"
    );
    println!("|---|---|---|---|---|");
    for line in ratios {
        println!("{line}");
    }
    println!();
    println!(
        "nimbusd peak RSS: {:.1} MiB",
        load::peak_rss_mib(nimbusd.pid())?
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let threads: usize = arg_or("--client-threads", 1)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "hello" => runtime.block_on(hello()),
        "classify" => runtime.block_on(classify()),
        other => bail!("usage: nimbus-bench-peers hello|classify ... (got `{other}`)"),
    }
}
