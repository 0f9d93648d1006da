//! The split: per route and per upstream server, where the time went, from the difference
//! between two scrapes of Parapet's histograms.
//!
//! `parapet_request_duration_seconds{route}` is the whole request inside Parapet (request head
//! in to last response byte out); `parapet_upstream_response_seconds{upstream,server}` is the
//! upstream's part (server chosen to response head). Proxy time is total minus upstream: at each
//! percentile, the difference of the two estimates; on average, the difference of the sums,
//! which is exact. Histogram percentiles are estimated as Prometheus' `histogram_quantile` does,
//! by linear interpolation inside the bucket where the rank falls, so each estimate is only
//! known to lie within that bucket; reports give the bucket next to the value.
//!
//! The client saw every request Parapet's part is taken from, so no percentile of that part can
//! truly be above the client's own: where a bucket's interpolation puts it there (all requests
//! under 1 ms land in one bucket, and the estimate is spread across it), the figure is capped at
//! the client's percentile and marked `≤` ([`SplitReport::capped_by_client`]).

use super::format::format_ms;
use super::scrape::{self, Sample};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The Parapet metric families the split reads (see `crate::metrics`).
pub const REQUESTS_TOTAL: &str = "parapet_requests_total";
pub const REQUEST_DURATION: &str = "parapet_request_duration_seconds";
pub const UPSTREAM_RESPONSE: &str = "parapet_upstream_response_seconds";
const METRIC_PREFIX: &str = "parapet_";

/// The percentiles the split reports.
pub const SPLIT_PERCENTILES: [f64; 3] = [50.0, 95.0, 99.0];

/// A cumulative histogram: `(upper bound, observations ≤ it)` by rising bound, `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    pub cumulative: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

/// Where a percentile lies: the interpolated value and the bucket that holds it (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub seconds: f64,
    pub lower: f64,
    pub upper: f64,
}

impl Buckets {
    fn add_bucket(&mut self, bound: f64, count: f64) {
        match self.cumulative.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, existing)) => *existing += count,
            None => {
                self.cumulative.push((bound, count));
                self.cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    /// Adds another histogram with the same buckets (e.g. another protocol's series).
    pub fn merge(&mut self, other: &Buckets) {
        for &(bound, count) in &other.cumulative {
            self.add_bucket(bound, count);
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// What was observed after `before` was taken.
    pub fn since(&self, before: &Buckets) -> Buckets {
        let earlier = |bound: f64| {
            before
                .cumulative
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c)
        };
        Buckets {
            cumulative: self
                .cumulative
                .iter()
                .map(|&(bound, count)| (bound, (count - earlier(bound)).max(0.0)))
                .collect(),
            sum: (self.sum - before.sum).max(0.0),
            count: (self.count - before.count).max(0.0),
        }
    }

    /// The percentile (0–100) as `histogram_quantile` estimates it; `None` when empty.
    pub fn percentile(&self, percentile: f64) -> Option<Estimate> {
        let total = self.cumulative.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = percentile / 100.0 * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(upper, count) in &self.cumulative {
            if count >= rank && count > below {
                if upper.is_infinite() {
                    return Some(Estimate {
                        seconds: lower,
                        lower,
                        upper,
                    });
                }
                let within = (rank - below) / (count - below);
                return Some(Estimate {
                    seconds: lower + (upper - lower) * within,
                    lower,
                    upper,
                });
            }
            (lower, below) = (upper, count);
        }
        None
    }

    /// Mean of the observations, seconds.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The finite bucket bounds, seconds.
    pub fn bounds(&self) -> Vec<f64> {
        self.cumulative
            .iter()
            .map(|(b, _)| *b)
            .filter(|b| b.is_finite())
            .collect()
    }
}

/// The histograms of one scrape (or the difference of two), keyed the way the split reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Request duration by route, all protocols together.
    pub routes: BTreeMap<String, Buckets>,
    /// Upstream response time by (upstream, server).
    pub servers: BTreeMap<(String, String), Buckets>,
    /// Upstreams each route sent requests to.
    pub route_upstreams: BTreeMap<String, BTreeSet<String>>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for sample in scrape::parse(text, METRIC_PREFIX) {
            snapshot.add(&sample);
        }
        snapshot
    }

    fn add(&mut self, sample: &Sample) {
        let label = |name| sample.label(name).unwrap_or_default().to_string();
        if sample.name == REQUESTS_TOTAL && sample.value > 0.0 {
            self.route_upstreams
                .entry(label("route"))
                .or_default()
                .insert(label("upstream"));
        } else if let Some(part) = family_part(&sample.name, REQUEST_DURATION) {
            add_part(self.routes.entry(label("route")).or_default(), part, sample);
        } else if let Some(part) = family_part(&sample.name, UPSTREAM_RESPONSE) {
            let key = (label("upstream"), label("server"));
            add_part(self.servers.entry(key).or_default(), part, sample);
        }
    }

    /// What Parapet observed after `before` was scraped; series with nothing new are left out.
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        let empty = Buckets::default();
        Snapshot {
            routes: delta_map(&self.routes, &before.routes, &empty),
            servers: delta_map(&self.servers, &before.servers, &empty),
            route_upstreams: self.route_upstreams.clone(),
        }
    }

    /// Every route's histogram together.
    pub fn all_routes(&self) -> Buckets {
        merged(self.routes.values())
    }

    /// Every server's histogram together.
    pub fn all_servers(&self) -> Buckets {
        merged(self.servers.values())
    }

    /// The upstream time of the servers `route` sends to.
    fn upstream_of(&self, route: &str) -> Buckets {
        let upstreams = self.route_upstreams.get(route);
        merged(
            self.servers
                .iter()
                .filter(|((upstream, _), _)| upstreams.is_some_and(|u| u.contains(upstream)))
                .map(|(_, buckets)| buckets),
        )
    }
}

fn merged<'a>(all: impl Iterator<Item = &'a Buckets>) -> Buckets {
    let mut total = Buckets::default();
    for buckets in all {
        total.merge(buckets);
    }
    total
}

fn delta_map<K: Ord + Clone>(
    after: &BTreeMap<K, Buckets>,
    before: &BTreeMap<K, Buckets>,
    empty: &Buckets,
) -> BTreeMap<K, Buckets> {
    after
        .iter()
        .map(|(key, buckets)| (key.clone(), buckets.since(before.get(key).unwrap_or(empty))))
        .filter(|(_, delta)| delta.count > 0.0)
        .collect()
}

/// The part of a histogram family a sample is: `_bucket`, `_sum` or `_count`.
fn family_part<'a>(name: &'a str, family: &str) -> Option<&'a str> {
    name.strip_prefix(family)?.strip_prefix('_')
}

fn add_part(buckets: &mut Buckets, part: &str, sample: &Sample) {
    match part {
        "bucket" => {
            let bound = match sample.label("le") {
                Some("+Inf") => f64::INFINITY,
                Some(bound) => bound.parse().unwrap_or(f64::NAN),
                None => f64::NAN,
            };
            if !bound.is_nan() {
                buckets.add_bucket(bound, sample.value);
            }
        }
        "sum" => buckets.sum += sample.value,
        "count" => buckets.count += sample.value,
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The report

/// A percentile estimate in milliseconds, with the bucket it lies in.
#[derive(Debug, Clone, Serialize)]
pub struct EstimateMs {
    pub percentile: f64,
    pub ms: f64,
    /// `[lower, upper]` of the bucket in ms; upper is `null` for the overflow bucket.
    pub bucket_ms: [Option<f64>; 2],
    /// The bucket's interpolated estimate, ms, when it was above the client's own percentile
    /// and `ms` was capped at the client's figure; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub above_client_estimate_ms: Option<f64>,
}

impl EstimateMs {
    /// `value [lower–upper]`, e.g. `375.0ms [250.0ms–500.0ms]`; `≤value [lower–upper]` when the
    /// value is the client's percentile standing in for a bucket estimate above it.
    pub fn with_bucket(&self) -> String {
        let lower = self.bucket_ms[0].map_or("0".to_string(), format_ms);
        let upper = self.bucket_ms[1].map_or("+Inf".to_string(), format_ms);
        let capped = if self.above_client_estimate_ms.is_some() {
            "≤"
        } else {
            ""
        };
        format!("{capped}{} [{lower}–{upper}]", format_ms(self.ms))
    }

    /// This estimate, no higher than `client_ms` (the client's figure at the same percentile).
    fn capped_at(&self, client_ms: Option<f64>) -> EstimateMs {
        match client_ms {
            Some(client_ms) if self.ms > client_ms => EstimateMs {
                ms: client_ms,
                above_client_estimate_ms: Some(self.ms),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    /// The estimate at `percentile` in `estimates`, with its bucket; "-" when there is none.
    pub fn find_with_bucket(estimates: &[EstimateMs], percentile: f64) -> String {
        estimates
            .iter()
            .find(|e| e.percentile == percentile)
            .map_or("-".to_string(), EstimateMs::with_bucket)
    }

    fn of(percentile: f64, estimate: Estimate) -> EstimateMs {
        EstimateMs {
            percentile,
            ms: estimate.seconds * 1000.0,
            bucket_ms: [
                Some(estimate.lower * 1000.0),
                estimate
                    .upper
                    .is_finite()
                    .then_some(estimate.upper * 1000.0),
            ],
            above_client_estimate_ms: None,
        }
    }
}

fn estimates(buckets: &Buckets) -> Vec<EstimateMs> {
    SPLIT_PERCENTILES
        .iter()
        .filter_map(|&p| Some(EstimateMs::of(p, buckets.percentile(p)?)))
        .collect()
}

/// Proxy time at each percentile: total minus upstream, never below 0.
fn differences(total: &[EstimateMs], upstream: &[EstimateMs]) -> Vec<ProxyMs> {
    total
        .iter()
        .filter_map(|t| {
            let u = upstream.iter().find(|u| u.percentile == t.percentile)?;
            Some(ProxyMs {
                percentile: t.percentile,
                ms: (t.ms - u.ms).max(0.0),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyMs {
    pub percentile: f64,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteSplit {
    pub route: String,
    pub upstreams: Vec<String>,
    pub requests: u64,
    /// Whole request time inside Parapet.
    pub total: Vec<EstimateMs>,
    /// Upstream response time of the route's servers.
    pub upstream: Vec<EstimateMs>,
    /// Total minus upstream at each percentile.
    pub proxy: Vec<ProxyMs>,
    pub mean_total_ms: Option<f64>,
    pub mean_upstream_ms: Option<f64>,
    /// Exact, from the histograms' sums: (Σ total − Σ upstream) / requests.
    pub mean_proxy_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerSplit {
    pub upstream: String,
    pub server: String,
    pub requests: u64,
    pub upstream_time: Vec<EstimateMs>,
    pub mean_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub method: &'static str,
    /// Parapet's histogram bucket bounds, ms: the resolution of every figure below.
    pub bucket_bounds_ms: Vec<f64>,
    pub routes: Vec<RouteSplit>,
    pub servers: Vec<ServerSplit>,
}

const METHOD: &str = "Deltas of Parapet's histograms between the scrapes before and after the run \
(everything Parapet served meanwhile counts). Percentiles are interpolated inside the bucket they \
fall in, as histogram_quantile does; proxy = total - upstream at each percentile, mean proxy from \
the histograms' sums (exact). A percentile the buckets put above the client's own is clamped to \
the client's (ms; the bucket's estimate kept as above_client_estimate_ms).";

impl SplitReport {
    pub fn new(delta: &Snapshot) -> SplitReport {
        let mut bounds = delta.all_routes().bounds();
        bounds.extend(delta.all_servers().bounds());
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        SplitReport {
            method: METHOD,
            bucket_bounds_ms: bounds.iter().map(|b| b * 1000.0).collect(),
            routes: delta
                .routes
                .iter()
                .map(|(route, total)| route_split(delta, route, total))
                .collect(),
            servers: delta
                .servers
                .iter()
                .map(|((upstream, server), buckets)| ServerSplit {
                    upstream: upstream.clone(),
                    server: server.clone(),
                    requests: buckets.count as u64,
                    upstream_time: estimates(buckets),
                    mean_ms: buckets.mean().map(|s| s * 1000.0),
                })
                .collect(),
        }
    }
}

impl SplitReport {
    /// Caps every percentile of Parapet's part at the client's own: `client_ms(p)` is the
    /// client's latency at percentile `p`, ms. The client timed every request whose parts
    /// Parapet's histograms hold, so an estimate above it only says how coarse the bucket is;
    /// such a figure becomes the client's, marked `≤`, and proxy time is recomputed from the
    /// capped figures (so it is never above the client's either).
    pub fn capped_by_client(mut self, client_ms: impl Fn(f64) -> Option<f64>) -> SplitReport {
        let cap = |estimates: &[EstimateMs]| -> Vec<EstimateMs> {
            estimates
                .iter()
                .map(|e| e.capped_at(client_ms(e.percentile)))
                .collect()
        };
        for route in &mut self.routes {
            route.total = cap(&route.total);
            route.upstream = cap(&route.upstream);
            route.proxy = differences(&route.total, &route.upstream);
        }
        for server in &mut self.servers {
            server.upstream_time = cap(&server.upstream_time);
        }
        self
    }
}

fn route_split(delta: &Snapshot, route: &str, total: &Buckets) -> RouteSplit {
    let upstream = delta.upstream_of(route);
    let total_estimates = estimates(total);
    let upstream_estimates = estimates(&upstream);
    let mean_proxy_ms = (total.count > 0.0 && upstream.count > 0.0)
        .then(|| (total.sum - upstream.sum).max(0.0) / total.count * 1000.0);
    RouteSplit {
        route: route.to_string(),
        upstreams: delta
            .route_upstreams
            .get(route)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default(),
        requests: total.count as u64,
        proxy: differences(&total_estimates, &upstream_estimates),
        total: total_estimates,
        upstream: upstream_estimates,
        mean_total_ms: total.mean().map(|s| s * 1000.0),
        mean_upstream_ms: upstream.mean().map(|s| s * 1000.0),
        mean_proxy_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(cumulative: &[(f64, f64)], sum: f64) -> Buckets {
        Buckets {
            cumulative: cumulative.to_vec(),
            sum,
            count: cumulative.last().map_or(0.0, |c| c.1),
        }
    }

    #[test]
    fn percentiles_interpolate_inside_their_bucket() {
        let h = buckets(
            &[
                (0.1, 0.0),
                (0.25, 10.0),
                (0.5, 100.0),
                (f64::INFINITY, 100.0),
            ],
            30.0,
        );
        let p50 = h.percentile(50.0).unwrap();
        assert_eq!((p50.lower, p50.upper), (0.25, 0.5));
        assert!((p50.seconds - (0.25 + 0.25 * 40.0 / 90.0)).abs() < 1e-12);
        let p5 = h.percentile(5.0).unwrap();
        assert_eq!((p5.lower, p5.upper), (0.1, 0.25));
        assert_eq!(h.mean(), Some(0.3));
        assert!(Buckets::default().percentile(50.0).is_none());
    }

    #[test]
    fn a_percentile_in_the_overflow_bucket_is_its_lower_bound() {
        let h = buckets(&[(10.0, 1.0), (f64::INFINITY, 10.0)], 200.0);
        let p99 = h.percentile(99.0).unwrap();
        assert_eq!(
            (p99.seconds, p99.lower, p99.upper),
            (10.0, 10.0, f64::INFINITY)
        );
    }

    const BEFORE: &str = r#"
parapet_requests_total{protocol="http1",route="/",status_class="2xx",upstream="app"} 10
parapet_request_duration_seconds_bucket{protocol="http1",route="/",le="0.25"} 10
parapet_request_duration_seconds_bucket{protocol="http1",route="/",le="0.5"} 10
parapet_request_duration_seconds_bucket{protocol="http1",route="/",le="+Inf"} 10
parapet_request_duration_seconds_sum{protocol="http1",route="/"} 1
parapet_request_duration_seconds_count{protocol="http1",route="/"} 10
parapet_upstream_response_seconds_bucket{server="127.0.0.1:1",upstream="app",le="0.25"} 10
parapet_upstream_response_seconds_bucket{server="127.0.0.1:1",upstream="app",le="0.5"} 10
parapet_upstream_response_seconds_bucket{server="127.0.0.1:1",upstream="app",le="+Inf"} 10
parapet_upstream_response_seconds_sum{server="127.0.0.1:1",upstream="app"} 0.9
parapet_upstream_response_seconds_count{server="127.0.0.1:1",upstream="app"} 10
"#;

    /// BEFORE plus 20 requests of about 301 ms, 300 ms of which upstream, over HTTP/1.1 and h2.
    const AFTER: &str = r#"
parapet_requests_total{protocol="http1",route="/",status_class="2xx",upstream="app"} 30
parapet_request_duration_seconds_bucket{protocol="http1",route="/",le="0.25"} 10
parapet_request_duration_seconds_bucket{protocol="http1",route="/",le="0.5"} 20
parapet_request_duration_seconds_bucket{protocol="http1",route="/",le="+Inf"} 20
parapet_request_duration_seconds_sum{protocol="http1",route="/"} 4.01
parapet_request_duration_seconds_count{protocol="http1",route="/"} 20
parapet_request_duration_seconds_bucket{protocol="h2",route="/",le="0.25"} 0
parapet_request_duration_seconds_bucket{protocol="h2",route="/",le="0.5"} 10
parapet_request_duration_seconds_bucket{protocol="h2",route="/",le="+Inf"} 10
parapet_request_duration_seconds_sum{protocol="h2",route="/"} 3.01
parapet_request_duration_seconds_count{protocol="h2",route="/"} 10
parapet_upstream_response_seconds_bucket{server="127.0.0.1:1",upstream="app",le="0.25"} 10
parapet_upstream_response_seconds_bucket{server="127.0.0.1:1",upstream="app",le="0.5"} 30
parapet_upstream_response_seconds_bucket{server="127.0.0.1:1",upstream="app",le="+Inf"} 30
parapet_upstream_response_seconds_sum{server="127.0.0.1:1",upstream="app"} 6.9
parapet_upstream_response_seconds_count{server="127.0.0.1:1",upstream="app"} 30
"#;

    #[test]
    fn a_slow_upstream_shows_as_upstream_time_not_proxy_time() {
        let delta = Snapshot::parse(AFTER).since(&Snapshot::parse(BEFORE));
        let split = SplitReport::new(&delta);
        let route = &split.routes[0];
        assert_eq!(route.requests, 20);
        assert_eq!(route.upstreams, vec!["app".to_string()]);
        assert_eq!(split.servers[0].requests, 20);
        assert_eq!(route.upstream[0].bucket_ms, [Some(250.0), Some(500.0)]);
        assert!(route.proxy.iter().all(|p| p.ms < 1.0), "{:?}", route.proxy);
        let mean_proxy = route.mean_proxy_ms.unwrap();
        assert!((mean_proxy - 1.0).abs() < 1e-6, "{mean_proxy}");
        assert_eq!(split.bucket_bounds_ms, vec![250.0, 500.0]);
    }

    /// A fast origin: every request under 1 ms inside Parapet, so the whole histogram is one
    /// bucket and its interpolation puts p50 at 500 µs, above the client's 300 µs.
    #[test]
    fn no_percentile_of_the_split_is_printed_above_the_clients() {
        let text = r#"
parapet_requests_total{protocol="http1",route="api",status_class="2xx",upstream="app"} 100
parapet_request_duration_seconds_bucket{protocol="http1",route="api",le="0.001"} 100
parapet_request_duration_seconds_bucket{protocol="http1",route="api",le="+Inf"} 100
parapet_request_duration_seconds_sum{protocol="http1",route="api"} 0.03
parapet_request_duration_seconds_count{protocol="http1",route="api"} 100
parapet_upstream_response_seconds_bucket{server="127.0.0.1:1",upstream="app",le="0.001"} 100
parapet_upstream_response_seconds_bucket{server="127.0.0.1:1",upstream="app",le="+Inf"} 100
parapet_upstream_response_seconds_sum{server="127.0.0.1:1",upstream="app"} 0.02
parapet_upstream_response_seconds_count{server="127.0.0.1:1",upstream="app"} 100
"#;
        let split = SplitReport::new(&Snapshot::parse(text));
        assert!((split.routes[0].upstream[0].ms - 0.5).abs() < 1e-9);
        // The client: p50 300 µs, p95 2 ms (above the bucket's estimate), no p99.
        let client = |p: f64| match p {
            50.0 => Some(0.3),
            95.0 => Some(2.0),
            _ => None,
        };
        let split = split.capped_by_client(client);
        let route = &split.routes[0];
        for estimates in [
            &route.total,
            &route.upstream,
            &split.servers[0].upstream_time,
        ] {
            let p50 = &estimates[0];
            assert_eq!((p50.percentile, p50.ms), (50.0, 0.3));
            assert!((p50.above_client_estimate_ms.unwrap() - 0.5).abs() < 1e-9);
            assert_eq!(p50.bucket_ms, [Some(0.0), Some(1.0)]);
            assert_eq!(p50.with_bucket(), "≤300µs [0µs–1.00ms]");
            let p95 = &estimates[1];
            assert!((p95.ms - 0.95).abs() < 1e-9, "below the client's: kept");
            assert_eq!(p95.above_client_estimate_ms, None);
            assert_eq!(p95.with_bucket(), "950µs [0µs–1.00ms]");
            assert!(
                estimates[2].above_client_estimate_ms.is_none(),
                "no client p99"
            );
        }
        assert!(
            route.proxy.iter().all(|p| p.ms <= 0.3 + 1e-9),
            "{:?}",
            route.proxy
        );
        assert_eq!(route.proxy[0].ms, 0.0);
    }

    #[test]
    fn the_split_reads_the_names_parapet_exports() {
        let route = crate::proxy::RouteMetrics::new("split-name-test", "split-upstream");
        route.record(200, crate::metrics::Protocol::Http1, 0.01);
        let server = crate::upstream::metrics::ServerMetrics::new("split-upstream", "127.0.0.1:9");
        server.response_time.observe(0.008);
        let snapshot = Snapshot::parse(&crate::metrics::render());
        assert!(snapshot.routes.contains_key("split-name-test"));
        assert!(snapshot
            .servers
            .contains_key(&("split-upstream".to_string(), "127.0.0.1:9".to_string())));
        assert!(snapshot.route_upstreams["split-name-test"].contains("split-upstream"));
    }
}
