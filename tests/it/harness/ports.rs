//! Ports and test servers' tasks: OS-chosen loopback ports, never handed out twice in this
//! process, and the owner of a test server's accept and connection tasks.

use super::{POLL_STEP, READY_TIMEOUT};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

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

/// A listener on `addr` again (a test server's port, after it stopped), retried while the old
/// socket lingers.
pub async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return listener,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL_STEP).await,
            Err(e) => panic!("rebinding {addr}: {e}"),
        }
    }
}
