//! The request metric handles: requests and their duration by route (resolved when a route is
//! built), and body bytes by client protocol.

use crate::metrics::{
    counter_vec, histogram_vec, latency_buckets, per_protocol, status_class_index, Protocol,
    STATUS_CLASSES,
};
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use std::sync::LazyLock;

struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// By [`Protocol`] index.
    body_bytes_in: [IntCounter; 3],
    /// By [`Protocol`] index.
    body_bytes_out: [IntCounter; 3],
}

static REQUEST_METRICS: LazyLock<RequestMetrics> = LazyLock::new(|| RequestMetrics {
    requests: counter_vec(
        "requests_total",
        "Requests answered, by route, upstream, status class and client protocol.",
        &["route", "upstream", "status_class", "protocol"],
    ),
    duration: histogram_vec(
        "request_duration_seconds",
        "Whole request time, from request header to the last response byte.",
        &["route", "protocol"],
        latency_buckets(),
    ),
    body_bytes_in: per_protocol(counter_vec(
        "downstream_received_bytes_total",
        "Request body bytes received.",
        &["protocol"],
    )),
    body_bytes_out: per_protocol(counter_vec(
        "downstream_sent_bytes_total",
        "Response body bytes sent.",
        &["protocol"],
    )),
});

/// Registers the request metrics (at start).
pub fn register() {
    LazyLock::force(&REQUEST_METRICS);
}

/// The current values of `parapet_requests_total` and `parapet_request_duration_seconds`
/// (for the status page).
pub fn request_families() -> (Vec<MetricFamily>, Vec<MetricFamily>) {
    (
        REQUEST_METRICS.requests.collect(),
        REQUEST_METRICS.duration.collect(),
    )
}

pub fn count_body_in(protocol: Protocol, bytes: u64) {
    REQUEST_METRICS.body_bytes_in[protocol as usize].inc_by(bytes);
}

pub fn count_body_out(protocol: Protocol, bytes: u64) {
    REQUEST_METRICS.body_bytes_out[protocol as usize].inc_by(bytes);
}

/// Pre-resolved handles for one route.
pub struct RouteMetrics {
    /// `[status class][protocol]`.
    requests: [[IntCounter; 3]; 5],
    durations: [Histogram; 3],
}

impl RouteMetrics {
    pub fn new(route: &str, upstream: &str) -> Self {
        let metrics = &*REQUEST_METRICS;
        RouteMetrics {
            requests: STATUS_CLASSES.map(|class| {
                Protocol::ALL.map(|p| {
                    metrics
                        .requests
                        .with_label_values(&[route, upstream, class, p.as_str()])
                })
            }),
            durations: Protocol::ALL
                .map(|p| metrics.duration.with_label_values(&[route, p.as_str()])),
        }
    }

    pub fn record(&self, status: u16, protocol: Protocol, seconds: f64) {
        self.requests[status_class_index(status)][protocol as usize].inc();
        self.durations[protocol as usize].observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_requests_appear_in_the_exposition() {
        let route = RouteMetrics::new("unit-test-route", "unit-test-upstream");
        route.record(503, Protocol::H2, 0.02);
        let text = crate::metrics::render();
        assert!(text.contains(
            "parapet_requests_total{protocol=\"h2\",route=\"unit-test-route\",status_class=\"5xx\",upstream=\"unit-test-upstream\"} 1"
        ));
    }
}
