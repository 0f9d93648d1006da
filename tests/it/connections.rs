//! Client connections (issue 17): header and keep-alive timeouts, `max_connections`,
//! pipelining, `Expect: 100-continue`, and the wrong protocol on a port (plain HTTP on TLS, a
//! broken h2 preface on h2c).

use crate::harness::{
    admin_table, dev_certs, get, h2_frames, h2c_client, reserve_addr, servers, Origin, Proxy,
    RawConnection, Script, CLIENT_TIMEOUT, FRAME_GOAWAY, H2_PROTOCOL_ERROR,
};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A config with `server_keys` in `[server]`, one listener (HTTP/1.1 and h2c) with
/// `listener_keys`, an admin listener, and a catch-all route to `origin`.
fn config(
    listen: SocketAddr,
    origin: SocketAddr,
    server_keys: &str,
    listener_keys: &str,
) -> String {
    format!(
        r#"[server]
threads = 2
grace_period = "1s"
{server_keys}

[[listener]]
address = "{listen}"
protocols = ["http1", "h2c"]
{listener_keys}

[upstream.app]
{servers}
[[route]]
upstream = "app"
{admin}"#,
        servers = servers("app", &[origin], ""),
        admin = admin_table(reserve_addr(), None),
    )
}

async fn start(server_keys: &str, listener_keys: &str) -> (Proxy, Origin) {
    let origin = Origin::start().await;
    origin.fallback(Script::fixed("ok"));
    let proxy = Proxy::start(&config(
        reserve_addr(),
        origin.addr(),
        server_keys,
        listener_keys,
    ))
    .await;
    (proxy, origin)
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_past_header_timeout_gets_408_and_close_issue_17() {
    let (proxy, origin) = start("header_timeout = \"1s\"", "").await;
    let stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 200 ms never lets a single read wait long: only a deadline on the whole
    // head stops it.
    let trickle = tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ".iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLIENT_TIMEOUT, reader.read_to_end(&mut answer)).await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "no answer and no close within {CLIENT_TIMEOUT:?} (header_timeout is 1 s)"
    );
    assert!(
        answer.starts_with("HTTP/1.1 408 "),
        "after {:?}: {answer:?}",
        started.elapsed()
    );
    assert_eq!(origin.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_head_that_stalls_gets_408_and_an_access_log_line_issue_25() {
    let origin = Origin::start().await;
    let toml = config(reserve_addr(), origin.addr(), "header_timeout = \"1s\"", "")
        + "\n[access_log]\ntarget = \"stdout\"\n";
    let proxy = Proxy::start(&toml).await;
    let cases: [(&str, &[u8]); 2] = [
        (
            "a head without its empty line",
            b"GET /x HTTP/1.1\r\nHost: a.test\r\n",
        ),
        ("one byte", b"G"),
    ];
    for (n, (case, bytes)) in cases.into_iter().enumerate() {
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection.send(bytes).await;
        let answer = String::from_utf8_lossy(&connection.read_until_closed().await).to_string();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{case}: {answer:?}");
        assert!(
            proxy
                .wait_for_log_lines(&["\"status\":408", "\"protocol\":\"http1\""], n + 1)
                .await,
            "{case}: no access-log line for the 408:\n{}",
            proxy.logs()
        );
    }
    assert_eq!(origin.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_pauses_past_a_shorter_keepalive_timeout_is_still_served_issue_25() {
    let (proxy, _origin) = start("header_timeout = \"5s\"\nkeepalive_timeout = \"1s\"", "").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(GET).await;
    assert_eq!(connection.response().await.status, 200);
    // The next head begins, then pauses longer than keepalive_timeout but well within
    // header_timeout: only header_timeout bounds a head that has begun.
    connection.send(b"GET / HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    connection.send(b"Host: a.test\r\n\r\n").await;
    assert_eq!(connection.response().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_new_connection_is_closed_after_header_timeout_without_an_answer_issue_17() {
    let (proxy, _origin) = start("header_timeout = \"1s\"", "").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    assert_eq!(connection.read_until_closed().await, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_keepalive_timeout_issue_17() {
    let (proxy, _origin) = start("keepalive_timeout = \"1s\"", "").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    for _ in 0..2 {
        connection.send(GET).await;
        let response = connection.response().await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    let idle = Instant::now();
    assert_eq!(connection.read_until_closed().await, b"");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the 1 s keepalive_timeout",
        idle.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timeout_zero_closes_after_each_response_issue_17() {
    let (proxy, _origin) = start("keepalive_timeout = \"0s\"", "").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(GET).await;
    let response = connection.response().await;
    assert_eq!(
        (response.status, response.header("connection")),
        (200, Some("close"))
    );
    assert!(connection.is_closed_by_peer().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_closed_at_once_and_counted_issue_17() {
    let (proxy, _origin) = start("", "max_connections = 2").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection.send(GET).await;
        assert_eq!(connection.response().await.status, 200);
        held.push(connection);
    }
    let mut third = RawConnection::open(proxy.addr()).await;
    third.send(GET).await;
    assert_eq!(
        third.read_until_closed().await,
        b"",
        "the third connection was served"
    );
    let listener = proxy.addr().to_string();
    let rejected = [
        ("listener", listener.as_str()),
        ("reason", "max_connections"),
    ];
    let (metrics, counted) = proxy
        .metrics_until(|m| {
            m.value("parapet_downstream_connections_rejected_total", &rejected) >= 1.0
        })
        .await;
    assert!(counted, "not counted:\n{}", metrics.text);
    drop(held.pop());
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection
            .send(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .await;
        if connection
            .read_until_closed()
            .await
            .starts_with(b"HTTP/1.1 200")
        {
            break;
        }
        assert!(Instant::now() < deadline, "a freed place was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order_issue_17() {
    let (proxy, origin) = start("", "").await;
    for path in ["one", "two", "three", "four"] {
        origin.script(&format!("/{path}"), Script::fixed(path).echo_body_length());
    }
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .send(
            b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n\
              GET /two HTTP/1.1\r\nHost: a.test\r\n\r\n\
              POST /three HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello\
              GET /four HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .await;
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let response = connection.response().await;
        assert_eq!(response.status, 200, "{bodies:?} then {response:?}");
        bodies.push(response.text());
    }
    assert_eq!(bodies, ["one", "two", "three", "four"]);
    assert_eq!(origin.last_received("/three").body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_100_then_the_answer_and_a_refusal_at_once_issue_17() {
    let (proxy, origin) = start("max_request_body_size = 1000", "").await;
    origin.script("/upload", Script::fixed("stored").echo_body_length());
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .send(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await;
    assert_eq!(connection.next_head().await.status, 100);
    connection.send(b"hello").await;
    let response = connection.response().await;
    assert_eq!(
        (response.status, response.text()),
        (200, "stored".to_string())
    );
    let received = origin.last_received("/upload");
    assert_eq!(received.body, b"hello");
    assert_eq!(
        received.header("expect"),
        None,
        "Expect reached the backend"
    );

    let mut too_big = RawConnection::open(proxy.addr()).await;
    too_big
        .send(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        .await;
    assert_eq!(too_big.response().await.status, 413);
    assert!(
        too_big.is_closed_by_peer().await,
        "the body was never read: the connection must close after the 413"
    );

    let mut unknown = RawConnection::open(proxy.addr()).await;
    unknown
        .send(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    assert_eq!(unknown.next_head().await.status, 417);
    assert_eq!(origin.requests("/upload"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_h2_preface_on_an_h2c_port_gets_goaway_protocol_error_issue_17() {
    let (proxy, origin) = start("", "").await;
    let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingping";
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "a wrong preface tail",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(),
        ),
        (
            "an HTTP/1.1 PRI request",
            b"PRI * HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
        ),
        (
            "a preface then PING before SETTINGS",
            [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], ping].concat(),
        ),
    ];
    for (case, bytes) in cases {
        eprintln!("case: {case}");
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection.send(&bytes).await;
        let frames = h2_frames(&connection.read_until_closed().await);
        assert!(
            frames
                .iter()
                .any(|f| f.kind == FRAME_GOAWAY
                    && f.payload.get(4..8) == Some(&H2_PROTOCOL_ERROR[..])),
            "{case}: no GOAWAY(PROTOCOL_ERROR) in {frames:?}"
        );
    }
    assert_eq!(origin.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_only_listener_answers_anything_but_the_h2_preface_with_goaway_issue_26() {
    let origin = Origin::start().await;
    origin.fallback(Script::fixed("ok"));
    let toml = config(reserve_addr(), origin.addr(), "", "")
        .replace(r#"protocols = ["http1", "h2c"]"#, r#"protocols = ["h2c"]"#);
    let proxy = Proxy::start(&toml).await;
    let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingping";
    let cases: [(&str, Vec<u8>); 4] = [
        ("an HTTP/1.1 request", GET.to_vec()),
        ("one byte of garbage", b"G\r\n".to_vec()),
        (
            "a wrong preface tail",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(),
        ),
        (
            "a preface then PING before SETTINGS",
            [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], ping].concat(),
        ),
    ];
    for (case, bytes) in cases {
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection.send(&bytes).await;
        let frames = h2_frames(&connection.read_until_closed().await);
        assert!(
            frames
                .iter()
                .any(|f| f.kind == FRAME_GOAWAY
                    && f.payload.get(4..8) == Some(&H2_PROTOCOL_ERROR[..])),
            "{case}: no GOAWAY(PROTOCOL_ERROR) in {frames:?}"
        );
    }
    assert_eq!(origin.total_requests(), 0);
    let (status, body) = get(&h2c_client(), &format!("http://{}/", proxy.addr())).await;
    assert_eq!((status, body.as_str()), (200, "ok"), "h2c itself is served");
}

fn tls_listener_keys(certs: &Path) -> String {
    format!(
        "[[listener.certificate]]\ncert = \"{}\"\nkey = \"{}\"",
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_a_tls_port_gets_a_plain_400_and_is_counted_issue_17() {
    let certs = dev_certs();
    let origin = Origin::start().await;
    let toml = config(
        reserve_addr(),
        origin.addr(),
        "",
        &tls_listener_keys(certs.path()),
    )
    .replace(
        "protocols = [\"http1\", \"h2c\"]",
        "protocols = [\"http1\", \"h2\"]",
    );
    let proxy = Proxy::start(&toml).await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(GET).await;
    let response = connection.response().await;
    assert_eq!(response.status, 400);
    assert!(
        response.text().contains("plain HTTP"),
        "{}",
        response.text()
    );
    assert!(connection.is_closed_by_peer().await);
    let listener = proxy.addr().to_string();
    let rejected = [
        ("listener", listener.as_str()),
        ("reason", "plain_http_on_tls"),
    ];
    let (metrics, counted) = proxy
        .metrics_until(|m| {
            m.value("parapet_downstream_connections_rejected_total", &rejected) >= 1.0
        })
        .await;
    assert!(counted, "not counted:\n{}", metrics.text);
    assert_eq!(origin.total_requests(), 0);
}

/// Raises this process's open-file limit to its hard limit (the proxy it starts inherits it):
/// the slow-client test holds a few thousand sockets on each side.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct; raising the soft limit up to the
    // hard limit needs no privilege.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// Slow clients of the test below.
const TRICKLING: usize = 2_000;
/// Fresh requests sent while they trickle.
const FRESH: usize = 20;
/// The bound the issue sets on each fresh request; generous on purpose (a loaded machine
/// answers in milliseconds), so it only fails when slow clients really starve fast ones.
const FRESH_BOUND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_trickling_connections_do_not_delay_fresh_clients_issue_17() {
    raise_open_file_limit();
    let (proxy, _origin) = start("", "").await;
    let mut slow = Vec::with_capacity(TRICKLING);
    for _ in 0..TRICKLING {
        slow.push(
            TcpStream::connect(proxy.addr())
                .await
                .expect("connect a slow client"),
        );
    }
    // A header byte per connection every second, never finishing the head.
    let trickle = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ";
        for second in 0.. {
            let byte = [head.get(second).copied().unwrap_or(b'a')];
            for stream in &mut slow {
                let _ = stream.write_all(&byte).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let open = [("protocol", "http1")];
    let (metrics, all_open) = proxy
        .metrics_until(|m| {
            m.value("parapet_downstream_open_connections", &open) >= TRICKLING as f64
        })
        .await;
    let open_now = metrics.value("parapet_downstream_open_connections", &open);
    assert!(
        all_open,
        "only {open_now} of {TRICKLING} slow connections open at the proxy"
    );
    let mut latencies = Vec::with_capacity(FRESH);
    for _ in 0..FRESH {
        let started = Instant::now();
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection.send(GET).await;
        let status = connection.response().await.status;
        latencies.push((status, started.elapsed()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trickle.abort();
    assert!(
        latencies
            .iter()
            .all(|(status, latency)| *status == 200 && *latency < FRESH_BOUND),
        "with {open_now} slow connections open, {FRESH} fresh requests (status, latency), each \
         expected 200 within {FRESH_BOUND:?}: {latencies:?}"
    );
}
