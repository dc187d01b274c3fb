//! Rate limits of this node: token buckets per API key, per tenant and for a tenant's public
//! functions called without a key, and the slow-down of repeated failed authentication from one
//! source address. Everything here is checked before a request reaches the registry's functions
//! or a guest; a request over a limit is answered 429 with `Retry-After`.
//!
//! Each bucket is one `AtomicU64` holding its "theoretical arrival time" (the generic cell rate
//! algorithm, which is a token bucket kept as a single timestamp): taking a token is one
//! compare-and-swap, with no lock on the request path. A bucket with rate `r` and burst `b`
//! allows `b` requests at once and then one every `1/r` seconds, exactly as a bucket of `b`
//! tokens refilled at `r` per second. Buckets live in bounded moka caches and are dropped after
//! sitting idle long enough to have refilled, so forgetting one never makes a limit stricter;
//! under a flood of distinct names the least recently used are evicted early, which can only make
//! a limit looser for them, never deny a caller that is within its rate.
//!
//! The limits are per node: behind a load balancer spreading requests over `n` nodes a key gets
//! up to `n` times the configured rate.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buckets (keys, tenants, public functions) kept at most; beyond it the least recently used go.
const MAX_BUCKETS: u64 = 100_000;
/// Source addresses whose failed authentications are remembered at most.
const MAX_FAILURE_SOURCES: u64 = 100_000;
/// Shortest time an idle bucket is kept.
const MIN_IDLE: Duration = Duration::from_secs(60);

/// A rate: `burst` requests at once, then one every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// Nanoseconds of credit a full bucket holds (`burst * interval`).
    tolerance: u64,
}

impl Rate {
    /// `per_second` sustained with bursts of `burst`; `None` (no limit) when `per_second` is 0
    /// or not a positive number. A burst below 1 counts as 1.
    pub fn new(per_second: f64, burst: u32) -> Option<Rate> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let interval = (1e9 / per_second).round().clamp(1.0, u64::MAX as f64 / 2.0) as u64;
        Some(Rate {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
        })
    }

    /// `count` requests per `window`, all of which may come at once.
    pub fn per_window(count: u32, window: Duration) -> Option<Rate> {
        if count == 0 || window.is_zero() {
            return None;
        }
        Rate::new(f64::from(count) / window.as_secs_f64(), count)
    }

    /// How long a bucket at this rate takes to refill completely.
    fn refill_time(&self) -> Duration {
        Duration::from_nanos(self.tolerance)
    }
}

/// One token bucket, as the time (ns since the limiter's origin) at which it would be full.
#[derive(Debug, Default)]
struct Bucket {
    full_at: AtomicU64,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&self, rate: Rate, now: u64) -> Result<(), Duration> {
        let mut current = self.full_at.load(Ordering::Acquire);
        loop {
            let next = current.max(now).saturating_add(rate.interval);
            let limit = now.saturating_add(rate.tolerance);
            if next > limit {
                return Err(Duration::from_nanos(next - limit));
            }
            match self.full_at.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether a token is there, without taking it.
    fn peek(&self, rate: Rate, now: u64) -> Result<(), Duration> {
        let next = self
            .full_at
            .load(Ordering::Acquire)
            .max(now)
            .saturating_add(rate.interval);
        let limit = now.saturating_add(rate.tolerance);
        if next > limit {
            Err(Duration::from_nanos(next - limit))
        } else {
            Ok(())
        }
    }

    /// Gives back a token taken by [`Bucket::take`].
    fn refund(&self, rate: Rate) {
        let _ = self
            .full_at
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |at| {
                Some(at.saturating_sub(rate.interval))
            });
    }
}

/// What a bucket belongs to.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Subject {
    Key(String),
    Tenant(String),
    /// Calls to a tenant's public functions made without a key.
    Public(String),
}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Key,
    Tenant,
    Public,
    AuthFailures,
}

impl Limit {
    /// The label used in metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Key => "key",
            Limit::Tenant => "tenant",
            Limit::Public => "public",
            Limit::AuthFailures => "auth_failures",
        }
    }
}

/// A request over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub limit: Limit,
    /// When the next request would be allowed.
    pub retry_after: Duration,
}

impl Limited {
    /// `retry_after` in whole seconds, rounded up, at least 1 (the `Retry-After` header).
    pub fn retry_after_secs(&self) -> u64 {
        let nanos = self.retry_after.as_nanos();
        u64::try_from(nanos.div_ceil(1_000_000_000))
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// The node's limits. Configured once at start; shared by all requests.
pub struct RateLimits {
    per_key: Option<Rate>,
    per_tenant: Option<Rate>,
    auth_failures: Option<Rate>,
    buckets: moka::sync::Cache<Subject, Arc<Bucket>>,
    failures: moka::sync::Cache<IpAddr, Arc<Bucket>>,
    origin: Instant,
}

impl RateLimits {
    /// Limits with these rates; `None` turns a limit off.
    pub fn new(
        per_key: Option<Rate>,
        per_tenant: Option<Rate>,
        auth_failures: Option<Rate>,
    ) -> RateLimits {
        let idle = |rates: &[Option<Rate>]| {
            rates
                .iter()
                .flatten()
                .map(Rate::refill_time)
                .max()
                .unwrap_or_default()
                .max(MIN_IDLE)
        };
        RateLimits {
            per_key,
            per_tenant,
            auth_failures,
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_BUCKETS)
                .time_to_idle(idle(&[per_key, per_tenant]))
                .build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(MAX_FAILURE_SOURCES)
                .time_to_idle(idle(&[auth_failures]))
                .build(),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn bucket(&self, subject: Subject) -> Arc<Bucket> {
        self.buckets.get_with(subject, Arc::default)
    }

    /// Charges one request to key `key_id` and to its tenant. When the tenant is over its limit
    /// the key's token is given back, so a refused request costs nothing.
    pub fn charge_key(&self, tenant: &str, key_id: &str) -> Result<(), Limited> {
        let now = self.now();
        let key = match self.per_key {
            Some(rate) => {
                let bucket = self.bucket(Subject::Key(key_id.to_owned()));
                bucket.take(rate, now).map_err(|retry_after| Limited {
                    limit: Limit::Key,
                    retry_after,
                })?;
                Some((bucket, rate))
            }
            None => None,
        };
        if let Some(rate) = self.per_tenant {
            let bucket = self.bucket(Subject::Tenant(tenant.to_owned()));
            if let Err(retry_after) = bucket.take(rate, now) {
                if let Some((bucket, rate)) = key {
                    bucket.refund(rate);
                }
                return Err(Limited {
                    limit: Limit::Tenant,
                    retry_after,
                });
            }
        }
        Ok(())
    }

    /// Charges one call without a key to a public function of `tenant`. These calls share a
    /// bucket per tenant, at the per-tenant rate, apart from the tenant's keyed traffic.
    pub fn charge_public(&self, tenant: &str) -> Result<(), Limited> {
        let Some(rate) = self.per_tenant else {
            return Ok(());
        };
        self.bucket(Subject::Public(tenant.to_owned()))
            .take(rate, self.now())
            .map_err(|retry_after| Limited {
                limit: Limit::Public,
                retry_after,
            })
    }

    /// Whether `source` has failed authentication too often lately: `Some` with the time until
    /// it may try again.
    pub fn auth_blocked(&self, source: IpAddr) -> Option<Limited> {
        let rate = self.auth_failures?;
        let bucket = self.failures.get(&source)?;
        bucket
            .peek(rate, self.now())
            .err()
            .map(|retry_after| Limited {
                limit: Limit::AuthFailures,
                retry_after,
            })
    }

    /// Records one failed authentication from `source`.
    pub fn auth_failed(&self, source: IpAddr) {
        if let Some(rate) = self.auth_failures {
            let bucket = self.failures.get_with(source, Arc::default);
            let _ = bucket.take(rate, self.now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate::new(2.0, 3).unwrap();
        let bucket = Bucket::default();
        let start = 10 * SECOND;
        for _ in 0..3 {
            bucket.take(rate, start).unwrap();
        }
        let wait = bucket.take(rate, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.take(rate, start + SECOND / 2 - 1).is_err());
        bucket.take(rate, start + SECOND / 2).unwrap();
        assert!(bucket.take(rate, start + SECOND / 2).is_err());
        // Idle long enough, the bucket is full again, and no fuller.
        let later = start + 100 * SECOND;
        for _ in 0..3 {
            bucket.take(rate, later).unwrap();
        }
        assert!(bucket.take(rate, later).is_err());
    }

    #[test]
    fn peek_does_not_take_and_refund_gives_back() {
        let rate = Rate::new(1.0, 1).unwrap();
        let bucket = Bucket::default();
        bucket.peek(rate, SECOND).unwrap();
        bucket.peek(rate, SECOND).unwrap();
        bucket.take(rate, SECOND).unwrap();
        assert!(bucket.peek(rate, SECOND).is_err());
        bucket.refund(rate);
        bucket.take(rate, SECOND).unwrap();
    }

    #[test]
    fn zero_rates_are_no_limit() {
        assert_eq!(Rate::new(0.0, 10), None);
        assert_eq!(Rate::new(f64::NAN, 10), None);
        assert_eq!(Rate::per_window(0, Duration::from_secs(60)), None);
        let limits = RateLimits::new(None, None, None);
        for _ in 0..10_000 {
            limits.charge_key("t", "k").unwrap();
            limits.charge_public("t").unwrap();
        }
        let ip: IpAddr = [127, 0, 0, 1].into();
        limits.auth_failed(ip);
        assert_eq!(limits.auth_blocked(ip), None);
    }

    #[test]
    fn keys_and_tenants_have_their_own_buckets() {
        let limits = RateLimits::new(Rate::new(0.001, 2), Rate::new(0.001, 3), None);
        limits.charge_key("a", "k1").unwrap();
        limits.charge_key("a", "k1").unwrap();
        let over = limits.charge_key("a", "k1").unwrap_err();
        assert_eq!(over.limit, Limit::Key);
        // Another key of the same tenant has its own bucket but shares the tenant's.
        limits.charge_key("a", "k2").unwrap();
        let over = limits.charge_key("a", "k2").unwrap_err();
        assert_eq!(over.limit, Limit::Tenant);
        // The refused request did not cost k2 its second token.
        limits.charge_key("b", "k2").unwrap();
        // Another tenant is untouched, and so are calls without a key.
        limits.charge_key("b", "k3").unwrap();
        limits.charge_public("a").unwrap();
    }

    #[test]
    fn failed_authentication_blocks_a_source_after_its_burst() {
        let limits = RateLimits::new(None, None, Rate::per_window(3, Duration::from_secs(60)));
        let ip: IpAddr = [10, 0, 0, 7].into();
        let other: IpAddr = [10, 0, 0, 8].into();
        for _ in 0..3 {
            assert_eq!(limits.auth_blocked(ip), None);
            limits.auth_failed(ip);
        }
        let blocked = limits.auth_blocked(ip).expect("blocked after 3 failures");
        assert_eq!(blocked.limit, Limit::AuthFailures);
        assert!(blocked.retry_after > Duration::from_secs(19), "{blocked:?}");
        assert!(
            blocked.retry_after <= Duration::from_secs(20),
            "{blocked:?}"
        );
        assert_eq!(blocked.retry_after_secs(), 20);
        assert_eq!(limits.auth_blocked(other), None);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let at = |ms| Limited {
            limit: Limit::Key,
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(at(0).retry_after_secs(), 1);
        assert_eq!(at(1).retry_after_secs(), 1);
        assert_eq!(at(1000).retry_after_secs(), 1);
        assert_eq!(at(1001).retry_after_secs(), 2);
    }
}
