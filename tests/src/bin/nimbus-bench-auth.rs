//! `nimbus-bench-auth`: what checking an API key costs per request, on the `hello` function
//! (public, so it answers with or without a key), over HTTP on a real nimbusd, in one run.
//!
//!     cargo run --release -p nimbus-tests --bin nimbus-bench-auth -- [--requests N]
//!
//! Three kinds of request, interleaved one by one (in rotating order) on keep-alive connections so
//! that drift on the machine hits them alike: no key (no check), a key this node has cached (the usual case), and a
//! key on a second nimbusd started with `--auth-cache-ttl-s 0` (every request reads the registry).
//! The rate limits stay on, set high enough that nothing is refused. Prints a markdown table (p50,
//! p90, p99 in microseconds) and the p50 overheads; docs/benchmarks.md ("Auth overhead") quotes it.

use std::time::{Duration, Instant};

use nimbus_client::Client;
use nimbus_tests::{Nimbusd, NimbusdOptions, guest_wasm, manifest};

/// Limits high enough that the benchmark is never refused, but still checked on every request.
const HIGH_LIMITS: [&str; 8] = [
    "--rate-per-key",
    "1000000",
    "--burst-per-key",
    "1000000",
    "--rate-per-tenant",
    "1000000",
    "--burst-per-tenant",
    "1000000",
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// p-th quantile of sorted latencies, in microseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6
}

async fn once(client: &Client) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client
        .invoke("default", "hello", "/", http::Method::GET, Vec::new(), &[])
        .await?;
    let took = started.elapsed();
    anyhow::ensure!(
        response.status == 200 && &response.body[..] == b"hello from nimbus",
        "hello answered {} {:?}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    Ok(took)
}

fn start(extra: &[&str]) -> Nimbusd {
    Nimbusd::start_with(NimbusdOptions {
        args: HIGH_LIMITS
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect(),
        ..Default::default()
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests: usize = arg("--requests")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(5000);

    let cached = start(&[]);
    let (hello, _) = manifest("functions/hello");
    anyhow::ensure!(
        hello.public,
        "functions/hello must be public for this benchmark"
    );
    cached
        .client()
        .deploy(&hello, &guest_wasm("functions", "hello"))
        .await?;
    // A second node, alike but with its key cache off.
    let uncached = start(&["--auth-cache-ttl-s", "0"]);
    uncached
        .client()
        .deploy(&hello, &guest_wasm("functions", "hello"))
        .await?;
    let key = cached
        .client()
        .create_key(&["invoke".to_string()], None, None)
        .await?
        .key;
    let uncached_key = uncached
        .client()
        .create_key(&["invoke".to_string()], None, None)
        .await?
        .key;

    let rows: [(&str, Client); 3] = [
        ("no key (public, no check)", Client::new(&cached.url, None)?),
        (
            "key, cached on the node",
            Client::new(&cached.url, Some(key))?,
        ),
        (
            "key, cache off (registry read per request)",
            Client::new(&uncached.url, Some(uncached_key))?,
        ),
    ];
    // Warm up: compiled function, connections, the key cache.
    for _ in 0..200 {
        for (_, client) in &rows {
            once(client).await?;
        }
    }
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::with_capacity(requests); rows.len()];
    for n in 0..requests {
        // Rotate which kind goes first, so none always follows the same neighbour.
        for k in 0..rows.len() {
            let i = (n + k) % rows.len();
            latencies[i].push(once(&rows[i].1).await?);
        }
    }

    println!(
        "hello (public), {requests} sequential requests per row, interleaved, {} cores",
        std::thread::available_parallelism()?.get()
    );
    println!();
    println!("| request | p50 us | p90 us | p99 us | p50 overhead vs no key |");
    println!("|---|---|---|---|---|");
    let mut p50s = Vec::new();
    for ((name, _), mut lat) in rows.iter().zip(latencies) {
        lat.sort();
        let p50 = quantile(&lat, 0.50);
        p50s.push(p50);
        println!(
            "| {name} | {p50:.1} | {:.1} | {:.1} | {:+.1} us |",
            quantile(&lat, 0.90),
            quantile(&lat, 0.99),
            p50 - p50s[0],
        );
    }
    // Keep both nodes alive until here.
    drop(uncached);
    drop(cached);
    Ok(())
}
