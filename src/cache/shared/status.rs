//! The tier's part of the admin status page (`cache.shared` in `/status.json`): cumulative
//! counters and the lookup latency buckets, from which the page derives the hit ratio and
//! p50/p99 over its own window.

use super::metrics::{LookupResult, OpResult, Operation, SHARED_METRICS};
use super::SharedTier;
use prometheus::core::Metric;
use serde_json::{json, Map, Value};

impl SharedTier {
    /// The tier's state for the status page: `breaker` is `closed`, `open` or `probing`;
    /// `lookups` counts L1 misses by what L2 gave (`hit`, `miss`, `unavailable`);
    /// `failed_operations` counts operations that failed or timed out; `purges_pending` the
    /// purges made here that Redis did not take yet; `lookup_latency` holds
    /// the lookup duration histogram (finite upper `bounds` in seconds, cumulative `buckets`,
    /// `count`).
    pub fn status(&self) -> Value {
        let metrics = &SHARED_METRICS;
        let lookups: Map<String, Value> = LookupResult::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_string(),
                    json!(metrics.lookups[*r as usize].get()),
                )
            })
            .collect();
        let failures: u64 = metrics
            .operations
            .iter()
            .map(|by_result| {
                by_result[OpResult::Error as usize].get()
                    + by_result[OpResult::Timeout as usize].get()
            })
            .sum();
        json!({
            "url": self.url_for_display,
            "breaker": self.pool.breaker.state().as_str(),
            "subscribed": metrics.subscribed.get() == 1,
            "lookups": lookups,
            "lookup_latency": lookup_latency(),
            "stored": metrics.stored.get(),
            "failed_operations": failures,
            "purges_received": metrics.purges_received.get(),
            "purges_pending": metrics.purges_pending.get(),
        })
    }
}

fn lookup_latency() -> Value {
    let metric = SHARED_METRICS.durations[Operation::Lookup as usize].metric();
    let histogram = metric.get_histogram();
    let (bounds, buckets): (Vec<f64>, Vec<u64>) = histogram
        .get_bucket()
        .iter()
        .map(|bucket| (bucket.upper_bound(), bucket.cumulative_count()))
        .unzip();
    json!({
        "bounds": bounds,
        "buckets": buckets,
        "count": histogram.get_sample_count(),
    })
}
