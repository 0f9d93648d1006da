//! Health: active checks (http, tcp) take servers out and bring them back; passive health
//! (max_fails / fail_timeout) stops trying a failing server; all servers down gives 502.

use std::net::SocketAddr;

use crate::harness::{
    client, eventually, failures, get, load, reserve_addr, server_and_listener,
    single_upstream_config, Backend, Closer, Proxy, Refuser, POLL_STEP,
};

const DOWN: &str = "upstream server is down";
const UP: &str = "upstream server is up";

/// An upstream of `addrs` with passive health off (so only active checks mark servers down) and
/// an active check of the given type.
fn actively_checked(listen: SocketAddr, addrs: &[SocketAddr], check: &str) -> String {
    let mut toml = format!(
        "{}\n[upstream.app]\nconnect_timeout = \"300ms\"\nread_timeout = \"5s\"\nretries = 2\n",
        server_and_listener(listen)
    );
    for addr in addrs {
        toml.push_str(&format!(
            "\n[[upstream.app.server]]\naddress = \"{addr}\"\nmax_fails = 0\n"
        ));
    }
    toml.push_str(&format!(
        r#"
[upstream.app.health_check]
{check}
interval = "100ms"
timeout = "200ms"
healthy = 2
unhealthy = 2

[[route]]
path_prefix = "/"
upstream = "app"
"#
    ));
    toml
}

/// Sends GETs (each must get 200) until `backend` has received traffic; at most 200 requests.
async fn wait_for_traffic_to(proxy: &Proxy, backend: &Backend) {
    let client = client();
    let before = backend.requests();
    for _ in 0..200 {
        let (status, body) = get(&client, &proxy.url("/traffic")).await;
        assert_eq!(status, 200, "body: {body}");
        if backend.requests() > before {
            return;
        }
        tokio::time::sleep(POLL_STEP).await;
    }
    panic!("{} got no traffic in 200 requests", backend.name());
}

/// Sends GETs (each must get 200) until a log line says `what` about `addr`.
async fn requests_succeed_until_logged(proxy: &Proxy, what: &str, addr: SocketAddr, count: usize) {
    let client = client();
    let addr = addr.to_string();
    for _ in 0..500 {
        if proxy.log_lines_with(&[what, &addr]) >= count {
            return;
        }
        let (status, body) = get(&client, &proxy.url("/during")).await;
        assert_eq!(
            status, 200,
            "a client request failed while {addr} changed state: {body}"
        );
        tokio::time::sleep(POLL_STEP).await;
    }
    panic!("no {what:?} log line for {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_takes_a_stopped_backend_out_and_brings_it_back_after_restart() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let listen = reserve_addr();
    let proxy = Proxy::start(&actively_checked(
        listen,
        &[a.addr(), b.addr()],
        "type = \"http\"\npath = \"/health\"\nexpect_status = 200",
    ))
    .await;
    wait_for_traffic_to(&proxy, &b).await;
    assert!(
        eventually(|| b.health_checks() > 0).await,
        "the http check never asked b for /health"
    );

    b.stop().await;
    requests_succeed_until_logged(&proxy, DOWN, b.addr(), 1).await;
    let client = client();
    for _ in 0..20 {
        assert_eq!(
            get(&client, &proxy.url("/after-down")).await,
            (200, "a".to_string())
        );
    }

    let ups_before = proxy.log_lines_with(&[UP, &b.addr().to_string()]);
    let served_before = b.requests();
    b.restart().await;
    requests_succeed_until_logged(&proxy, UP, b.addr(), ups_before + 1).await;
    wait_for_traffic_to(&proxy, &b).await;
    assert!(b.requests() > served_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answering_health_with_503_gets_no_traffic_until_it_recovers() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let listen = reserve_addr();
    let proxy = Proxy::start(&actively_checked(
        listen,
        &[a.addr(), b.addr()],
        "type = \"http\"\npath = \"/health\"",
    ))
    .await;
    wait_for_traffic_to(&proxy, &b).await;

    b.set_health_status(503);
    requests_succeed_until_logged(&proxy, DOWN, b.addr(), 1).await;
    let served_while_up = b.requests();
    let client = client();
    for _ in 0..40 {
        assert_eq!(
            get(&client, &proxy.url("/while-down")).await,
            (200, "a".to_string())
        );
    }
    assert_eq!(
        b.requests(),
        served_while_up,
        "a server marked down by its health check still got requests"
    );
    assert!(b.health_checks() > 0, "the health check never reached b");

    let ups_before = proxy.log_lines_with(&[UP, &b.addr().to_string()]);
    b.set_health_status(200);
    requests_succeed_until_logged(&proxy, UP, b.addr(), ups_before + 1).await;
    wait_for_traffic_to(&proxy, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_marks_a_stopped_backend_down_and_a_restarted_one_up() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let listen = reserve_addr();
    let proxy = Proxy::start(&actively_checked(
        listen,
        &[a.addr(), b.addr()],
        "type = \"tcp\"",
    ))
    .await;
    wait_for_traffic_to(&proxy, &b).await;

    b.stop().await;
    requests_succeed_until_logged(&proxy, DOWN, b.addr(), 1).await;
    assert_eq!(
        b.health_checks(),
        0,
        "a tcp check must not send HTTP requests"
    );

    let ups_before = proxy.log_lines_with(&[UP, &b.addr().to_string()]);
    b.restart().await;
    requests_succeed_until_logged(&proxy, UP, b.addr(), ups_before + 1).await;
    wait_for_traffic_to(&proxy, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_stops_trying_a_failing_server_within_fail_timeout() {
    let a = Backend::start("a").await;
    let closer = Closer::start().await;
    let b = Backend::start("b").await;
    let listen = reserve_addr();
    let mut toml = format!(
        "{}\n[upstream.app]\nbalance = \"round_robin\"\nconnect_timeout = \"300ms\"\nread_timeout = \"5s\"\n",
        server_and_listener(listen)
    );
    toml.push_str(&format!(
        "\n[[upstream.app.server]]\naddress = \"{}\"\n\n[[upstream.app.server]]\naddress = \"{}\"\nmax_fails = 1\nfail_timeout = \"5s\"\n\n[[upstream.app.server]]\naddress = \"{}\"\n",
        a.addr(),
        closer.addr(),
        b.addr()
    ));
    toml.push_str("\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n");
    let proxy = Proxy::start(&toml).await;

    let client = client();
    let mut failed = Vec::new();
    for _ in 0..60 {
        let (status, body) = get(&client, &proxy.url("/passive")).await;
        if status != 200 {
            failed.push((status, body));
        }
    }
    assert_eq!(
        closer.accepts(),
        1,
        "with max_fails = 1 the failing server must be tried once, then left alone"
    );
    assert!(
        failed.len() <= closer.accepts(),
        "more failures than attempts on the bad server: {failed:?}"
    );
    assert_eq!(a.requests() + b.requests() + failed.len(), 60);
    assert!(proxy.log_lines_with(&[DOWN, &closer.addr().to_string()]) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_server_is_marked_down_passively_without_failing_a_request() {
    let a = Backend::start("a").await;
    let refuser = Refuser::new();
    let b = Backend::start("b").await;
    let listen = reserve_addr();
    let toml = single_upstream_config(
        listen,
        "retries = 2",
        &[a.addr(), refuser.addr(), b.addr()],
        "",
    )
    .replace(
        &format!("address = \"{}\"\n", refuser.addr()),
        &format!(
            "address = \"{}\"\nmax_fails = 1\nfail_timeout = \"5s\"\n",
            refuser.addr()
        ),
    );
    let proxy = Proxy::start(&toml).await;
    let results = load(&client(), &proxy.url("/refused"), 60, 2).await;
    assert!(
        failures(&results).is_empty(),
        "failed: {:?}",
        failures(&results)
    );
    assert!(a.requests() > 0 && b.requests() > 0);
    assert!(
        proxy
            .wait_for_log_lines(&[DOWN, &refuser.addr().to_string()], 1)
            .await,
        "no {DOWN:?} log line for the refusing server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_gives_502() {
    let refusers = [Refuser::new(), Refuser::new()];
    let listen = reserve_addr();
    let addrs: Vec<_> = refusers.iter().map(Refuser::addr).collect();
    let proxy = Proxy::start(&single_upstream_config(listen, "", &addrs, "")).await;
    let client = client();
    for _ in 0..5 {
        let (status, _) = get(&client, &proxy.url("/nobody")).await;
        assert_eq!(status, 502);
    }
}
