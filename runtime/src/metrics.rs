//! Counters nimbusd keeps about itself, rendered as Prometheus text at `/metrics`.
//!
//! Plain atomics and one mutex-guarded map for labelled counters: cheap on the request path and
//! with no exporter dependency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the invocation latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram: a count per bucket, the sum and the count.
#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Instance starts whose durations `nimbus_instance_start_seconds` reports quantiles of.
const INSTANCE_START_WINDOW: usize = 4096;

/// The most recent instance start durations (a ring), for exact quantiles, and running totals.
#[derive(Default)]
struct StartWindow {
    recent: Vec<f64>,
    next: usize,
    sum: f64,
    count: u64,
}

impl StartWindow {
    fn observe(&mut self, seconds: f64) {
        if self.recent.len() < INSTANCE_START_WINDOW {
            self.recent.push(seconds);
        } else {
            self.recent[self.next] = seconds;
        }
        self.next = (self.next + 1) % INSTANCE_START_WINDOW;
        self.sum += seconds;
        self.count += 1;
    }

    /// The q-quantile of the window (NaN when empty).
    fn quantile(sorted: &[f64], q: f64) -> f64 {
        match sorted.len() {
            0 => f64::NAN,
            n => sorted[((n - 1) as f64 * q).round() as usize],
        }
    }
}

/// The node's metrics.
#[derive(Default)]
pub struct Metrics {
    instance_starts: Mutex<StartWindow>,
    invocations: Mutex<BTreeMap<(String, String, u16), u64>>,
    latencies: Mutex<BTreeMap<(String, String), Histogram>>,
    model_loads: Mutex<BTreeMap<String, (u64, f64)>>,
    functions_compiled: AtomicU64,
    functions_loaded_from_disk: AtomicU64,
    function_load_micros: AtomicU64,
    instances_in_flight: AtomicI64,
    instances_started: AtomicU64,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    rate_limited: Mutex<BTreeMap<&'static str, u64>>,
    /// Artifact downloads and the disk cache.
    pub artifacts: crate::artifact_metrics::ArtifactMetrics,
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.instances_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts one finished invocation and how long it took.
    pub fn record_invocation(&self, tenant: &str, function: &str, status: u16, took: Duration) {
        let mut map = self.invocations.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((tenant.to_owned(), function.to_owned(), status))
            .or_default() += 1;
        drop(map);
        let mut latencies = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        latencies
            .entry((tenant.to_owned(), function.to_owned()))
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Counts one engine load of a model (a model cache miss that loaded).
    pub fn record_model_load(&self, engine: &str, took: Duration) {
        let mut map = self.model_loads.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(engine.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += took.as_secs_f64();
    }

    /// Counts one function made ready to instantiate, compiled now or read from the code cache.
    pub fn record_function_load(&self, compiled: bool, took: Duration) {
        let counter = if compiled {
            &self.functions_compiled
        } else {
            &self.functions_loaded_from_disk
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.function_load_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records how long one instance took to start: its store built and the compiled function
    /// instantiated in it, up to the moment the guest's handler can be called.
    pub fn record_instance_start(&self, took: Duration) {
        self.instance_starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(took.as_secs_f64());
    }

    /// Marks an instance as running until the guard is dropped.
    pub fn instance_started(&self) -> InFlight<'_> {
        self.instances_in_flight.fetch_add(1, Ordering::Relaxed);
        self.instances_started.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Counts one refused API key, by why (`malformed`, `unknown`, `revoked`, `expired`).
    pub fn record_auth_failure(&self, reason: &'static str) {
        let mut map = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// Counts one request answered 429 by a rate limit (`key`, `tenant`, `public`,
    /// `auth_failures`).
    pub fn record_rate_limited(&self, limit: &'static str) {
        let mut map = self.rate_limited.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(limit).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP nimbus_invocations_total Finished function invocations.\n");
        out.push_str("# TYPE nimbus_invocations_total counter\n");
        for ((tenant, function, status), n) in self
            .invocations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "nimbus_invocations_total{{tenant=\"{}\",function=\"{}\",status=\"{status}\"}} {n}",
                escape(tenant),
                escape(function)
            );
        }
        out.push_str("# HELP nimbus_invocation_duration_seconds Time from request to answer of invocations.\n");
        out.push_str("# TYPE nimbus_invocation_duration_seconds histogram\n");
        let latencies = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((tenant, function), histogram) in &latencies {
            let labels = format!(
                "tenant=\"{}\",function=\"{}\"",
                escape(tenant),
                escape(function)
            );
            let mut cumulative = 0;
            for (le, n) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "nimbus_invocation_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "nimbus_invocation_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "nimbus_invocation_duration_seconds_sum{{{labels}}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "nimbus_invocation_duration_seconds_count{{{labels}}} {}",
                histogram.count
            );
        }
        out.push_str(
            "# HELP nimbus_model_loads_total Models loaded into an engine on this node.\n",
        );
        out.push_str("# TYPE nimbus_model_loads_total counter\n");
        let loads = self.model_loads.lock().unwrap_or_else(|e| e.into_inner());
        for (engine, (n, _)) in loads.iter() {
            let _ = writeln!(out, "nimbus_model_loads_total{{engine=\"{engine}\"}} {n}");
        }
        out.push_str("# HELP nimbus_model_load_seconds_total Time spent loading models.\n");
        out.push_str("# TYPE nimbus_model_load_seconds_total counter\n");
        for (engine, (_, secs)) in loads.iter() {
            let _ = writeln!(
                out,
                "nimbus_model_load_seconds_total{{engine=\"{engine}\"}} {secs}"
            );
        }
        drop(loads);
        out.push_str("# HELP nimbus_function_loads_total Functions made ready, by whether they were compiled or read from the code cache.\n");
        out.push_str("# TYPE nimbus_function_loads_total counter\n");
        let _ = writeln!(
            out,
            "nimbus_function_loads_total{{source=\"compiled\"}} {}",
            self.functions_compiled.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "nimbus_function_loads_total{{source=\"code_cache\"}} {}",
            self.functions_loaded_from_disk.load(Ordering::Relaxed)
        );
        out.push_str("# TYPE nimbus_function_load_seconds_total counter\n");
        let _ = writeln!(
            out,
            "nimbus_function_load_seconds_total {}",
            self.function_load_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        out.push_str("# HELP nimbus_instances_in_flight Guest instances running now.\n");
        out.push_str("# TYPE nimbus_instances_in_flight gauge\n");
        let _ = writeln!(
            out,
            "nimbus_instances_in_flight {}",
            self.instances_in_flight.load(Ordering::Relaxed)
        );
        let (mut recent, sum, count) = {
            let starts = self
                .instance_starts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            (starts.recent.clone(), starts.sum, starts.count)
        };
        recent.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "# HELP nimbus_instance_start_seconds Time from a compiled function to a running \
             instance (store and instantiation); quantiles of the last {INSTANCE_START_WINDOW}.\n\
             # TYPE nimbus_instance_start_seconds summary"
        );
        for q in [0.5, 0.9, 0.99] {
            let _ = writeln!(
                out,
                "nimbus_instance_start_seconds{{quantile=\"{q}\"}} {}",
                StartWindow::quantile(&recent, q)
            );
        }
        let _ = writeln!(out, "nimbus_instance_start_seconds_sum {sum}");
        let _ = writeln!(out, "nimbus_instance_start_seconds_count {count}");
        out.push_str("# HELP nimbus_instances_started_total Guest instances started (requests that reached a guest).\n");
        out.push_str("# TYPE nimbus_instances_started_total counter\n");
        let _ = writeln!(
            out,
            "nimbus_instances_started_total {}",
            self.instances_started.load(Ordering::Relaxed)
        );
        out.push_str("# HELP nimbus_auth_failures_total API keys refused, by reason.\n");
        out.push_str("# TYPE nimbus_auth_failures_total counter\n");
        for (reason, n) in self
            .auth_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "nimbus_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str(
            "# HELP nimbus_rate_limited_total Requests answered 429 by a rate limit, by limit.\n",
        );
        out.push_str("# TYPE nimbus_rate_limited_total counter\n");
        for (limit, n) in self
            .rate_limited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "nimbus_rate_limited_total{{limit=\"{limit}\"}} {n}");
        }
        out.push_str(&self.artifacts.render());
        out
    }
}

/// The admission gates' queue depth, running instances and their high-water mark.
pub fn render_admission(stats: &[crate::admission::GateStats]) -> String {
    let mut out = String::new();
    for (name, help, kind) in [
        (
            "nimbus_queue_depth",
            "Requests waiting for a slot of a function version.",
            "gauge",
        ),
        (
            "nimbus_function_in_flight",
            "Instances of a function version running now.",
            "gauge",
        ),
        (
            "nimbus_function_in_flight_max",
            "Most instances of a function version that ran at once.",
            "gauge",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for gate in stats {
            let (tenant, rest) = gate.key.split_once('/').unwrap_or(("", &gate.key));
            let (function, version) = rest.split_once('@').unwrap_or((rest, ""));
            let value = match name {
                "nimbus_queue_depth" => gate.waiting,
                "nimbus_function_in_flight" => gate.running,
                _ => gate.peak,
            };
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\",function=\"{}\",version=\"{}\"}} {value}",
                escape(tenant),
                escape(function),
                escape(version)
            );
        }
    }
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
