//! A real `redis-server` for the shared cache tier's tests: its own temp dir, a port reserved
//! like every other, persistence off. `.ci/prereqs` installs it; where it is missing the tests
//! that need it say so and skip.

use super::{reserve_addr, POLL_STEP, READY_TIMEOUT};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const REDIS_SERVER: &str = "redis-server";

pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// Extra `redis-server` arguments (e.g. a maxmemory policy), kept for restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// A running server, or `None` (with a message saying why) when `redis-server` is not
    /// installed.
    pub async fn start(extra: &[&str]) -> Option<RedisServer> {
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
        let mut server = RedisServer {
            child: None,
            addr: reserve_addr(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch().await;
        Some(server)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
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
        self.launch().await;
    }

    /// A connection for checking what the server holds.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server")
    }

    /// The keys matching `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.connection().await)
            .await
            .expect("KEYS")
    }

    async fn launch(&mut self) {
        let port = self.addr.port().to_string();
        let dir = self.dir.path().to_string_lossy().to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let child = Command::new(REDIS_SERVER)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let client = redis::Client::open(self.url()).expect("redis url");
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut connection).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(POLL_STEP).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
