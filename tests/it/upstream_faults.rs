//! Upstream faults the way nginx users expect them (issue 16): pooled connections the backend
//! closed are retried on a new connection without counting as failures, a one-server group is
//! never marked down, a group whose servers are all down is tried again at once, and only
//! requests that really fail get 502.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::{
    admin_table, client, failures, get, load, reserve_addr, server_and_listener, servers, try_get,
    Backend, BackgroundLoad, Proxy,
};

const DOWN: &str = "upstream server is down";
const UP: &str = "upstream server is up";
const STALE_RETRIES: &str = "parapet_upstream_stale_connection_retries_total";

/// Upstream `app` over `addrs`, each server with `server_keys`, `upstream_keys` on the group,
/// a catch-all route, and an admin listener for metrics.
fn group_config(addrs: &[SocketAddr], upstream_keys: &str, server_keys: &str) -> String {
    format!(
        "{}\n[upstream.app]\nconnect_timeout = \"500ms\"\nread_timeout = \"5s\"\n{upstream_keys}\n{}\n[[route]]\nupstream = \"app\"\n{}",
        server_and_listener(reserve_addr()),
        servers("app", addrs, server_keys),
        admin_table(reserve_addr(), None)
    )
}

/// Passive health at its strictest: one failure marks a server down for 10 s.
const ONE_FAILURE_MARKS_DOWN: &str = "max_fails = 1\nfail_timeout = \"10s\"";

/// A proxy in front of `backend` alone, with [`ONE_FAILURE_MARKS_DOWN`].
async fn one_server_proxy(backend: &Backend) -> Proxy {
    Proxy::start(&group_config(&[backend.addr()], "", ONE_FAILURE_MARKS_DOWN)).await
}

/// Stale-connection retries counted for every server of `app`.
async fn stale_retries(proxy: &Proxy) -> f64 {
    proxy
        .metrics()
        .await
        .matching(STALE_RETRIES, &[("upstream", "app")])
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spaced_around_the_backends_idle_close_never_fail_nor_mark_it_down() {
    let backend = Backend::builder("app")
        .idle_close(Duration::from_millis(500))
        .start()
        .await;
    let proxy = one_server_proxy(&backend).await;
    let client = client();
    // Gaps from 0.4 s to 0.65 s: some pooled connections are still open, some were closed by
    // the backend a moment before, some are closed as the request arrives.
    for step in 0..=10u64 {
        let (status, body) = get(&client, &proxy.url(&format!("/spaced/{step}"))).await;
        assert_eq!((status, body.as_str()), (200, "app"), "request {step}");
        tokio::time::sleep(Duration::from_millis(400 + step * 25)).await;
    }
    assert!(
        backend.accepts() > 1,
        "the backend never closed an idle connection: the test proves nothing"
    );
    assert_eq!(proxy.log_lines_with(&[DOWN]), 0, "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_dropped_as_the_next_request_arrives_cost_no_request() {
    let a = Backend::builder("a")
        .drop_reused_connections()
        .start()
        .await;
    let b = Backend::builder("b")
        .drop_reused_connections()
        .start()
        .await;
    // retries = 0 and max_fails = 1: a dropped pooled connection must spend neither.
    let proxy = Proxy::start(&group_config(
        &[a.addr(), b.addr()],
        "retries = 0",
        ONE_FAILURE_MARKS_DOWN,
    ))
    .await;
    let client = client();
    for i in 0..20 {
        let url = proxy.url(&format!("/reused/{i}"));
        let response = if i % 2 == 0 {
            client.get(&url).send().await
        } else {
            client.post(&url).body(vec![b'p'; 2048]).send().await
        };
        let response = response.unwrap_or_else(|e| panic!("request {i}: {e:?}"));
        assert_eq!(response.status(), 200, "request {i}");
        if i % 2 == 1 {
            let echoed = response.headers().get("x-request-body-len").cloned();
            assert_eq!(
                echoed.as_ref().and_then(|v| v.to_str().ok()),
                Some("2048"),
                "the replayed POST body {i} arrived whole"
            );
        }
    }
    let resent = a.requests() + b.requests() - 20;
    assert!(
        resent > 0,
        "no pooled connection was dropped: the test proves nothing"
    );
    assert_eq!(stale_retries(&proxy).await, resent as f64);
    assert_eq!(proxy.log_lines_with(&[DOWN]), 0, "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dropped_request_on_a_one_server_group_leaves_the_next_ten_served_at_once() {
    let backend = Backend::start("app").await;
    backend.drop_unanswered("/crash");
    let proxy = one_server_proxy(&backend).await;
    let client = client();
    // May fail: the backend really dropped it.
    let crashed = try_get(&client, &proxy.url("/crash")).await;
    assert!(
        matches!(crashed, Ok((502, _))),
        "the dropped request: {crashed:?}"
    );
    for i in 0..10 {
        let (status, body) = get(&client, &proxy.url(&format!("/after/{i}"))).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "app"),
            "request {i} after the drop (fail_timeout is 10 s)"
        );
    }
    assert_eq!(proxy.log_lines_with(&[DOWN]), 0, "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_closing_after_every_third_response_fail_no_request_of_four_clients() {
    let backends = [
        Backend::builder("a").close_after(3).start().await,
        Backend::builder("b").close_after(3).start().await,
        Backend::builder("c").close_after(3).start().await,
    ];
    let addrs: Vec<_> = backends.iter().map(Backend::addr).collect();
    let proxy = Proxy::start(&group_config(&addrs, "", "max_fails = 1")).await;
    let results = load(&client(), &proxy.url("/every-third"), 400, 4).await;
    assert_eq!(results.len(), 400);
    assert!(
        failures(&results).is_empty(),
        "failed: {:?}",
        failures(&results)
    );
    let accepts: usize = backends.iter().map(Backend::accepts).sum();
    assert!(
        accepts >= 400 / 3,
        "{accepts} connections for 400 requests: the backends did not close them"
    );
    assert_eq!(proxy.log_lines_with(&[DOWN]), 0, "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_server_back_on_its_port_serves_the_first_request_after_it_returns() {
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&group_config(
        &[backend.addr()],
        "",
        "max_fails = 1\nfail_timeout = \"30s\"",
    ))
    .await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/before")).await.0, 200);
    backend.stop().await;
    for i in 0..3 {
        let (status, _) = get(&client, &proxy.url(&format!("/gone/{i}"))).await;
        assert_eq!(status, 502, "request {i} while the server is gone");
    }
    backend.restart().await;
    let started = Instant::now();
    let (status, body) = get(&client, &proxy.url("/back")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "app"),
        "the first request after the server came back (fail_timeout is 30 s)"
    );
    // The issue asks for 1 s; 4 s leaves room for a loaded test machine.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the first request after the return took {:?} (expected well under 1 s; 4 s allowed for a loaded machine)",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_servers_all_failed_is_tried_again_and_logged_up_when_one_answers() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = Proxy::start(&group_config(
        &[a.addr(), b.addr()],
        "",
        "max_fails = 1\nfail_timeout = \"30s\"",
    ))
    .await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/before")).await.0, 200);
    a.stop().await;
    b.stop().await;
    for i in 0..3 {
        assert_eq!(get(&client, &proxy.url(&format!("/gone/{i}"))).await.0, 502);
    }
    assert!(
        proxy
            .wait_for_log_lines(&[DOWN, &a.addr().to_string()], 1)
            .await
    );
    assert!(
        proxy
            .wait_for_log_lines(&[DOWN, &b.addr().to_string()], 1)
            .await
    );
    let metrics = proxy.metrics().await;
    for server in [a.addr(), b.addr()] {
        let labels = [("upstream", "app"), ("server", &*server.to_string())];
        assert!(
            metrics.value("parapet_upstream_connect_failures_total", &labels) >= 1.0,
            "connect failures to {server} not counted"
        );
    }
    assert_eq!(
        proxy.log_lines_with(&[DOWN]),
        2,
        "each server is announced down once, not once per failed request:\n{}",
        proxy.logs()
    );
    b.restart().await;
    let (status, body) = get(&client, &proxy.url("/back")).await;
    assert_eq!((status, body.as_str()), (200, "b"), "quick recovery");
    assert!(
        proxy
            .wait_for_log_lines(&[UP, &b.addr().to_string()], 1)
            .await,
        "no {UP:?} line for the server that answered again:\n{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_fails_at_most_one_request_in_ten_thousand() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let addrs: Vec<_> = backends.iter().map(Backend::addr).collect();
    let proxy = Proxy::start(&group_config(&addrs, "retries = 2", "")).await;
    let load = BackgroundLoad::start(&client(), &proxy.url("/under-load"), 32);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let victim = &backends[1];
    assert!(
        victim.requests() > 0,
        "the victim got no traffic before the kill"
    );
    victim.stop().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let results = load.stop().await;
    let failed = failures(&results);
    eprintln!(
        "killed under load: {} of {} requests failed",
        failed.len(),
        results.len()
    );
    // Every request is a GET with no body, so every one in flight at the kill is replayable.
    assert!(
        failed.len() * 10_000 <= results.len(),
        "{} of {} requests failed (at most 0.01 % allowed): {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        backends[0].requests() > 0 && backends[2].requests() > 0,
        "the survivors served nothing"
    );
}
