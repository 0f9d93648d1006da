//! Request hygiene (issue 17): every request checked as RFC 9110/9112/9113/9114 demand before it
//! reaches a backend, on every door, each case asserting the status and what the backend got.

use crate::harness::{
    h2c_client, h2c_exchange, reserve_addr, single_upstream_config, within, H2Frame, Origin, Proxy,
    RawConnection, Received, Script, FRAME_GOAWAY, FRAME_HEADERS, FRAME_RST_STREAM,
    H2_PROTOCOL_ERROR,
};

/// A proxy in front of one origin that answers every path with 200 "ok".
async fn start() -> (Proxy, Origin) {
    let origin = Origin::start().await;
    origin.fallback(Script::fixed("ok"));
    let proxy = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "",
        &[origin.addr()],
        "",
    ))
    .await;
    (proxy, origin)
}

/// What the backend should receive: nothing, or this target with this `Host`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Upstream {
    Nothing,
    Request {
        target: &'static str,
        host: &'static str,
    },
}

/// Sends `request` on a fresh connection; the status and the request the origin received
/// because of it, if any.
async fn exchange(proxy: &Proxy, origin: &Origin, request: &[u8]) -> (u16, Option<Received>) {
    let before = origin.received_all().len();
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(request).await;
    let status = connection.response().await.status;
    let received = origin.received_all();
    assert!(
        received.len() <= before + 1,
        "one request reached the backend twice"
    );
    (status, received.get(before).cloned())
}

fn upstream_of(received: &Option<Received>) -> Option<(String, String)> {
    received
        .as_ref()
        .map(|r| (r.target.clone(), r.header_values("host").join(" | ")))
}

/// The `host` of a case that expects the server's address as configured (the default
/// upstream `Host` for a request without one).
const SERVER_ADDRESS: &str = "<the server's address>";

fn expected(upstream: Upstream, origin: &Origin) -> Option<(String, String)> {
    match upstream {
        Upstream::Nothing => None,
        Upstream::Request { target, host } if host == SERVER_ADDRESS => {
            Some((target.to_string(), origin.addr().to_string()))
        }
        Upstream::Request { target, host } => Some((target.to_string(), host.to_string())),
    }
}

/// Runs a table of raw HTTP/1.1 requests; collects every mismatch so one run shows them all.
async fn run_table(proxy: &Proxy, origin: &Origin, table: &[(&str, Vec<u8>, u16, Upstream)]) {
    let mut mismatches = Vec::new();
    for (case, request, status, upstream) in table {
        let (got_status, received) = exchange(proxy, origin, request).await;
        let got = upstream_of(&received);
        let want = expected(*upstream, origin);
        if got_status != *status || got != want {
            mismatches.push(format!(
                "{case}: expected {status} with {want:?} upstream, got {got_status} with {got:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\n{headers}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_hosts_and_targets_are_checked_before_the_backend_issue_17() {
    use Upstream::{Nothing, Request};
    let (proxy, origin) = start().await;
    let host = "Host: a.test\r\n";
    let table = [
        (
            "a valid request",
            get("/p?q=1", host),
            200,
            Request {
                target: "/p?q=1",
                host: "a.test",
            },
        ),
        ("no Host", get("/", ""), 400, Nothing),
        ("an empty Host", get("/", "Host: \r\n"), 400, Nothing),
        (
            "a Host with a space and a slash",
            get("/", "Host: a b/c\r\n"),
            400,
            Nothing,
        ),
        (
            "two Host fields",
            get("/", "Host: a.test\r\nHost: a.test\r\n"),
            400,
            Nothing,
        ),
        (
            "a Host with userinfo",
            get("/", "Host: u@a.test\r\n"),
            400,
            Nothing,
        ),
        (
            "a Host with a bad port",
            get("/", "Host: a.test:99999\r\n"),
            400,
            Nothing,
        ),
        ("a space in the target", get("/a b", host), 400, Nothing),
        ("a tab in the target", get("/a\tb", host), 400, Nothing),
        (
            "a control byte in the target",
            get("/a\x01b", host),
            400,
            Nothing,
        ),
        ("a relative target", get("a/b", host), 400, Nothing),
        ("an asterisk for GET", get("*", host), 400, Nothing),
        (
            "authority-form for GET",
            get("a.test:80", host),
            400,
            Nothing,
        ),
        (
            "an ftp absolute-form",
            get("ftp://a.test/x", host),
            400,
            Nothing,
        ),
        (
            "absolute-form, Host equal",
            get("http://a.test/abs?x=1", host),
            200,
            Request {
                target: "/abs?x=1",
                host: "a.test",
            },
        ),
        (
            "absolute-form, Host different: the authority wins",
            get("http://b.test:8080/abs", host),
            200,
            Request {
                target: "/abs",
                host: "b.test:8080",
            },
        ),
        (
            "absolute-form without Host",
            get("http://b.test/abs", ""),
            200,
            Request {
                target: "/abs",
                host: "b.test",
            },
        ),
        (
            "absolute-form without a path",
            get("http://b.test", host),
            200,
            Request {
                target: "/",
                host: "b.test",
            },
        ),
        (
            "absolute-form with userinfo",
            get("http://u@b.test/", host),
            400,
            Nothing,
        ),
        (
            "OPTIONS *",
            b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
            200,
            Request {
                target: "*",
                host: "a.test",
            },
        ),
        (
            "HTTP/1.0 without Host",
            b"GET /old HTTP/1.0\r\n\r\n".to_vec(),
            200,
            Request {
                target: "/old",
                host: SERVER_ADDRESS,
            },
        ),
        (
            "obs-fold",
            get("/", "Host: a.test\r\nX-A: a\r\n b\r\n"),
            400,
            Nothing,
        ),
        (
            "a space before the colon",
            get("/", "Host: a.test\r\nX-A : a\r\n"),
            400,
            Nothing,
        ),
        (
            "Content-Length with Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            400,
            Nothing,
        ),
        (
            "two different Content-Length values",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
            Nothing,
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
            Nothing,
        ),
    ];
    run_table(&proxy, &origin, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_over_max_request_line_size_is_414_issue_17() {
    use Upstream::{Nothing, Request};
    let (proxy, origin) = start().await;
    let host = "Host: a.test\r\n";
    let path = |bytes: usize| format!("/{}", "a".repeat(bytes - 1));
    // The default limit is 8 KiB; past the URI type's own 64 KiB limit Pingora's reader answers.
    let at_limit: &'static str = Box::leak(path(8 * 1024).into_boxed_str());
    let table = [
        (
            "a target of exactly 8 KiB",
            get(at_limit, host),
            200,
            Request {
                target: at_limit,
                host: "a.test",
            },
        ),
        (
            "a target of 8 KiB and 1 byte",
            get(&path(8 * 1024 + 1), host),
            414,
            Nothing,
        ),
        (
            "a target of 64 KiB",
            get(&path(64 * 1024), host),
            414,
            Nothing,
        ),
    ];
    run_table(&proxy, &origin, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_padded_field_values_are_400_and_the_authority_is_the_host_issue_17() {
    let (proxy, origin) = start().await;
    let client = h2c_client();
    let table = [
        ("x-value", " leading space", 400),
        ("x-value", "trailing tab\t", 400),
        ("x-value", "inner space is fine", 200),
    ];
    let mut mismatches = Vec::new();
    for (name, value, status) in table {
        let before = origin.received_all().len();
        let response = within(
            "h2c request",
            client.get(proxy.url("/h2")).header(name, value).send(),
        )
        .await
        .expect("h2c request");
        let reached = origin.received_all().len() > before;
        if response.status().as_u16() != status || reached != (status == 200) {
            mismatches.push(format!(
                "{name}: {value:?}: expected {status}, got {} (backend reached: {reached})",
                response.status()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let received = origin.last_received("/h2");
    assert_eq!(received.target, "/h2");
    assert_eq!(received.header_values("host"), [proxy.addr().to_string()]);
    assert_eq!(received.header_values("x-value"), ["inner space is fine"]);
}

/// How an h2 server met the request on stream 1.
fn h2_outcome(frames: &[H2Frame]) -> String {
    let answer = frames.iter().find(|f| {
        f.stream == 1 && matches!(f.kind, FRAME_HEADERS | FRAME_RST_STREAM)
            || f.kind == FRAME_GOAWAY
    });
    match answer {
        // :status from the HPACK static table (RFC 7541 Appendix A).
        Some(f) if f.kind == FRAME_HEADERS => match f.payload.first() {
            Some(0x88) => "200".to_string(),
            Some(0x8c) => "400".to_string(),
            other => format!("HEADERS starting {other:?}"),
        },
        Some(f) if f.payload.ends_with(&H2_PROTOCOL_ERROR) && f.kind == FRAME_RST_STREAM => {
            "stream error".to_string()
        }
        other => format!("{other:?}"),
    }
}

/// A case name, the fields added to a valid request, and the outcomes that pass.
type H2Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connection_specific_fields_never_reach_the_backend_issue_17() {
    let (proxy, origin) = start().await;
    let authority = proxy.addr().to_string();
    const REFUSED: &[&str] = &["400", "stream error"];
    let table: [H2Case; 9] = [
        ("Connection", &[("connection", "keep-alive")], REFUSED),
        ("Keep-Alive", &[("keep-alive", "timeout=5")], REFUSED),
        (
            "Proxy-Connection",
            &[("proxy-connection", "keep-alive")],
            REFUSED,
        ),
        (
            "Transfer-Encoding",
            &[("transfer-encoding", "chunked")],
            REFUSED,
        ),
        ("Upgrade", &[("upgrade", "websocket")], REFUSED),
        ("TE other than trailers", &[("te", "gzip")], REFUSED),
        (
            "two Host fields",
            &[("host", "a.test"), ("host", "b.test")],
            REFUSED,
        ),
        ("an ordinary field", &[("x-fine", "yes")], &["200"]),
        ("TE: trailers", &[("te", "trailers")], &["200"]),
    ];
    let mut mismatches = Vec::new();
    for (case, extra, expected) in table {
        let before = origin.received_all().len();
        let mut fields = vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/h2raw"),
            (":authority", authority.as_str()),
        ];
        fields.extend_from_slice(extra);
        let outcome = h2_outcome(&h2c_exchange(proxy.addr(), &fields).await);
        let reached = origin.received_all().len() > before;
        let should_reach = expected == ["200"];
        if !expected.contains(&outcome.as_str()) || reached != should_reach {
            mismatches.push(format!(
                "{case}: expected {expected:?}, got {outcome} (backend reached: {reached})"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let received = origin.last_received("/h2raw");
    assert_eq!(received.header_values("host"), [authority]);
    assert_eq!(
        received.header_values("te"),
        Vec::<&str>::new(),
        "TE is hop-by-hop: the proxy answers it, the backend must not see it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_request_without_host_gets_the_upstreams_host_header() {
    let origin = Origin::start().await;
    origin.fallback(Script::fixed("ok"));
    let proxy = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "host_header = \"api.internal:8080\"",
        &[origin.addr()],
        "",
    ))
    .await;
    let (status, received) = exchange(&proxy, &origin, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream_of(&received),
        Some(("/old".to_string(), "api.internal:8080".to_string()))
    );
    // A request that names its host keeps it.
    let (status, received) = exchange(
        &proxy,
        &origin,
        b"GET /new HTTP/1.0\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream_of(&received),
        Some(("/new".to_string(), "a.test".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreeing_content_length_values_go_upstream_as_one_line_issue_26() {
    let (proxy, origin) = start().await;
    for (case, request) in [
        (
            "two lines",
            &b"POST /two HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"[..],
        ),
        (
            "a list",
            &b"POST /list HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 5\r\n\r\nhello"[..],
        ),
    ] {
        let (status, received) = exchange(&proxy, &origin, request).await;
        assert_eq!(status, 200, "{case}");
        let received = received.unwrap_or_else(|| panic!("{case}: nothing reached the origin"));
        assert_eq!(received.header_values("content-length"), ["5"], "{case}: {received:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_header_fields_than_the_parser_holds_is_431_issue_26() {
    let (proxy, origin) = start().await;
    let fields: String = (0..300).map(|n| format!("X-F{n}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: a.test\r\n{fields}\r\n");
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(request.as_bytes()).await;
    let response = connection.response().await;
    assert_eq!(response.status, 431, "{}", response.text());
    assert!(
        connection.is_closed_by_peer().await,
        "the connection stays open"
    );
    assert_eq!(origin.total_requests(), 0);
}
