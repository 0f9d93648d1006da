//! A real `redis-server` for the shared cache tier's tests: its own temp dir, a port reserved
//! like every other, persistence off; plain, or TLS-only with a password (`rediss://`, its
//! certificates made by `parapet certs dev`'s generator). `.ci/prereqs` installs it; where it
//! is missing, or not linked with OpenSSL for the TLS tests, the tests that need it say so and
//! skip.

use super::{reserve_addr, POLL_STEP, READY_TIMEOUT};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const REDIS_SERVER: &str = "redis-server";
/// Where the server writes its log (in its temp dir), read when it fails to start.
const LOG_FILE: &str = "redis.log";

/// What a TLS-only server requires (its certificate, key and CA are `localhost.crt`,
/// `localhost.key` and `ca.crt` in its dir).
struct Tls {
    password: String,
}

pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// Extra `redis-server` arguments (e.g. a maxmemory policy), kept for restarts.
    extra: Vec<String>,
    tls: Option<Tls>,
}

impl RedisServer {
    /// A running plain server, or `None` (with a message saying why) when `redis-server` is
    /// not installed.
    pub async fn start(extra: &[&str]) -> Option<RedisServer> {
        RedisServer::start_with(extra, None).await
    }

    /// A running server that speaks only TLS, with a certificate for 127.0.0.1 and localhost
    /// signed by [`RedisServer::ca_file`], and that requires `password`. `None` (with a message
    /// saying why) when `redis-server` is not installed or not linked with OpenSSL.
    pub async fn start_tls(password: &str) -> Option<RedisServer> {
        let tls = Tls {
            password: password.to_string(),
        };
        RedisServer::start_with(&[], Some(tls)).await
    }

    async fn start_with(extra: &[&str], tls: Option<Tls>) -> Option<RedisServer> {
        let installed = Command::new(REDIS_SERVER)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!(
                "SKIPPED: {REDIS_SERVER} is not installed (.ci/prereqs installs the Debian package redis-server)"
            );
            return None;
        }
        if tls.is_some() && !built_with_tls() {
            eprintln!(
                "SKIPPED: this {REDIS_SERVER} is not linked with OpenSSL, so it cannot serve TLS (Debian's redis-server is built with TLS)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        if tls.is_some() {
            parapet::tls::make_dev_certificates(dir.path()).expect("certificates for redis");
        }
        let mut server = RedisServer {
            child: None,
            addr: reserve_addr(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
        };
        if let Err(log) = server.launch().await {
            panic!("{REDIS_SERVER} exited at start:\n{log}");
        }
        Some(server)
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}/0", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Kills the server (SIGKILL: as if the machine went away) and waits until the port
    /// refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis still answering after kill"
            );
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(log) = self.launch().await {
            panic!("{REDIS_SERVER} exited at restart:\n{log}");
        }
    }

    /// A connection for checking what the server holds.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.try_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to redis-server: {e}"))
    }

    /// The keys matching `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.connection().await)
            .await
            .expect("KEYS")
    }

    fn client(&self) -> redis::Client {
        let Some(tls) = &self.tls else {
            return redis::Client::open(self.url()).expect("redis url");
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url().as_str())
            .expect("redis url");
        let settings = info.redis_settings().clone().set_password(&tls.password);
        info = info.set_redis_settings(settings);
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(self.ca_file()).expect("read the redis CA")),
        };
        redis::Client::build_with_tls(info, certificates).expect("redis TLS client")
    }

    async fn try_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.client().get_multiplexed_async_connection().await
    }

    fn arguments(&self) -> Vec<String> {
        let dir = self.dir.path();
        let port = self.addr.port().to_string();
        let mut args: Vec<String> = vec!["--bind".into(), "127.0.0.1".into()];
        match &self.tls {
            None => args.extend(["--port".into(), port]),
            Some(tls) => {
                let file = |name: &str| dir.join(name).to_string_lossy().to_string();
                args.extend([
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    file("localhost.crt"),
                    "--tls-key-file".into(),
                    file("localhost.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.crt"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                    "--requirepass".into(),
                    tls.password.clone(),
                ]);
            }
        }
        args.extend(
            [
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ]
            .map(String::from),
        );
        args.extend(["--dir".into(), dir.to_string_lossy().to_string()]);
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Spawns the server and waits until it answers PING; `Err(its log)` when it exits first.
    async fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join(LOG_FILE);
        let log = std::fs::File::create(&log_path).expect("redis log file");
        let child = Command::new(REDIS_SERVER)
            .args(self.arguments())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis log file"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.exited() {
                return Err(read_log(&log_path));
            }
            if let Ok(mut connection) = self.try_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut connection).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start:\n{}",
                read_log(&log_path)
            );
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    fn exited(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_some());
        if exited {
            self.child = None;
        }
        exited
    }
}

/// Whether `redis-server` was built with TLS (`BUILD_TLS=yes` links it with OpenSSL).
fn built_with_tls() -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ldd \"$(command -v {REDIS_SERVER})\""))
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("libssl"))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log at {}: {e})", path.display()))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
