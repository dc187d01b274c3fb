//! What the benchmark binaries share: command-line flags, the machine and its load average (written
//! next to every table), a nimbusd set up for measuring (rate limits high enough that a benchmark
//! is never refused, but still checked), the `hello` function deployed public and private with an
//! invoke key, and the markdown formatting of latencies.

use std::time::Duration;

use anyhow::Context as _;
use nimbus_client::Client;

use crate::{Nimbusd, NimbusdOptions, guest_wasm, manifest};

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A parsed `--name value`, or `default`.
pub fn arg_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match arg(name) {
        Some(value) => value
            .parse()
            .map_err(|e| anyhow::anyhow!("{name} {value}: {e}")),
        None => Ok(default),
    }
}

/// A comma-separated list `--name 1,16,256`, or `default`.
pub fn list_arg(name: &str, default: &[usize]) -> anyhow::Result<Vec<usize>> {
    match arg(name) {
        Some(list) => list
            .split(',')
            .map(|v| v.trim().parse().with_context(|| format!("{name} {list}")))
            .collect(),
        None => Ok(default.to_vec()),
    }
}

/// The URL after `--name`, which the caller (bench/run.sh) must give.
pub fn required_url(name: &str) -> anyhow::Result<String> {
    arg(name).with_context(|| format!("{name} http://127.0.0.1:<port> is required"))
}

/// `nproc` and the CPU model, e.g. `2 cores, AMD EPYC`.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The line printed above every table: the machine and its load now.
pub fn conditions() -> String {
    format!(
        "machine: {}; load average (1 min) at start: {:.2}",
        machine(),
        load_average()
    )
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Rate limits high enough that no benchmark is refused by them; they are still checked on every
/// request (keys and metrics stay on).
pub const HIGH_RATE_LIMITS: [&str; 8] = [
    "--rate-per-key",
    "10000000",
    "--burst-per-key",
    "10000000",
    "--rate-per-tenant",
    "10000000",
    "--burst-per-tenant",
    "10000000",
];

/// A nimbusd for measuring: `HIGH_RATE_LIMITS` plus `extra` flags, logging at its default level
/// (`info`: one structured line per request) unless `--log <filter>` is given.
pub fn start_nimbusd(extra: &[&str]) -> anyhow::Result<Nimbusd> {
    start_nimbusd_in(tempfile::tempdir()?, extra)
}

/// As [`start_nimbusd`], on an existing data dir (a restart).
pub fn start_nimbusd_in(data_dir: tempfile::TempDir, extra: &[&str]) -> anyhow::Result<Nimbusd> {
    let log = arg("--log").unwrap_or_else(|| "info".into());
    Nimbusd::start_in(
        data_dir,
        NimbusdOptions {
            args: HIGH_RATE_LIMITS
                .iter()
                .chain(extra)
                .map(|a| a.to_string())
                .collect(),
            env: vec![("NIMBUS_LOG".into(), log)],
        },
    )
}

/// `hello` deployed twice: as `hello` (public, as its manifest says) and as `hello-private` (a
/// key needed); returns an invoke-only key of tenant `default` for the private one.
pub async fn deploy_hello(client: &Client) -> anyhow::Result<String> {
    let (mut hello, _) = manifest("functions/hello");
    let wasm = guest_wasm("functions", "hello");
    hello.public = true;
    client.deploy(&hello, &wasm).await?;
    hello.name = "hello-private".into();
    hello.public = false;
    client.deploy(&hello, &wasm).await?;
    Ok(client
        .create_key(&["invoke".to_string()], None, None)
        .await?
        .key)
}

/// The markdown table header for latency and throughput rows.
pub fn table_header(first: &str) -> String {
    format!("| {first} | server | req/s | p50 ms | p99 ms | answers |\n|---|---|---|---|---|---|")
}
