//! Reload (SIGHUP and `POST /reload`): a bad file changes nothing and is counted and logged; a
//! good one changes routing and servers at once, without closing client connections and without
//! failing a single request under load.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::harness::{
    admin_table, client, config_hash, eventually, failures, get, line_of, load, reserve_addr,
    server_and_listener, Backend, Metrics, Proxy, RawConnection,
};

const TOKEN: &str = "reload-test-token-91e2";

fn write_token(dir: &Path) -> PathBuf {
    let file = dir.join("admin.token");
    std::fs::write(&file, TOKEN).unwrap();
    file
}

/// Two upstreams, `blue` (server `blue`) and `green` (server `green`), and a catch-all route to
/// `route_to`; an admin listener with the token file.
fn blue_green(
    listen: SocketAddr,
    admin: SocketAddr,
    token_file: &Path,
    blue: SocketAddr,
    green: SocketAddr,
    route_to: &str,
) -> String {
    format!(
        r#"{}
[upstream.blue]
connect_timeout = "500ms"
read_timeout = "5s"

[[upstream.blue.server]]
address = "{blue}"
weight = 1

[upstream.green]
connect_timeout = "500ms"
read_timeout = "5s"

[[upstream.green.server]]
address = "{green}"
weight = 1

[[route]]
name = "main"
path_prefix = "/"
upstream = "{route_to}"
{}"#,
        server_and_listener(listen),
        admin_table(admin, Some(token_file)),
    )
}

/// Starts `blue` and `green` backends and a proxy routing everything to `blue`.
struct BlueGreen {
    _dir: tempfile::TempDir,
    token_file: PathBuf,
    blue: Backend,
    green: Backend,
    proxy: Proxy,
}

impl BlueGreen {
    async fn start() -> BlueGreen {
        let dir = tempfile::tempdir().unwrap();
        let token_file = write_token(dir.path());
        let blue = Backend::start("blue").await;
        let green = Backend::start("green").await;
        let proxy = Proxy::start(&blue_green(
            reserve_addr(),
            reserve_addr(),
            &token_file,
            blue.addr(),
            green.addr(),
            "blue",
        ))
        .await;
        BlueGreen {
            _dir: dir,
            token_file,
            blue,
            green,
            proxy,
        }
    }

    /// The running config with the route pointing at `route_to`.
    fn config_routing_to(&self, route_to: &str) -> String {
        blue_green(
            self.proxy.addr(),
            self.proxy.admin_addr(),
            &self.token_file,
            self.blue.addr(),
            self.green.addr(),
            route_to,
        )
    }
}

fn reloads(metrics: &Metrics, result: &str) -> f64 {
    metrics.value("parapet_config_reloads_total", &[("result", result)])
}

async fn assert_still_blue(proxy: &Proxy) {
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &proxy.url("/still")).await,
            (200, "blue".to_string()),
            "the old routes stopped serving after a rejected reload"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_zero_weight_is_rejected_logged_with_its_location_and_changes_nothing() {
    let setup = BlueGreen::start().await;
    let proxy = &setup.proxy;
    let original = std::fs::read_to_string(proxy.config_path()).unwrap();
    assert_still_blue(proxy).await;

    // Both the route change and the bad weight are in the new file: nothing of it may apply.
    let bad = setup
        .config_routing_to("green")
        .replacen("weight = 1", "weight = 0", 1);
    proxy.write_config(&bad);
    proxy.send_signal(libc::SIGHUP);

    let (metrics, counted) = proxy.metrics_until(|m| reloads(m, "failure") >= 1.0).await;
    assert!(counted, "no failed reload counted:\n{}", metrics.text);
    assert_eq!(reloads(&metrics, "failure"), 1.0);
    assert_eq!(reloads(&metrics, "success"), 0.0);
    assert_eq!(
        metrics.get("parapet_config_info", &[("hash", &config_hash(&original))]),
        Some(1.0),
        "the config hash changed on a rejected reload:\n{}",
        metrics.text
    );
    let location = format!(
        "{}:{}:upstream.blue.server[0].weight:",
        proxy.config_path().display(),
        line_of(&bad, "weight = 0", 1)
    );
    assert!(
        proxy.wait_for_log_lines(&[&location], 1).await,
        "no log line names `{location}`:\n{}",
        proxy.logs()
    );
    assert_still_blue(proxy).await;
    assert_eq!(setup.green.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_of_a_file_with_a_syntax_error_answers_422_and_changes_nothing() {
    let setup = BlueGreen::start().await;
    let proxy = &setup.proxy;
    let bad = setup.config_routing_to("green") + "\n[upstream.green\n";
    proxy.write_config(&bad);

    let (status, body) = proxy.admin_post("/reload", Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["reloaded"], false, "{body}");
    let error = value["error"].as_str().unwrap_or_default();
    let file_line = format!(
        "{}:{}:",
        proxy.config_path().display(),
        line_of(&bad, "[upstream.green", 2)
    );
    assert!(
        error.contains(&file_line),
        "expected `{file_line}` in: {body}"
    );
    assert!(
        proxy.wait_for_log_lines(&[&file_line, "reload"], 1).await,
        "the rejection is not logged:\n{}",
        proxy.logs()
    );

    let metrics = proxy.metrics().await;
    assert_eq!(reloads(&metrics, "failure"), 1.0, "{}", metrics.text);
    assert_eq!(reloads(&metrics, "success"), 0.0, "{}", metrics.text);
    assert_still_blue(proxy).await;
    assert_eq!(setup.green.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_reloads_move_the_route_while_the_client_connection_stays_open() {
    let setup = BlueGreen::start().await;
    let proxy = &setup.proxy;
    let mut connection = RawConnection::open(proxy.addr()).await;
    let request = b"GET /keep HTTP/1.1\r\nHost: example.test\r\n\r\n";

    connection.send(request).await;
    let first = connection.response().await;
    assert_eq!((first.status, first.text()), (200, "blue".to_string()));
    let accepted = [("protocol", "http1")];
    let before = proxy
        .metrics()
        .await
        .value("parapet_downstream_connections_total", &accepted);

    // By POST /reload: answered once the new config is in force.
    let green = setup.config_routing_to("green");
    proxy.write_config(&green);
    let (status, body) = proxy.admin_post("/reload", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["reloaded"], true, "{body}");
    assert_eq!(value["config_hash"], config_hash(&green), "{body}");

    connection.send(request).await;
    let second = connection.response().await;
    assert_eq!(
        (second.status, second.text()),
        (200, "green".to_string()),
        "the same client connection after the reload"
    );

    // By SIGHUP: applied asynchronously, so wait for the success count.
    let blue = setup.config_routing_to("blue");
    proxy.write_config(&blue);
    proxy.send_signal(libc::SIGHUP);
    let (metrics, applied) = proxy.metrics_until(|m| reloads(m, "success") >= 2.0).await;
    assert!(applied, "SIGHUP reload not counted:\n{}", metrics.text);
    connection.send(request).await;
    let third = connection.response().await;
    assert_eq!((third.status, third.text()), (200, "blue".to_string()));

    let metrics = proxy.metrics().await;
    assert_eq!(reloads(&metrics, "success"), 2.0, "{}", metrics.text);
    assert_eq!(reloads(&metrics, "failure"), 0.0, "{}", metrics.text);
    assert_eq!(
        metrics.value("parapet_downstream_connections_total", &accepted),
        before,
        "a new client connection was accepted: the reload closed the old one"
    );
    assert_eq!(
        metrics.get("parapet_config_info", &[("hash", &config_hash(&blue))]),
        Some(1.0),
        "{}",
        metrics.text
    );
    assert_eq!(
        (setup.blue.requests(), setup.green.requests()),
        (2, 1),
        "requests per backend"
    );
}

/// Upstream `app` with the given `(server, weight)` list and an active health check, a catch-all
/// route, and an admin listener with the token file.
fn weighted(
    listen: SocketAddr,
    admin: SocketAddr,
    token_file: &Path,
    servers: &[(SocketAddr, u32)],
) -> String {
    let mut toml = format!(
        "{}\n[upstream.app]\nconnect_timeout = \"500ms\"\nread_timeout = \"5s\"\n",
        server_and_listener(listen)
    );
    for (addr, weight) in servers {
        toml.push_str(&format!(
            "\n[[upstream.app.server]]\naddress = \"{addr}\"\nweight = {weight}\n"
        ));
    }
    toml.push_str(
        "\n[upstream.app.health_check]\ntype = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nhealthy = 1\nunhealthy = 2\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
    );
    toml + &admin_table(admin, Some(token_file))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_continuous_load_fail_no_request() {
    const TOTAL: usize = 4000;
    const RELOADS: usize = 20;
    /// Requests the backends must see between two reloads, so the reloads spread over the load.
    const BETWEEN: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token(dir.path());
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let (listen, admin) = (reserve_addr(), reserve_addr());
    // Two valid configs: weights swap and server c comes and goes.
    let two = weighted(listen, admin, &token_file, &[(a.addr(), 3), (b.addr(), 1)]);
    let three = weighted(
        listen,
        admin,
        &token_file,
        &[(a.addr(), 1), (b.addr(), 3), (c.addr(), 2)],
    );
    let proxy = Proxy::start(&two).await;

    let url = proxy.url("/load");
    let load_task = tokio::spawn(async move { load(&client(), &url, TOTAL, 4).await });
    let served = || a.requests() + b.requests() + c.requests();
    let mut answers = Vec::new();
    for i in 0..RELOADS {
        assert!(
            eventually(|| served() >= (i + 1) * BETWEEN).await,
            "the load stalled before reload {i}: {} requests served",
            served()
        );
        let next = if i % 2 == 0 { &three } else { &two };
        proxy.write_config(next);
        let (status, body) = proxy.admin_post("/reload", Some(TOKEN)).await;
        answers.push((status, body));
    }
    let served_during_reloads = served();
    let results = load_task.await.unwrap();

    assert_eq!(results.len(), TOTAL);
    let failed = failures(&results);
    assert!(
        failed.is_empty(),
        "{} of {TOTAL} requests failed during {RELOADS} reloads, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "reload {i}: {body}");
    }
    assert!(
        served_during_reloads < TOTAL,
        "the load was over before the last reload; the test proves nothing"
    );
    assert!(c.requests() > 0, "the added server never got traffic");
    let metrics = proxy.metrics().await;
    assert_eq!(
        reloads(&metrics, "success"),
        RELOADS as f64,
        "{}",
        metrics.text
    );
    assert_eq!(reloads(&metrics, "failure"), 0.0);
}
