//! The deploy kit (issue 13): every series the Grafana dashboard and the Prometheus alerts name
//! exists on a live `/metrics`; promtool accepts the alerts, their unit tests and the
//! dashboard's queries; the container and Kubernetes configs pass `parapet check`;
//! `parapet health` answers for container health checks; and the status page on the admin
//! listener, its JSON snapshot and its token handling, in headless Chromium.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    admin_table, client, get, get_with_host, reserve_addr, run_parapet, server_and_listener,
    servers, Backend, ConfigFile, Metrics, Origin, Proxy, RedisServer, Refuser, Script, POLL_STEP,
    READY_TIMEOUT,
};

/// Longest wait for one headless Chromium run (start, load, polls, dump or screenshot).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// Virtual time Chromium gives the page before dumping: several one-second polls.
const BROWSER_VIRTUAL_MS: u32 = 4000;
const TOKEN: &str = "deploy-test-token-3c9e1a";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_repo_file(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A proxy with traffic: upstream "api" (three servers, weights 3/3/2) and upstream "static"
// (one server and one that refuses connections, so down by its health check), a cached route.

struct Stack {
    proxy: Proxy,
    _backends: Vec<Backend>,
    _refuser: Refuser,
}

fn stack_config(
    listen: SocketAddr,
    admin: SocketAddr,
    api: &[SocketAddr],
    statics: &[SocketAddr],
    token_file: Option<&Path>,
) -> String {
    let weighted: String = api
        .iter()
        .zip([3, 3, 2])
        .map(|(addr, weight)| servers("api", &[*addr], &format!("weight = {weight}")))
        .collect();
    format!(
        r#"{}
[upstream.api]
{weighted}
[upstream.static]
{}
[upstream.static.health_check]
type = "tcp"
interval = "100ms"
timeout = "200ms"
healthy = 1
unhealthy = 1

[[route]]
name = "api"
path_prefix = "/api/"
upstream = "api"

[[route]]
name = "static"
path_prefix = "/static/"
upstream = "static"
cache = true

[[cache.rule]]
path = "/static/*"
ttl = "60s"
{}"#,
        server_and_listener(listen),
        servers("static", statics, "max_fails = 0"),
        admin_table(admin, token_file),
    )
}

impl Stack {
    async fn start(token_file: Option<&Path>) -> Stack {
        let mut backends = Vec::new();
        for name in ["api-a", "api-b", "api-c", "static"] {
            backends.push(Backend::start(name).await);
        }
        let refuser = Refuser::new();
        let api: Vec<SocketAddr> = backends[..3].iter().map(Backend::addr).collect();
        let statics = [backends[3].addr(), refuser.addr()];
        let toml = stack_config(reserve_addr(), reserve_addr(), &api, &statics, token_file);
        let proxy = Proxy::start(&toml).await;
        Stack {
            proxy,
            _backends: backends,
            _refuser: refuser,
        }
    }

    /// A few requests on each route: the cached one twice (a miss, then a hit).
    async fn traffic(&self) {
        let client = client();
        for path in ["/api/items", "/api/items", "/api/users", "/static/app.css"] {
            let (status, body) = get(&client, &self.proxy.url(path)).await;
            assert_eq!(status, 200, "GET {path}: {body}");
        }
        let (status, _) = get(&client, &self.proxy.url("/static/app.css")).await;
        assert_eq!(status, 200);
        let (status, _) = get(&client, &self.proxy.url("/nowhere")).await;
        assert_eq!(status, 404);
        self.wait_refuser_down().await;
    }

    /// Waits until the active check has marked the refusing server of "static" down.
    async fn wait_refuser_down(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let (_, body) = self.proxy.admin_get("/upstreams").await;
            let servers = parse_json(&body)["static"]["servers"].clone();
            if servers[1]["healthy"] == false {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the refusing server stays up: {body}"
            );
            tokio::time::sleep(POLL_STEP).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The series named by the dashboard and the alerts

/// Every `parapet_*` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    selectors(text).into_iter().map(|(name, _)| name).collect()
}

/// Every `parapet_NAME` in `text` with the matchers of its `{...}` when one follows.
fn selectors(text: &str) -> Vec<(String, Vec<Matcher>)> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("parapet_") {
        let preceded_by_name = rest[..start].chars().next_back().is_some_and(name_char);
        let after = &rest[start..];
        let end = after.find(|c: char| !name_char(c)).unwrap_or(after.len());
        let name = &after[..end];
        let matchers = after[end..]
            .strip_prefix('{')
            .and_then(|inside| inside.split_once('}'))
            .map(|(inside, _)| parse_matchers(inside))
            .unwrap_or_default();
        if !preceded_by_name && name.len() > "parapet_".len() {
            found.push((name.to_string(), matchers));
        }
        rest = &after[end..];
    }
    found
}

/// One label matcher of a PromQL selector: `name="value"`, `name=~"a|b"`, ...
#[derive(Debug)]
struct Matcher {
    label: String,
    /// `=` or `=~`: the series must carry the value; `!=`/`!~` say nothing about presence.
    positive: bool,
    value: String,
}

fn parse_matchers(inside: &str) -> Vec<Matcher> {
    inside
        .split(',')
        .filter_map(|part| {
            let (label, rest) = part.split_once(['=', '!'])?;
            let negative = part[label.len()..].starts_with('!');
            let value = rest.trim_start_matches(['=', '~']).trim();
            Some(Matcher {
                label: label.trim().to_string(),
                positive: !negative,
                value: value.trim_matches('"').to_string(),
            })
        })
        .collect()
}

/// Label names Prometheus adds at scrape time, never on `/metrics` itself.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Whether a matcher value is a set of literal alternatives (`hit|stale`), not a pattern or a
/// Grafana variable.
fn literal_alternatives(value: &str) -> Option<Vec<&str>> {
    let pattern = value.contains(['$', '.', '*', '+', '(', '[', '\\']);
    (!pattern).then(|| value.split('|').collect())
}

/// Problems with one selector against a scrape: a missing series, label or label value.
fn selector_problems(metrics: &Metrics, name: &str, matchers: &[Matcher]) -> Vec<String> {
    // A histogram's family name (in a description) stands for its `_bucket` series.
    let bucket = format!("{name}_bucket");
    let samples: Vec<_> = metrics
        .samples
        .iter()
        .filter(|s| s.name == name || (matchers.is_empty() && s.name == bucket))
        .collect();
    if samples.is_empty() {
        return vec![format!("{name}: no such series on /metrics")];
    }
    let mut problems = Vec::new();
    for matcher in matchers {
        if TARGET_LABELS.contains(&matcher.label.as_str()) {
            continue;
        }
        if !samples.iter().any(|s| s.label(&matcher.label).is_some()) {
            problems.push(format!("{name}: no label {:?}", matcher.label));
            continue;
        }
        let Some(values) = literal_alternatives(&matcher.value).filter(|_| matcher.positive) else {
            continue;
        };
        for value in values {
            if !samples
                .iter()
                .any(|s| s.label(&matcher.label) == Some(value))
            {
                problems.push(format!(
                    "{name}: no series with {}={value:?}",
                    matcher.label
                ));
            }
        }
    }
    problems
}

/// The label names in every `by (...)` clause of `expr`.
fn grouping_labels(expr: &str) -> Vec<String> {
    expr.split("by (")
        .skip(1)
        .filter_map(|after| after.split_once(')'))
        .flat_map(|(inside, _)| inside.split(','))
        .map(|label| label.trim().to_string())
        .filter(|label| !label.is_empty())
        .collect()
}

/// Every PromQL expression of the dashboard (panel targets, variables and annotations).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    collect_exprs(dashboard, &mut exprs);
    exprs
}

fn collect_exprs(value: &Value, exprs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => exprs.push(expr.clone()),
                    _ => collect_exprs(value, exprs),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| collect_exprs(v, exprs)),
        _ => {}
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read_repo_file("deploy/grafana/parapet.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/parapet.json is not JSON: {e}"))
}

/// The `expr:` values of alerts.yml, block scalars included, as one text per rule.
fn alert_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let mut expr = value.trim().trim_start_matches('|').to_string();
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent;
            if !deeper || next.trim().is_empty() {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        exprs.push(expr.trim().to_string());
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_the_alerts_name_is_on_metrics() {
    let stack = Stack::start(None).await;
    stack.traffic().await;
    let metrics = stack.proxy.metrics().await;

    let dashboard = dashboard();
    let alerts = read_repo_file("deploy/prometheus/alerts.yml");
    let mut exprs = dashboard_exprs(&dashboard);
    exprs.extend(alert_exprs(&alerts));
    let mut problems = Vec::new();
    // Names anywhere (descriptions too): whatever the files tell an operator to look at exists.
    let mut names = metric_names(&dashboard.to_string());
    names.extend(metric_names(&alerts));
    for name in &names {
        problems.extend(selector_problems(&metrics, name, &[]));
    }
    for expr in &exprs {
        for (name, matchers) in selectors(expr) {
            problems.extend(selector_problems(&metrics, &name, &matchers));
        }
    }
    let known_labels: BTreeSet<&str> = metrics
        .samples
        .iter()
        .flat_map(|s| s.labels.iter().map(|(n, _)| n.as_str()))
        .chain(TARGET_LABELS)
        .collect();
    for expr in &exprs {
        for label in grouping_labels(expr) {
            if !known_labels.contains(label.as_str()) {
                problems.push(format!(
                    "`by ({label})` in {expr}: no series has that label"
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "series named by deploy/ but not on /metrics:\n{}",
        problems.join("\n")
    );
    assert!(names.len() >= 20, "too few names found: {names:?}");
    assert!(exprs.len() >= 30, "too few expressions found: {exprs:?}");
}

#[test]
fn selector_scanning_reads_names_matchers_and_groupings() {
    let expr = r#"sum by (route, le) (rate(parapet_request_duration_seconds_bucket{job=~"$job", status_class="5xx"}[5m])) / my_parapet_x"#;
    let found = selectors(expr);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "parapet_request_duration_seconds_bucket");
    let matchers: Vec<(&str, bool, &str)> = found[0]
        .1
        .iter()
        .map(|m| (m.label.as_str(), m.positive, m.value.as_str()))
        .collect();
    assert_eq!(
        matchers,
        [("job", true, "$job"), ("status_class", true, "5xx")]
    );
    assert_eq!(grouping_labels(expr), ["route", "le"]);
    assert_eq!(
        literal_alternatives("hit|stale"),
        Some(vec!["hit", "stale"])
    );
    assert_eq!(literal_alternatives(".*"), None);
    let yaml = "      - alert: A\n        expr: |\n          sum(x)\n          / 2\n        for: 5m\n      - alert: B\n        expr: up == 0\n";
    assert_eq!(alert_exprs(yaml), ["sum(x) / 2", "up == 0"]);
}

// ---------------------------------------------------------------------------------------------
// promtool

fn promtool() -> Option<PathBuf> {
    find_program(&["promtool"])
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn run_promtool(promtool: &Path, args: &[&str], dir: &Path) {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run promtool {args:?}: {e}"));
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The dashboard's queries as recording rules, Grafana's variables replaced by what they
/// expand to, so that promtool parses each of them.
fn dashboard_as_rules(dashboard: &Value) -> String {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs(dashboard).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$job", ".*")
            .replace("$instance", ".*")
            .replace("$route", ".*")
            .replace("$upstream", ".*");
        let quoted = serde_json::to_string(&expr).expect("a string serializes");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    rules
}

#[test]
fn promtool_accepts_the_alerts_their_unit_tests_and_the_dashboard_queries() {
    let Some(promtool) = promtool() else {
        eprintln!(
            "SKIPPED: promtool not installed (Debian package prometheus; .ci/prereqs installs it)"
        );
        return;
    };
    let dir = repo_file("deploy/prometheus");
    run_promtool(&promtool, &["check", "rules", "alerts.yml"], &dir);
    run_promtool(&promtool, &["test", "rules", "alerts_test.yml"], &dir);
    let scratch = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        scratch.path().join("dashboard.yml"),
        dashboard_as_rules(&dashboard()),
    )
    .expect("write rules");
    run_promtool(
        &promtool,
        &["check", "rules", "dashboard.yml"],
        scratch.path(),
    );
}

// ---------------------------------------------------------------------------------------------
// The container and Kubernetes configs, `parapet health`

/// `text` with every `address = "NAME:PORT"` whose NAME is a host name (resolved only inside
/// the compose network or the cluster) pointed at a loopback address of its own (127.0.0.N), so
/// `parapet check` can load it here.
fn resolvable(text: &str) -> String {
    let mut hosts: Vec<String> = Vec::new();
    text.lines()
        .map(|line| {
            let address = line
                .trim_start()
                .strip_prefix("address = \"")
                .and_then(|rest| rest.strip_suffix('"'));
            match address.and_then(|a| a.rsplit_once(':')) {
                Some((host, port)) if host.parse::<std::net::IpAddr>().is_err() => {
                    let index = hosts.iter().position(|h| h == host).unwrap_or_else(|| {
                        hosts.push(host.to_string());
                        hosts.len() - 1
                    });
                    format!("address = \"127.0.0.{}:{port}\"", index + 1)
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_container_compose_and_kubernetes_configs_pass_parapet_check() {
    // The token file is mounted in the container; here a file of our own stands in for it.
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), "test-token\n").expect("write token");
    for file in [
        "deploy/docker/parapet.toml",
        "deploy/compose/conf/parapet.toml",
        "deploy/k8s/parapet.toml",
    ] {
        let text = resolvable(&read_repo_file(file)).replace(
            "token_file = \"/etc/parapet/admin.token\"",
            &format!("token_file = \"{}\"", token.path().display()),
        );
        let config = ConfigFile::new(&text);
        let checked = config.check();
        assert!(
            checked.status.success(),
            "{file} fails parapet check:\n{}",
            checked.output
        );
    }
}

fn health(config: &Path) -> crate::harness::CommandOutput {
    run_parapet(&["health".as_ref(), "-c".as_ref(), config.as_os_str()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parapet_health_exits_0_while_the_admin_listener_answers_and_1_after() {
    let backend = Backend::start("app").await;
    let listen = reserve_addr();
    let toml = format!(
        "{}\n[upstream.app]\n{}\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n{}",
        server_and_listener(listen),
        servers("app", &[backend.addr()], ""),
        admin_table(reserve_addr(), None)
    );
    let proxy = Proxy::start(&toml).await;
    let config = proxy.config_path();
    let answered = tokio::task::spawn_blocking(move || health(&config))
        .await
        .expect("health task");
    assert_eq!(answered.status.code(), Some(0), "{}", answered.output);

    let config_copy = ConfigFile::new(&toml);
    drop(proxy);
    let path = config_copy.path().to_path_buf();
    let refused = tokio::task::spawn_blocking(move || health(&path))
        .await
        .expect("health task");
    assert_eq!(refused.status.code(), Some(1), "{}", refused.output);
    assert!(refused.output.contains("/healthz"), "{}", refused.output);
}

#[test]
fn parapet_health_exits_2_without_an_admin_listener() {
    let toml = format!(
        "{}\n[upstream.app]\n{}\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        server_and_listener(reserve_addr()),
        servers("app", &[reserve_addr()], "")
    );
    let config = ConfigFile::new(&toml);
    let output = health(config.path());
    assert_eq!(output.status.code(), Some(2), "{}", output.output);
    assert!(
        output.output.contains("no [admin] listener"),
        "{}",
        output.output
    );
}

// ---------------------------------------------------------------------------------------------
// The status page and its snapshot

fn write_token(dir: &Path) -> PathBuf {
    let file = dir.join("admin.token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write token");
    file
}

async fn status_json(proxy: &Proxy, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(proxy.admin_url("/status.json"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET /status.json");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn parse_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_one_html_file_that_loads_nothing_from_outside() {
    let stack = Stack::start(None).await;
    let response = client()
        .get(stack.proxy.admin_url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert!(header("content-type").starts_with("text/html"));
    let policy = header("content-security-policy");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let page = response.text().await.expect("body");
    for outside in ["<link", "src=", "@import", "url(", "http://", "https://"] {
        assert!(
            !page.contains(outside),
            "the page refers outside: {outside}"
        );
    }
    assert!(page.contains("/status.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_snapshot_has_upstreams_routes_latency_and_cache_counts() {
    let stack = Stack::start(None).await;
    stack.traffic().await;
    // A request refused before any route: shown as such, not as a route "none" to "none".
    let mut garbage = crate::harness::RawConnection::open(stack.proxy.addr()).await;
    garbage.send(b"GARBAGE\r\n\r\n").await;
    assert_eq!(garbage.response().await.status, 400);
    // The refusal is counted just after its answer is written: poll for it.
    let deadline = std::time::Instant::now() + crate::harness::READY_TIMEOUT;
    let snapshot = loop {
        let (status, body) = status_json(&stack.proxy, None).await;
        assert_eq!(status, 200, "{body}");
        let snapshot = parse_json(&body);
        let counted = snapshot["routes"]
            .as_array()
            .is_some_and(|routes| routes.iter().any(|r| r["unrouted"] == true));
        if counted || std::time::Instant::now() > deadline {
            break snapshot;
        }
        tokio::time::sleep(crate::harness::POLL_STEP).await;
    };
    let listed = snapshot["routes"].as_array().expect("routes");
    assert!(!listed.iter().any(|r| r["name"] == "none"), "{snapshot:#}");
    let unrouted: Vec<&serde_json::Value> =
        listed.iter().filter(|r| r["unrouted"] == true).collect();
    assert_eq!(unrouted.len(), 1, "{snapshot:#}");
    assert!(
        unrouted[0]["requests"]["4xx"].as_u64() >= Some(1),
        "{snapshot:#}"
    );

    let api = &snapshot["upstreams"]["api"]["servers"];
    let weights: Vec<u64> = (0..3).filter_map(|i| api[i]["weight"].as_u64()).collect();
    assert_eq!(weights, [3, 3, 2], "{snapshot:#}");
    assert_eq!(api[0]["in_flight"], 0);
    assert_eq!(api[0]["healthy"], true);
    let routes = snapshot["routes"].as_array().expect("routes");
    let route = |name: &str| {
        routes
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no route {name}: {snapshot:#}"))
    };
    assert_eq!(route("api")["requests"]["2xx"], 3);
    assert_eq!(route("api")["upstream"], "api");
    assert_eq!(route("api")["latency_count"], 3);
    let bounds = snapshot["latency_bounds"].as_array().expect("bounds");
    let buckets = route("api")["latency_buckets"].as_array().expect("buckets");
    assert_eq!(bounds.len(), buckets.len());
    assert_eq!(snapshot["cache"]["responses"]["hit"], 1, "{snapshot:#}");
    assert_eq!(snapshot["cache"]["responses"]["miss"], 1, "{snapshot:#}");
    assert!(snapshot["cache"]["entries"].as_i64() >= Some(1));
    assert!(
        snapshot["cache"]["shared"].is_null(),
        "no [cache.shared], no shared tier: {snapshot:#}"
    );
    assert!(snapshot["time_ms"].as_u64() > Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_set_the_snapshot_needs_it_and_the_page_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = write_token(dir.path());
    let stack = Stack::start(Some(&token_file)).await;
    let (status, _) = status_json(&stack.proxy, None).await;
    assert_eq!(status, 401);
    let (status, _) = status_json(&stack.proxy, Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = status_json(&stack.proxy, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(parse_json(&body)["upstreams"]["api"].is_object());
    let (status, page) = stack.proxy.admin_get("/").await;
    assert_eq!(status, 200);
    assert!(!page.contains(TOKEN));
}

// ---------------------------------------------------------------------------------------------
// In headless Chromium

fn chromium() -> Option<PathBuf> {
    find_program(&["chromium", "chromium-browser", "google-chrome"])
}

/// Runs headless Chromium (flags that work as root on a machine without network) on `url`
/// with `extra` arguments; returns stdout. Panics when it fails or outlives its timeout.
fn headless(browser: &Path, extra: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = profile.path().join("stdout");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={BROWSER_VIRTUAL_MS}"))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", browser.display()));
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium on {url} still running after {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(POLL_STEP);
    };
    assert!(status.success(), "chromium on {url} exited with {status}");
    std::fs::read_to_string(&out).expect("chromium output")
}

/// The page's DOM after Chromium ran it for a few virtual seconds.
async fn rendered_dom(browser: &Path, url: String) -> String {
    let browser = browser.to_path_buf();
    tokio::task::spawn_blocking(move || headless(&browser, &["--dump-dom".to_string()], &url))
        .await
        .expect("chromium task")
}

/// How many snapshots the page rendered (its `data-updates` counter).
fn updates(dom: &str) -> u32 {
    dom.split_once("data-updates=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or(0)
}

/// The text of the first element whose opening tag contains `attribute`.
fn element_text<'a>(dom: &'a str, attribute: &str) -> Option<&'a str> {
    let (_, after) = dom.split_once(attribute)?;
    let (_, text) = after.split_once('>')?;
    text.split_once('<').map(|(text, _)| text)
}

/// Cells by class: `class="num weight">3<` gives "3".
fn cells<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let marker = format!("class=\"{class}\">");
    dom.split(marker.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once('<').map(|(text, _)| text))
        .collect()
}

macro_rules! chromium_or_skip {
    () => {
        match chromium() {
            Some(browser) => browser,
            None => {
                eprintln!("SKIPPED: chromium not installed (Debian package chromium; .ci/prereqs installs it)");
                return;
            }
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_chromium_shows_the_upstreams_and_their_numbers() {
    let browser = chromium_or_skip!();
    let stack = Stack::start(None).await;
    stack.traffic().await;
    let dom = rendered_dom(&browser, stack.proxy.admin_url("/")).await;

    assert!(
        updates(&dom) >= 1,
        "the page never rendered a snapshot:\n{dom}"
    );
    assert!(dom.contains("data-upstream=\"api\""), "{dom}");
    assert!(dom.contains("data-upstream=\"static\""), "{dom}");
    let mut weights = cells(&dom, "num weight");
    weights.sort_unstable();
    assert_eq!(weights, ["1", "1", "2", "3", "3"], "{dom}");
    assert_eq!(element_text(&dom, "id=\"total\""), Some("6"), "{dom}");
    let health = cells(&dom, "badge down");
    assert_eq!(health, ["down"], "the refusing server shows down: {dom}");
    assert_eq!(
        element_text(&dom, "id=\"shared-state\""),
        Some("not configured"),
        "{dom}"
    );
    save_screenshot(&browser, &stack).await;
}

/// A picture of the page for the docs: target/tmp/status-page.png.
async fn save_screenshot(browser: &Path, stack: &Stack) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&path);
    let args = vec![
        format!("--screenshot={}", path.display()),
        "--window-size=1280,900".to_string(),
        "--hide-scrollbars".to_string(),
    ];
    let url = stack.proxy.admin_url("/");
    let browser = browser.to_path_buf();
    tokio::task::spawn_blocking(move || headless(&browser, &args, &url))
        .await
        .expect("chromium task");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "no screenshot at {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_chromium_sends_the_token_from_the_url_fragment() {
    let browser = chromium_or_skip!();
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = write_token(dir.path());
    let stack = Stack::start(Some(&token_file)).await;

    let with_token =
        rendered_dom(&browser, stack.proxy.admin_url(&format!("/#token={TOKEN}"))).await;
    assert!(updates(&with_token) >= 1, "{with_token}");
    assert!(with_token.contains("data-upstream=\"api\""), "{with_token}");
    assert!(
        !with_token.contains(TOKEN),
        "the token stays out of the DOM"
    );

    let without = rendered_dom(&browser, stack.proxy.admin_url("/")).await;
    assert_eq!(updates(&without), 0, "{without}");
    assert!(
        without.contains("id=\"login\" class=\"shown\""),
        "{without}"
    );
    assert_eq!(element_text(&without, "id=\"state\""), Some("token needed"));
}

// ---------------------------------------------------------------------------------------------
// The shared cache panel (issue 15), with a real redis-server

/// The site both instances serve, as a load balancer would pass it (the cache key carries it).
const SHARED_HOST: &str = "site.test";

/// A caching proxy in front of `origin` whose L2 is `redis`.
async fn shared_cache_proxy(origin: &Origin, redis: &RedisServer) -> Proxy {
    let toml = format!(
        "{}\n[upstream.app]\n{}\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\ncache = true\n{}\n\
         [cache.shared]\nurl = \"{}\"\n# Generous: a loaded machine must not turn a slow answer into a miss.\ntimeout = \"1s\"\n",
        server_and_listener(reserve_addr()),
        servers("app", &[origin.addr()], "max_fails = 0"),
        admin_table(reserve_addr(), None),
        redis.url(),
    );
    Proxy::start(&toml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_chromium_shows_the_shared_cache_panel_with_its_numbers_issue_15() {
    let browser = chromium_or_skip!();
    let Some(redis) = RedisServer::start(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    origin.fallback(Script::counted("page-").cache_control("max-age=600"));
    let filler = shared_cache_proxy(&origin, &redis).await;
    let shown = shared_cache_proxy(&origin, &redis).await;
    assert_eq!(
        get_with_host(filler.addr(), SHARED_HOST, "/shared")
            .await
            .status,
        200
    );
    let (metrics, stored) = filler
        .metrics_until(|m| m.value("parapet_cache_shared_stored_total", &[]) >= 1.0)
        .await;
    assert!(stored, "not written to Redis:\n{}", metrics.text);
    // On the instance shown: one L2 hit, one L2 miss.
    for path in ["/shared", "/only-here"] {
        let response = get_with_host(shown.addr(), SHARED_HOST, path).await;
        assert_eq!(response.status, 200, "{response:?}");
    }
    assert_eq!(origin.total_requests(), 2);

    let dom = rendered_dom(&browser, shown.admin_url("/")).await;
    assert!(
        updates(&dom) >= 1,
        "the page never rendered a snapshot:\n{dom}"
    );
    assert_eq!(
        element_text(&dom, "id=\"shared-breaker\""),
        Some("breaker closed"),
        "{dom}"
    );
    assert_eq!(
        element_text(&dom, "id=\"shared-url\""),
        Some(redis.url().as_str())
    );
    assert_eq!(element_text(&dom, "id=\"shared-hits\""), Some("1"), "{dom}");
    assert_eq!(
        element_text(&dom, "id=\"shared-misses\""),
        Some("1"),
        "{dom}"
    );
    assert_eq!(
        element_text(&dom, "id=\"shared-errors\""),
        Some("0"),
        "{dom}"
    );
    assert_eq!(
        element_text(&dom, "id=\"shared-ratio\""),
        Some("50.0 %"),
        "{dom}"
    );
    for quantile in ["id=\"shared-p50\"", "id=\"shared-p99\""] {
        let text = element_text(&dom, quantile).unwrap_or("");
        let millis = text.strip_suffix(" ms").and_then(|n| n.parse::<f64>().ok());
        assert!(
            millis.is_some_and(|ms| ms > 0.0 && ms <= 1000.0),
            "a lookup latency within the histogram's 1 s: {quantile} shows {text:?}\n{dom}"
        );
    }
}
