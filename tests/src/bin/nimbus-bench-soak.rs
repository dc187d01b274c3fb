//! `nimbus-bench-soak`: 1000 concurrent keep-alive connections for 60 s against `hello` and against
//! `classify-image`, each on a nimbusd of its own with its default limits (per-function concurrency
//! 64, a queue of 256, then 429 with Retry-After), on 127.0.0.1 only. The client honours
//! Retry-After, as a well-behaved client does. Every answer must be a 200 or an intended 429;
//! anything else, and any transport error, fails the run (after printing the table). Reports throughput, latency, the 429s,
//! how many instances ran at once, instance start quantiles under that load, and nimbusd's peak
//! resident memory (VmHWM).
//!
//!     nimbus-bench-soak [--connections 1000] [--seconds 60] [--client-threads 1]
//!                       [--default-rate-limits]
//!
//! By default the per-key and per-tenant rate limits are raised so that the 429s come from the
//! functions' admission gates (with the defaults, 500 requests/s per key, one key's 1000
//! connections would mostly meet the rate limiter instead); `--default-rate-limits` keeps them.
//! The caller raises `ulimit -n` (bench/run.sh does).

use std::time::Duration;

use anyhow::ensure;
use bytes::Bytes;
use http::Method;
use nimbus_tests::bench::{arg_or, conditions, deploy_hello, ms, start_nimbusd};
use nimbus_tests::load::{self, LoadSpec, RequestSpec, socket_addr};
use nimbus_tests::{Nimbusd, NimbusdOptions, deploy_classifier, image};

fn start(default_rate_limits: bool) -> anyhow::Result<Nimbusd> {
    if default_rate_limits {
        Ok(Nimbusd::start_in(
            tempfile::tempdir()?,
            NimbusdOptions::default(),
        )?)
    } else {
        start_nimbusd(&[])
    }
}

async fn soak(
    function: &str,
    connections: usize,
    seconds: f64,
    default_rate_limits: bool,
) -> anyhow::Result<(String, Option<String>)> {
    let nimbusd = start(default_rate_limits)?;
    let client = nimbusd.client();
    let (path, body) = if function == "hello" {
        deploy_hello(&client).await?;
        ("/fn/default/hello-private", Bytes::new())
    } else {
        deploy_classifier(&client, "efficientnet", "onnxruntime", "classify-image").await;
        (
            "/fn/default/classify-image",
            Bytes::from(image("chelsea.png")),
        )
    };
    let key = client
        .create_key(&["invoke".to_string()], None, None)
        .await?
        .key;
    let method = if body.is_empty() {
        Method::GET
    } else {
        Method::POST
    };
    let request = RequestSpec::new(method, path, body).bearer(&key)?;
    let addr = socket_addr(&nimbusd.url)?;
    // Warm: compiled code and the model are loaded before the clock starts.
    let (status, answer, _) = load::once(addr, &request).await?;
    ensure!(
        status == 200,
        "{function} answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    let idle_rss = load::peak_rss_mib(nimbusd.pid())?;

    let mut outcome = load::run(&LoadSpec {
        addr,
        request,
        connections,
        duration: Duration::from_secs_f64(seconds),
        honour_retry_after: true,
        request_timeout: Duration::from_secs(60),
    })
    .await?;
    let peak_rss = load::peak_rss_mib(nimbusd.pid())?;
    let in_flight_max = nimbusd
        .metric_matching(&format!(
            "nimbus_function_in_flight_max{{tenant=\"default\",function=\"{}\"",
            path.rsplit('/').next().unwrap_or_default()
        ))
        .await;
    let start_p50 = nimbusd
        .metric("nimbus_instance_start_seconds{quantile=\"0.5\"}")
        .await;
    let start_p99 = nimbusd
        .metric("nimbus_instance_start_seconds{quantile=\"0.99\"}")
        .await;
    let rate_limited = nimbusd.metric_matching("nimbus_rate_limited_total").await;
    let unexpected = outcome.unexpected(&[429]);
    let row = format!(
        "| {function} | {connections} | {seconds} | {:.1} | {} | {} | {} | {} | {unexpected} | {in_flight_max} | {:.1} / {:.1} | {idle_rss:.1} | {peak_rss:.1} |",
        outcome.ok_per_second(),
        ms(outcome.quantile(0.5)),
        ms(outcome.quantile(0.99)),
        outcome.count(200),
        outcome.count(429),
        start_p50 * 1e6,
        start_p99 * 1e6,
    );
    let problem = (unexpected > 0).then(|| {
        format!(
            "{function}: answers other than 200 and 429, or transport errors: {} (rate limited: \
             {rate_limited}; first bodies: {:?})",
            outcome.summary(),
            outcome.samples
        )
    });
    Ok((row, problem))
}

fn main() -> anyhow::Result<()> {
    let threads: usize = arg_or("--client-threads", 1)?;
    let connections: usize = arg_or("--connections", 1000)?;
    let seconds: f64 = arg_or("--seconds", 60.0)?;
    let default_rate_limits = std::env::args().any(|a| a == "--default-rate-limits");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let conditions = conditions();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for function in ["hello", "classify-image"] {
        let (row, problem) =
            runtime.block_on(soak(function, connections, seconds, default_rate_limits))?;
        rows.push(row);
        problems.extend(problem);
    }
    println!("### {connections} connections for {seconds} s");
    println!();
    println!(
        "{conditions}; private functions called with one API key; default per-function limits \
         (concurrency 64, queue 256); rate limits {}; the client waits out Retry-After",
        if default_rate_limits {
            "at their defaults"
        } else {
            "raised"
        }
    );
    println!();
    println!(
        "| function | connections | seconds | 200/s | p50 ms (200s) | p99 ms (200s) | 200s | 429s | other answers and errors | most instances at once | instance start p50 / p99 us | RSS before MiB | peak RSS (VmHWM) MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
