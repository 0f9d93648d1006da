//! The upstream metric handles (`parapet_upstream_*`): per server, resolved when the server's
//! state is built; gauges of live state (in-flight, health) refreshed on scrape.

use super::Upstream;
use crate::metrics::{counter_vec, gauge, gauge_vec, histogram_vec, latency_buckets};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

struct UpstreamMetrics {
    response: HistogramVec,
    in_flight: IntGaugeVec,
    healthy: IntGaugeVec,
    connects: IntCounterVec,
    connect_failures: IntCounterVec,
    reuses: IntCounterVec,
    stale_connection_retries: IntCounterVec,
    retries: IntCounterVec,
    pool_size: IntGauge,
}

static UPSTREAM_METRICS: LazyLock<UpstreamMetrics> = LazyLock::new(|| {
    UpstreamMetrics {
    response: histogram_vec(
        "upstream_response_seconds",
        "Time from choosing a server to its response header.",
        &["upstream", "server"],
        latency_buckets(),
    ),
    in_flight: gauge_vec(
        "upstream_in_flight",
        "Requests in flight to each server.",
        &["upstream", "server"],
    ),
    healthy: gauge_vec(
        "upstream_healthy",
        "1 when the server is up by active and passive health, else 0.",
        &["upstream", "server"],
    ),
    connects: counter_vec(
        "upstream_connects_total",
        "New TCP connections opened to each server.",
        &["upstream", "server"],
    ),
    connect_failures: counter_vec(
        "upstream_connect_failures_total",
        "Failed attempts to connect to each server (refused, unreachable, connect_timeout).",
        &["upstream", "server"],
    ),
    reuses: counter_vec(
        "upstream_keepalive_reuses_total",
        "Requests sent over a pooled keep-alive connection.",
        &["upstream", "server"],
    ),
    stale_connection_retries: counter_vec(
        "upstream_stale_connection_retries_total",
        "Requests sent again on a new connection because a pooled one turned out closed by the server (not counted as failures or retries).",
        &["upstream", "server"],
    ),
    retries: counter_vec(
        "upstream_retries_total",
        "Tries after the first, by upstream.",
        &["upstream"],
    ),
    pool_size: gauge(
        "upstream_keepalive_pool_size",
        "Idle upstream connections the pool may hold.",
    ),
}
});

/// Registers the upstream metrics (at start).
pub fn register() {
    LazyLock::force(&UPSTREAM_METRICS);
}

/// The keep-alive pool's size, set once at start.
pub fn set_pool_size(connections: usize) {
    UPSTREAM_METRICS
        .pool_size
        .set(i64::try_from(connections).unwrap_or(i64::MAX));
}

/// Counts a try after the first.
pub fn count_retry(upstream: &str) {
    UPSTREAM_METRICS
        .retries
        .with_label_values(&[upstream])
        .inc();
}

/// Mirrors each server's in-flight count and health into the gauges (on scrape).
pub fn refresh_gauges<'a>(upstreams: impl Iterator<Item = (&'a String, &'a Arc<Upstream>)>) {
    let now = Instant::now();
    for (name, upstream) in upstreams {
        for server in &upstream.servers {
            let labels = [name.as_str(), &server.address.to_string()];
            UPSTREAM_METRICS
                .in_flight
                .with_label_values(&labels)
                .set(server.in_flight() as i64);
            UPSTREAM_METRICS
                .healthy
                .with_label_values(&labels)
                .set(i64::from(server.is_up(now)));
        }
    }
}

/// Pre-resolved handles for one upstream server.
#[derive(Debug)]
pub struct ServerMetrics {
    pub response_time: Histogram,
    pub connects: IntCounter,
    pub connect_failures: IntCounter,
    pub reuses: IntCounter,
    pub stale_connection_retries: IntCounter,
}

impl ServerMetrics {
    pub fn new(upstream: &str, server: &str) -> Self {
        let metrics = &*UPSTREAM_METRICS;
        let labels = [upstream, server];
        ServerMetrics {
            response_time: metrics.response.with_label_values(&labels),
            connects: metrics.connects.with_label_values(&labels),
            connect_failures: metrics.connect_failures.with_label_values(&labels),
            reuses: metrics.reuses.with_label_values(&labels),
            stale_connection_retries: metrics.stale_connection_retries.with_label_values(&labels),
        }
    }

    /// Drops a removed server's series so `/metrics` stops showing it.
    pub fn forget(upstream: &str, server: &str) {
        let metrics = &*UPSTREAM_METRICS;
        let labels = [upstream, server];
        let _ = metrics.response.remove_label_values(&labels);
        let _ = metrics.connects.remove_label_values(&labels);
        let _ = metrics.connect_failures.remove_label_values(&labels);
        let _ = metrics.reuses.remove_label_values(&labels);
        let _ = metrics
            .stale_connection_retries
            .remove_label_values(&labels);
        let _ = metrics.in_flight.remove_label_values(&labels);
        let _ = metrics.healthy.remove_label_values(&labels);
    }
}
