//! Paths are normalised before routing and caching (issue 26, point 6): dot segments resolved,
//! unreserved escapes decoded, `//` merged, `%2F` kept, a path above `/` refused with 400; the
//! upstream gets the normal form (or the raw target with `forward_raw_path`), and the cache
//! stores one entry for every spelling of a path.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::harness::{
    get_with_host, reserve_addr, server_and_listener, within, Backend, Origin, Proxy, Script,
};

/// One backend per upstream, each answering its own name, and routes `/` → `fallback`,
/// `/echo/` → `echo`, `/secret/` → `secret`.
struct Paths {
    proxy: Proxy,
    backends: Vec<Backend>,
}

const ROUTES: &str = r#"
[[route]]
path_prefix = "/"
upstream = "fallback"

[[route]]
path_prefix = "/echo/"
upstream = "echo"

[[route]]
path_prefix = "/secret/"
upstream = "secret"
"#;

impl Paths {
    async fn start(server_keys: &str) -> Paths {
        let mut toml = server_and_listener(reserve_addr())
            .replace("[server]\n", &format!("[server]\n{server_keys}\n"));
        let mut backends = Vec::new();
        for name in ["fallback", "echo", "secret"] {
            let backend = Backend::start(name).await;
            toml.push_str(&format!(
                "\n[upstream.{name}]\n[[upstream.{name}.server]]\naddress = \"{}\"\n",
                backend.addr()
            ));
            backends.push(backend);
        }
        toml.push_str(ROUTES);
        Paths {
            proxy: Proxy::start(&toml).await,
            backends,
        }
    }

    /// Sends `GET target` as raw bytes: the upstream that answered and the target it got, or
    /// the status when Parapet answered itself.
    async fn reached(&self, target: &str) -> Result<(String, String), u16> {
        let response = get_with_host(self.proxy.addr(), "app.test", target).await;
        if response.status != 200 {
            return Err(response.status);
        }
        let name = response.text();
        let backend = self
            .backends
            .iter()
            .find(|b| b.name() == name)
            .unwrap_or_else(|| panic!("GET {target}: answered by unknown {name:?}"));
        Ok((name, backend.last_received().target))
    }

    async fn assert_reaches(&self, cases: &[(&str, Reached)]) {
        for (target, expected) in cases {
            let expected = expected.map(|(name, path)| (name.to_string(), path.to_string()));
            assert_eq!(self.reached(target).await, expected, "GET {target}");
        }
    }
}

/// The upstream and the target it got, or the status Parapet answered with itself.
type Reached = Result<(&'static str, &'static str), u16>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_spelling_of_a_path_reaches_the_route_its_normal_form_names() {
    let paths = Paths::start("").await;
    paths
        .assert_reaches(&[
            ("/echo/a", Ok(("echo", "/echo/a"))),
            ("/x/../echo/y", Ok(("echo", "/echo/y"))),
            ("/%65cho/a", Ok(("echo", "/echo/a"))),
            ("/%65%63%68%6F/a", Ok(("echo", "/echo/a"))),
            ("/echo/../secret/k", Ok(("secret", "/secret/k"))),
            ("/echo/..", Ok(("fallback", "/"))),
            ("/echo/./a/.", Ok(("echo", "/echo/a/"))),
            ("/echo//a", Ok(("echo", "/echo/a"))),
            ("//echo///a", Ok(("echo", "/echo/a"))),
            ("/echo/a%2fb", Ok(("echo", "/echo/a%2Fb"))),
            // An encoded slash is not a separator: this is one segment, not /echo/.
            ("/echo%2Fa", Ok(("fallback", "/echo%2Fa"))),
            ("/echo/a%20b", Ok(("echo", "/echo/a%20b"))),
            ("/echo/a?x=/../y&%65", Ok(("echo", "/echo/a?x=/../y&%65"))),
            ("/../secret/k", Err(400)),
            ("/%2e%2e/secret/k", Err(400)),
            ("/echo/../../secret/k", Err(400)),
            ("/echo/%zz", Err(400)),
            ("/echo/a%2", Err(400)),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_merge_slashes_empty_segments_are_kept() {
    let paths = Paths::start("merge_slashes = false").await;
    paths
        .assert_reaches(&[
            ("/echo//a", Ok(("echo", "/echo//a"))),
            ("//echo/a", Ok(("fallback", "//echo/a"))),
            ("/echo//../a", Ok(("echo", "/echo/a"))),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_raw_path_routes_by_the_normal_form_and_forwards_the_target_as_sent() {
    let paths = Paths::start("forward_raw_path = true").await;
    paths
        .assert_reaches(&[
            ("/x/../echo/y", Ok(("echo", "/x/../echo/y"))),
            ("/%65cho/a?q=1", Ok(("echo", "/%65cho/a?q=1"))),
            ("/echo/plain", Ok(("echo", "/echo/plain"))),
            ("/../echo/a", Err(400)),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_path_is_normalised_like_an_http1_one() {
    let paths = Paths::start("").await;
    for (path, expected) in [
        ("/x/../echo/y", Ok(("echo", "/echo/y"))),
        ("/%65cho/a", Ok(("echo", "/echo/a"))),
        ("/../secret/k", Err(400)),
    ] {
        let (status, body) = h2c_get(paths.proxy.addr(), path).await;
        match expected {
            Ok((name, target)) => {
                assert_eq!((status, body.as_str()), (200, name), "h2 GET {path}");
                let backend = paths.backends.iter().find(|b| b.name() == name).unwrap();
                assert_eq!(backend.last_received().target, target, "h2 GET {path}");
            }
            Err(code) => assert_eq!(status, code, "h2 GET {path}: {body}"),
        }
    }
}

/// GET `path` over prior-knowledge h2c with the h2 crate, which sends `:path` as given.
async fn h2c_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let mut send = send.ready().await.expect("ready");
    let request = http::Request::get(format!("http://app.test{path}"))
        .body(())
        .expect("request");
    let (response, _) = send.send_request(request, true).expect("stream");
    let response = within("h2 response", response).await.expect("h2 response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = within("h2 body", body.data()).await {
        let chunk = chunk.expect("h2 body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    connection.abort();
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_cached_path_shares_one_stored_response() {
    let origin = Origin::start().await;
    origin.script(
        "/static/app.css",
        Script::fixed("body{}").cache_control("max-age=300"),
    );
    let toml = format!(
        "{}\n[upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n\n[[route]]\npath_prefix = \"/static/\"\nupstream = \"app\"\ncache = true\n\n[cache]\nmax_size = \"16MiB\"\n",
        server_and_listener(reserve_addr()),
        origin.addr()
    );
    let proxy = Proxy::start(&toml).await;
    let spellings = [
        "/static/app.css",
        "/static/./app.css",
        "/%73tatic/app.css",
        "/x/../static//app.css",
    ];
    for (i, target) in spellings.iter().enumerate() {
        let response = get_with_host(proxy.addr(), "app.test", target).await;
        assert_eq!(response.status, 200, "GET {target}");
        assert_eq!(response.text(), "body{}", "GET {target}");
        let expected = if i == 0 { "miss" } else { "hit" };
        let cache_status = response.header("cache-status").unwrap_or_default();
        assert!(
            cache_status.contains(expected),
            "GET {target}: Cache-Status {cache_status:?}, expected a {expected}"
        );
    }
    assert_eq!(origin.requests("/static/app.css"), 1);
}
