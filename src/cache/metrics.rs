//! The cache's metric handles (`parapet_cache_*`), registered in Parapet's registry.

use super::status::Outcome;
use crate::metrics::{counter, counter_vec, gauge};
use prometheus::{IntCounter, IntGauge};
use std::sync::LazyLock;

pub struct CacheMetrics {
    /// By [`Outcome`] index.
    pub responses: [IntCounter; 5],
    pub hit_bytes: IntCounter,
    pub stored_bytes: IntGauge,
    pub entries: IntGauge,
    pub evictions: IntCounter,
    pub coalesced: IntCounter,
    /// Variants derived from a stored body, by target coding slot (identity, br, zstd, gzip).
    pub derived: [IntCounter; 4],
}

pub static CACHE_METRICS: LazyLock<CacheMetrics> = LazyLock::new(|| {
    CacheMetrics {
    responses: {
        let vec = counter_vec(
            "cache_responses_total",
            "Responses on cached routes by how the cache served them.",
            &["status"],
        );
        Outcome::ALL.map(|o| vec.with_label_values(&[o.as_str()]))
    },
    hit_bytes: counter("cache_hit_bytes_total", "Body bytes served from the cache."),
    stored_bytes: gauge(
        "cache_stored_bytes",
        "Bytes held by the cache (bodies and headers).",
    ),
    entries: gauge("cache_entries", "Responses held by the cache."),
    evictions: counter(
        "cache_evictions_total",
        "Entries evicted to stay within max_size.",
    ),
    coalesced: counter(
        "cache_coalesced_total",
        "Requests that waited for another request's fill of the same key instead of going upstream.",
    ),
    derived: {
        let vec = counter_vec(
            "cache_variants_derived_total",
            "Codings derived from a stored response for clients negotiating another one (each made once and stored with it), by coding.",
            &["coding"],
        );
        ["identity", "br", "zstd", "gzip"].map(|coding| vec.with_label_values(&[coding]))
    },
}
});
