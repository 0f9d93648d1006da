//! Prometheus metrics: every name and label value used by Parapet, registered once in
//! Parapet's own registry (the crate's default registry carries unprefixed process metrics), and the label handles that the request path uses without allocating.
//!
//! Handles are resolved when a route or server is built (see [`RouteMetrics`] and
//! [`ServerMetrics`]), so recording a request is a few atomic adds. Gauges that mirror live
//! state (in-flight, health) are refreshed when `/metrics` is scraped.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, TextEncoder,
};
use std::sync::LazyLock;

/// Parapet's registry; every metric here is named `parapet_*`.
static REGISTRY: LazyLock<prometheus::Registry> = LazyLock::new(prometheus::Registry::new);

fn register(collector: Box<dyn prometheus::core::Collector>) {
    REGISTRY
        .register(collector)
        .expect("metric registered once");
}

pub const NAMESPACE: &str = "parapet";

/// API-shaped latency buckets: 1 ms to about 10 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

/// The protocol a client spoke, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2,
    H3,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Http1, Protocol::H2, Protocol::H3];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
            Protocol::H3 => "h3",
        }
    }

    pub fn of(version: http::Version) -> Protocol {
        match version {
            http::Version::HTTP_2 => Protocol::H2,
            http::Version::HTTP_3 => Protocol::H3,
            _ => Protocol::Http1,
        }
    }
}

/// Label values for status classes, indexed by `status / 100 - 1`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

pub fn counter(name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::with_opts(Opts::new(name, help).namespace(NAMESPACE))
        .expect("static metric definition");
    register(Box::new(counter.clone()));
    counter
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::with_opts(Opts::new(name, help).namespace(NAMESPACE))
        .expect("static metric definition");
    register(Box::new(gauge.clone()));
    gauge
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
        .expect("static metric definition");
    register(Box::new(vec.clone()));
    vec
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
        .expect("static metric definition");
    register(Box::new(vec.clone()));
    vec
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let opts = HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .buckets(buckets);
    let vec = HistogramVec::new(opts, labels).expect("static metric definition");
    register(Box::new(vec.clone()));
    vec
}

/// Every metric family Parapet exports.
pub struct Metrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_response: HistogramVec,
    pub upstream_in_flight: IntGaugeVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_connects: IntCounterVec,
    pub upstream_connect_failures: IntCounterVec,
    pub upstream_reuses: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_pool_size: IntGauge,
    /// By [`Protocol`] index.
    pub downstream_open_connections: [IntGauge; 3],
    /// By [`Protocol`] index.
    pub downstream_connections: [IntCounter; 3],
    /// By [`Protocol`] index.
    pub downstream_bytes_in: [IntCounter; 3],
    /// By [`Protocol`] index.
    pub downstream_bytes_out: [IntCounter; 3],
    pub config_reloads: IntCounterVec,
    pub config_info: IntGaugeVec,
    pub config_loaded_time: IntGauge,
    pub access_log_dropped: IntCounter,
    pub tls_client_hellos: IntCounter,
    pub tls_handshakes: IntCounter,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let process =
        prometheus::process_collector::ProcessCollector::new(std::process::id() as i32, NAMESPACE);
    register(Box::new(process));
    let build_info = gauge_vec("build_info", "Parapet's version; always 1.", &["version"]);
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    let pool_size = IntGauge::with_opts(
        Opts::new(
            "upstream_keepalive_pool_size",
            "Idle upstream connections the pool may hold.",
        )
        .namespace(NAMESPACE),
    )
    .expect("static metric definition");
    register(Box::new(pool_size.clone()));
    let loaded_time = IntGauge::with_opts(
        Opts::new(
            "config_loaded_timestamp_seconds",
            "When the running config was loaded (Unix time).",
        )
        .namespace(NAMESPACE),
    )
    .expect("static metric definition");
    register(Box::new(loaded_time.clone()));
    let dropped = IntCounter::with_opts(
        Opts::new(
            "access_log_dropped_total",
            "Access log lines dropped because the log buffer was full.",
        )
        .namespace(NAMESPACE),
    )
    .expect("static metric definition");
    register(Box::new(dropped.clone()));
    Metrics {
        requests: counter_vec(
            "requests_total",
            "Requests answered, by route, upstream, status class and client protocol.",
            &["route", "upstream", "status_class", "protocol"],
        ),
        request_duration: histogram_vec(
            "request_duration_seconds",
            "Whole request time, from request header to the last response byte.",
            &["route", "protocol"],
            latency_buckets(),
        ),
        upstream_response: histogram_vec(
            "upstream_response_seconds",
            "Time from choosing a server to its response header.",
            &["upstream", "server"],
            latency_buckets(),
        ),
        upstream_in_flight: gauge_vec(
            "upstream_in_flight",
            "Requests in flight to each server.",
            &["upstream", "server"],
        ),
        upstream_healthy: gauge_vec(
            "upstream_healthy",
            "1 when the server is up by active and passive health, else 0.",
            &["upstream", "server"],
        ),
        upstream_connects: counter_vec(
            "upstream_connects_total",
            "New TCP connections opened to each server.",
            &["upstream", "server"],
        ),
        upstream_connect_failures: counter_vec(
            "upstream_connect_failures_total",
            "Failed attempts to connect to each server.",
            &["upstream", "server"],
        ),
        upstream_reuses: counter_vec(
            "upstream_keepalive_reuses_total",
            "Requests sent over a pooled keep-alive connection.",
            &["upstream", "server"],
        ),
        upstream_retries: counter_vec(
            "upstream_retries_total",
            "Tries after the first, by upstream.",
            &["upstream"],
        ),
        upstream_pool_size: pool_size,
        downstream_open_connections: {
            let vec = gauge_vec(
                "downstream_open_connections",
                "Client connections open now.",
                &["protocol"],
            );
            Protocol::ALL.map(|p| vec.with_label_values(&[p.as_str()]))
        },
        downstream_connections: per_protocol(counter_vec(
            "downstream_connections_total",
            "Client connections accepted.",
            &["protocol"],
        )),
        downstream_bytes_in: per_protocol(counter_vec(
            "downstream_received_bytes_total",
            "Request body bytes received.",
            &["protocol"],
        )),
        downstream_bytes_out: per_protocol(counter_vec(
            "downstream_sent_bytes_total",
            "Response body bytes sent.",
            &["protocol"],
        )),
        config_reloads: counter_vec(
            "config_reloads_total",
            "Config reloads, by result.",
            &["result"],
        ),
        config_info: gauge_vec(
            "config_info",
            "The running config's SHA-256 (first 16 hex digits); always 1.",
            &["hash"],
        ),
        config_loaded_time: loaded_time,
        access_log_dropped: dropped,
        tls_client_hellos: counter(
            "tls_client_hellos_total",
            "TLS handshakes begun (ClientHello received), TCP and QUIC.",
        ),
        tls_handshakes: counter(
            "tls_handshakes_total",
            "TLS handshakes completed (TCP listeners and QUIC); begun minus completed failed or are in progress.",
        ),
    }
});

fn per_protocol(vec: IntCounterVec) -> [IntCounter; 3] {
    Protocol::ALL.map(|p| vec.with_label_values(&[p.as_str()]))
}

/// Pre-resolved handles for one route.
pub struct RouteMetrics {
    /// `[status class][protocol]`.
    requests: [[IntCounter; 3]; 5],
    durations: [Histogram; 3],
}

impl RouteMetrics {
    pub fn new(route: &str, upstream: &str) -> Self {
        let metrics = &*METRICS;
        RouteMetrics {
            requests: STATUS_CLASSES.map(|class| {
                Protocol::ALL.map(|p| {
                    metrics
                        .requests
                        .with_label_values(&[route, upstream, class, p.as_str()])
                })
            }),
            durations: Protocol::ALL.map(|p| {
                metrics
                    .request_duration
                    .with_label_values(&[route, p.as_str()])
            }),
        }
    }

    pub fn record(&self, status: u16, protocol: Protocol, seconds: f64) {
        self.requests[status_class_index(status)][protocol as usize].inc();
        self.durations[protocol as usize].observe(seconds);
    }
}

/// Pre-resolved handles for one upstream server.
#[derive(Debug)]
pub struct ServerMetrics {
    pub response_time: Histogram,
    pub connects: IntCounter,
    pub connect_failures: IntCounter,
    pub reuses: IntCounter,
}

impl ServerMetrics {
    pub fn new(upstream: &str, server: &str) -> Self {
        let metrics = &*METRICS;
        let labels = [upstream, server];
        ServerMetrics {
            response_time: metrics.upstream_response.with_label_values(&labels),
            connects: metrics.upstream_connects.with_label_values(&labels),
            connect_failures: metrics.upstream_connect_failures.with_label_values(&labels),
            reuses: metrics.upstream_reuses.with_label_values(&labels),
        }
    }

    /// Drops a removed server's series so `/metrics` stops showing it.
    pub fn forget(upstream: &str, server: &str) {
        let metrics = &*METRICS;
        let labels = [upstream, server];
        let _ = metrics.upstream_response.remove_label_values(&labels);
        let _ = metrics.upstream_connects.remove_label_values(&labels);
        let _ = metrics
            .upstream_connect_failures
            .remove_label_values(&labels);
        let _ = metrics.upstream_reuses.remove_label_values(&labels);
        let _ = metrics.upstream_in_flight.remove_label_values(&labels);
        let _ = metrics.upstream_healthy.remove_label_values(&labels);
    }
}

/// Compression metrics, each by [`crate::compress::Algorithm`] index; registered when the
/// proxy installs its compression module at startup.
pub struct CompressionMetrics {
    pub bytes_in: [IntCounter; 3],
    pub bytes_out: [IntCounter; 3],
    /// Wall time around the compressor calls (each is synchronous CPU work, so it is the CPU
    /// time unless the thread is preempted).
    pub seconds: [prometheus::Counter; 3],
    pub compressions: [IntCounter; 3],
    pub decompressions: [IntCounter; 3],
    /// `[algorithm][crate::compress::DecodeError index]`.
    pub decompression_errors: [[IntCounter; 2]; 3],
}

pub static COMPRESSION: LazyLock<CompressionMetrics> = LazyLock::new(|| {
    use crate::compress::{Algorithm, DecodeError};
    let per_algorithm =
        |vec: IntCounterVec| Algorithm::ALL.map(|a| vec.with_label_values(&[a.as_str()]));
    let seconds = prometheus::CounterVec::new(
        Opts::new(
            "compression_seconds_total",
            "Time spent in the compressors (wall time around each synchronous call), by algorithm.",
        )
        .namespace(NAMESPACE),
        &["algorithm"],
    )
    .expect("static metric definition");
    register(Box::new(seconds.clone()));
    let errors = counter_vec(
        "decompression_errors_total",
        "Upstream bodies whose decoding stopped (the response was cut): corrupt or truncated data, or over max_ratio / max_decompressed_size.",
        &["algorithm", "reason"],
    );
    CompressionMetrics {
        bytes_in: per_algorithm(counter_vec(
            "compression_bytes_in_total",
            "Body bytes fed to the compressors, by algorithm.",
            &["algorithm"],
        )),
        bytes_out: per_algorithm(counter_vec(
            "compression_bytes_out_total",
            "Compressed body bytes produced, by algorithm.",
            &["algorithm"],
        )),
        seconds: Algorithm::ALL.map(|a| seconds.with_label_values(&[a.as_str()])),
        compressions: per_algorithm(counter_vec(
            "compressions_total",
            "Responses compressed (one per response), by algorithm.",
            &["algorithm"],
        )),
        decompressions: per_algorithm(counter_vec(
            "decompressions_total",
            "Upstream-compressed responses decoded for clients that do not accept the coding.",
            &["algorithm"],
        )),
        decompression_errors: Algorithm::ALL
            .map(|a| DecodeError::ALL.map(|e| errors.with_label_values(&[a.as_str(), e.as_str()]))),
    }
});

/// The text exposition of every registered metric.
pub fn render() -> String {
    let families = REGISTRY.gather();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!(error = %e, "could not encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_code() {
        assert_eq!(STATUS_CLASSES[status_class_index(101)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class_index(204)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class_index(404)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class_index(599)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class_index(0)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class_index(700)], "5xx");
    }

    #[test]
    fn recorded_requests_appear_in_the_exposition() {
        let route = RouteMetrics::new("unit-test-route", "unit-test-upstream");
        route.record(503, Protocol::H2, 0.02);
        let text = render();
        assert!(text.contains(
            "parapet_requests_total{protocol=\"h2\",route=\"unit-test-route\",status_class=\"5xx\",upstream=\"unit-test-upstream\"} 1"
        ));
    }
}
