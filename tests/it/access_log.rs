//! The access log: one JSON line per request with every field, `X-Request-Id` tying client,
//! backend and log together, reopening on SIGUSR1 after rotation, and a full flush on SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    client, eventually, get, h2c_client, raw_get, reserve_addr, single_upstream_config, Backend,
    Origin, Proxy, RawConnection, Script,
};

/// Every field a line must carry.
const FIELDS: [&str; 13] = [
    "time",
    "client",
    "method",
    "host",
    "path",
    "protocol",
    "status",
    "bytes",
    "duration_ms",
    "upstream_server",
    "upstream_time_ms",
    "cache_status",
    "request_id",
];

/// One backend behind a route on `/app/` only (anything else is a 404), logging to `log`.
fn logged_config(listen: SocketAddr, backend: SocketAddr, log: &Path) -> String {
    let toml = single_upstream_config(listen, "", &[backend], "").replace(
        "[[route]]\npath_prefix = \"/\"",
        "[[route]]\npath_prefix = \"/app/\"",
    );
    assert!(toml.contains("path_prefix = \"/app/\""));
    format!("{toml}\n[access_log]\ntarget = \"{}\"\n", log.display())
}

/// The file's lines, each parsed as JSON (panics on a line that is not JSON); none if absent.
fn read_log(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {line:?}"))
        })
        .collect()
}

/// Waits until `path` holds at least `count` lines, then returns them all.
async fn wait_for_lines(path: &Path, count: usize) -> Vec<Value> {
    let counted = eventually(|| {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count() >= count)
            .unwrap_or(false)
    })
    .await;
    let lines = read_log(path);
    assert!(
        counted,
        "{} holds {} lines, expected {count}: {lines:#?}",
        path.display(),
        lines.len()
    );
    lines
}

fn line_for<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    let mut found = lines.iter().filter(|l| l["path"] == path);
    let line = found
        .next()
        .unwrap_or_else(|| panic!("no line for {path} in {lines:#?}"));
    assert!(found.next().is_none(), "several lines for {path}");
    line
}

fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Digits after the decimal point of a JSON number as written.
fn decimals(number: &Value) -> usize {
    let text = number.to_string();
    text.split_once('.')
        .map_or(0, |(_, fraction)| fraction.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_are_logged_in_milliseconds_rounded_to_microseconds_issue_25() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&logged_config(reserve_addr(), backend.addr(), &log)).await;
    let client = client();
    const REQUESTS: usize = 20;
    for n in 0..REQUESTS {
        let (status, _) = get(&client, &proxy.url(&format!("/app/{n}"))).await;
        assert_eq!(status, 200);
    }
    let lines = wait_for_lines(&log, REQUESTS).await;
    for line in &lines {
        for field in ["duration_ms", "upstream_time_ms"] {
            let value = &line[field];
            assert!(value.as_f64().is_some(), "{field} is not a number: {line}");
            assert!(
                decimals(value) <= 3,
                "{field} has more than µs precision: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_one_json_line_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&logged_config(reserve_addr(), backend.addr(), &log)).await;
    let host = proxy.addr().to_string();
    let server = backend.addr().to_string();

    let client = client();
    assert_eq!(
        get(&client, &proxy.url("/app/get?q=1")).await,
        (200, "app".to_string())
    );
    let posted = client
        .post(proxy.url("/app/post"))
        .body("twelve bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(posted.text().await.unwrap(), "app");
    let head = client.head(proxy.url("/app/head")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(get(&client, &proxy.url("/missing")).await.0, 404);
    assert_eq!(
        get(&h2c_client(), &proxy.url("/app/h2")).await,
        (200, "app".to_string())
    );

    let lines = wait_for_lines(&log, 5).await;
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for line in &lines {
        for field in FIELDS {
            assert!(line.get(field).is_some(), "no {field:?} in {line}");
        }
        assert!(
            line["time"].as_str().is_some_and(|t| t.len() >= 20),
            "{line}"
        );
        let client_addr = line["client"].as_str().unwrap_or_default();
        assert!(client_addr.starts_with("127.0.0.1:"), "{line}");
        assert_eq!(line["host"], host, "{line}");
        assert!(
            line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
        assert!(line["cache_status"].is_null(), "{line}");
        assert!(
            line["request_id"].as_str().is_some_and(is_request_id),
            "{line}"
        );
    }
    let proxied = [
        ("/app/get?q=1", "GET", "http1", 3),
        ("/app/post", "POST", "http1", 3),
        ("/app/head", "HEAD", "http1", 0),
        ("/app/h2", "GET", "h2", 3),
    ];
    for (path, method, protocol, bytes) in proxied {
        let line = line_for(&lines, path);
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["protocol"], protocol, "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["bytes"], bytes, "{line}");
        assert_eq!(line["upstream_server"], server, "{line}");
        assert!(
            line["upstream_time_ms"].as_f64().is_some_and(|t| t >= 0.0),
            "{line}"
        );
    }
    let missing = line_for(&lines, "/missing");
    assert_eq!(missing["method"], "GET");
    assert_eq!(missing["status"], 404, "{missing}");
    assert!(missing["upstream_server"].is_null(), "{missing}");
    assert!(missing["upstream_time_ms"].is_null(), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_passed_through_or_generated_and_reaches_backend_client_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&logged_config(reserve_addr(), backend.addr(), &log)).await;
    let host = proxy.addr().to_string();

    let sent = "client-chosen-id-42";
    let response = raw_get(
        proxy.addr(),
        "/app/with-id",
        &[("Host", &host), ("X-Request-Id", sent)],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header_values("x-request-id"), vec![sent]);
    assert_eq!(
        backend.last_received().header_values("x-request-id"),
        vec![sent]
    );

    let response = raw_get(proxy.addr(), "/app/without-id", &[("Host", &host)]).await;
    assert_eq!(response.status, 200);
    let generated = response
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id in {response:?}"))
        .to_string();
    assert!(is_request_id(&generated), "generated id {generated:?}");
    assert_eq!(
        backend.last_received().header_values("x-request-id"),
        vec![generated.as_str()]
    );

    let lines = wait_for_lines(&log, 2).await;
    assert_eq!(line_for(&lines, "/app/with-id")["request_id"], sent);
    assert_eq!(line_for(&lines, "/app/without-id")["request_id"], generated);

    // Each request gets its own id.
    let again = raw_get(proxy.addr(), "/app/again", &[("Host", &host)]).await;
    assert_ne!(again.header("x-request-id"), Some(generated.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_log_after_rotation_and_the_old_file_keeps_the_old_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&logged_config(reserve_addr(), backend.addr(), &log)).await;
    let client = client();

    for i in 0..3 {
        assert_eq!(
            get(&client, &proxy.url(&format!("/app/before/{i}")))
                .await
                .0,
            200
        );
    }
    wait_for_lines(&log, 3).await;
    std::fs::rename(&log, &rotated).unwrap();
    proxy.send_signal(libc::SIGUSR1);
    assert!(
        proxy.wait_for_log_lines(&["access log reopened"], 1).await,
        "SIGUSR1 did not reopen the access log:\n{}",
        proxy.logs()
    );
    for i in 0..2 {
        assert_eq!(
            get(&client, &proxy.url(&format!("/app/after/{i}"))).await.0,
            200
        );
    }

    let new_lines = wait_for_lines(&log, 2).await;
    let paths = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["path"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(paths(&new_lines), ["/app/after/0", "/app/after/1"]);
    assert_eq!(
        paths(&read_log(&rotated)),
        ["/app/before/0", "/app/before/1", "/app/before/2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_with_every_request_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let backend = Backend::start("app").await;
    let mut proxy = Proxy::start(&logged_config(reserve_addr(), backend.addr(), &log)).await;

    const SENT: usize = 40;
    let client = client();
    for i in 0..SENT {
        assert_eq!(get(&client, &proxy.url(&format!("/app/{i}"))).await.0, 200);
    }
    // No waiting for the writer: the stop itself must flush.
    proxy.send_signal(libc::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(6))
        .await
        .unwrap_or_else(|| panic!("still running 6 s after SIGTERM (grace 1 s)"));
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let lines = read_log(&log);
    let mut paths: Vec<String> = lines
        .iter()
        .map(|l| l["path"].as_str().unwrap_or_default().to_string())
        .collect();
    paths.sort();
    let mut expected: Vec<String> = (0..SENT).map(|i| format!("/app/{i}")).collect();
    expected.sort();
    assert_eq!(paths, expected, "the access log after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_with_their_real_byte_count_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&logged_config(reserve_addr(), backend.addr(), &log)).await;
    let host = proxy.addr().to_string();

    let missing = raw_get(proxy.addr(), "/missing", &[("Host", &host)]).await;
    assert_eq!(missing.status, 404);
    let mut garbage = RawConnection::open(proxy.addr()).await;
    garbage.send(b"GARBAGE\r\n\r\n").await;
    let malformed = garbage.response().await;
    assert_eq!(malformed.status, 400);

    let lines = wait_for_lines(&log, 2).await;
    let logged_404 = line_for(&lines, "/missing");
    assert_eq!(logged_404["status"], 404, "{logged_404}");
    assert_eq!(logged_404["bytes"], missing.body.len(), "{logged_404}");
    assert!(!missing.body.is_empty());
    assert_eq!(
        logged_404["request_id"].as_str(),
        missing.header("x-request-id"),
        "{logged_404}"
    );
    let logged_400 = lines
        .iter()
        .find(|l| l["status"] == 400)
        .unwrap_or_else(|| panic!("no line for the 400 in {lines:#?}"));
    assert_eq!(logged_400["bytes"], malformed.body.len(), "{logged_400}");
    assert_eq!(
        logged_400["request_id"].as_str(),
        malformed.header("x-request-id"),
        "{logged_400}"
    );
    assert!(
        logged_400["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{logged_400}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_route_logs_its_cache_status() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let backend = Backend::builder("app")
        .response_header("Cache-Control", "max-age=60")
        .start()
        .await;
    let toml = logged_config(reserve_addr(), backend.addr(), &log)
        .replace("upstream = \"app\"\n", "upstream = \"app\"\ncache = true\n");
    assert!(toml.contains("cache = true"));
    let proxy = Proxy::start(&toml).await;
    let client = client();
    for _ in 0..2 {
        assert_eq!(
            get(&client, &proxy.url("/app/stored")).await,
            (200, "app".to_string())
        );
    }
    assert_eq!(backend.requests(), 1, "the second request was not a hit");
    let lines = wait_for_lines(&log, 2).await;
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["cache_status"].as_str().unwrap_or("null"))
        .collect();
    assert_eq!(statuses, ["miss", "hit"], "{lines:#?}");
    assert_eq!(lines[1]["bytes"], 3, "{}", lines[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_answer_is_logged_499_with_no_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let origin = Origin::start().await;
    origin.script(
        "/app/slow",
        Script::fixed("too late").delay(Duration::from_secs(2)),
    );
    let proxy = Proxy::start(&logged_config(reserve_addr(), origin.addr(), &log)).await;
    let mut leaving = RawConnection::open(proxy.addr()).await;
    leaving
        .send(b"GET /app/slow HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await;
    assert!(origin.wait_requests("/app/slow", 1).await);
    drop(leaving);

    let lines = wait_for_lines(&log, 1).await;
    let line = line_for(&lines, "/app/slow");
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["bytes"], 0, "{line}");
    assert!(
        line["request_id"].as_str().is_some_and(is_request_id),
        "{line}"
    );
}

/// A head that cannot be parsed is logged with why, and with its method and path when the
/// parser read them (issue 25 point 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_head_is_logged_with_the_reason_and_the_method_and_path_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&logged_config(reserve_addr(), backend.addr(), &log)).await;
    let many_fields: String = (0..300).map(|n| format!("X-F{n}: v\r\n")).collect();
    let cases: [(Vec<u8>, u16, &str, &str, &str); 3] = [
        (
            b"GET /bad-name HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n".to_vec(),
            400,
            "invalid header name",
            "GET",
            "/bad-name",
        ),
        (
            format!("GET /many HTTP/1.1\r\nHost: a\r\n{many_fields}\r\n").into_bytes(),
            431,
            "more than 256 header fields",
            "",
            "",
        ),
        (
            b"\x01\x02 garbage\r\n\r\n".to_vec(),
            400,
            "invalid token",
            "",
            "",
        ),
    ];
    for (bytes, status, _, _, _) in &cases {
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection.send(bytes).await;
        assert_eq!(connection.response().await.status, *status);
    }
    let lines = wait_for_lines(&log, cases.len()).await;
    for (_, status, reason, method, path) in cases {
        let line = lines
            .iter()
            .find(|l| l["reason"] == reason)
            .unwrap_or_else(|| panic!("no line with reason {reason:?} in {lines:#?}"));
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["path"], path, "{line}");
    }
}
