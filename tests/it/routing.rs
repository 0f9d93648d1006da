//! Routing: the most specific host group wins (exact, longest wildcard, no host), then the longest
//! path prefix; less specific host groups are tried when a host group has no route for the path;
//! no match is 404.

use crate::harness::{get_with_host, reserve_addr, server_and_listener, Backend, Proxy};

/// One backend per upstream, each named like its upstream, so the body tells which route won.
struct Routed {
    proxy: Proxy,
    backends: Vec<Backend>,
}

/// Starts one backend per name in `upstreams` and a proxy with upstreams of those names and the
/// given `[[route]]` tables.
async fn start_routed(upstreams: &[&str], routes: &str) -> Routed {
    let listen = reserve_addr();
    let mut toml = server_and_listener(listen);
    let mut backends = Vec::new();
    for name in upstreams {
        let backend = Backend::start(name).await;
        toml.push_str(&format!(
            "\n[upstream.{name}]\n[[upstream.{name}.server]]\naddress = \"{}\"\n",
            backend.addr()
        ));
        backends.push(backend);
    }
    toml.push_str(routes);
    Routed {
        proxy: Proxy::start(&toml).await,
        backends,
    }
}

impl Routed {
    /// The upstream that served `GET path` with `Host: host` (the body), or `404`.
    async fn served_by(&self, host: &str, path: &str) -> String {
        let response = get_with_host(self.proxy.addr(), host, path).await;
        match response.status {
            200 => response.text(),
            404 => "404".to_string(),
            other => panic!("GET {path} Host: {host} gave {other}: {}", response.text()),
        }
    }

    async fn assert_routes(&self, cases: &[(&str, &str, &str)]) {
        for (host, path, expected) in cases {
            assert_eq!(
                self.served_by(host, path).await,
                *expected,
                "GET {path} with Host: {host}"
            );
        }
    }
}

// Routes are listed least specific first, so file order cannot be what makes them win.
const HOST_ROUTES: &str = r#"
[[route]]
path_prefix = "/"
upstream = "nohost"

[[route]]
host = "*.example.com"
path_prefix = "/"
upstream = "wild"

[[route]]
host = "*.deep.example.com"
path_prefix = "/"
upstream = "deepwild"

[[route]]
host = "api.example.com"
path_prefix = "/"
upstream = "exact"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_beats_wildcard_which_beats_no_host() {
    let routed = start_routed(&["nohost", "wild", "deepwild", "exact"], HOST_ROUTES).await;
    routed
        .assert_routes(&[
            ("api.example.com", "/", "exact"),
            ("www.example.com", "/", "wild"),
            ("other.org", "/", "nohost"),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_host_matches_subdomains_but_not_the_bare_suffix() {
    let routed = start_routed(&["nohost", "wild", "deepwild", "exact"], HOST_ROUTES).await;
    routed
        .assert_routes(&[
            ("a.example.com", "/x", "wild"),
            ("a.b.example.com", "/x", "wild"),
            ("example.com", "/x", "nohost"),
            ("notexample.com", "/x", "nohost"),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_wildcard_wins() {
    let routed = start_routed(&["nohost", "wild", "deepwild", "exact"], HOST_ROUTES).await;
    routed
        .assert_routes(&[
            ("x.deep.example.com", "/", "deepwild"),
            ("y.x.deep.example.com", "/", "deepwild"),
            ("deep.example.com", "/", "wild"),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_matched_without_its_port_and_case_insensitively() {
    let routed = start_routed(&["nohost", "wild", "deepwild", "exact"], HOST_ROUTES).await;
    routed
        .assert_routes(&[
            ("api.example.com:8080", "/", "exact"),
            ("API.Example.COM", "/", "exact"),
            ("Api.EXAMPLE.com:443", "/", "exact"),
            ("WWW.EXAMPLE.COM:8080", "/", "wild"),
        ])
        .await;
}

const PATH_ROUTES: &str = r#"
[[route]]
path_prefix = "/"
upstream = "fallback"

[[route]]
path_prefix = "/static/"
upstream = "static"

[[route]]
host = "api.example.com"
path_prefix = "/v1/"
upstream = "v1"

[[route]]
host = "api.example.com"
path_prefix = "/v1/admin/"
upstream = "admin"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_path_prefix_wins_within_a_host() {
    let routed = start_routed(&["fallback", "static", "v1", "admin"], PATH_ROUTES).await;
    routed
        .assert_routes(&[
            ("api.example.com", "/v1/users", "v1"),
            ("api.example.com", "/v1/admin/users", "admin"),
            ("api.example.com", "/v1/admin/", "admin"),
            ("other.org", "/static/app.css", "static"),
            ("other.org", "/", "fallback"),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_without_a_route_for_the_path_falls_back_to_less_specific_hosts() {
    let routed = start_routed(&["fallback", "static", "v1", "admin"], PATH_ROUTES).await;
    routed
        .assert_routes(&[
            ("api.example.com", "/static/app.css", "static"),
            ("api.example.com", "/v2/users", "fallback"),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_goes_through_wildcard_before_no_host() {
    let routes = r#"
[[route]]
path_prefix = "/"
upstream = "nohost"

[[route]]
host = "*.example.com"
path_prefix = "/img/"
upstream = "wild"

[[route]]
host = "api.example.com"
path_prefix = "/v1/"
upstream = "exact"
"#;
    let routed = start_routed(&["nohost", "wild", "exact"], routes).await;
    routed
        .assert_routes(&[
            ("api.example.com", "/v1/a", "exact"),
            ("api.example.com", "/img/a.png", "wild"),
            ("api.example.com", "/other", "nohost"),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_request_gets_404_with_a_short_text_body() {
    let routes = r#"
[[route]]
host = "api.example.com"
path_prefix = "/v1/"
upstream = "v1"
"#;
    let routed = start_routed(&["v1"], routes).await;
    routed
        .assert_routes(&[("api.example.com", "/v1/x", "v1")])
        .await;
    for (host, path) in [("other.org", "/v1/x"), ("api.example.com", "/v2/x")] {
        let response = get_with_host(routed.proxy.addr(), host, path).await;
        assert_eq!(response.status, 404, "GET {path} Host: {host}");
        let body = response.text();
        assert!(
            !body.trim().is_empty() && body.len() < 512,
            "404 body should be short, non-empty text: {body:?}"
        );
        assert_ne!(body, "v1", "the 404 must not come from the backend");
    }
    assert_eq!(
        routed.backends[0].requests(),
        1,
        "only the matched request reaches the backend"
    );
}
