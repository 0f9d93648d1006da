//! The upstream keep-alive pool (vendor patch 19): idle connections are reused, closed once
//! they pass the upstream's `idle_timeout`, and never more than `keepalive` per server and worker
//! thread are kept.
//! The backend here counts the connections it accepted and those Parapet closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::{client, eventually, get, reserve_addr, server_and_listener, Proxy};

/// A keep-alive backend that answers every request `ok` after `delay`, counting the
/// connections it accepted and those closed by the other side.
struct CountingBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed_by_proxy: Arc<AtomicUsize>,
}

impl CountingBackend {
    async fn start(delay: Duration) -> CountingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_proxy = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed_by_proxy.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, delay, c.clone()));
            }
        });
        CountingBackend {
            addr,
            accepted,
            closed_by_proxy,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed_by_proxy(&self) -> usize {
        self.closed_by_proxy.load(Ordering::SeqCst)
    }
}

/// Answers bodiless requests until the proxy closes the connection.
async fn serve(mut stream: tokio::net::TcpStream, delay: Duration, closed: Arc<AtomicUsize>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            tokio::time::sleep(delay).await;
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}

async fn proxy_to(backend: &CountingBackend, upstream_keys: &str) -> Proxy {
    Proxy::start(&format!(
        "{}\n[upstream.app]\n{upstream_keys}\n[[upstream.app.server]]\naddress = \"{}\"\n\n[[route]]\nupstream = \"app\"\n",
        server_and_listener(reserve_addr()),
        backend.addr
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_upstream_connection() {
    let backend = CountingBackend::start(Duration::ZERO).await;
    let proxy = proxy_to(&backend, "keepalive = 4").await;
    let client = client();
    for i in 0..20 {
        let (status, body) = get(&client, &proxy.url(&format!("/seq/{i}"))).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    assert_eq!(
        backend.accepted(),
        1,
        "every request after the first reuses it"
    );
    assert_eq!(backend.closed_by_proxy(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_idle_timeout_and_the_next_request_connects_anew() {
    let backend = CountingBackend::start(Duration::ZERO).await;
    let proxy = proxy_to(&backend, "idle_timeout = \"1s\"").await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/first")).await.0, 200);
    assert_eq!(backend.accepted(), 1);
    // Closed by the pool's sweeper (once a second) after 1 s idle: within 2 s, well before 5.
    assert!(
        eventually(|| backend.closed_by_proxy() == 1).await,
        "the idle connection was never closed"
    );
    assert_eq!(get(&client, &proxy.url("/second")).await.0, 200);
    assert_eq!(backend.accepted(), 2, "an expired connection is not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_keepalive_connections_per_thread_stay_idle() {
    let backend = CountingBackend::start(Duration::from_millis(300)).await;
    // keepalive counts per worker thread, as nginx's per worker: 2 x threads (2) = 4 kept.
    let proxy = proxy_to(&backend, "keepalive = 2").await;
    let kept = 4;
    // Eight requests at once need eight connections; afterwards only four may stay open.
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let url = proxy.url(&format!("/burst/{i}"));
            tokio::spawn(async move { get(&client(), &url).await.0 })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("request task"), 200);
    }
    assert_eq!(backend.accepted(), 8);
    assert!(
        eventually(|| backend.closed_by_proxy() == 8 - kept).await,
        "{} of 8 connections closed, expected {}",
        backend.closed_by_proxy(),
        8 - kept
    );
    // Those kept are reused, and no more are closed.
    let client = client();
    for i in 0..kept {
        assert_eq!(
            get(&client, &proxy.url(&format!("/after/{i}"))).await.0,
            200
        );
    }
    assert_eq!(backend.accepted(), 8);
    assert_eq!(backend.closed_by_proxy(), 8 - kept);
}
