//! Faults: dead, slow and dying backends; retries; malformed and oversized requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{
    client, failures, get, reserve_addr, server_and_listener, single_upstream_config, try_get,
    Backend, Proxy, RawConnection, Refuser,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_gives_502() {
    let refuser = Refuser::new();
    let proxy = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "",
        &[refuser.addr()],
        "",
    ))
    .await;
    let (status, _) = get(&client(), &proxy.url("/dead")).await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_past_read_timeout_gives_504() {
    let backend = Backend::builder("slow")
        .delay(Duration::from_secs(2))
        .start()
        .await;
    let toml = single_upstream_config(reserve_addr(), "", &[backend.addr()], "")
        .replace("read_timeout = \"5s\"", "read_timeout = \"300ms\"");
    assert!(toml.contains("read_timeout = \"300ms\""));
    let proxy = Proxy::start(&toml).await;
    // The client gives up after 5 s, so a hang fails here instead of blocking the suite.
    let result = try_get(&client(), &proxy.url("/slow")).await;
    assert!(
        matches!(result, Ok((504, _))),
        "expected 504, got {result:?}"
    );
    assert_eq!(backend.requests(), 1, "a timed-out read is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_whose_first_pick_refuses_is_retried_on_a_good_server() {
    let good = Backend::start("good").await;
    let refuser = Refuser::new();
    // Passive health off and a heavy weight keep the refuser the usual first pick.
    let toml = format!(
        r#"{}
[upstream.app]
balance = "round_robin"
connect_timeout = "300ms"
retries = 2

[[upstream.app.server]]
address = "{}"
weight = 10
max_fails = 0

[[upstream.app.server]]
address = "{}"
weight = 1

[[route]]
upstream = "app"
"#,
        server_and_listener(reserve_addr()),
        refuser.addr(),
        good.addr()
    );
    let proxy = Proxy::start(&toml).await;
    let client = client();
    for i in 0..20 {
        let (status, body) = get(&client, &proxy.url(&format!("/retry/{i}"))).await;
        assert_eq!((status, body.as_str()), (200, "good"), "request {i}");
    }
    assert_eq!(good.requests(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_stopped_mid_run_costs_no_client_request() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "retries = 2",
        &[a.addr(), b.addr()],
        "",
    ))
    .await;
    let client = client();
    let url = proxy.url("/midrun");
    let done = Arc::new(AtomicUsize::new(0));
    let total = 200;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, done) = (client.clone(), url.clone(), done.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                while done.fetch_add(1, Ordering::SeqCst) < total {
                    results.push(try_get(&client, &url).await);
                }
                results
            })
        })
        .collect();
    assert!(
        crate::harness::eventually(|| b.requests() >= 20).await,
        "b got no share of the load"
    );
    b.stop().await;
    let mut results = Vec::new();
    for worker in workers {
        results.extend(worker.await.expect("worker"));
    }
    assert_eq!(results.len(), total);
    assert!(
        failures(&results).is_empty(),
        "failed: {:?}",
        failures(&results)
    );
    assert!(
        a.requests() > 0 && b.requests() < total,
        "a {} b {}",
        a.requests(),
        b.requests()
    );
}

/// Sends `bytes` on a fresh connection, expects `status` and then the connection closed.
async fn assert_rejected_and_closed(addr: SocketAddr, bytes: &[u8], status: u16) {
    let mut connection = RawConnection::open(addr).await;
    connection.send(bytes).await;
    let response = connection.response().await;
    assert_eq!(
        response.status,
        status,
        "for {:?}: {response:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
    );
    assert!(
        connection.is_closed_by_peer().await,
        "the connection stayed open after {status}"
    );
}

async fn start_with_limits(server_keys: &str) -> (Proxy, Backend) {
    let backend = Backend::start("app").await;
    let toml = single_upstream_config(reserve_addr(), "", &[backend.addr()], "")
        .replace("[server]\n", &format!("[server]\n{server_keys}\n"));
    (Proxy::start(&toml).await, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_gets_400_and_the_connection_closes() {
    // The listener speaks http1 and h2c, as the shipped config's does.
    let (proxy, backend) = start_with_limits("").await;
    assert_rejected_and_closed(proxy.addr(), b"GARBAGE\r\n\r\n", 400).await;
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_on_an_http1_only_listener_gets_400_and_the_connection_closes() {
    let backend = Backend::start("app").await;
    let toml = single_upstream_config(reserve_addr(), "", &[backend.addr()], "").replace(
        "protocols = [\"http1\", \"h2c\"]",
        "protocols = [\"http1\"]",
    );
    assert!(toml.contains("protocols = [\"http1\"]"));
    let proxy = Proxy::start(&toml).await;
    assert_rejected_and_closed(proxy.addr(), b"GARBAGE\r\n\r\n", 400).await;
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_with_a_bad_http_version_gets_400_and_the_connection_closes() {
    let (proxy, backend) = start_with_limits("").await;
    assert_rejected_and_closed(
        proxy.addr(),
        b"GET / HTTP/9.Z\r\nHost: example.com\r\n\r\n",
        400,
    )
    .await;
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_over_max_request_header_size_gets_431() {
    let (proxy, backend) = start_with_limits("max_request_header_size = \"4KiB\"").await;
    // A head well under the limit passes.
    let small = format!(
        "GET /small HTTP/1.1\r\nHost: example.com\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(1024)
    );
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(small.as_bytes()).await;
    assert_eq!(connection.response().await.status, 200);

    let big = format!(
        "GET /big HTTP/1.1\r\nHost: example.com\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(8 * 1024)
    );
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(big.as_bytes()).await;
    let response = connection.response().await;
    assert_eq!(response.status, 431, "{response:?}");
    assert_eq!(
        backend.requests(),
        1,
        "the oversized request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_over_max_request_body_size_gets_413() {
    let (proxy, backend) = start_with_limits("max_request_body_size = \"1KiB\"").await;
    let client = client();
    let small = client
        .post(proxy.url("/small"))
        .body(vec![b'x'; 512])
        .send()
        .await
        .expect("small POST");
    assert_eq!(small.status(), 200);

    // Only the head: the limit is enforced by Content-Length, before any body byte.
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .send(b"POST /big HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4096\r\n\r\n")
        .await;
    let response = connection.response().await;
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(
        backend.requests(),
        1,
        "the oversized request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_request_body_size_gets_413() {
    let (proxy, backend) = start_with_limits("max_request_body_size = \"1KiB\"").await;
    let mut request =
        b"POST /chunked HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"400\r\n");
        request.extend_from_slice(&[b'x'; 1024]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(&request).await;
    let response = connection.response().await;
    assert_eq!(response.status, 413, "{response:?}");
    let delivered: usize = backend.received().iter().map(|r| r.body.len()).sum();
    assert!(
        delivered <= 1024,
        "the backend received a {delivered}-byte body past the 1 KiB limit"
    );
}
