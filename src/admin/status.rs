//! The live status page of the admin listener: the self-contained page served at `GET /` and the
//! snapshot it polls every second at `GET /status.json`.
//!
//! The snapshot carries cumulative counters and histogram buckets read from the metrics
//! registry, not rates: the page keeps the last few snapshots and derives requests/s, p95 and the
//! cache hit ratio over its own window, so the server keeps no extra state for it.

use crate::cache::metrics::CACHE_METRICS;
use crate::cache::status::Outcome;
use crate::proxy::{Runtime, UNROUTED};
use crate::upstream::ServerState;
use http::{Response, StatusCode};
use prometheus::proto::Metric;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The page: one HTML file with its style and script inline, no external asset.
const PAGE: &str = include_str!("status.html");

/// Lets the inline script and style run and the page fetch from its own origin, nothing else.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The status page, with a content security policy that forbids any outside resource.
pub fn page() -> Response<Vec<u8>> {
    let body = PAGE.as_bytes().to_vec();
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::CONTENT_SECURITY_POLICY, PAGE_POLICY)
        .header(http::header::REFERRER_POLICY, "no-referrer")
        .body(body)
        .unwrap_or_default()
}

/// Each upstream group (sorted by name) with its servers' health, weight, in-flight requests,
/// failures in the current `fail_timeout` window and the last failure (what took a server
/// down, and when); the body of `GET /upstreams` too.
pub fn upstream_groups(runtime: &Runtime, now: Instant) -> Value {
    let mut names: Vec<&String> = runtime.upstreams.keys().collect();
    names.sort();
    let groups: Map<String, Value> = names
        .into_iter()
        .map(|name| {
            let upstream = &runtime.upstreams[name];
            let servers: Vec<Value> = upstream
                .servers
                .iter()
                .zip(&upstream.config.servers)
                .map(|(state, config)| {
                    json!({
                        "address": state.address.to_string(),
                        "weight": config.weight,
                        "healthy": state.is_up(now),
                        "active_check_up": state.is_active_up(),
                        "in_flight": state.in_flight(),
                        "recent_failures": state.recent_failures(),
                        "last_failure": last_failure(state),
                    })
                })
                .collect();
            (name.clone(), json!({ "servers": servers }))
        })
        .collect();
    Value::Object(groups)
}

/// A server's most recent failure (of a request or of the active check) and when, or `null`.
fn last_failure(state: &ServerState) -> Value {
    state.last_failure().map_or(Value::Null, |failure| {
        json!({
            "reason": failure.reason,
            "at": humantime::format_rfc3339_seconds(failure.at).to_string(),
            "source": failure.kind.as_str(),
        })
    })
}

/// Everything the page shows, as of now. Counters are totals since start: the page takes
/// differences between snapshots (`time_ms` apart) to get rates and windowed quantiles.
pub fn snapshot(runtime: &Runtime) -> Value {
    crate::cache::refresh_gauges();
    let latency = RouteLatency::collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "time_ms": unix_millis(),
        "upstreams": upstream_groups(runtime, Instant::now()),
        "latency_bounds": latency.bounds,
        "routes": routes(&latency),
        "cache": cache(),
    })
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn label<'a>(metric: &'a Metric, name: &str) -> &'a str {
    metric
        .get_label()
        .iter()
        .find(|pair| pair.name() == name)
        .map_or("", |pair| pair.value())
}

/// Request-duration buckets per route, summed over protocols.
struct RouteLatency {
    /// Upper bounds of the finite buckets, in seconds.
    bounds: Vec<f64>,
    /// Per route: cumulative count per finite bucket, then the total count.
    counts: BTreeMap<String, (Vec<u64>, u64)>,
}

impl RouteLatency {
    fn collect() -> Self {
        let mut bounds = Vec::new();
        let mut counts: BTreeMap<String, (Vec<u64>, u64)> = BTreeMap::new();
        for family in crate::proxy::request_families().1 {
            for metric in family.get_metric() {
                let histogram = metric.get_histogram();
                let buckets = histogram.get_bucket();
                if bounds.is_empty() {
                    bounds = buckets.iter().map(|b| b.upper_bound()).collect();
                }
                let entry = counts
                    .entry(label(metric, "route").to_string())
                    .or_insert_with(|| (vec![0; buckets.len()], 0));
                for (sum, bucket) in entry.0.iter_mut().zip(buckets) {
                    *sum += bucket.cumulative_count();
                }
                entry.1 += histogram.get_sample_count();
            }
        }
        RouteLatency { bounds, counts }
    }
}

/// How the page names the requests answered before any route took them.
const UNROUTED_NAME: &str = "(no route: 404s and refused requests)";

/// Per route: its upstream, requests by status class, and its latency buckets.
fn routes(latency: &RouteLatency) -> Vec<Value> {
    let mut requests: BTreeMap<String, (String, BTreeMap<String, u64>)> = BTreeMap::new();
    for family in crate::proxy::request_families().0 {
        for metric in family.get_metric() {
            let entry = requests
                .entry(label(metric, "route").to_string())
                .or_insert_with(|| (label(metric, "upstream").to_string(), BTreeMap::new()));
            // Counter values are whole numbers kept as f64 by the exposition format.
            let value = metric.get_counter().value() as u64;
            *entry
                .1
                .entry(label(metric, "status_class").to_string())
                .or_insert(0) += value;
        }
    }
    requests
        .into_iter()
        .map(|(route, (upstream, by_class))| {
            let (buckets, count) = latency.counts.get(&route).cloned().unwrap_or_default();
            // Requests no route took are shown as such, not as a route "none" to "none".
            let unrouted = route == UNROUTED && upstream == UNROUTED;
            let (name, upstream) = match unrouted {
                true => (UNROUTED_NAME.to_string(), "-".to_string()),
                false => (route, upstream),
            };
            json!({
                "name": name,
                "upstream": upstream,
                "unrouted": unrouted,
                "requests": by_class,
                "latency_buckets": buckets,
                "latency_count": count,
            })
        })
        .collect()
}

/// Responses on cached routes by cache outcome, what the cache holds, and the shared tier's
/// state (`null` without `[cache.shared]`).
fn cache() -> Value {
    let outcomes: Map<String, Value> = Outcome::ALL
        .iter()
        .zip(&CACHE_METRICS.responses)
        .map(|(outcome, counter)| (outcome.as_str().to_string(), json!(counter.get())))
        .collect();
    json!({
        "responses": outcomes,
        "stored_bytes": CACHE_METRICS.stored_bytes.get(),
        "entries": CACHE_METRICS.entries.get(),
        "shared": crate::cache::shared::get().map_or(Value::Null, |tier| tier.status()),
    })
}
