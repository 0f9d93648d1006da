//! Micro-benchmarks of the pure functions every proxied request runs through.
//!
//! Why these: per request, Parapet normalizes the Host header and looks the route up
//! (`route::normalize_host`, `route::Router::lookup`), picks a server
//! (`upstream::Upstream::select`, which builds a candidate snapshot and calls
//! `upstream::select::least_conn` or `round_robin`), and rewrites headers twice: hop-by-hop
//! removal on the way up and down (`proxy::headers::hop_by_hop_names`) and the forwarding
//! headers on the way up (`proxy::headers::forwarding_headers`). Everything else on the request
//! path is Pingora's. These run once per request on the proxy's single hot core, so a regression
//! here shows up directly as CPU per request in `benches/compare.sh`.
//!
//! Since the cache and compression landed (e15f1a1), also per cacheable or compressible request:
//! Accept-Encoding negotiation (`compress::negotiate::negotiate`), request Cache-Control parsing
//! (`cache::policy::RequestDirectives::parse`) and the cache key (`cache::key::url`, `cache_key`;
//! `vary_value` per varying field, and on every hit of a compressible response
//! `varies_only_on_accept_encoding`, since its codings share one stored response: issue 12).
//! Response-side freshness (`cache::policy::storable`, `hit_decision`) takes Pingora cache types
//! and is not covered yet.
//!
//! Run: `cargo bench --bench hot_paths` (add `-- --quick` for a fast pass, or a name filter such
//! as `-- select/`).
//!
//! Baseline, 2026-11-23, 2 shared cores (AMD EPYC VM, Debian 12), pinned with `taskset -c 0`,
//! `cargo bench --bench hot_paths -- --warm-up-time 1 --measurement-time 3`, criterion's
//! median estimate. Other builds were running on the machine, so treat ±20 % as noise.
//!
//! | benchmark                                      | time     |
//! |------------------------------------------------|----------|
//! | route/normalize_host/plain                     |  30 ns   |
//! | route/normalize_host/port_and_case             |  24 ns   |
//! | route/lookup/exact                             |  24 ns   |
//! | route/lookup/wildcard                          |  25 ns   |
//! | route/lookup/fallthrough_to_hostless           |  32 ns   |
//! | route/lookup/unknown_host                      |  25 ns   |
//! | route/normalize_and_lookup                     |  55 ns   |
//! | select/least_conn/3                            |   7.7 ns |
//! | select/round_robin/3                           |   8.8 ns |
//! | select/least_conn/100                          | 218 ns   |
//! | select/round_robin/100                         | 181 ns   |
//! | select/Upstream::select/least_conn/3           |  83 ns   |
//! | select/Upstream::select/round_robin/3          |  83 ns   |
//! | select/Upstream::select/least_conn/100         | 1.02 µs  |
//! | headers/hop_by_hop_names/browser_request       | 217 ns   |
//! | headers/hop_by_hop_names/many_connection_tokens| 687 ns   |
//! | headers/forwarding_headers/first_hop           | 556 ns   |
//! | headers/forwarding_headers/behind_two_proxies  | 909 ns   |
//! | cache_compress/negotiate/chrome                | 199 ns   |
//! | cache_compress/negotiate/qvalues               | 392 ns   |
//! | cache_compress/negotiate/absent                |  16 ns   |
//! | cache_compress/request_cache_control/no_cache  | 108 ns   |
//! | cache_compress/request_cache_control/four_dir… | 236 ns   |
//! | cache_compress/key/url_and_cache_key           | 193 ns   |
//! | cache_compress/key/variance_two_vary_headers   | 529 ns   | (replaced in issue 12 by the two below)
//! | cache_compress/key/vary_value_accept_language  | not measured yet |
//! | cache_compress/key/varies_only_on_accept_enc…  | not measured yet |
//!
//! Reading it: one proxied request runs normalize_and_lookup once, Upstream::select once,
//! hop_by_hop_names twice (request and response) and forwarding_headers once: about 1.1 µs,
//! against 45-75 µs of proxy CPU per request measured by benches/compare.sh. These functions
//! are not where Parapet's time goes; the benchmark is here to keep it that way.
//! `Upstream::select` costs 10x the bare algorithm because it takes a clock reading, two
//! `Vec` allocations and a mutex per call.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use parapet::cache::key::{cache_key, url, varies_only_on_accept_encoding, vary_value};
use parapet::cache::policy::RequestDirectives;
use parapet::compress::negotiate::{negotiate, Algorithm};
use parapet::config::Config;
use parapet::proxy::headers::{forwarding_headers, hop_by_hop_names, ForwardedFor};
use parapet::route::{normalize_host, Router};
use parapet::upstream::select::{least_conn, round_robin, Candidate};
use parapet::upstream::Upstream;
use std::path::Path;

/// About 20 routes: exact hosts with several prefixes, nested wildcards and host-less routes,
/// the shape of a small multi-tenant edge.
fn route_table() -> Router<u32> {
    let routes: &[(Option<&str>, &str)] = &[
        (None, "/"),
        (None, "/api/"),
        (None, "/static/"),
        (None, "/healthz"),
        (Some("api.example.com"), "/"),
        (Some("api.example.com"), "/v1/"),
        (Some("api.example.com"), "/v2/"),
        (Some("api.example.com"), "/v2/users/"),
        (Some("www.example.com"), "/"),
        (Some("www.example.com"), "/assets/"),
        (Some("shop.example.org"), "/"),
        (Some("shop.example.org"), "/cart/"),
        (Some("admin.example.net"), "/"),
        (Some("*.example.com"), "/"),
        (Some("*.example.com"), "/w/"),
        (Some("*.eu.example.com"), "/"),
        (Some("*.eu.example.com"), "/w/"),
        (Some("*.cdn.example.net"), "/img/"),
        (Some("*.example.org"), "/"),
        (Some("static.test"), "/img/"),
        (Some("static.test"), "/css/"),
    ];
    Router::new(
        routes
            .iter()
            .zip(0u32..)
            .map(|((host, prefix), n)| (host.map(str::to_string), prefix.to_string(), n)),
    )
}

fn bench_route(c: &mut Criterion) {
    let router = route_table();
    let mut group = c.benchmark_group("route");
    group.bench_function("normalize_host/plain", |b| {
        b.iter(|| normalize_host(black_box("api.example.com")))
    });
    group.bench_function("normalize_host/port_and_case", |b| {
        b.iter(|| normalize_host(black_box("API.Example.com:8080")))
    });
    let cases = [
        ("exact", "api.example.com", "/v2/users/42"),
        ("wildcard", "a.b.eu.example.com", "/w/thing"),
        ("fallthrough_to_hostless", "static.test", "/api/orders"),
        ("unknown_host", "unknown.invalid", "/static/app.js"),
    ];
    for (name, host, path) in cases {
        assert!(router.lookup(host, path).is_some(), "{name} must match");
        group.bench_with_input(
            BenchmarkId::new("lookup", name),
            &(host, path),
            |b, (host, path)| b.iter(|| router.lookup(black_box(host), black_box(path))),
        );
    }
    group.bench_function("normalize_and_lookup", |b| {
        b.iter(|| {
            let host = normalize_host(black_box("API.example.com:8080"));
            router.lookup(&host, black_box("/v2/users/42")).copied()
        })
    });
    group.finish();
}

/// `n` eligible candidates with weights 1..=3 and a spread of in-flight counts, a few tied for
/// the minimum so least_conn also exercises its round-robin tie break.
fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            weight: 1 + (i % 3) as u32,
            in_flight: (i * 7) % 5,
            eligible: i % 17 != 16,
        })
        .collect()
}

fn bench_select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for n in [3usize, 100] {
        let list = candidates(n);
        let mut current = vec![0i64; n];
        group.bench_with_input(BenchmarkId::new("least_conn", n), &list, |b, list| {
            b.iter(|| least_conn(black_box(list), &mut current))
        });
        let mut current = vec![0i64; n];
        group.bench_with_input(BenchmarkId::new("round_robin", n), &list, |b, list| {
            b.iter(|| round_robin(black_box(list), &mut current))
        });
    }
    for (balance, n) in [
        ("least_conn", 3usize),
        ("round_robin", 3),
        ("least_conn", 100),
    ] {
        let upstream = upstream(balance, n);
        group.bench_function(
            BenchmarkId::new(format!("Upstream::select/{balance}"), n),
            |b| {
                b.iter(|| {
                    // Selection holds the in-flight guard; dropping it releases the slot, as a
                    // finished request does.
                    let chosen = upstream.select(black_box(&[]), b"").expect("a server");
                    chosen.index
                })
            },
        );
    }
    group.finish();
}

/// An upstream built through the real config path (so the bench keeps compiling as config
/// structs grow fields).
fn upstream(balance: &str, servers: usize) -> Upstream {
    let mut toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:1\"\n\n[upstream.u]\nbalance = \"{balance}\"\n"
    );
    for i in 0..servers {
        toml.push_str(&format!(
            "[[upstream.u.server]]\naddress = \"127.0.0.1:{}\"\nweight = {}\n",
            10000 + i,
            1 + i % 3
        ));
    }
    toml.push_str("\n[[route]]\nupstream = \"u\"\n");
    let config = Config::parse(&toml, Path::new("bench.toml"))
        .unwrap_or_else(|e| panic!("bench config does not validate:\n{e}"));
    Upstream::new(config.upstreams["u"].clone(), |_| None)
}

/// A browser-like request as it reaches the proxy.
fn browser_request() -> HeaderMap {
    let pairs = [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("connection", "keep-alive"),
        ("cache-control", "no-cache"),
        ("referer", "https://www.example.com/"),
        ("sec-fetch-mode", "navigate"),
    ];
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    map
}

fn bench_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let request = browser_request();
    group.bench_function("hop_by_hop_names/browser_request", |b| {
        b.iter(|| hop_by_hop_names(black_box(&request), false))
    });
    let mut hostile = request.clone();
    hostile.insert(
        "connection",
        HeaderValue::from_static("keep-alive, x-a, x-b, x-c, te, upgrade"),
    );
    for name in ["x-a", "x-b", "x-c", "te", "upgrade", "keep-alive"] {
        hostile.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
    }
    group.bench_function("hop_by_hop_names/many_connection_tokens", |b| {
        b.iter(|| hop_by_hop_names(black_box(&hostile), false))
    });
    let info = ForwardedFor {
        client_ip: Some("127.0.0.1".parse().expect("ip")),
        scheme: "http",
        host: Some("api.example.com"),
        default_host: None,
        version: http::Version::HTTP_11,
    };
    group.bench_function("forwarding_headers/first_hop", |b| {
        b.iter(|| forwarding_headers(black_box(&request), black_box(&info)))
    });
    let mut forwarded = request.clone();
    forwarded.insert(
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.7, 198.51.100.2"),
    );
    forwarded.insert(
        "forwarded",
        HeaderValue::from_static("for=203.0.113.7, for=198.51.100.2"),
    );
    forwarded.insert("via", HeaderValue::from_static("1.1 edge-a, 1.1 edge-b"));
    group.bench_function("forwarding_headers/behind_two_proxies", |b| {
        b.iter(|| forwarding_headers(black_box(&forwarded), black_box(&info)))
    });
    group.finish();
}

fn bench_cache_and_compression(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_compress");
    let algorithms = Algorithm::ALL;
    for (name, value) in [
        ("chrome", Some("gzip, deflate, br, zstd")),
        ("qvalues", Some("gzip;q=0.8, br;q=0.9, zstd;q=0.1, *;q=0")),
        ("absent", None),
    ] {
        group.bench_with_input(BenchmarkId::new("negotiate", name), &value, |b, value| {
            b.iter(|| negotiate(black_box(*value), black_box(&algorithms)))
        });
    }
    let request = browser_request();
    group.bench_function("request_cache_control/no_cache", |b| {
        b.iter(|| RequestDirectives::parse(black_box(&request)))
    });
    let mut directives = request.clone();
    directives.insert(
        "cache-control",
        HeaderValue::from_static("max-age=60, max-stale=30, min-fresh=5, no-transform"),
    );
    group.bench_function("request_cache_control/four_directives", |b| {
        b.iter(|| RequestDirectives::parse(black_box(&directives)))
    });
    group.bench_function("key/url_and_cache_key", |b| {
        b.iter(|| {
            let text = url(
                black_box("http"),
                black_box("API.example.com"),
                black_box("/v2/users/42?fields=name,email"),
            );
            cache_key(&text)
        })
    });
    group.bench_function("key/vary_value_accept_language", |b| {
        b.iter(|| vary_value(black_box("accept-language"), black_box(&request)))
    });
    let mut stored = http::HeaderMap::new();
    stored.insert("vary", HeaderValue::from_static("Accept-Encoding"));
    group.bench_function("key/varies_only_on_accept_encoding", |b| {
        b.iter(|| varies_only_on_accept_encoding(black_box(&stored)))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_route,
    bench_select,
    bench_headers,
    bench_cache_and_compression
);
criterion_main!(benches);
