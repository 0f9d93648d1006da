//! The shared tier's metric handles (`parapet_cache_shared_*`).

use crate::metrics::{counter, counter_vec, gauge, histogram_vec};
use prometheus::{Histogram, IntCounter, IntGauge};
use std::sync::LazyLock;

/// One kind of Redis operation, a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Lookup,
    Store,
    Lock,
    Wait,
    Unlock,
    Purge,
    Publish,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::Lookup,
        Operation::Store,
        Operation::Lock,
        Operation::Wait,
        Operation::Unlock,
        Operation::Purge,
        Operation::Publish,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Lookup => "lookup",
            Operation::Store => "store",
            Operation::Lock => "lock",
            Operation::Wait => "wait",
            Operation::Unlock => "unlock",
            Operation::Purge => "purge",
            Operation::Publish => "publish",
        }
    }
}

/// How one operation ended, a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    Ok,
    Error,
    Timeout,
    /// Not sent: the breaker is open or too many operations are in flight.
    Skipped,
}

impl OpResult {
    pub const ALL: [OpResult; 4] = [
        OpResult::Ok,
        OpResult::Error,
        OpResult::Timeout,
        OpResult::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpResult::Ok => "ok",
            OpResult::Error => "error",
            OpResult::Timeout => "timeout",
            OpResult::Skipped => "skipped",
        }
    }
}

/// What an L1 miss found in L2, a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    Hit,
    Miss,
    /// Redis did not answer in time, failed, or the breaker kept it out.
    Unavailable,
}

impl LookupResult {
    pub const ALL: [LookupResult; 3] = [
        LookupResult::Hit,
        LookupResult::Miss,
        LookupResult::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::Hit => "hit",
            LookupResult::Miss => "miss",
            LookupResult::Unavailable => "unavailable",
        }
    }
}

/// How a wait for another instance's fill ended, a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitResult {
    /// The entry appeared in L2 and was served from there.
    Filled,
    /// The lock went away without an entry (not cacheable, or the holder died).
    Released,
    /// `lock_timeout` passed.
    TimedOut,
}

impl WaitResult {
    pub const ALL: [WaitResult; 3] = [
        WaitResult::Filled,
        WaitResult::Released,
        WaitResult::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WaitResult::Filled => "filled",
            WaitResult::Released => "released",
            WaitResult::TimedOut => "timed_out",
        }
    }
}

pub struct SharedMetrics {
    /// By [`Operation`] then [`OpResult`] index.
    pub operations: [[IntCounter; 4]; 7],
    /// By [`Operation`] index; operations that reached Redis.
    pub durations: [Histogram; 7],
    /// By [`LookupResult`] index.
    pub lookups: [IntCounter; 3],
    /// By [`WaitResult`] index.
    pub waits: [IntCounter; 3],
    pub stored: IntCounter,
    pub too_large: IntCounter,
    pub purges_received: IntCounter,
    /// Purges made here that Redis did not take at once (kept and sent again).
    pub purges_deferred: IntCounter,
    pub purges_pending: IntGauge,
    pub purges_dropped: IntCounter,
    pub breaker_open: IntGauge,
    pub subscribed: IntGauge,
}

/// From 100 µs to 1 s: an L2 hit on a LAN takes well under a millisecond.
fn operation_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ]
}

pub static SHARED_METRICS: LazyLock<SharedMetrics> = LazyLock::new(|| {
    let operations = counter_vec(
        "cache_shared_operations_total",
        "Operations on the shared cache tier (Redis) by result.",
        &["operation", "result"],
    );
    let durations = histogram_vec(
        "cache_shared_operation_duration_seconds",
        "Time of operations that reached the shared cache tier (Redis).",
        &["operation"],
        operation_buckets(),
    );
    let lookups = counter_vec(
        "cache_shared_lookups_total",
        "Local cache misses looked up in the shared tier, by what they found.",
        &["result"],
    );
    let waits = counter_vec(
        "cache_shared_lock_waits_total",
        "Waits for another instance's fill of the same key, by how they ended.",
        &["result"],
    );
    SharedMetrics {
        operations: Operation::ALL.map(|op| {
            OpResult::ALL
                .map(|result| operations.with_label_values(&[op.as_str(), result.as_str()]))
        }),
        durations: Operation::ALL.map(|op| durations.with_label_values(&[op.as_str()])),
        lookups: LookupResult::ALL.map(|r| lookups.with_label_values(&[r.as_str()])),
        waits: WaitResult::ALL.map(|r| waits.with_label_values(&[r.as_str()])),
        stored: counter(
            "cache_shared_stored_total",
            "Responses written to the shared tier.",
        ),
        too_large: counter(
            "cache_shared_too_large_total",
            "Responses kept out of the shared tier by its max_object_size.",
        ),
        purges_received: counter(
            "cache_shared_purges_received_total",
            "Purges received over Redis pub/sub and applied to this instance's cache.",
        ),
        purges_deferred: counter(
            "cache_shared_purges_deferred_total",
            "Purges made on this instance that Redis did not take at once: kept and sent again every second.",
        ),
        purges_pending: gauge(
            "cache_shared_purges_pending",
            "Purges made on this instance still waiting for Redis to reach the other instances.",
        ),
        purges_dropped: counter(
            "cache_shared_purges_dropped_total",
            "Purges dropped while waiting for Redis (too many waiting): they never reach Redis or the other instances.",
        ),
        breaker_open: gauge(
            "cache_shared_breaker_open",
            "1 while the circuit breaker keeps the shared tier out (open or probing).",
        ),
        subscribed: gauge(
            "cache_shared_subscribed",
            "1 while this instance listens on the purge channel.",
        ),
    }
});
