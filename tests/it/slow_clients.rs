//! Slow clients are the client's fault (issue 25, point 2): a request body that stalls gets 408
//! after `client_body_timeout` on every protocol, the upstream's `read_timeout` does not run
//! while the request is still being sent, and nothing a client does counts toward a server's
//! `max_fails`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::harness::{
    admin_table, client, get, reserve_addr, server_and_listener, servers, within, Backend, Proxy,
    RawConnection,
};

const DOWN: &str = "upstream server is down";

/// Upstream `app` over `addrs` with a 300 ms `read_timeout` and `max_fails = 2`, a client body
/// timeout of 1 s, and an admin listener.
fn stalled_body_config(addrs: &[SocketAddr]) -> String {
    let mut toml = server_and_listener(reserve_addr())
        .replace("[server]\n", "[server]\nclient_body_timeout = \"1s\"\n");
    toml.push_str(&format!(
        "\n[upstream.app]\nbalance = \"round_robin\"\nconnect_timeout = \"500ms\"\nread_timeout = \"300ms\"\n{}\n[[route]]\nupstream = \"app\"\n{}",
        servers("app", addrs, "max_fails = 2\nfail_timeout = \"30s\""),
        admin_table(reserve_addr(), None)
    ));
    toml
}

/// Sends a POST announcing 100 body bytes and only 10 of them, then waits for the answer.
async fn stall_a_body(proxy: SocketAddr) -> (u16, bool) {
    let mut connection = RawConnection::open(proxy).await;
    connection
        .send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    let response = connection.response().await;
    (response.status, connection.is_closed_by_peer().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stalled_bodies_get_408_and_leave_every_server_up() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = Proxy::start(&stalled_body_config(&[a.addr(), b.addr()])).await;

    let stalls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(stall_a_body(proxy.addr())))
        .collect();
    for (i, stall) in stalls.into_iter().enumerate() {
        let (status, closed) = stall.await.expect("stalled client task");
        // Before the fix: 504 after the upstream's 300 ms read_timeout, blamed on the server.
        assert_eq!(status, 408, "stalled client {i}: {}", proxy.logs());
        assert!(
            closed,
            "stalled client {i}: the connection stays open after 408"
        );
    }

    assert_eq!(proxy.log_lines_with(&[DOWN]), 0, "{}", proxy.logs());
    let client = client();
    let mut served = Vec::new();
    for i in 0..6 {
        let (status, body) = get(&client, &proxy.url(&format!("/after/{i}"))).await;
        assert_eq!(status, 200, "GET after the stalls: {body}");
        served.push(body);
    }
    assert!(
        served.iter().any(|s| s == "a") && served.iter().any(|s| s == "b"),
        "both servers must still serve: {served:?}"
    );
    assert_every_server_healthy_without_failures(&proxy).await;
}

/// `/upstreams` shows every server of `app` healthy with no failure counted.
async fn assert_every_server_healthy_without_failures(proxy: &Proxy) {
    let (status, body) = proxy.admin_get("/upstreams").await;
    assert_eq!(status, 200, "{body}");
    let groups: serde_json::Value = serde_json::from_str(&body).expect("/upstreams is JSON");
    let servers = groups["app"]["servers"].as_array().expect("app's servers");
    assert!(!servers.is_empty(), "{body}");
    for server in servers {
        assert_eq!(server["healthy"], true, "{body}");
        assert_eq!(server["recent_failures"], 0, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_an_upstream_read_timeout() {
    let backend = Backend::builder("app").start().await;
    let proxy = Proxy::start(&stalled_body_config(&[backend.addr()])).await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 30\r\n\r\n")
        .await;
    // Three pauses of 600 ms, each longer than the upstream's read_timeout (300 ms) and
    // shorter than client_body_timeout (1 s): the backend waits for the body, not Parapet.
    for piece in [b"0123456789", b"abcdefghij", b"ABCDEFGHIJ"] {
        tokio::time::sleep(Duration::from_millis(600)).await;
        connection.send(piece).await;
    }
    let response = connection.response().await;
    assert_eq!(response.status, 200, "{}", proxy.logs());
    assert_eq!(response.text(), "app");
    assert_eq!(
        backend.last_received().body,
        b"0123456789abcdefghijABCDEFGHIJ".to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_h2_body_gets_408_and_no_server_is_blamed() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = Proxy::start(&stalled_body_config(&[a.addr(), b.addr()])).await;
    let tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let mut send = send.ready().await.expect("ready");
    let mut streams = Vec::new();
    for i in 0..4 {
        let request = http::Request::post(format!("http://{}/upload/{i}", proxy.addr()))
            .header("content-length", "100")
            .body(())
            .expect("request");
        let (response, mut body) = send.send_request(request, false).expect("stream");
        body.send_data(Bytes::from_static(b"0123456789"), false)
            .expect("first body bytes");
        streams.push((response, body));
    }
    for (i, (response, _body)) in streams.into_iter().enumerate() {
        let response = within("the stalled h2 stream's answer", response)
            .await
            .expect("a response, not a reset");
        assert_eq!(response.status(), 408, "h2 stream {i}: {}", proxy.logs());
    }
    assert_eq!(proxy.log_lines_with(&[DOWN]), 0, "{}", proxy.logs());
    assert_every_server_healthy_without_failures(&proxy).await;
    connection.abort();
}
