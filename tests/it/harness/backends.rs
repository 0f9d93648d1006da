//! Recording backends for balancing, health and fault tests: a keep-alive server that names
//! itself in every answer, a port that refuses connections, and one that closes them at once.

use super::origin::{ConnectionHabits, Origin, Script};
use super::ports::{fresh_listener, reserve_addr};
use super::wire::{Header, Received};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The path Parapet's active health checks ask in the tests.
const HEALTH_PATH: &str = "/health";

/// Builds a [`Backend`] with non-default behaviour.
pub struct BackendBuilder {
    name: String,
    delay: Duration,
    habits: ConnectionHabits,
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
        self.habits.idle_close = Some(after);
        self
    }

    /// Closes each connection right after its `n`th response, without having announced it.
    pub fn close_after(mut self, n: usize) -> Self {
        self.habits.close_after = Some(n);
        self
    }

    /// Closes a reused connection, unanswered, as its next request arrives: only a request on
    /// a new connection is answered.
    pub fn drop_reused_connections(mut self) -> Self {
        self.habits.drop_reused = true;
        self
    }

    /// Adds a header line to every response.
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    pub async fn start(self) -> Backend {
        let origin = Origin::start_with(self.habits).await;
        let backend = Backend {
            name: self.name,
            extra_headers: self.extra_headers,
            origin,
        };
        backend.set_delay(self.delay);
        backend.set_health_status(200);
        backend
    }
}

/// A recording backend: the scripted [`Origin`] answering every request with 200,
/// `x-backend: NAME`, `x-request-body-len: N` and the body `NAME`, and `GET /health` with the
/// health status (200 unless changed) and body `ok`. It records accepts, requests (without
/// `/health`) and what it received.
pub struct Backend {
    name: String,
    extra_headers: Vec<Header>,
    origin: Origin,
}

impl Backend {
    pub fn builder(name: &str) -> BackendBuilder {
        BackendBuilder {
            name: name.to_string(),
            delay: Duration::ZERO,
            habits: ConnectionHabits::default(),
            extra_headers: Vec::new(),
        }
    }

    pub async fn start(name: &str) -> Backend {
        Backend::builder(name).start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.origin.addr()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// TCP connections accepted so far (over every start of this backend).
    pub fn accepts(&self) -> usize {
        self.origin.accepts()
    }

    /// Requests received so far, `/health` not counted.
    pub fn requests(&self) -> usize {
        self.origin.total_requests() - self.health_checks()
    }

    /// `/health` requests received so far.
    pub fn health_checks(&self) -> usize {
        self.origin.requests(HEALTH_PATH)
    }

    /// Every request received so far, `/health` left out, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        let mut received = self.origin.received_all();
        received.retain(|r| r.target != HEALTH_PATH);
        received
    }

    /// The last request received (not `/health`); panics when there was none.
    pub fn last_received(&self) -> Received {
        self.received()
            .pop()
            .unwrap_or_else(|| panic!("backend {} received no request", self.name()))
    }

    pub fn set_delay(&self, delay: Duration) {
        self.origin
            .fallback(self.answer(self.name.as_bytes()).delay(delay));
    }

    /// Requests on `path` are read, then the connection is closed without an answer.
    pub fn drop_unanswered(&self, path: &str) {
        self.origin.script(path, self.answer(b"").unanswered());
    }

    pub fn set_health_status(&self, status: u16) {
        self.origin
            .script(HEALTH_PATH, self.answer(b"ok").status(status));
    }

    /// An answer with `body`, `x-backend: NAME`, `x-request-body-len: N` and the extra headers.
    fn answer(&self, body: &[u8]) -> Script {
        let script = Script::fixed(body)
            .header("x-backend", &self.name)
            .echo_body_length()
            .without_date();
        self.extra_headers
            .iter()
            .fold(script, |script, (name, value)| script.header(name, value))
    }

    /// Closes the listener and every open connection; returns once they are closed.
    pub async fn stop(&self) {
        self.origin.stop().await
    }

    /// Listens again on the same port after [`Backend::stop`].
    pub async fn restart(&self) {
        self.origin.restart().await
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
