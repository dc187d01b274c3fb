//! Admission control per function version: at most `concurrency` instances run at once, at most
//! `queue` more requests wait for a slot (each no longer than the function's time limit), and
//! beyond that the caller is told to come back later (429 with `Retry-After`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Rejected {
    /// Every slot is busy and the queue is full.
    QueueFull { concurrency: u32, queue: usize },
    /// The request waited in the queue for as long as the function may run.
    WaitedTooLong { waited: Duration },
}

/// One function version's slots.
struct Gate {
    slots: Arc<Semaphore>,
    concurrency: u32,
    waiting: AtomicUsize,
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// A running request's slot; frees it when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Admission gates of every function version this node has served.
#[derive(Default)]
pub struct Admission {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

/// What `/metrics` shows of one gate.
pub struct GateStats {
    pub key: String,
    pub waiting: usize,
    pub running: usize,
    pub peak: usize,
}

impl Admission {
    fn gate(&self, key: &str, concurrency: u32) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        match gates.get(key) {
            Some(gate) if gate.concurrency == concurrency => gate.clone(),
            _ => {
                let gate = Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
                    concurrency,
                    waiting: AtomicUsize::new(0),
                    running: AtomicUsize::new(0),
                    peak: AtomicUsize::new(0),
                });
                gates.insert(key.to_owned(), gate.clone());
                gate
            }
        }
    }

    /// A slot for one request of the function version `key`.
    pub async fn admit(
        &self,
        key: &str,
        concurrency: u32,
        queue: usize,
        max_wait: Duration,
    ) -> Result<Slot, Rejected> {
        let gate = self.gate(key, concurrency);
        let permit = match gate.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Count ourselves in the queue first, so the bound holds under a burst.
                if gate.waiting.fetch_add(1, Ordering::AcqRel) >= queue {
                    gate.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(Rejected::QueueFull { concurrency, queue });
                }
                let waited =
                    tokio::time::timeout(max_wait, gate.slots.clone().acquire_owned()).await;
                gate.waiting.fetch_sub(1, Ordering::AcqRel);
                match waited {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(Rejected::WaitedTooLong { waited: max_wait }),
                }
            }
        };
        let running = gate.running.fetch_add(1, Ordering::Relaxed) + 1;
        gate.peak.fetch_max(running, Ordering::Relaxed);
        Ok(Slot {
            _permit: permit,
            gate,
        })
    }

    /// Queue and slot use of every gate.
    pub fn stats(&self) -> Vec<GateStats> {
        let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let mut stats: Vec<GateStats> = gates
            .iter()
            .map(|(key, gate)| GateStats {
                key: key.clone(),
                waiting: gate.waiting.load(Ordering::Relaxed),
                running: gate.running.load(Ordering::Relaxed),
                peak: gate.peak.load(Ordering::Relaxed),
            })
            .collect();
        stats.sort_by(|a, b| a.key.cmp(&b.key));
        stats
    }
}
