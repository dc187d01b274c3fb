//! Counters nimbusd keeps about itself, rendered as Prometheus text at `/metrics`.
//!
//! Plain atomics and one mutex-guarded map for labelled counters: cheap on the request path and
//! with no exporter dependency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The node's metrics.
#[derive(Default)]
pub struct Metrics {
    invocations: Mutex<BTreeMap<(String, String, u16), u64>>,
    model_loads: Mutex<BTreeMap<String, (u64, f64)>>,
    functions_compiled: AtomicU64,
    functions_loaded_from_disk: AtomicU64,
    function_load_micros: AtomicU64,
    instances_in_flight: AtomicI64,
    instances_started: AtomicU64,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    rate_limited: Mutex<BTreeMap<&'static str, u64>>,
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.instances_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts one finished invocation.
    pub fn record_invocation(&self, tenant: &str, function: &str, status: u16) {
        let mut map = self.invocations.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((tenant.to_owned(), function.to_owned(), status)).or_default() += 1;
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
        for ((tenant, function, status), n) in
            self.invocations.lock().unwrap_or_else(|e| e.into_inner()).iter()
        {
            let _ = writeln!(
                out,
                "nimbus_invocations_total{{tenant=\"{}\",function=\"{}\",status=\"{status}\"}} {n}",
                escape(tenant),
                escape(function)
            );
        }
        out.push_str("# HELP nimbus_model_loads_total Models loaded into an engine on this node.\n");
        out.push_str("# TYPE nimbus_model_loads_total counter\n");
        let loads = self.model_loads.lock().unwrap_or_else(|e| e.into_inner());
        for (engine, (n, _)) in loads.iter() {
            let _ = writeln!(out, "nimbus_model_loads_total{{engine=\"{engine}\"}} {n}");
        }
        out.push_str("# HELP nimbus_model_load_seconds_total Time spent loading models.\n");
        out.push_str("# TYPE nimbus_model_load_seconds_total counter\n");
        for (engine, (_, secs)) in loads.iter() {
            let _ = writeln!(out, "nimbus_model_load_seconds_total{{engine=\"{engine}\"}} {secs}");
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
        out.push_str("# HELP nimbus_instances_started_total Guest instances started (requests that reached a guest).\n");
        out.push_str("# TYPE nimbus_instances_started_total counter\n");
        let _ = writeln!(
            out,
            "nimbus_instances_started_total {}",
            self.instances_started.load(Ordering::Relaxed)
        );
        out.push_str("# HELP nimbus_auth_failures_total API keys refused, by reason.\n");
        out.push_str("# TYPE nimbus_auth_failures_total counter\n");
        for (reason, n) in self.auth_failures.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "nimbus_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP nimbus_rate_limited_total Requests answered 429 by a rate limit, by limit.\n");
        out.push_str("# TYPE nimbus_rate_limited_total counter\n");
        for (limit, n) in self.rate_limited.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "nimbus_rate_limited_total{{limit=\"{limit}\"}} {n}");
        }
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
