//! Prometheus plumbing: Parapet's own registry (the crate's default registry carries unprefixed
//! process metrics), the `parapet_` namespace, constructors that register a family once, the
//! label vocabulary every concern shares (client protocol, status class), process and build
//! metrics, and the text exposition.
//!
//! Each concern keeps its own handles (`proxy`, `listen`, `upstream`, `cache`, `compress`,
//! `tls`, `control`, `access_log`), resolved when a route or server is built, so recording a
//! request is a few atomic adds. A leaf: it imports nothing from the crate.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder,
};
use std::sync::LazyLock;

/// Parapet's registry; every metric here is named `parapet_*`.
static REGISTRY: LazyLock<prometheus::Registry> = LazyLock::new(prometheus::Registry::new);

pub fn register(collector: Box<dyn prometheus::core::Collector>) {
    REGISTRY
        .register(collector)
        .expect("metric registered once");
}

pub const NAMESPACE: &str = "parapet";

/// API-shaped latency buckets: 50 µs to 10 s. The four below 1 ms let the proxy/upstream split
/// of a fast API (`parapet load --admin`) say more than "under 1 ms"; the prometheus crate
/// writes them as `le="0.00005"`, `le="0.0001"`, `le="0.00025"`, `le="0.0005"`.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0,
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
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn status_class_index(status: u16) -> usize {
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

/// One handle per [`Protocol`], by index.
pub fn per_protocol(vec: IntCounterVec) -> [IntCounter; 3] {
    Protocol::ALL.map(|p| vec.with_label_values(&[p.as_str()]))
}

/// The process collector (RSS, CPU, fds) and `parapet_build_info`; once, at start.
pub fn register_process_metrics() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        let process = prometheus::process_collector::ProcessCollector::new(
            std::process::id() as i32,
            NAMESPACE,
        );
        register(Box::new(process));
        let build_info = gauge_vec("build_info", "Parapet's version; always 1.", &["version"]);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
    });
}

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
}
