//! `parapet load` (issue 14): the real binary loading a real Parapet in front of real backends —
//! request counts over a ramped plan, thresholds and exit statuses, the proxy/upstream split,
//! the reports, the h2 and h3 clients, and bad input.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    admin_table, line_of, reserve_addr, run_parapet, servers, single_upstream_config, Backend,
    CommandOutput, ConfigFile, Proxy,
};

/// How long the slow backend takes to answer.
const SLOW_BACKEND_DELAY: Duration = Duration::from_millis(300);

/// `parapet load ARGS`, run off the test's runtime so that the backends keep answering.
async fn load(args: Vec<OsString>) -> CommandOutput {
    tokio::task::spawn_blocking(move || {
        let mut all: Vec<OsString> = vec!["load".into()];
        all.extend(args);
        let refs: Vec<&std::ffi::OsStr> = all.iter().map(|a| a.as_os_str()).collect();
        run_parapet(&refs)
    })
    .await
    .expect("parapet load ran")
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

/// A proxy with an admin listener in front of `backend` (catch-all route to upstream `app`).
async fn proxy_with_admin(backend: &Backend) -> Proxy {
    let toml = single_upstream_config(reserve_addr(), "", &[backend.addr()], "")
        + &admin_table(reserve_addr(), None);
    Proxy::start(&toml).await
}

/// The plan's slow backend, and a proxy with an admin listener in front of it.
async fn slow_backend_and_proxy() -> (Backend, Proxy) {
    let backend = Backend::builder("slow")
        .delay(SLOW_BACKEND_DELAY)
        .start()
        .await;
    let proxy = proxy_with_admin(&backend).await;
    (backend, proxy)
}

/// A finished `parapet load`: its output, and its report's path (kept while `_dir` lives).
struct Run {
    out: CommandOutput,
    report: PathBuf,
    _dir: tempfile::TempDir,
}

/// `parapet load` on `proxy` with `stages` and `extra` flags, its report in a temp file named
/// `report_name`.
async fn run_on(proxy: &Proxy, stages: &str, extra: &[&str], report_name: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join(report_name);
    let url = proxy.url("/load");
    let mut flags = args(&["--url", &url, "--stages", stages, "--report"]);
    flags.push(report.clone().into());
    flags.extend(args(extra));
    Run {
        out: load(flags).await,
        report,
        _dir: dir,
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

#[tokio::test]
async fn a_ramped_five_second_plan_sends_its_400_requests_and_p95_passes_on_a_fast_backend() {
    let backend = Backend::start("fast").await;
    let proxy = proxy_with_admin(&backend).await;
    let admin = proxy.admin_url("");
    // 0→100/s over 1 s (50), 100/s for 3 s (300), 100→0/s over 1 s (50): 400 requests.
    let flags = ["--threshold", "p95<200ms", "--admin", &admin];
    let Run { out, report, _dir } = run_on(&proxy, "1s:100,3s:100,1s:0", &flags, "r.json").await;
    assert_eq!(out.status.code(), Some(0), "{}", out.output);
    let received = backend.requests();
    assert!(
        (360..=440).contains(&received),
        "backend received {received} requests, expected 400 ± 10 %\n{}",
        out.output
    );
    let report = read_json(&report);
    assert_eq!(report["plan"]["requests"], 400);
    assert_eq!(report["total"]["asked"], 400);
    let stage_asks: Vec<u64> = (0..3)
        .map(|i| report["stages"][i]["asked"].as_u64().unwrap())
        .collect();
    assert_eq!(stage_asks, vec![50, 300, 50]);
    assert_eq!(report["thresholds"][0]["threshold"], "p95<200ms");
    assert_eq!(report["thresholds"][0]["passed"], true);
    assert!(out.output.contains("PASS  p95<200ms"), "{}", out.output);
}

#[tokio::test]
async fn p95_below_200ms_fails_on_a_300ms_backend_naming_p95_and_its_value() {
    let (_backend, proxy) = slow_backend_and_proxy().await;
    let thresholds = ["--threshold", "p95<200ms", "--threshold", "errors<1%"];
    let Run { out, report, _dir } = run_on(&proxy, "1s:20,1s:20", &thresholds, "r.html").await;
    assert_eq!(out.status.code(), Some(1), "{}", out.output);
    let failed = out
        .output
        .lines()
        .find(|line| line.contains("FAIL") && line.contains("p95<200ms"))
        .unwrap_or_else(|| panic!("no FAIL line for p95:\n{}", out.output));
    let measured_ms = measured_millis(failed).unwrap_or_else(|| panic!("no value in {failed}"));
    assert!(
        measured_ms >= 300.0,
        "p95 of a 300 ms backend is at least 300 ms: {failed}"
    );
    assert!(out.output.contains("PASS  errors<1%"), "{}", out.output);
    let html = std::fs::read_to_string(&report).expect("the HTML report was written");
    assert_eq!(html.matches("<svg").count(), 2, "latency and rate charts");
    for external in ["<link", "src=", "@import", "url("] {
        assert!(!html.contains(external), "the page loads {external}…");
    }
}

#[tokio::test]
async fn the_split_puts_a_300ms_backends_time_in_upstream_not_in_proxy() {
    let (backend, proxy) = slow_backend_and_proxy().await;
    let admin = ["--admin", &proxy.admin_url("")];
    let Run { out, report, _dir } = run_on(&proxy, "1s:20,1s:20", &admin, "r.json").await;
    assert_eq!(out.status.code(), Some(0), "{}", out.output);
    let report = read_json(&report);
    let route = &report["split"]["routes"][0];
    assert_eq!(route["upstreams"][0], "app", "{route}");
    let requests = route["requests"].as_u64().unwrap();
    assert_eq!(requests, backend.requests() as u64, "{route}");
    let ms = |list: &Value, percentile: f64| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["percentile"].as_f64() == Some(percentile))
            .and_then(|e| e["ms"].as_f64())
            .unwrap_or_else(|| panic!("no p{percentile} in {list}"))
    };
    assert!(ms(&route["upstream"], 50.0) >= 250.0, "{route}");
    assert_eq!(route["upstream"][0]["bucket_ms"][0], 250.0, "{route}");
    assert!(ms(&route["proxy"], 50.0) < 100.0, "{route}");
    assert!(ms(&route["proxy"], 95.0) < 100.0, "{route}");
    let mean_proxy = route["mean_proxy_ms"].as_f64().unwrap();
    let mean_upstream = route["mean_upstream_ms"].as_f64().unwrap();
    assert!(mean_upstream >= 300.0, "{route}");
    assert!(mean_proxy < 50.0, "{route}");
    let server = &report["split"]["servers"][0];
    assert_eq!(server["server"], backend.addr().to_string());
    assert_eq!(server["requests"].as_u64(), Some(requests));
    assert!(out.output.contains("Parapet's split"), "{}", out.output);
}

/// A TLS listener offering http1, h2 and h3, with `parapet certs dev` certificates in `certs`.
fn tls_config(listen: std::net::SocketAddr, certs: &Path, backend: &Backend) -> String {
    format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\n\n[[listener]]\naddress = \"{listen}\"\nprotocols = [\"http1\", \"h2\", \"h3\"]\n[[listener.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\n[upstream.app]\n{}\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n{}",
        certs.join("localhost.crt").display(),
        certs.join("localhost.key").display(),
        servers("app", &[backend.addr()], ""),
        admin_table(reserve_addr(), None),
    )
}

#[tokio::test]
async fn http2_and_http3_loads_arrive_as_h2_and_h3_over_tls() {
    let backend = Backend::start("tls").await;
    let certs = tempfile::tempdir().unwrap();
    parapet::tls::make_dev_certificates(certs.path()).expect("dev certificates");
    let listen = reserve_addr();
    let proxy = Proxy::start(&tls_config(listen, certs.path(), &backend)).await;
    let url = format!("https://localhost:{}/tls", listen.port());
    let ca = certs.path().join("ca.crt");
    for protocol in ["--http2", "--http3"] {
        let out = load(args(&[
            "--url",
            &url,
            protocol,
            "--cacert",
            ca.to_str().unwrap(),
            "--stages",
            "1s:20",
            "--threshold",
            "errors<1%",
        ]))
        .await;
        assert_eq!(out.status.code(), Some(0), "{protocol}: {}", out.output);
    }
    // 0→20/s over 1 s: 10 requests each. Parapet counts a request just after answering it.
    let answered = |metrics: &crate::harness::Metrics, protocol: &str| -> f64 {
        let labels = [("protocol", protocol)];
        metrics
            .matching("parapet_requests_total", &labels)
            .map(|s| s.value)
            .sum()
    };
    let (metrics, _) = proxy
        .metrics_until(|m| answered(m, "h2") >= 10.0 && answered(m, "h3") >= 10.0)
        .await;
    assert_eq!(answered(&metrics, "h2"), 10.0, "h2 requests");
    assert_eq!(answered(&metrics, "h3"), 10.0, "h3 requests");
}

#[test]
fn malformed_stage_strings_exit_2_naming_the_stage() {
    for stages in [
        "30s",
        "30s:",
        "x:100",
        "30s:-5",
        "0s:100",
        "30s:fast",
        "30s:100,,1m:5",
        "",
    ] {
        let out = run_parapet(&[
            "load".as_ref(),
            "--url".as_ref(),
            "http://127.0.0.1:9/".as_ref(),
            "--stages".as_ref(),
            stages.as_ref(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{stages:?}: {}", out.output);
        assert!(
            out.output.contains("--stages"),
            "{stages:?}: {}",
            out.output
        );
    }
}

#[test]
fn a_plan_file_with_an_unknown_key_exits_2_naming_file_line_and_key() {
    let plan = "url = \"http://127.0.0.1:9/\"\nthresholds = [\"p95<200ms\"]\n\n[[stage]]\nduration = \"1s\"\nrate = 10\nrampup = \"5s\"\n";
    let file = ConfigFile::new(plan);
    let out = run_parapet(&["load".as_ref(), "-p".as_ref(), file.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", out.output);
    let expected = file.location(line_of(plan, "rampup", 1), "stage[0].rampup");
    assert!(
        out.output.contains(&expected),
        "expected {expected}\n{}",
        out.output
    );
}

#[test]
fn the_shipped_load_plan_is_valid() {
    // The URL and admin address of conf/load-plan.toml are not listening here: the run fails
    // to scrape the admin listener at once, after the plan was read and checked.
    let plan = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/load-plan.toml");
    let out = run_parapet(&[
        "load".as_ref(),
        "-p".as_ref(),
        plan.as_ref(),
        "--admin".as_ref(),
        "http://127.0.0.1:9/".as_ref(),
    ]);
    assert!(
        out.output.contains("--admin http://127.0.0.1:9/"),
        "{}",
        out.output
    );
    assert!(!out.output.contains("load-plan.toml:"), "{}", out.output);
}

/// The duration after "measured " in a threshold line ("312.4ms", "1.02s"), in milliseconds.
fn measured_millis(line: &str) -> Option<f64> {
    let text = line.split("measured ").nth(1)?.trim();
    match text.strip_suffix("ms") {
        Some(ms) => ms.parse().ok(),
        None => text
            .strip_suffix('s')?
            .parse::<f64>()
            .ok()
            .map(|s| s * 1000.0),
    }
}

/// A run in which every request fails exits 1 and says so, even without thresholds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_where_every_request_fails_exits_1_without_thresholds_issue_25() {
    let refuser = crate::harness::Refuser::new();
    let url = format!("http://{}/nothing-listens", refuser.addr());
    let out = load(args(&["--url", &url, "--stages", "1s:20"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.output);
    assert!(out.output.contains("every one of the"), "{}", out.output);
    assert!(out.output.contains("requests failed"), "{}", out.output);
}
