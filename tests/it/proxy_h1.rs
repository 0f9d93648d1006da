//! HTTP/1.1 proxying: forwarding, the headers added and dropped on the way to the backend and
//! back, connection reuse, several listeners.

use std::time::Duration;

use crate::harness::{
    client, get, raw_get, reserve_addr, servers, single_upstream_config, Backend, Proxy,
    RawConnection,
};

/// One backend named `app` behind a proxy with one catch-all route.
async fn start_one(backend: Backend) -> (Proxy, Backend) {
    let proxy = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "",
        &[backend.addr()],
        "",
    ))
    .await;
    (proxy, backend)
}

/// Connection tokens other than the proxy's own `keep-alive` / `close`.
fn foreign_connection_tokens(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "keep-alive" && t != "close")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_forwarded_with_its_path_and_query_and_answered_by_the_backend() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let response = client()
        .get(proxy.url("/a/b?c=d&e=f"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("x-backend").map(|v| v.as_bytes()),
        Some(&b"app"[..])
    );
    assert_eq!(response.text().await.expect("body"), "app");
    let received = backend.last_received();
    assert_eq!(received.method, "GET");
    assert_eq!(received.target, "/a/b?c=d&e=f");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_body_reaches_the_backend_intact() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let response = client()
        .post(proxy.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-request-body-len")
            .map(|v| v.as_bytes()),
        Some(&b"10000"[..])
    );
    let received = backend.last_received();
    assert_eq!(received.method, "POST");
    assert!(received.body == body, "the body changed on the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_the_client_ip_appended_to_an_incoming_value() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let response = raw_get(proxy.addr(), "/xff", &[("Host", "example.com")]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        backend.last_received().header_values("x-forwarded-for"),
        ["127.0.0.1"]
    );

    let response = raw_get(
        proxy.addr(),
        "/xff",
        &[("Host", "example.com"), ("X-Forwarded-For", "10.0.0.1")],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        backend.last_received().header_values("x-forwarded-for"),
        ["10.0.0.1, 127.0.0.1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_proto_is_http() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let response = raw_get(proxy.addr(), "/proto", &[("Host", "example.com")]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        backend.last_received().header_values("x-forwarded-proto"),
        ["http"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_gets_for_host_and_proto_appended() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let ours = "for=127.0.0.1;host=example.com;proto=http";
    let response = raw_get(proxy.addr(), "/fwd", &[("Host", "example.com")]).await;
    assert_eq!(response.status, 200);
    assert_eq!(backend.last_received().list("forwarded"), [ours]);

    let response = raw_get(
        proxy.addr(),
        "/fwd",
        &[("Host", "example.com"), ("Forwarded", "for=10.0.0.1")],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        backend.last_received().list("forwarded"),
        ["for=10.0.0.1", ours]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_is_added_to_the_request_and_to_the_response() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let response = raw_get(proxy.addr(), "/via", &[("Host", "example.com")]).await;
    assert_eq!(response.status, 200);
    let to_backend = backend.last_received().list("via");
    assert!(
        to_backend.iter().any(|v| v.contains("1.1 parapet")),
        "Via to the backend: {to_backend:?}"
    );
    let to_client = response.header_values("via");
    assert!(
        to_client.iter().any(|v| v.contains("1.1 parapet")),
        "Via to the client: {to_client:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_passes_through_unchanged_with_its_port() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    for host in ["Example.com:8080", "example.com", "127.0.0.1:9"] {
        let response = raw_get(proxy.addr(), "/host", &[("Host", host)]).await;
        assert_eq!(response.status, 200);
        assert_eq!(backend.last_received().header_values("host"), [host]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_dropped() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let response = raw_get(
        proxy.addr(),
        "/hop",
        &[
            ("Host", "example.com"),
            ("Connection", "keep-alive, X-Drop-Me"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "foo/1"),
            ("X-Drop-Me", "secret"),
            ("X-Keep-Me", "kept"),
        ],
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.last_received();
    for name in [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "x-drop-me",
    ] {
        assert!(
            received.header(name).is_none(),
            "{name} reached the backend: {:?}",
            received.headers
        );
    }
    assert_eq!(
        foreign_connection_tokens(&received.header_values("connection")),
        Vec::<String>::new(),
        "the client's Connection header reached the backend"
    );
    assert_eq!(received.header_values("x-keep-me"), ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_dropped() {
    let backend = Backend::builder("app")
        .response_header("Connection", "x-secret")
        .response_header("x-secret", "1")
        .response_header("Keep-Alive", "timeout=77")
        .response_header("Proxy-Connection", "keep-alive")
        .response_header("x-end-to-end", "kept")
        .start()
        .await;
    let (proxy, _backend) = start_one(backend).await;
    let response = raw_get(proxy.addr(), "/hop", &[("Host", "example.com")]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "app");
    assert!(
        response.header("x-secret").is_none(),
        "{:?}",
        response.headers
    );
    assert!(
        response.header("proxy-connection").is_none(),
        "{:?}",
        response.headers
    );
    assert!(
        !response.header_values("keep-alive").contains(&"timeout=77"),
        "{:?}",
        response.headers
    );
    assert_eq!(
        foreign_connection_tokens(&response.header_values("connection")),
        Vec::<String>::new(),
        "the backend's Connection header reached the client"
    );
    assert_eq!(response.header("x-end-to-end"), Some("kept"));
    assert!(response
        .header_values("via")
        .iter()
        .any(|v| v.contains("1.1 parapet")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_connection_carries_several_requests() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    for i in 0..3 {
        connection
            .send(format!("GET /seq/{i} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes())
            .await;
        let response = connection.response().await;
        assert_eq!((response.status, response.text()), (200, "app".to_string()));
    }
    assert_eq!(backend.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sequential_requests_reuse_a_few_backend_connections() {
    let (proxy, backend) = start_one(Backend::start("app").await).await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, &proxy.url("/ka")).await.0, 200);
    }
    assert_eq!(backend.requests(), 50);
    assert!(
        backend.accepts() <= 3,
        "50 sequential requests opened {} backend connections",
        backend.accepts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_idle_connections_does_not_fail_requests() {
    let backend = Backend::builder("app")
        .idle_close(Duration::from_millis(50))
        .start()
        .await;
    let (proxy, backend) = start_one(backend).await;
    let client = client();
    for i in 0..10 {
        let (status, body) = get(&client, &proxy.url(&format!("/idle/{i}"))).await;
        assert_eq!((status, body.as_str()), (200, "app"), "request {i}");
        // Longer than the backend's idle close, so the pooled connection is gone by the next one.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        backend.accepts() > 1,
        "the backend never closed an idle connection: the test proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_listeners_all_serve() {
    let backend = Backend::start("app").await;
    let (first, second, third) = (reserve_addr(), reserve_addr(), reserve_addr());
    let toml = format!(
        r#"[server]
threads = 2
grace_period = "1s"

[[listener]]
address = "{first}"
protocols = ["http1"]

[[listener]]
address = "{second}"
protocols = ["http1", "h2c"]

[[listener]]
address = "{third}"

[upstream.app]
{}
[[route]]
upstream = "app"
"#,
        servers("app", &[backend.addr()], "")
    );
    let proxy = Proxy::start(&toml).await;
    assert_eq!(proxy.addrs(), [first, second, third]);
    let client = client();
    for addr in proxy.addrs() {
        let (status, body) = get(&client, &format!("http://{addr}/multi")).await;
        assert_eq!((status, body.as_str()), (200, "app"), "listener {addr}");
    }
    assert_eq!(backend.requests(), 3);
}
