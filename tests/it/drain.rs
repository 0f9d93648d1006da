//! Drains that lose nothing (issue 16): on SIGTERM and on SIGQUIT upgrades, requests in flight
//! finish, HTTP/1.1 responses say `Connection: close`, an idle keep-alive connection still
//! serves a request its client was already sending, HTTP/2 gets GOAWAY, clients making requests
//! back to back through upgrades see no connection error, and a signal that reaches an
//! upgrading process before its handlers exist does not kill it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::harness::{
    client, eventually, failures, get, reserve_addr, single_upstream_config, within, Backend,
    BackgroundLoad, Origin, Proxy, RawConnection, Script,
};

/// A config for `backend` alone with a 5 s grace period and the given upgrade socket.
fn drain_config(backend: std::net::SocketAddr, socket: &Path) -> String {
    single_upstream_config(reserve_addr(), "", &[backend], "").replace(
        "grace_period = \"1s\"\n",
        &format!(
            "grace_period = \"5s\"\nupgrade_socket = \"{}\"\n",
            socket.display()
        ),
    )
}

fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n").into_bytes()
}

/// Waits until nothing accepts on the proxy's listener any more: the drain has begun.
async fn wait_until_not_accepting(proxy: &Proxy) -> bool {
    let addr = proxy.addr();
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_with_connection_close_and_serves_one_sent_on_an_idle_connection(
) {
    let origin = Origin::start().await;
    origin.fallback(Script::fixed("fast"));
    origin.script(
        "/slow",
        Script::fixed("slow").delay(Duration::from_millis(800)),
    );
    let socket = tempfile::tempdir().expect("tempdir");
    let mut proxy = Proxy::start(&drain_config(
        origin.addr(),
        &socket.path().join("upgrade.sock"),
    ))
    .await;

    let mut next_request = RawConnection::open(proxy.addr()).await;
    next_request.send(&request("/first")).await;
    assert_eq!(next_request.response().await.status, 200);
    let mut in_flight = RawConnection::open(proxy.addr()).await;
    in_flight.send(&request("/slow")).await;
    assert!(origin.wait_requests("/slow", 1).await);

    proxy.send_signal(libc::SIGTERM);
    assert!(
        wait_until_not_accepting(&proxy).await,
        "the listener still accepts after SIGTERM"
    );
    // A client that was about to reuse its idle keep-alive connection is served, and told.
    next_request.send(&request("/second")).await;
    let served = next_request.response().await;
    assert_eq!((served.status, served.text().as_str()), (200, "fast"));
    assert_eq!(served.header("connection"), Some("close"), "{served:?}");
    assert!(next_request.is_closed_by_peer().await);

    let finished = in_flight.response().await;
    assert_eq!((finished.status, finished.text().as_str()), (200, "slow"));
    assert_eq!(finished.header("connection"), Some("close"), "{finished:?}");
    assert!(in_flight.is_closed_by_peer().await);

    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_a_moment_after_sigterm() {
    let backend = Backend::start("app").await;
    let socket = tempfile::tempdir().expect("tempdir");
    let mut proxy = Proxy::start(&drain_config(
        backend.addr(),
        &socket.path().join("upgrade.sock"),
    ))
    .await;
    let mut idle = RawConnection::open(proxy.addr()).await;
    idle.send(&request("/once")).await;
    assert_eq!(idle.response().await.status, 200);
    proxy.send_signal(libc::SIGTERM);
    assert!(idle.is_closed_by_peer().await);
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_http2_goaway_after_which_the_in_flight_stream_completes() {
    let origin = Origin::start().await;
    origin.script(
        "/slow",
        Script::fixed("slow").delay(Duration::from_millis(800)),
    );
    origin.fallback(Script::fixed("fast"));
    let socket = tempfile::tempdir().expect("tempdir");
    let mut proxy = Proxy::start(&drain_config(
        origin.addr(),
        &socket.path().join("upgrade.sock"),
    ))
    .await;
    let tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let mut send = send.ready().await.expect("ready");
    let slow = http::Request::get(format!("http://{}/slow", proxy.addr()))
        .body(())
        .expect("request");
    let (response, _) = send.send_request(slow, true).expect("stream 1");
    assert!(origin.wait_requests("/slow", 1).await);

    proxy.send_signal(libc::SIGTERM);
    let response = within("the in-flight h2 response", response)
        .await
        .expect("the in-flight stream completes after GOAWAY");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = within("the body", body.data()).await {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    assert_eq!(text, b"slow");

    // A stream opened after the GOAWAY is not processed.
    let later = http::Request::get(format!("http://{}/later", proxy.addr()))
        .body(())
        .expect("request");
    let refused = match send.ready().await {
        Err(e) => Some(e),
        Ok(mut send) => match send.send_request(later, true) {
            Err(e) => Some(e),
            Ok((response, _)) => within("the refused stream", response).await.err(),
        },
    };
    assert!(refused.is_some(), "a stream after GOAWAY was served");
    assert_eq!(origin.requests("/later"), 0);
    let closed = within("the connection close", connection)
        .await
        .expect("connection task");
    assert!(closed.is_ok(), "the h2 connection ended with {closed:?}");
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}"
    );
}

/// Waits until `socket` exists: the upgrading process is waiting for the sockets.
async fn wait_for_socket(socket: &Path, new: &Proxy) {
    assert!(
        eventually(|| socket.exists()).await,
        "the new process never opened {}:\n{}",
        socket.display(),
        new.logs()
    );
}

/// Hands `old`'s sockets to `new`: SIGQUIT, then waits for the transfer and for `old` to exit.
async fn upgrade(old: &mut Proxy, new: &Proxy, socket: &Path) {
    old.send_signal(libc::SIGQUIT);
    assert!(
        eventually(|| !socket.exists()).await,
        "the sockets were not handed over:\nold:\n{}\nnew:\n{}",
        old.logs(),
        new.logs()
    );
    // Pingora keeps the old process serving for 5 s after the hand-over, then it drains.
    let exited = old.wait_exit(Duration::from_secs(20)).await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "the old process after SIGQUIT: {exited:?}\n{}",
        old.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_making_requests_back_to_back_through_three_upgrades_see_no_connection_error() {
    let backend = Backend::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket: PathBuf = dir.path().join("upgrade.sock");
    let config = drain_config(backend.addr(), &socket);
    let mut current = Proxy::start(&config).await;
    let load = BackgroundLoad::start(&client(), &current.url("/through-upgrades"), 8);
    assert!(eventually(|| backend.requests() > 100).await);
    for round in 0..3 {
        let new = Proxy::spawn_upgrade(&config);
        wait_for_socket(&socket, &new).await;
        upgrade(&mut current, &new, &socket).await;
        let before = backend.requests();
        assert!(
            eventually(|| backend.requests() > before + 50).await,
            "no traffic through the new process after upgrade {round}:\n{}",
            new.logs()
        );
        current = new;
    }
    let results = load.stop().await;
    assert!(results.len() > 500, "only {} requests", results.len());
    let failed = failures(&results);
    eprintln!(
        "through 3 upgrades: {} of {} requests failed",
        failed.len(),
        results.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed through 3 upgrades: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_signal_reaching_an_upgrading_process_before_its_handlers_is_deferred_not_fatal() {
    let backend = Backend::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket: PathBuf = dir.path().join("upgrade.sock");
    let config = drain_config(backend.addr(), &socket);
    let mut old = Proxy::start(&config).await;
    let mut new = Proxy::spawn_upgrade(&config);
    wait_for_socket(&socket, &new).await;
    // It is waiting for the sockets: no handler is installed yet.
    new.send_signal(libc::SIGHUP);
    new.send_signal(libc::SIGUSR1);
    upgrade(&mut old, &new, &socket).await;
    assert!(
        new.is_running(),
        "the upgrading process died of SIGHUP:\n{}",
        new.logs()
    );
    assert_eq!(
        get(&client(), &new.url("/after")).await,
        (200, "app".to_string())
    );
    assert!(
        new.wait_for_log_lines(&["SIGHUP received: reloading the config"], 1)
            .await,
        "the early SIGHUP was not acted on once the handler existed:\n{}",
        new.logs()
    );
}
