//! The shared harness: a port registry, recording backends, the real `parapet` binary, small clients.
//!
//! Everything talks over real sockets on 127.0.0.1. Ports come from the OS (bind `:0`, read the
//! port back); a process-wide registry makes sure no port is handed out twice, so tests can run in
//! parallel. Readiness is always polled, never slept for.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Step between two readiness polls.
pub const POLL_STEP: Duration = Duration::from_millis(20);
/// Longest wait for anything to become ready (a listener, a log line, a state change).
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a `parapet` command that should exit by itself (check, --help, bad config).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Client-side timeout for one HTTP exchange: long enough never to fire on a working proxy,
/// short enough that a hang fails the test instead of the suite.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Ports

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A listener on 127.0.0.1 with an OS-chosen port never handed out before in this process.
fn fresh_std_listener() -> std::net::TcpListener {
    // Listeners whose port was taken already are kept open until a fresh one is found, so the
    // OS cannot offer the same port again in the meantime.
    let mut rejected = Vec::new();
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out().lock().expect("port registry").insert(port) {
            return listener;
        }
        rejected.push(listener);
    }
}

/// A tokio listener on a fresh port (see [`fresh_std_listener`]) and its address.
pub fn fresh_listener() -> (TcpListener, SocketAddr) {
    let listener = fresh_std_listener();
    listener.set_nonblocking(true).expect("set_nonblocking");
    let addr = listener.local_addr().expect("local_addr");
    (
        TcpListener::from_std(listener).expect("tokio listener"),
        addr,
    )
}

/// The accept task and the connection tasks of a test server. [`ServerTasks::stop`] (or drop)
/// closes the listener and every open connection.
#[derive(Default)]
pub struct ServerTasks {
    acceptor: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ServerTasks {
    /// Accepts on `listener`, running `serve(stream)` as its own task for each connection.
    pub fn accept<F, Fut>(&self, listener: TcpListener, serve: F)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let connections = Arc::clone(&self.connections);
        let acceptor = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(POLL_STEP).await;
                        continue;
                    }
                };
                let connection = tokio::spawn(serve(stream));
                let mut connections = connections.lock().expect("connections");
                connections.retain(|c| !c.is_finished());
                connections.push(connection);
            }
        });
        *self.acceptor.lock().expect("acceptor") = Some(acceptor);
    }

    pub fn is_accepting(&self) -> bool {
        self.acceptor.lock().expect("acceptor").is_some()
    }

    /// Closes the listener and every open connection; returns once they are closed.
    pub async fn stop(&self) {
        let acceptor = self.acceptor.lock().expect("acceptor").take();
        if let Some(acceptor) = acceptor {
            acceptor.abort();
            let _ = acceptor.await;
        }
        let connections = std::mem::take(&mut *self.connections.lock().expect("connections"));
        for connection in connections {
            connection.abort();
            let _ = connection.await;
        }
    }
}

impl Drop for ServerTasks {
    fn drop(&mut self) {
        if let Some(acceptor) = self.acceptor.lock().map(|mut a| a.take()).ok().flatten() {
            acceptor.abort();
        }
        if let Ok(mut connections) = self.connections.lock() {
            for connection in connections.drain(..) {
                connection.abort();
            }
        }
    }
}

/// Reserves a port: binds `127.0.0.1:0`, reads the port, closes the socket. The port is never
/// handed out again in this process, so it is ours to give to the proxy (or to leave unbound).
pub fn reserve_addr() -> SocketAddr {
    fresh_std_listener().local_addr().expect("local_addr")
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 wire helpers shared by the backends and the raw client

/// One header line, name as received.
pub type Header = (String, String);

fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_values<'a>(headers: &'a [Header], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Reads header lines up to the empty line.
async fn read_header_lines<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Vec<Header>> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(headers);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.to_string()))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

async fn read_chunked<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
        if size == 0 {
            read_header_lines(r).await?; // trailers
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).await?;
        let mut crlf = String::new();
        r.read_line(&mut crlf).await?;
    }
}

/// Reads a message body framed by `Transfer-Encoding: chunked` or `Content-Length`; `None` when
/// neither is present.
async fn read_framed_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    headers: &[Header],
) -> io::Result<Option<Vec<u8>>> {
    if find_header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return read_chunked(r).await.map(Some);
    }
    if let Some(len) = find_header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, len.to_string()))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        return Ok(Some(body));
    }
    Ok(None)
}

fn connection_tokens(headers: &[Header]) -> Vec<String> {
    header_values(headers, "connection")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Backends

/// One request as a backend received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of a header, one per header line.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// All values of a header joined as one comma-separated list, split into trimmed elements
    /// (RFC 9110 5.3: several lines are equivalent to one comma-joined line).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.header_values(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    }
}

struct BackendState {
    name: String,
    accepts: AtomicUsize,
    requests: AtomicUsize,
    health_checks: AtomicUsize,
    received: Mutex<Vec<Received>>,
    delay_ms: AtomicU64,
    health_status: AtomicU16,
    /// Close a keep-alive connection when no next request arrives within this time.
    idle_close: Option<Duration>,
    extra_headers: Vec<Header>,
}

/// Builds a [`Backend`] with non-default behaviour.
pub struct BackendBuilder {
    name: String,
    delay: Duration,
    health_status: u16,
    idle_close: Option<Duration>,
    extra_headers: Vec<Header>,
}

impl BackendBuilder {
    /// Sleeps this long before answering each request (not `/health`).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Closes each connection when it stays idle this long after a response, without having
    /// announced it (no `Connection: close`).
    pub fn idle_close(mut self, after: Duration) -> Self {
        self.idle_close = Some(after);
        self
    }

    /// Adds a header line to every response.
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    pub async fn start(self) -> Backend {
        let (listener, addr) = fresh_listener();
        let state = Arc::new(BackendState {
            name: self.name,
            accepts: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            delay_ms: AtomicU64::new(self.delay.as_millis() as u64),
            health_status: AtomicU16::new(self.health_status),
            idle_close: self.idle_close,
            extra_headers: self.extra_headers,
        });
        let backend = Backend {
            state,
            addr,
            tasks: ServerTasks::default(),
        };
        backend.accept(listener);
        backend
    }
}

/// A real HTTP/1.1 keep-alive server on 127.0.0.1. Every request gets 200, `x-backend: NAME`,
/// `x-request-body-len: N` and the body `NAME`; `GET /health` gets the health status (200 unless
/// changed) and body `ok`. It records accepts, requests (without `/health`) and what it received.
pub struct Backend {
    state: Arc<BackendState>,
    addr: SocketAddr,
    tasks: ServerTasks,
}

impl Backend {
    pub fn builder(name: &str) -> BackendBuilder {
        BackendBuilder {
            name: name.to_string(),
            delay: Duration::ZERO,
            health_status: 200,
            idle_close: None,
            extra_headers: Vec::new(),
        }
    }

    pub async fn start(name: &str) -> Backend {
        Backend::builder(name).start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// TCP connections accepted so far (over every start of this backend).
    pub fn accepts(&self) -> usize {
        self.state.accepts.load(Ordering::SeqCst)
    }

    /// Requests received so far, `/health` not counted.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// `/health` requests received so far.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Every request received so far, `/health` left out, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("received").clone()
    }

    /// The last request received (not `/health`); panics when there was none.
    pub fn last_received(&self) -> Received {
        self.received()
            .pop()
            .unwrap_or_else(|| panic!("backend {} received no request", self.name()))
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_health_status(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    fn accept(&self, listener: TcpListener) {
        let state = Arc::clone(&self.state);
        self.tasks.accept(listener, move |stream| {
            state.accepts.fetch_add(1, Ordering::SeqCst);
            serve_connection(stream, Arc::clone(&state))
        });
    }

    /// Closes the listener and every open connection; returns once they are closed.
    pub async fn stop(&self) {
        self.tasks.stop().await
    }

    /// Listens again on the same port after [`Backend::stop`].
    pub async fn restart(&self) {
        assert!(!self.tasks.is_accepting(), "restart of a running backend");
        let deadline = Instant::now() + READY_TIMEOUT;
        let listener = loop {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            match socket.bind(self.addr).and_then(|()| socket.listen(1024)) {
                Ok(listener) => break listener,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL_STEP).await,
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.accept(listener);
    }
}

/// Reads one request; `None` on a clean close, an idle timeout or anything unparsable.
async fn read_request(
    r: &mut BufReader<TcpStream>,
    idle_close: Option<Duration>,
) -> Option<Received> {
    let mut line = String::new();
    let read = match idle_close {
        Some(idle) => tokio::time::timeout(idle, r.read_line(&mut line))
            .await
            .ok()?,
        None => r.read_line(&mut line).await,
    };
    if read.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next()?.to_string();
    let headers = read_header_lines(r).await.ok()?;
    let body = read_framed_body(r, &headers)
        .await
        .ok()?
        .unwrap_or_default();
    Some(Received {
        method,
        target,
        version,
        headers,
        body,
    })
}

async fn serve_connection(stream: TcpStream, state: Arc<BackendState>) {
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_request(&mut stream, state.idle_close).await {
        let close = connection_tokens(&request.headers)
            .iter()
            .any(|t| t == "close")
            || request.version == "HTTP/1.0";
        let (status, body) = if request.target == "/health" {
            state.health_checks.fetch_add(1, Ordering::SeqCst);
            (state.health_status.load(Ordering::SeqCst), b"ok".to_vec())
        } else {
            state.requests.fetch_add(1, Ordering::SeqCst);
            state
                .received
                .lock()
                .expect("received")
                .push(request.clone());
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            (200, state.name.as_bytes().to_vec())
        };
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: {}\r\nx-request-body-len: {}\r\n",
            if status == 200 { "OK" } else { "Status" },
            body.len(),
            state.name,
            request.body.len(),
        );
        for (name, value) in &state.extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if request.method != "HEAD" {
            out.extend_from_slice(&body);
        }
        if stream.get_mut().write_all(&out).await.is_err() || close {
            return;
        }
    }
}

/// A reserved port with nothing listening: every connect is refused.
pub struct Refuser {
    addr: SocketAddr,
}

impl Refuser {
    pub fn new() -> Refuser {
        Refuser {
            addr: reserve_addr(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Accepts TCP connections, counts them and closes each at once without answering.
pub struct Closer {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Closer {
    pub async fn start() -> Closer {
        let (listener, addr) = fresh_listener();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
            }
        });
        Closer {
            addr,
            accepts,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The parapet binary

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

/// 1-based number of the `occurrence`-th (1-based) line whose trimmed text starts with `start`.
pub fn line_of(text: &str, start: &str, occurrence: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with(start))
        .nth(occurrence - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("no line #{occurrence} starting with {start:?} in:\n{text}"))
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Polls `condition` every 20 ms for up to 10 s.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(POLL_STEP).await;
    }
}

/// An HTTP/1.1 client: no proxy from the environment, a 5 s timeout per request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("reqwest client")
}

/// A prior-knowledge HTTP/2 (h2c) client.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("reqwest h2c client")
}

/// GET `url`: status and body, or the error as text.
pub async fn try_get(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, body))
}

/// GET `url`: status and body; panics on a transport error.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    try_get(client, url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Sends `total` GETs of `url` from `concurrency` concurrent workers; one result per request.
pub async fn load(
    client: &reqwest::Client,
    url: &str,
    total: usize,
    concurrency: usize,
) -> Vec<Result<(u16, String), String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.to_string(), next.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    results.push(try_get(&client, &url).await);
                }
                results
            })
        })
        .collect();
    let mut results = Vec::with_capacity(total);
    for worker in workers {
        results.extend(worker.await.expect("load worker"));
    }
    results
}

/// The results that are not `Ok((200, _))`, for assertion messages.
pub fn failures(results: &[Result<(u16, String), String>]) -> Vec<String> {
    results
        .iter()
        .filter(|r| !matches!(r, Ok((200, _))))
        .map(|r| format!("{r:?}"))
        .collect()
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one final response (1xx skipped) from a raw HTTP/1.1 connection.
pub async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<RawResponse> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
        let headers = read_header_lines(r).await?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if let Some(body) = read_framed_body(r, &headers).await? {
            body
        } else {
            let mut body = Vec::new();
            r.read_to_end(&mut body).await?;
            body
        };
        return Ok(RawResponse {
            status,
            headers,
            body,
        });
    }
}

/// Bounds a client-side await by [`CLIENT_TIMEOUT`], so a hang fails the test.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(CLIENT_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {CLIENT_TIMEOUT:?}"))
}

/// A raw HTTP/1.1 connection, for requests a well-behaved client library would not send.
pub struct RawConnection {
    stream: BufReader<TcpStream>,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let _ = stream.set_nodelay(true);
        RawConnection {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .expect("write request");
    }

    pub async fn response(&mut self) -> RawResponse {
        within("response", read_response(&mut self.stream))
            .await
            .expect("read response")
    }

    /// True when the peer has closed the connection: a read gives EOF (or a reset).
    pub async fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match within("read after response", self.stream.read(&mut byte)).await {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

/// Sends one `GET path` with the given header lines (include `Host`) on a fresh connection and
/// reads the response.
pub async fn raw_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut connection = RawConnection::open(addr).await;
    connection.send(request.as_bytes()).await;
    connection.response().await
}

/// `GET path` with `Host: host` on a fresh connection.
pub async fn get_with_host(addr: SocketAddr, host: &str, path: &str) -> RawResponse {
    raw_get(addr, path, &[("Host", host)]).await
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition

/// One sample: `name{labels} value`.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed `/metrics` scrape (the text format: `# ...` comment lines and sample lines).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

/// Parses `{a="x",b="y"}` (escapes `\\`, `\"`, `\n` in values); `None` when malformed.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.is_empty() {
            return Some(labels);
        }
        let (name, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((name.trim().to_string(), value));
        rest = &after[1 + end + 1..];
    }
}

impl Metrics {
    /// Parses the text exposition; panics on a line it cannot read.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("metrics line with a bad value: {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels
                        .strip_suffix('}')
                        .and_then(parse_labels)
                        .unwrap_or_else(|| panic!("metrics line with bad labels: {line:?}"));
                    (name.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// Every sample of `name` whose labels include all of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && labels.iter().all(|(n, v)| s.label(n) == Some(*v)))
    }

    /// The value of the one sample of `name` whose label set is exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(n, v)| s.label(n) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Like [`Metrics::get`], 0 when the series is absent (counters that never moved).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
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

// ---------------------------------------------------------------------------------------------
// A scripted origin (the cache tests)

pub use scripted::{http_date, Origin, Script};

mod scripted {
    use super::*;
    use std::collections::HashMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];

    /// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form of `Date`, `Expires`
    /// and `Last-Modified`.
    pub fn http_date(t: SystemTime) -> String {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .expect("time after 1970")
            .as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let weekday =
            ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
            MONTHS[(month - 1) as usize],
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }

    /// Seconds since 1970 of an IMF-fixdate; `None` for anything else.
    pub fn parse_http_date(text: &str) -> Option<i64> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
            return None;
        };
        let day: i64 = day.parse().ok()?;
        let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
        let year: i64 = year.parse().ok()?;
        let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
        let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
        // Days since 1970-01-01 from a civil date (H. Hinnant's algorithm).
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + h * 3600 + m * 60 + s)
    }

    /// How the body of a scripted response is made.
    #[derive(Clone, Debug)]
    enum ScriptBody {
        Fixed(Vec<u8>),
        /// `PREFIX` followed by the number of requests the path has received, this one included.
        Counted(String),
    }

    /// The answer an [`Origin`] gives on one path.
    #[derive(Clone, Debug)]
    pub struct Script {
        status: u16,
        headers: Vec<Header>,
        body: ScriptBody,
        delay: Duration,
        conditional: bool,
        chunked: bool,
        until_close: bool,
    }

    impl Script {
        /// 200, `Content-Type: text/plain`, a fixed body, no cache headers. Every response
        /// carries `Date: now` unless a `Date` header is scripted.
        pub fn fixed(body: impl Into<Vec<u8>>) -> Script {
            Script {
                status: 200,
                headers: vec![("Content-Type".to_string(), "text/plain".to_string())],
                body: ScriptBody::Fixed(body.into()),
                delay: Duration::ZERO,
                conditional: false,
                chunked: false,
                until_close: false,
            }
        }

        /// Like [`Script::fixed`], the body being `PREFIX` and the path's request count
        /// (`v1`, `v2`, ...), so a stored body can be told from a fresh one.
        pub fn counted(prefix: &str) -> Script {
            Script {
                body: ScriptBody::Counted(prefix.to_string()),
                ..Script::fixed("")
            }
        }

        pub fn status(mut self, status: u16) -> Script {
            self.status = status;
            self
        }

        /// Adds a response header line.
        pub fn header(mut self, name: &str, value: &str) -> Script {
            self.headers.push((name.to_string(), value.to_string()));
            self
        }

        /// Replaces the `Content-Type` (`text/plain` unless set).
        pub fn content_type(mut self, value: &str) -> Script {
            self.headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
            self.header("Content-Type", value)
        }

        pub fn cache_control(self, value: &str) -> Script {
            self.header("Cache-Control", value)
        }

        /// Sleeps this long (after counting the request) before answering.
        pub fn delay(mut self, delay: Duration) -> Script {
            self.delay = delay;
            self
        }

        /// Answers 304 (with the scripted headers, no body) when `If-None-Match` matches the
        /// scripted `ETag` (weak comparison), or, without `If-None-Match`, when
        /// `If-Modified-Since` is not earlier than the scripted `Last-Modified`.
        pub fn conditional(mut self) -> Script {
            self.conditional = true;
            self
        }

        /// Sends the body with `Transfer-Encoding: chunked` instead of `Content-Length`.
        pub fn chunked(mut self) -> Script {
            self.chunked = true;
            self
        }

        /// Sends the body with neither `Content-Length` nor chunking, delimited by closing the
        /// connection (an unknown length).
        pub fn until_close(mut self) -> Script {
            self.until_close = true;
            self
        }

        fn has_header(&self, name: &str) -> bool {
            find_header(&self.headers, name).is_some()
        }

        /// Whether `request` is a conditional request this script answers with 304.
        fn not_modified(&self, request: &Received) -> bool {
            if !self.conditional {
                return false;
            }
            if let Some(inm) = request.header("if-none-match") {
                let Some(etag) = find_header(&self.headers, "etag") else {
                    return false;
                };
                let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
                return inm
                    .split(',')
                    .any(|t| t.trim() == "*" || opaque(t) == opaque(etag));
            }
            match (
                request
                    .header("if-modified-since")
                    .and_then(parse_http_date),
                find_header(&self.headers, "last-modified").and_then(parse_http_date),
            ) {
                (Some(since), Some(modified)) => modified <= since,
                _ => false,
            }
        }
    }

    struct OriginState {
        scripts: Mutex<HashMap<String, Script>>,
        counts: Mutex<HashMap<String, usize>>,
        received: Mutex<Vec<Received>>,
    }

    /// A real HTTP/1.1 keep-alive server on 127.0.0.1 that answers each path (the target without
    /// its query) as scripted with [`Origin::script`] (404 for a path without a script), counts
    /// the requests per path (every method) and records them.
    pub struct Origin {
        state: Arc<OriginState>,
        addr: SocketAddr,
        tasks: ServerTasks,
    }

    fn path_of(target: &str) -> &str {
        target.split('?').next().unwrap_or(target)
    }

    impl Origin {
        pub async fn start() -> Origin {
            let (listener, addr) = fresh_listener();
            let state = Arc::new(OriginState {
                scripts: Mutex::new(HashMap::new()),
                counts: Mutex::new(HashMap::new()),
                received: Mutex::new(Vec::new()),
            });
            let tasks = ServerTasks::default();
            let serving = Arc::clone(&state);
            tasks.accept(listener, move |stream| {
                origin_connection(stream, Arc::clone(&serving))
            });
            Origin { state, addr, tasks }
        }

        pub fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// Sets (or replaces, at any time) the answer on `path`.
        pub fn script(&self, path: &str, script: Script) {
            self.state
                .scripts
                .lock()
                .expect("scripts")
                .insert(path.to_string(), script);
        }

        /// Requests received on `path` (query ignored) so far, every method.
        pub fn requests(&self, path: &str) -> usize {
            let counts = self.state.counts.lock().expect("counts");
            counts.get(path).copied().unwrap_or(0)
        }

        /// Requests received on every path so far.
        pub fn total_requests(&self) -> usize {
            self.state.counts.lock().expect("counts").values().sum()
        }

        /// The requests received on `path` (query ignored), in arrival order.
        pub fn received(&self, path: &str) -> Vec<Received> {
            let received = self.state.received.lock().expect("received");
            received
                .iter()
                .filter(|r| path_of(&r.target) == path)
                .cloned()
                .collect()
        }

        /// The last request received on `path`; panics when there was none.
        pub fn last_received(&self, path: &str) -> Received {
            self.received(path)
                .pop()
                .unwrap_or_else(|| panic!("the origin received no request on {path}"))
        }

        /// Waits (at most 10 s) until `path` has received at least `count` requests.
        pub async fn wait_requests(&self, path: &str, count: usize) -> bool {
            eventually(|| self.requests(path) >= count).await
        }

        /// Closes the listener and every open connection: connects are refused from now on.
        pub async fn stop(&self) {
            self.tasks.stop().await
        }
    }

    /// Header names a 304 leaves out: they describe the body it does not carry.
    const BODY_HEADERS: [&str; 4] = [
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
    ];

    async fn origin_connection(stream: TcpStream, state: Arc<OriginState>) {
        let _ = stream.set_nodelay(true);
        let mut stream = BufReader::new(stream);
        while let Some(request) = read_request(&mut stream, None).await {
            let mut close = connection_tokens(&request.headers)
                .iter()
                .any(|t| t == "close")
                || request.version == "HTTP/1.0";
            let path = path_of(&request.target).to_string();
            let count = {
                let mut counts = state.counts.lock().expect("counts");
                let count = counts.entry(path.clone()).or_insert(0);
                *count += 1;
                *count
            };
            state
                .received
                .lock()
                .expect("received")
                .push(request.clone());
            let script = state.scripts.lock().expect("scripts").get(&path).cloned();
            let script = script
                .unwrap_or_else(|| Script::fixed(format!("no script for {path}\n")).status(404));
            if !script.delay.is_zero() {
                tokio::time::sleep(script.delay).await;
            }
            let not_modified = script.not_modified(&request);
            let status = if not_modified { 304 } else { script.status };
            let mut head = format!("HTTP/1.1 {status} Scripted\r\n");
            for (name, value) in &script.headers {
                if !(not_modified && BODY_HEADERS.contains(&name.to_ascii_lowercase().as_str())) {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
            }
            if !script.has_header("date") {
                head.push_str(&format!("Date: {}\r\n", http_date(SystemTime::now())));
            }
            let body = match &script.body {
                ScriptBody::Fixed(body) => body.clone(),
                ScriptBody::Counted(prefix) => format!("{prefix}{count}").into_bytes(),
            };
            let bodiless = not_modified || status == 204 || (100..200).contains(&status);
            let mut out = Vec::new();
            if !bodiless {
                if script.until_close {
                    close = true;
                } else if script.chunked {
                    head.push_str("Transfer-Encoding: chunked\r\n");
                } else {
                    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
                }
            }
            if close {
                head.push_str("Connection: close\r\n");
            }
            head.push_str("\r\n");
            out.extend_from_slice(head.as_bytes());
            if !bodiless && request.method != "HEAD" {
                if script.chunked && !script.until_close {
                    for chunk in body.chunks(16 * 1024) {
                        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        out.extend_from_slice(chunk);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                } else {
                    out.extend_from_slice(&body);
                }
            }
            if stream.get_mut().write_all(&out).await.is_err() {
                return;
            }
            if close {
                let _ = stream.get_mut().shutdown().await;
                return;
            }
        }
    }

    /// Reads one final response to a HEAD request: status line and headers, no body.
    pub async fn read_head_response<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<RawResponse> {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
            let headers = read_header_lines(r).await?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            return Ok(RawResponse {
                status,
                headers,
                body: Vec::new(),
            });
        }
    }

    impl RawConnection {
        /// Reads the response to a HEAD request (no body follows the headers).
        pub async fn head_response(&mut self) -> RawResponse {
            within("HEAD response", read_head_response(&mut self.stream))
                .await
                .expect("read HEAD response")
        }
    }
}
