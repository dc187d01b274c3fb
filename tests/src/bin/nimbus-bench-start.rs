//! `nimbus-bench-start`: how fast a function starts on nimbusd, for `hello` and `classify-image`,
//! each on a nimbusd of its own:
//! - deploy: `POST /v1/functions` (nimbusd compiles the component before answering);
//! - cold start after deploy: the first request after the deploy, then the second;
//! - instantiate: p50/p90/p99 of `nimbus_instance_start_seconds` (store built and the compiled
//!   function instantiated, measured inside nimbusd) over `--requests` (hello) or
//!   `--classify-requests` sequential requests;
//! - restart: nimbusd killed and started again on the same data dir; time until it listens, then
//!   the first request (compiled code read from the on-disk code cache: the bench checks that
//!   nothing was compiled) and the second.
//!
//!     nimbus-bench-start [--requests 2000] [--classify-requests 300]
//!
//! Single requests go on a fresh connection each (a loopback connect, tens of microseconds, is
//! included). Prints a markdown table.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use http::Method;
use nimbus_tests::bench::{arg_or, conditions, start_nimbusd, start_nimbusd_in};
use nimbus_tests::load::{self, RequestSpec, socket_addr};
use nimbus_tests::{Nimbusd, efficientnet, guest_wasm, image, manifest};

/// What one function's run measured.
struct Starts {
    function: &'static str,
    deploy: Duration,
    first_after_deploy: Duration,
    second_after_deploy: Duration,
    instantiate: [f64; 3],
    instances: f64,
    restart_to_listening: Duration,
    first_after_restart: Duration,
    second_after_restart: Duration,
    function_load_after_restart: f64,
    model_load: Option<f64>,
}

async fn timed(nimbusd: &Nimbusd, request: &RequestSpec) -> anyhow::Result<Duration> {
    let (status, body, took) = load::once(socket_addr(&nimbusd.url)?, request).await?;
    ensure!(
        status == 200,
        "{} answered {status}: {}",
        request.path,
        String::from_utf8_lossy(&body)
    );
    Ok(took)
}

async fn instantiate_quantiles(nimbusd: &Nimbusd) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (slot, q) in out.iter_mut().zip(["0.5", "0.9", "0.99"]) {
        *slot = nimbusd
            .metric(&format!(
                "nimbus_instance_start_seconds{{quantile=\"{q}\"}}"
            ))
            .await;
    }
    out
}

async fn measure(function: &'static str, requests: usize) -> anyhow::Result<Starts> {
    let nimbusd = start_nimbusd(&[])?;
    let client = nimbusd.client();
    let (mut manifest, _) = manifest(&format!("functions/{function}"));
    let wasm = guest_wasm("functions", function);
    let body = if function == "classify-image" {
        client
            .push_model("efficientnet", &efficientnet(), "onnxruntime", "cpu")
            .await?;
        manifest
            .models
            .insert("image-classifier".into(), "efficientnet".into());
        Bytes::from(image("chelsea.png"))
    } else {
        Bytes::new()
    };
    // Private, called with an invoke key: the usual path (the key check included).
    manifest.public = false;
    client.upload_blob_file(&wasm).await?;
    let started = Instant::now();
    client.deploy(&manifest, &wasm).await?;
    let deploy = started.elapsed();
    let key = client
        .create_key(&["invoke".to_string()], None, None)
        .await?
        .key;
    let request = RequestSpec::new(
        if body.is_empty() {
            Method::GET
        } else {
            Method::POST
        },
        &format!("/fn/default/{function}"),
        body,
    )
    .bearer(&key)?;

    let first_after_deploy = timed(&nimbusd, &request).await?;
    let second_after_deploy = timed(&nimbusd, &request).await?;
    let model_load = if function == "classify-image" {
        Some(
            nimbusd
                .metric("nimbus_model_load_seconds_total{engine=\"onnxruntime\"}")
                .await,
        )
    } else {
        None
    };
    // Sequential requests, then the quantiles nimbusd measured.
    for _ in 0..requests {
        timed(&nimbusd, &request).await?;
    }
    let instantiate = instantiate_quantiles(&nimbusd).await;
    let instances = nimbusd.metric("nimbus_instance_start_seconds_count").await;

    // Restart on the same data dir.
    let data_dir = nimbusd.stop();
    let started = Instant::now();
    let nimbusd = start_nimbusd_in(data_dir, &[])?;
    let restart_to_listening = started.elapsed();
    let first_after_restart = timed(&nimbusd, &request).await?;
    let second_after_restart = timed(&nimbusd, &request).await?;
    let compiled = nimbusd
        .metric("nimbus_function_loads_total{source=\"compiled\"}")
        .await;
    let from_cache = nimbusd
        .metric("nimbus_function_loads_total{source=\"code_cache\"}")
        .await;
    ensure!(
        compiled == 0.0 && from_cache == 1.0,
        "after the restart {function} was compiled {compiled} times, read from the code cache \
         {from_cache} times"
    );
    let function_load_after_restart = nimbusd.metric("nimbus_function_load_seconds_total").await;
    Ok(Starts {
        function,
        deploy,
        first_after_deploy,
        second_after_deploy,
        instantiate,
        instances,
        restart_to_listening,
        first_after_restart,
        second_after_restart,
        function_load_after_restart,
        model_load,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let hello_requests: usize = arg_or("--requests", 2000)?;
    let classify_requests: usize = arg_or("--classify-requests", 300)?;
    let conditions = conditions();
    let mut rows = Vec::new();
    for (function, requests) in [
        ("hello", hello_requests),
        ("classify-image", classify_requests),
    ] {
        rows.push(
            measure(function, requests)
                .await
                .with_context(|| format!("measuring {function}"))?,
        );
    }
    println!("### Start-up: instantiate, cold start after deploy, first request after a restart");
    println!();
    println!("{conditions}; private functions called with an API key");
    println!();
    println!(
        "| function | deploy (compiles) ms | 1st request after deploy ms | 2nd ms | instantiate p50 us | p90 us | p99 us | (instances) | restart to listening ms | 1st request after restart ms | of which function load from code cache ms | 2nd ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.2} | {} |",
            s.function,
            ms(s.deploy),
            ms(s.first_after_deploy),
            ms(s.second_after_deploy),
            s.instantiate[0] * 1e6,
            s.instantiate[1] * 1e6,
            s.instantiate[2] * 1e6,
            s.instances,
            ms(s.restart_to_listening),
            ms(s.first_after_restart),
            s.function_load_after_restart * 1e3,
            ms(s.second_after_restart),
        );
    }
    for s in &rows {
        if let Some(model) = s.model_load {
            println!();
            println!(
                "{}: the first request after deploy and after restart includes loading the model \
                 into ONNX Runtime ({:.1} ms the first time, per nimbus_model_load_seconds_total).",
                s.function,
                model * 1e3
            );
        }
    }
    Ok(())
}
