//! The real `parapet` binary: generated configs, a running proxy (logs, admin calls, metrics,
//! signals) and commands that exit by themselves.

use super::clients::{client, get};
use super::metrics::Metrics;
use super::{eventually, POLL_STEP, READY_TIMEOUT};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Longest wait for a `parapet` command that should exit by itself (check, --help, bad config).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[server]` and one `[[listener]]` table most tests start with: two threads, a short
/// grace period, HTTP/1.1 and h2c on `listen`.
pub fn server_and_listener(listen: SocketAddr) -> String {
    format!(
        r#"[server]
threads = 2
grace_period = "1s"

[[listener]]
address = "{listen}"
protocols = ["http1", "h2c"]
"#
    )
}

/// One `[[upstream.NAME.server]]` table per backend address, each followed by `extra` lines.
pub fn servers(upstream: &str, addrs: &[SocketAddr], extra: &str) -> String {
    addrs
        .iter()
        .map(|addr| format!("\n[[upstream.{upstream}.server]]\naddress = \"{addr}\"\n{extra}\n"))
        .collect()
}

/// A whole config: one listener, upstream `app` with `upstream_keys` and the given servers, and a
/// catch-all route to it; `tail` is appended (e.g. an `[upstream.app.health_check]` table).
pub fn single_upstream_config(
    listen: SocketAddr,
    upstream_keys: &str,
    addrs: &[SocketAddr],
    tail: &str,
) -> String {
    format!(
        "{}\n[upstream.app]\nconnect_timeout = \"500ms\"\nread_timeout = \"5s\"\n{upstream_keys}\n{}\n{tail}\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        server_and_listener(listen),
        servers("app", addrs, ""),
    )
}

/// An `[admin]` table listening on `listen`, with `token_file` when given; append it to a config.
pub fn admin_table(listen: SocketAddr, token_file: Option<&Path>) -> String {
    let mut table = format!("\n[admin]\nlisten = \"{listen}\"\n");
    if let Some(file) = token_file {
        table.push_str(&format!("token_file = \"{}\"\n", file.display()));
    }
    table
}

fn parapet_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parapet"));
    // The logs are part of what the tests check: make sure they are on, whatever the caller's env.
    command.env(
        "RUST_LOG",
        std::env::var("PARAPET_TEST_LOG").unwrap_or_else(|_| "info".to_string()),
    );
    command.stdin(Stdio::null());
    command
}

fn log_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("stdout.log"), dir.join("stderr.log"))
}

fn read_logs(dir: &Path) -> String {
    let (out, err) = log_files(dir);
    let out = std::fs::read_to_string(out).unwrap_or_default();
    let err = std::fs::read_to_string(err).unwrap_or_default();
    format!("{err}{out}")
}

fn spawn_logged(mut command: Command, dir: &Path) -> Child {
    let (out, err) = log_files(dir);
    command
        .stdout(std::fs::File::create(out).expect("stdout log"))
        .stderr(std::fs::File::create(err).expect("stderr log"))
        .spawn()
        .expect("spawn parapet")
}

/// The listener addresses named in a config (`[[listener]] address`).
fn listener_addrs(toml_text: &str) -> Vec<SocketAddr> {
    let value: toml::Value = toml::from_str(toml_text).expect("generated TOML parses");
    value
        .get("listener")
        .and_then(|l| l.as_array())
        .map(|listeners| {
            listeners
                .iter()
                .filter_map(|l| l.get("address")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The admin address named in a config (`[admin] listen`), when there is an `[admin]` table.
fn admin_addr(toml_text: &str) -> Option<SocketAddr> {
    let value: toml::Value = toml::from_str(toml_text).expect("generated TOML parses");
    let admin = value.get("admin")?;
    let listen = admin
        .get("listen")
        .and_then(|l| l.as_str())
        .unwrap_or("127.0.0.1:9901");
    Some(listen.parse().expect("[admin] listen is IP:PORT"))
}

/// A running `parapet run -c FILE`. Dropping it kills (SIGKILL) and reaps the process; when the
/// test is failing, the captured logs are printed.
pub struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    listeners: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
}

impl Proxy {
    /// Writes `toml` to a temp file, spawns the proxy and waits until every listener (and the
    /// admin listener, when there is one) accepts.
    pub async fn start(toml: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("parapet.toml");
        std::fs::write(&config, toml).expect("write config");
        let mut command = parapet_command();
        command.arg("run").arg("-c").arg(&config);
        let child = spawn_logged(command, dir.path());
        let mut proxy = Proxy {
            child,
            dir,
            listeners: listener_addrs(toml),
            admin: admin_addr(toml),
        };
        assert!(!proxy.listeners.is_empty(), "config has no listener");
        proxy.wait_ready().await;
        proxy
    }

    /// Spawns `parapet run --upgrade -c FILE` with `toml`, which waits for a running instance to
    /// hand its listening sockets over (on SIGQUIT to that one); waits for nothing itself.
    pub fn spawn_upgrade(toml: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("parapet.toml");
        std::fs::write(&config, toml).expect("write config");
        let mut command = parapet_command();
        command.arg("run").arg("--upgrade").arg("-c").arg(&config);
        let child = spawn_logged(command, dir.path());
        Proxy {
            child,
            dir,
            listeners: listener_addrs(toml),
            admin: admin_addr(toml),
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for addr in self.listeners.clone().into_iter().chain(self.admin) {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "parapet exited with {status} before listening on {addr}\n{}",
                        self.logs()
                    );
                }
                if TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "parapet not listening on {addr} after {READY_TIMEOUT:?}\n{}",
                        self.logs()
                    );
                }
                tokio::time::sleep(POLL_STEP).await;
            }
        }
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0]
    }

    /// Every listener's address, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// `http://ADDR/PATH` on the first listener; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the proxy was started with; rewrite it (see [`Proxy::write_config`]) and
    /// reload to change the running config.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("parapet.toml")
    }

    /// Replaces the config file's content (the running config changes only on a reload).
    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.config_path(), toml).expect("rewrite config");
    }

    /// The admin listener's address; panics when the config has no `[admin]` table.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the config has no [admin] table")
    }

    /// `http://ADMIN/PATH` on the admin listener; `path` starts with `/`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    /// GET on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        get(&client(), &self.admin_url(path)).await
    }

    /// GET on the admin listener with `Authorization: SCHEME TOKEN` when `authorization` is
    /// given (e.g. `Some("Bearer TOKEN")`): status, the `Retry-After` header (empty when
    /// absent) and body.
    pub async fn admin_get_auth(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> (u16, String, String) {
        let url = self.admin_url(path);
        let mut request = client().get(&url);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: body: {e:?}"));
        (status, retry_after, body)
    }

    /// POST (empty body) on the admin listener, with `Authorization: Bearer TOKEN` when `token`
    /// is given: status and body.
    pub async fn admin_post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let url = self.admin_url(path);
        let mut request = client().post(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: body: {e:?}"));
        (status, body)
    }

    /// A scrape of the admin `/metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics::parse(&body)
    }

    /// Scrapes `/metrics` until `condition` holds (at most 10 s); returns the last scrape and
    /// whether the condition held.
    pub async fn metrics_until(
        &self,
        mut condition: impl FnMut(&Metrics) -> bool,
    ) -> (Metrics, bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let metrics = self.metrics().await;
            if condition(&metrics) {
                return (metrics, true);
            }
            if Instant::now() > deadline {
                return (metrics, false);
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    pub fn send_signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; the child is not reaped before Drop.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    /// Everything the process wrote so far, stderr then stdout.
    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> usize {
        self.logs()
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    /// Waits until at least `count` log lines contain every one of `needles`.
    pub async fn wait_for_log_lines(&self, needles: &[&str], count: usize) -> bool {
        eventually(|| self.log_lines_with(needles) >= count).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- parapet logs (pid {}) -----\n{}\n----- end of parapet logs -----",
                self.child.id(),
                self.logs()
            );
        }
    }
}

/// What a `parapet` command that exits by itself printed.
pub struct CommandOutput {
    pub status: ExitStatus,
    /// stderr then stdout.
    pub output: String,
}

/// Runs `parapet ARGS` and waits (at most 10 s, then kills it and panics) for it to exit.
pub fn run_parapet(args: &[&std::ffi::OsStr]) -> CommandOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = parapet_command();
    command.args(args);
    let mut child = spawn_logged(command, dir.path());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "parapet {args:?} still running after {COMMAND_TIMEOUT:?}\n{}",
                read_logs(dir.path())
            );
        }
        std::thread::sleep(POLL_STEP);
    };
    CommandOutput {
        status,
        output: read_logs(dir.path()),
    }
}

/// A config written to a temp file, for `parapet check` / `parapet run` that should exit.
pub struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(toml: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("parapet.toml");
        std::fs::write(&path, toml).expect("write config");
        ConfigFile { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `parapet check -c FILE`.
    pub fn check(&self) -> CommandOutput {
        run_parapet(&["check".as_ref(), "-c".as_ref(), self.path.as_os_str()])
    }

    /// `parapet run -c FILE`, for a file that must be refused (waits for the exit).
    pub fn run_expecting_exit(&self) -> CommandOutput {
        run_parapet(&["run".as_ref(), "-c".as_ref(), self.path.as_os_str()])
    }

    /// The `FILE:LINE:KEY:` prefix a problem with `key` on `line` is reported with.
    pub fn location(&self, line: usize, key: &str) -> String {
        format!("{}:{line}:{key}:", self.path.display())
    }
}

/// A temp dir with `parapet certs dev`'s files: ca.crt, ca.key, localhost.crt, localhost.key.
pub fn dev_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    parapet::tls::make_dev_certificates(dir.path()).expect("dev certificates");
    dir
}

/// 1-based number of the `occurrence`-th (1-based) line whose trimmed text starts with `start`.
pub fn line_of(text: &str, start: &str, occurrence: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with(start))
        .nth(occurrence - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("no line #{occurrence} starting with {start:?} in:\n{text}"))
}

/// What Parapet reports as a config's hash (`parapet_config_info{hash}`, the reload answer): the
/// first 8 bytes of the SHA-256 of the file's text, in hex.
pub fn config_hash(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
