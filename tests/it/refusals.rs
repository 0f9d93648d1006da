//! Answers Parapet makes itself (issue 16): a short body saying what happened (text, or JSON for
//! clients that accept only JSON), `X-Request-Id`, no `Server: Pingora` (and a `Server` only
//! when `[server] server_header` says so), and a client connection kept open when the request
//! was read whole.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{
    reserve_addr, single_upstream_config, Backend, Proxy, RawConnection, RawResponse, Refuser,
};

/// A proxy whose only upstream has two servers that refuse every connection.
async fn all_down_proxy(server_keys: &str) -> (Proxy, [Refuser; 2]) {
    let refusers = [Refuser::new(), Refuser::new()];
    let addrs: Vec<_> = refusers.iter().map(Refuser::addr).collect();
    let toml = single_upstream_config(reserve_addr(), "", &addrs, "")
        .replace("[server]\n", &format!("[server]\n{server_keys}\n"));
    (Proxy::start(&toml).await, refusers)
}

fn request(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n{extra}\r\n").into_bytes()
}

/// The request id the body names, checked against the header.
fn assert_request_id_matches(response: &RawResponse) -> String {
    let id = response
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on {response:?}"))
        .to_string();
    assert!(
        response.text().contains(&id),
        "the body does not name the request id {id}: {:?}",
        response.text()
    );
    id
}

fn assert_no_pingora(response: &RawResponse) {
    assert_eq!(
        response.header("server"),
        None,
        "a Server header by default: {response:?}"
    );
    let everything = format!("{response:?}").to_ascii_lowercase();
    assert!(!everything.contains("pingora"), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_from_an_all_down_group_says_why_names_the_request_and_keeps_the_connection() {
    let (proxy, _refusers) = all_down_proxy("").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(&request("/down", "")).await;
    let response = connection.response().await;
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        response.text().starts_with("502 Bad Gateway: "),
        "{:?}",
        response.text()
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_ne!(response.header("connection"), Some("close"), "{response:?}");
    let first_id = assert_request_id_matches(&response);
    assert_no_pingora(&response);

    // The same connection carries the next request, which has an id of its own.
    connection
        .send(&request("/down-again", "X-Request-Id: mine-42\r\n"))
        .await;
    let again = connection.response().await;
    assert_eq!(again.status, 502, "{again:?}");
    assert_eq!(assert_request_id_matches(&again), "mine-42");
    assert_ne!(first_id, "mine-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_accepts_only_json_gets_the_refusal_as_json() {
    let (proxy, _refusers) = all_down_proxy("").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .send(&request("/json", "Accept: application/json\r\n"))
        .await;
    let response = connection.response().await;
    assert_eq!(response.status, 502);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&response.body).expect("the body is JSON");
    assert_eq!(json["status"], 502);
    assert_eq!(json["error"], "Bad Gateway");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    assert_eq!(
        json["request_id"].as_str(),
        response.header("x-request-id"),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_says_no_route_and_keeps_the_connection() {
    let backend = Backend::start("app").await;
    let toml = single_upstream_config(reserve_addr(), "", &[backend.addr()], "").replace(
        "[[route]]\npath_prefix = \"/\"",
        "[[route]]\npath_prefix = \"/app/\"",
    );
    let proxy = Proxy::start(&toml).await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(&request("/elsewhere", "")).await;
    let response = connection.response().await;
    assert_eq!(response.status, 404);
    assert!(
        response
            .text()
            .starts_with("404 Not Found: no route for this host and path\n"),
        "{:?}",
        response.text()
    );
    assert_request_id_matches(&response);
    assert_no_pingora(&response);
    connection.send(&request("/app/then", "")).await;
    assert_eq!(connection.response().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_504_after_read_timeout_keeps_the_connection_for_the_next_request() {
    let backend = Backend::start("app").await;
    let toml = single_upstream_config(reserve_addr(), "", &[backend.addr()], "")
        .replace("read_timeout = \"5s\"", "read_timeout = \"300ms\"");
    let proxy = Proxy::start(&toml).await;
    backend.set_delay(Duration::from_secs(2));
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(&request("/slow", "")).await;
    let response = connection.response().await;
    assert_eq!(response.status, 504, "{response:?}");
    assert!(
        response.text().starts_with("504 Gateway Timeout: "),
        "{:?}",
        response.text()
    );
    assert_request_id_matches(&response);
    backend.set_delay(Duration::ZERO);
    connection.send(&request("/fast", "")).await;
    let next = connection.response().await;
    assert_eq!((next.status, next.text().as_str()), (200, "app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_a_400_that_says_so_and_the_connection_closes() {
    let (proxy, _refusers) = all_down_proxy("").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n").await;
    let response = connection.response().await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(
        response.text().starts_with("400 Bad Request: "),
        "{:?}",
        response.text()
    );
    assert_request_id_matches(&response);
    assert_no_pingora(&response);
    assert!(connection.is_closed_by_peer().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_in_parapets_words() {
    let (proxy, _refusers) = all_down_proxy("").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await;
    let response = connection.response().await;
    assert_eq!(response.status, 405, "{response:?}");
    assert!(response.text().contains("CONNECT"), "{:?}", response.text());
    assert_request_id_matches(&response);
    assert_no_pingora(&response);
    assert!(connection.is_closed_by_peer().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_gets_the_refusal_header_without_a_body() {
    let (proxy, _refusers) = all_down_proxy("").await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .send(b"HEAD /head HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await;
    let response = connection.head_response().await;
    assert_eq!(response.status, 502);
    assert!(response.header("x-request-id").is_some(), "{response:?}");
    // Nothing but the next response follows on the connection.
    connection.send(&request("/after-head", "")).await;
    assert_eq!(connection.response().await.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_header_names_every_response_when_set() {
    let backend = Backend::start("app").await;
    let listen: SocketAddr = reserve_addr();
    let toml = single_upstream_config(listen, "", &[backend.addr()], "")
        .replace("[server]\n", "[server]\nserver_header = \"parapet\"\n")
        .replace(
            "[[route]]\npath_prefix = \"/\"",
            "[[route]]\npath_prefix = \"/app/\"",
        );
    let proxy = Proxy::start(&toml).await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(&request("/nowhere", "")).await;
    let refused = connection.response().await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.header_values("server"), vec!["parapet"]);
    connection.send(&request("/app/proxied", "")).await;
    let proxied = connection.response().await;
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.header_values("server"), vec!["parapet"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_431_and_a_413_say_which_limit_was_passed_and_name_the_request() {
    let backend = Backend::start("app").await;
    let toml = single_upstream_config(reserve_addr(), "", &[backend.addr()], "").replace(
        "[server]\n",
        "[server]\nmax_request_header_size = \"4KiB\"\nmax_request_body_size = \"1KiB\"\n",
    );
    let proxy = Proxy::start(&toml).await;

    let big_head = request(
        "/big-head",
        &format!("X-Filler: {}\r\n", "a".repeat(8 * 1024)),
    );
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(&big_head).await;
    let too_large_head = connection.response().await;
    assert_eq!(too_large_head.status, 431, "{too_large_head:?}");
    assert!(
        too_large_head
            .text()
            .starts_with("431 Request Header Fields Too Large: the request head is larger"),
        "{:?}",
        too_large_head.text()
    );
    assert_request_id_matches(&too_large_head);
    assert_no_pingora(&too_large_head);

    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .send(b"POST /big-body HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4096\r\n\r\n")
        .await;
    let too_large_body = connection.response().await;
    assert_eq!(too_large_body.status, 413, "{too_large_body:?}");
    assert!(
        too_large_body
            .text()
            .starts_with("413 Payload Too Large: the request body is larger"),
        "{:?}",
        too_large_body.text()
    );
    assert_request_id_matches(&too_large_body);
    assert_no_pingora(&too_large_body);
    assert!(
        connection.is_closed_by_peer().await,
        "the unread body leaves the connection unusable"
    );
    assert_eq!(
        backend.requests(),
        0,
        "a refused request reached the backend"
    );
}
