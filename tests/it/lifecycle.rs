//! Lifecycle: the CLI's informational commands, the shipped config, graceful stop on SIGTERM.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use crate::harness::{
    admin_table, client, eventually, get, line_of, reserve_addr, run_parapet,
    single_upstream_config, try_get, Backend, ConfigFile, Origin, Proxy, Script,
};

#[test]
fn version_flag_prints_the_name_and_the_version() {
    let out = run_parapet(&[OsStr::new("--version")]);
    assert!(out.status.success(), "{}: {}", out.status, out.output);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        out.output
            .lines()
            .any(|l| l.contains("parapet") && l.contains(version)),
        "expected a line with \"parapet\" and {version}: {}",
        out.output
    );
}

#[test]
fn help_lists_run_check_and_demo() {
    let out = run_parapet(&[OsStr::new("--help")]);
    assert!(out.status.success(), "{}: {}", out.status, out.output);
    for command in ["run", "check", "demo"] {
        assert!(
            out.output
                .lines()
                .any(|l| l.split_whitespace().next() == Some(command)),
            "--help does not list `{command}`:\n{}",
            out.output
        );
    }
}

#[test]
fn check_accepts_the_shipped_config() {
    // The shipped config names certs/localhost.*, which `parapet certs dev` makes: make them in
    // a scratch working directory rather than in the source tree.
    let workdir = tempfile::tempdir().expect("tempdir");
    let certs = workdir.path().join("certs");
    let made = run_parapet(&[
        OsStr::new("certs"),
        OsStr::new("dev"),
        OsStr::new("--dir"),
        certs.as_os_str(),
    ]);
    assert!(made.status.success(), "{}", made.output);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/parapet.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_parapet"))
        .args([OsStr::new("check"), OsStr::new("-c"), shipped.as_os_str()])
        .current_dir(workdir.path())
        .output()
        .expect("run parapet check");
    assert!(
        out.status.success(),
        "check of {} failed ({}):\n{}",
        shipped.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let backend = Backend::builder("slow-but-complete")
        .delay(Duration::from_secs(1))
        .start()
        .await;
    let toml = single_upstream_config(reserve_addr(), "", &[backend.addr()], "")
        .replace("grace_period = \"1s\"", "grace_period = \"5s\"");
    assert!(toml.contains("grace_period = \"5s\""));
    let mut proxy = Proxy::start(&toml).await;

    let url = proxy.url("/in-flight");
    let in_flight = tokio::spawn(async move { try_get(&client(), &url).await });
    assert!(
        eventually(|| backend.requests() == 1).await,
        "the request never reached the backend"
    );
    proxy.send_signal(libc::SIGTERM);

    let result = in_flight.await.expect("client task");
    assert_eq!(
        result,
        Ok((200, "slow-but-complete".to_string())),
        "the in-flight request was cut short by SIGTERM"
    );
    let status = proxy.wait_exit(Duration::from_secs(5 + 5)).await;
    let status = status.unwrap_or_else(|| panic!("still running 10 s after SIGTERM (grace 5 s)"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_an_idle_proxy_exits_zero() {
    let backend = Backend::start("app").await;
    let mut proxy = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "",
        &[backend.addr()],
        "",
    ))
    .await;
    assert_eq!(
        try_get(&client(), &proxy.url("/")).await,
        Ok((200, "app".to_string()))
    );
    proxy.send_signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(1 + 5)).await;
    let status = status.unwrap_or_else(|| panic!("still running 6 s after SIGTERM (grace 1 s)"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// A second instance on ports a first one holds: exits non-zero at once with the located
/// message, for the listener's port and for the admin port, and the first keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_makes_a_second_instance_exit_at_once_naming_the_key_issue_25() {
    let origin = Origin::start().await;
    origin.fallback(Script::fixed("ok"));
    let admin = admin_table(reserve_addr(), None);
    let first = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "",
        &[origin.addr()],
        &admin,
    ))
    .await;
    let taken_listener = single_upstream_config(first.addr(), "", &[origin.addr()], "");
    let admin_line = format!("[admin]\nlisten = \"{}\"\n", first.admin_addr());
    let taken_admin = single_upstream_config(reserve_addr(), "", &[origin.addr()], &admin_line);
    for (toml, key, address) in [
        (&taken_listener, "listener[0].address", first.addr()),
        (&taken_admin, "admin.listen", first.admin_addr()),
    ] {
        let file = ConfigFile::new(toml);
        let started = std::time::Instant::now();
        let out = file.run_expecting_exit();
        let took = started.elapsed();
        assert!(!out.status.success(), "{key}: {}", out.output);
        assert!(
            took < Duration::from_secs(2),
            "{key}: exited after {took:?}"
        );
        let line = line_of(
            toml,
            if key == "admin.listen" {
                "listen ="
            } else {
                "address ="
            },
            1,
        );
        let expected = format!(
            "{}: {address}: address in use",
            file.location(line, key).trim_end_matches(':')
        );
        assert!(
            out.output.contains(&expected),
            "expected `{expected}` in:\n{}",
            out.output
        );
        assert!(!out.output.contains("panicked"), "{}", out.output);
        assert!(!out.output.contains("listening"), "{}", out.output);
    }
    let (status, body) = get(&client(), &format!("http://{}/", first.addr())).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok"),
        "the first instance still serves"
    );
}
